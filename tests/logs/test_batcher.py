import trio

from trunner.logs.batch import Batch
from trunner.logs.batcher import Batcher


def make(max_size=100, interval=30.0, capacity=2):
    send, receive = trio.open_memory_channel[Batch](capacity)
    batcher = Batcher(send, max_size=max_size, interval=interval, line_prefix=lambda: b"P ")
    return batcher, receive


def drain(receive):
    out = []
    while True:
        try:
            out.append(receive.receive_nowait())
        except trio.WouldBlock:
            return out


async def test_first_line_ships_at_once():
    batcher, receive = make()
    batcher.add(b"first", 1, False)
    batches = drain(receive)
    assert [b.text_lines() for b in batches] == [["first"]]


async def test_batch_handed_off_before_it_would_exceed_max_size():
    batcher, receive = make(max_size=20)
    batcher.add(b"first", 1, False)
    batcher.add(b"aaaaaaaaa", 1, False)  # 10 bytes
    batcher.add(b"bbbbbbbbb", 1, False)  # 10 bytes: exactly fills
    batcher.add(b"ccccccccc", 1, False)  # would exceed: hand off first
    batches = drain(receive)
    assert [b.text_lines() for b in batches] == [["first"], ["aaaaaaaaa", "bbbbbbbbb"]]
    assert all(b.size <= 20 for b in batches)
    assert batcher.current.text_lines() == ["ccccccccc"]


async def test_block_split_at_line_boundary_to_fill_a_batch():
    batcher, _receive = make(max_size=20, capacity=0)
    batcher.add(b"first", 1, False)  # capacity 0: nothing can be handed off
    batcher.add(b"aaaa\nbbbb\ncccc\ndddd", 4, False)
    assert batcher.current.size <= 20
    assert batcher.current.text_lines() == ["first", "aaaa", "bbbb"]
    assert batcher.dropped_lines == 2


async def test_full_channel_drops_whole_lines_and_next_batch_starts_with_marker():
    batcher, receive = make(max_size=20, capacity=1)
    batcher.add(b"first", 1, False)  # handed off, channel now full
    batcher.add(b"0123456789012345678", 1, False)  # fills current (20 bytes)
    batcher.add(b"dropped-1", 1, False)
    batcher.add(b"dropped-2", 1, False)
    assert batcher.dropped_lines == 2
    assert [b.text_lines() for b in drain(receive)] == [["first"]]
    assert batcher.ship_if_ready()  # slot free again: the full batch goes
    assert [b.text_lines() for b in drain(receive)] == [["0123456789012345678"]]
    assert batcher.current.text_lines() == [
        "P [trunner: 2 lines (20 bytes) dropped: log shipping fell behind]"
    ]


async def test_dropping_a_cut_piece_drops_the_rest_of_that_line():
    batcher, receive = make(max_size=200, capacity=1)
    batcher.add(b"first", 1, False)
    batcher.add(b"x" * 199, 1, False)
    batcher.add(b"piece-1 [trunner: line continues]", 1, False)  # dropped
    drain(receive)
    assert batcher.ship_if_ready()
    drain(receive)
    batcher.add(b"[trunner: continued] piece-2", 1, True)  # must not appear alone
    batcher.add(b"next real line", 1, False)
    lines = batcher.current.text_lines()
    assert not any("piece-2" in line for line in lines)
    assert lines[-1] == "next real line"


async def test_final_batch_announces_drops_since_last_handoff():
    batcher, _receive = make(max_size=20, capacity=0)
    batcher.add(b"a" * 19, 1, False)
    batcher.add(b"lost", 1, False)
    final = batcher.final_batch()
    assert final is not None
    assert final.text_lines()[-1].startswith("P [trunner: 1 lines")


async def test_interval_timer_ships_waiting_lines_without_new_input(autojump_clock):
    batcher, receive = make(interval=30.0)
    batcher.add(b"first", 1, False)
    drain(receive)
    batcher.add(b"second", 1, False)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(batcher.run_interval_timer)
        start = trio.current_time()
        batch = await receive.receive()
        assert batch.text_lines() == ["second"]
        assert trio.current_time() - start == 30.0
        nursery.cancel_scope.cancel()


async def test_interval_timer_waits_for_a_free_slot_without_spinning(autojump_clock):
    batcher, receive = make(interval=1.0, capacity=1)
    batcher.add(b"first", 1, False)  # channel full now
    batcher.add(b"second", 1, False)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(batcher.run_interval_timer)
        await trio.sleep(100)
        assert (await receive.receive()).text_lines() == ["first"]
        batcher.ship_if_ready()
        assert (await receive.receive()).text_lines() == ["second"]
        nursery.cancel_scope.cancel()
