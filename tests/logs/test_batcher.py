from trunner.contracts import Stream
from trunner.logs.batch import Batch
from trunner.logs.batcher import Batcher

OUT, ERR = Stream.STDOUT, Stream.STDERR


def make(max_size: int = 100, interval: float = 30.0) -> Batcher:
    return Batcher(max_size=max_size, interval=interval, line_prefix=lambda: b"P ")


async def test_first_line_is_sealed_at_once():
    batcher = make()
    first = batcher.add(OUT, b"first", 1)
    assert first is not None and first.text_lines() == ["first"]
    assert batcher.add(OUT, b"second", 1) is None


async def test_a_batch_is_sealed_before_it_would_exceed_max_size():
    batcher = make(max_size=20)
    sealed = [batcher.add(OUT, b"first", 1)]
    sealed.append(batcher.add(OUT, b"aaaaaaaaa", 1))  # 10 bytes
    sealed.append(batcher.add(OUT, b"bbbbbbbbb", 1))  # 10 bytes: exactly fills
    sealed.append(batcher.add(OUT, b"ccccccccc", 1))  # would exceed: sealed first
    batches = [b for b in sealed if b is not None]
    assert [b.text_lines() for b in batches] == [["first"], ["aaaaaaaaa", "bbbbbbbbb"]]
    assert all(b.size <= 20 for b in batches)
    assert batcher.current.text_lines() == ["ccccccccc"]
    assert [b.seq for b in batches] == [0, 1] and batcher.current.seq == 2


async def test_a_block_of_many_lines_is_split_at_a_line_boundary():
    batcher = make(max_size=20)
    batcher.add(OUT, b"first", 1)
    batcher.add(OUT, b"x", 1)
    sealed = batcher.add(OUT, b"aaaa\nbbbb\ncccc\ndddd", 4)
    assert sealed is not None and sealed.text_lines() == ["x", "aaaa", "bbbb", "cccc"]
    assert batcher.current.text_lines() == ["dddd"]


async def test_drops_are_counted_per_stream_and_marked_each_stream_at_the_gap():
    batcher = make(max_size=200)
    batcher.add(OUT, b"first", 1)
    batcher.drop(OUT, b"P out-1\nP out-2", 2)  # the job's bytes: 12, trunner's prefixes not counted
    batcher.drop(ERR, b"P held-err", 1)
    batcher.drop(ERR, b"P err-1 [trunner: line continues]", 1)
    assert batcher.dropped_lines == 4
    assert batcher.unannounced() == [0, 0, 2, 12, 0, 0, 2, 41, 0, 0, 0, 0]
    batcher.announce_drops("stalled")
    batcher.add(ERR, b"[trunner: continued] rest", 1)
    assert batcher.current.text_lines() == [
        "P [trunner: 2 lines (12 bytes) of stdout dropped: stalled]",
        "P [trunner: 2 lines (41 bytes) of stderr dropped: stalled]",
        "[trunner: continued] rest",
    ]
    assert batcher.current.markers == 2
    assert batcher.unannounced() == [0] * 12


async def test_due_time_follows_the_last_sealed_batch(autojump_clock):
    import trio

    batcher = make(interval=30.0)
    batcher.add(OUT, b"first", 1)
    assert batcher.due_time() == float("inf")
    batcher.add(OUT, b"second", 1)
    assert batcher.due_time() == trio.current_time() + 30
    await trio.sleep(30)
    assert batcher.seal().text_lines() == ["second"]
    assert batcher.due_time() == float("inf")


def held_bytes(batch: Batch) -> int:
    """What the batch's text really occupies: its bytes objects and the list holding them."""
    import sys

    return sys.getsizeof(batch.blocks) + sum(sys.getsizeof(block) for block in batch.blocks)


async def test_a_batch_of_one_line_blocks_holds_about_its_counted_size():
    """Per-block overhead counts: a slow job hands over one short line at a time."""
    shapes = [[1], [20], [100], [900], [1022, 1], [1100, 900], [2046, 1], [3, 1500, 5]]
    for widths in shapes:
        batcher = Batcher(max_size=256_000, interval=1e9, line_prefix=lambda: b"P ")
        lines = [b"P " + b"x" * width for width in widths]
        sent = []
        earlier = []
        while batcher.current.size + len(lines[len(sent) % len(lines)]) + 1 <= 256_000:
            line = lines[len(sent) % len(lines)]
            sealed = batcher.add(OUT, line, 1)
            if sealed is not None:
                earlier.extend(sealed.text_lines())
            sent.append(line.decode())
        batch = batcher.current
        assert earlier + batch.text_lines() == sent
        assert held_bytes(batch) <= 1.05 * batch.size, (widths, held_bytes(batch) / batch.size)
