from trunner.contracts import Stream
from trunner.logs.batch import Batch
from trunner.logs.batcher import Batcher

OUT, ERR = Stream.STDOUT, Stream.STDERR


class Room:
    """An offer target taking up to ``capacity`` batches until some are taken."""

    def __init__(self, capacity: int = 2) -> None:
        self.capacity = capacity
        self.batches: list[Batch] = []
        self.busy = False

    def offer(self, batch: Batch) -> bool:
        if len(self.batches) >= self.capacity:
            return False
        self.batches.append(batch)
        return True

    def take(self) -> list[list[str]]:
        taken, self.batches = self.batches, []
        return [b.text_lines() for b in taken]


def make(max_size=100, interval=30.0, capacity=2):
    room = Room(capacity)
    batcher = Batcher(
        room.offer, max_size=max_size, interval=interval, line_prefix=lambda: b"P ", busy=lambda: room.busy
    )
    return batcher, room


async def test_first_line_ships_at_once():
    batcher, room = make()
    batcher.add(OUT, b"first", 1)
    assert room.take() == [["first"]]


async def test_batch_handed_off_before_it_would_exceed_max_size():
    batcher, room = make(max_size=20)
    batcher.add(OUT, b"first", 1)
    batcher.add(OUT, b"aaaaaaaaa", 1)  # 10 bytes
    batcher.add(OUT, b"bbbbbbbbb", 1)  # 10 bytes: exactly fills
    batcher.add(OUT, b"ccccccccc", 1)  # would exceed: hand off first
    batches = room.batches
    assert [b.text_lines() for b in batches] == [["first"], ["aaaaaaaaa", "bbbbbbbbb"]]
    assert all(b.size <= 20 for b in batches)
    assert batcher.current.text_lines() == ["ccccccccc"]


async def test_a_refused_offer_holds_the_rest_instead_of_dropping_it():
    batcher, room = make(max_size=20, capacity=0)
    batcher.add(OUT, b"first", 1)
    batcher.add(OUT, b"aaaa\nbbbb\ncccc\ndddd", 4)
    assert batcher.current.text_lines() == ["first", "aaaa", "bbbb"]
    assert batcher.held and batcher.dropped_lines == 0
    batcher.add(ERR, b"later", 1)  # queued behind what is held, in order
    assert batcher.waiting() == (6, 6 + 10 + 10 + 6)
    assert not batcher.resume()
    room.capacity = 5
    assert batcher.resume()
    assert batcher.flush()
    assert room.take() == [["first", "aaaa", "bbbb"], ["cccc", "dddd", "later"]]


async def test_busy_holds_the_drain_until_the_job_log_has_stored_its_batch():
    batcher, room = make(max_size=20)
    batcher.add(OUT, b"first", 1)
    room.busy = True
    assert batcher.held
    room.busy = False
    assert not batcher.held


async def test_dropping_counts_per_stream_and_marks_each_stream_at_the_gap():
    batcher, room = make(max_size=200, capacity=1)
    batcher.add(OUT, b"first", 1)  # handed off; room full
    batcher.add(OUT, b"x" * 195, 1)  # fills the current batch
    batcher.add(ERR, b"P held-err", 1)
    assert batcher.held
    batcher.start_dropping("stalled")
    assert not batcher.held
    batcher.add(OUT, b"P out-1\nP out-2", 2)
    batcher.add(ERR, b"P err-1 [trunner: line continues]", 1)
    assert batcher.dropped_lines == 4
    room.take()
    batcher.add(ERR, b"[trunner: continued] rest", 1)  # room again: the gap closes here
    assert room.take() == [["x" * 195]]
    assert batcher.current.text_lines() == [
        "P [trunner: 2 lines (41 bytes) of stderr dropped: stalled]",
        "P [trunner: 2 lines (12 bytes) of stdout dropped: stalled]",
        "[trunner: continued] rest",
    ]
    assert not batcher.dropping


async def test_flush_offers_markers_left_at_the_end():
    batcher, room = make(max_size=20, capacity=1)
    batcher.add(OUT, b"a" * 19, 1)
    batcher.add(OUT, b"b" * 10, 1)
    batcher.add(OUT, b"P " + b"c" * 10, 1)
    batcher.start_dropping("stalled")
    assert not batcher.flush()
    room.capacity = 3
    assert batcher.flush()
    assert room.take()[-1] == ["P [trunner: 1 lines (11 bytes) of stdout dropped: stalled]"]


async def test_interval_due_and_ship_if_ready(autojump_clock):
    import trio

    batcher, room = make(interval=30.0)
    batcher.add(OUT, b"first", 1)
    room.take()
    batcher.add(OUT, b"second", 1)
    assert not batcher.due()
    await trio.sleep(30)
    assert batcher.due() and batcher.ship_if_ready()
    assert room.take() == [["second"]]


def held_bytes(batch: Batch) -> int:
    """What the batch's text really occupies: its bytes objects and the list holding them."""
    import sys

    return sys.getsizeof(batch.blocks) + sum(sys.getsizeof(block) for block in batch.blocks)


async def test_a_batch_of_one_line_blocks_holds_about_its_counted_size():
    """Per-block overhead counts: a slow job hands over one short line at a time."""
    shapes = [[1], [20], [100], [900], [1022, 1], [1100, 900], [2046, 1], [3, 1500, 5]]
    for widths in shapes:
        room = Room(capacity=100)
        batcher = Batcher(room.offer, max_size=256_000, interval=1e9, line_prefix=lambda: b"P ")
        lines = [b"P " + b"x" * width for width in widths]
        sent = []
        while batcher.current.size + len(lines[len(sent) % len(lines)]) + 1 <= 256_000:
            line = lines[len(sent) % len(lines)]
            batcher.add(OUT, line, 1)
            sent.append(line.decode())
        batch = batcher.current
        assert [line for earlier in room.take() for line in earlier] + batch.text_lines() == sent
        assert held_bytes(batch) <= 1.05 * batch.size, (widths, held_bytes(batch) / batch.size)
