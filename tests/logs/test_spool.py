"""The on-disk spool: order, budget, segment deletion, removal, leftovers, damage."""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

import pytest
import trio

from trunner.logs import spool as spool_module
from trunner.logs.batch import Batch
from trunner.logs.spool import (
    DIR_PREFIX,
    HEADER_SIZE,
    LOCK_NAME,
    RUNNER_PREFIX,
    Spool,
    SpoolError,
    record_size,
    remove_leftovers,
)


def batch(seq: int, *lines: str) -> Batch:
    b = Batch(seq=seq)
    b.add_block("\n".join(lines).encode(), len(lines))
    return b


async def test_records_read_back_oldest_first_and_read_segments_are_deleted(tmp_path: Path) -> None:
    spool = Spool(tmp_path, "job", budget=8192)
    sizes = []
    for seq in range(40):
        b = batch(seq, f"line {seq}", "x" * 50)
        assert spool.fits(b)
        await spool.append(b)
        sizes.append(record_size(b))
        if seq % 3 == 2:
            got = await spool.read()
            assert got.seq == seq // 3
        assert spool.used <= spool.budget
    assert spool.path is not None
    segments = sorted(p.name for p in spool.path.iterdir() if p.name != LOCK_NAME)
    assert len(segments) <= spool_module.SEGMENTS_PER_BUDGET + 1, segments
    order = []
    while spool.records:
        order.append((await spool.read()).seq)
    assert order == list(range(40 - len(order), 40))
    assert spool.lines == spool.size == 0


async def test_read_back_batch_equals_the_written_one(tmp_path: Path) -> None:
    spool = Spool(tmp_path, "job", budget=1 << 20)
    original = Batch(seq=7)
    original.add_block(b"a\nbb", 2)
    original.add_block("é ccc".encode(), 1)
    await spool.append(original)
    back = await spool.read()
    assert (back.seq, back.line_count, back.size, back.text_lines()) == (
        7,
        3,
        original.size,
        original.text_lines(),
    )


async def test_many_blocks_and_short_writes_read_back_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More blocks than one ``writev`` takes, and a disk that writes a few bytes at a time."""
    real = os.writev

    def short(fd: int, vectors: list[bytes | memoryview]) -> int:
        assert len(vectors) <= spool_module._IOV_MAX
        return real(fd, [bytes(memoryview(b"".join(vectors))[:7])])

    monkeypatch.setattr(spool_module.os, "writev", short)
    original = Batch(seq=1)
    for n in range(3 * spool_module._IOV_MAX):
        original.add_block(f"line {n}".encode() + (b"\nx" if n % 5 == 0 else b""), 2 if n % 5 == 0 else 1)
    spool = Spool(tmp_path, "job", budget=1 << 20)
    await spool.append(original)
    back = await spool.read()
    assert back.text_lines() == original.text_lines()
    assert (back.line_count, back.size) == (original.line_count, original.size)


async def test_budget_refuses_what_does_not_fit(tmp_path: Path) -> None:
    spool = Spool(tmp_path, "job", budget=2 * spool_module.HEADER_SIZE + 250)
    big = batch(0, "y" * 200)
    assert spool.fits(big)
    await spool.append(big)
    assert not spool.fits(batch(1, "z" * 100))
    assert spool.fits(batch(1, "z" * 10))


async def test_remove_deletes_everything_and_can_repeat(tmp_path: Path) -> None:
    spool = Spool(tmp_path, "job", budget=4096)
    await spool.append(batch(0, "a"))
    path = spool.path
    assert path is not None and path.exists()
    await spool.remove()
    await spool.remove()
    assert not path.exists()
    assert list(path.parent.iterdir()) == [path.parent / LOCK_NAME]


async def test_damaged_record_is_an_error_not_invented_text(tmp_path: Path) -> None:
    spool = Spool(tmp_path, "job", budget=4096)
    await spool.append(batch(0, "hello world"))
    assert spool.path is not None
    segment = next(p for p in spool.path.iterdir() if p.name != LOCK_NAME)
    data = bytearray(segment.read_bytes())
    data[-1] ^= 0xFF
    segment.write_bytes(bytes(data))
    with pytest.raises(SpoolError):
        await spool.read()


def test_leftovers_of_a_dead_owner_are_removed_and_live_ones_kept(tmp_path: Path) -> None:
    dead = tmp_path / f"{RUNNER_PREFIX}dead-0001"
    dead.mkdir()
    (dead / LOCK_NAME).touch()
    (dead / "00000000.seg").write_bytes(b"old")
    live = tmp_path / f"{RUNNER_PREFIX}live-0002"
    live.mkdir()
    (live / LOCK_NAME).touch()
    unrelated = tmp_path / "keep-me"
    unrelated.mkdir()
    fd = os.open(live / LOCK_NAME, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert remove_leftovers(tmp_path) == 1
    finally:
        os.close(fd)
    assert not dead.exists() and live.exists() and unrelated.exists()
    assert remove_leftovers(tmp_path / "missing") == 0


@pytest.mark.spool_threads
async def test_file_operations_run_in_worker_threads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    threads: set[int] = set()
    real = spool_module._writev_all

    def spy(fd: int, vectors: list[bytes | memoryview]) -> None:
        import threading

        threads.add(threading.get_ident())
        real(fd, vectors)

    monkeypatch.setattr(spool_module, "_writev_all", spy)
    spool = Spool(tmp_path, "job", budget=4096)
    await spool.append(batch(0, "a"))
    assert (await spool.read()).text_lines() == ["a"]
    await spool.remove()
    import threading

    assert threads and threading.get_ident() not in threads
    assert trio.current_time() >= 0


async def test_a_zeroed_spool_record_does_not_read_back(tmp_path: Path) -> None:
    spool = Spool(tmp_path, "job", budget=1 << 20)
    for seq in range(3):
        b = Batch(seq=seq)
        b.add_block(b"line %d" % seq, 1)
        await spool.append(b)
    assert spool.path is not None
    segment = next(p for p in spool.path.iterdir() if p.name.endswith(".seg"))
    with segment.open("r+b") as f:
        f.write(b"\0" * HEADER_SIZE)
    with pytest.raises(SpoolError):
        await spool.read()
    await spool.remove()


async def test_a_spool_directory_without_its_lock_is_removed(tmp_path: Path) -> None:
    leftover = tmp_path / f"{RUNNER_PREFIX}nolock"
    leftover.mkdir(mode=0o700)
    (leftover / f"{DIR_PREFIX}x-1").mkdir(mode=0o700)
    (leftover / f"{DIR_PREFIX}x-1" / "00000000.seg").write_bytes(b"x" * 100)
    assert remove_leftovers(tmp_path) == 1
    assert not leftover.exists()


async def test_a_spool_whose_lock_could_not_be_created_is_removed(tmp_path: Path, monkeypatch) -> None:
    real_open = os.open

    def no_lock(path, flags, *args, **kwargs):
        if str(path) == LOCK_NAME or str(path).endswith(f"/{LOCK_NAME}"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(path, flags, *args, **kwargs)

    spool = Spool(tmp_path, "job", budget=1 << 20)
    b = Batch(seq=0)
    b.add_block(b"x", 1)
    monkeypatch.setattr(spool_module.os, "open", no_lock)
    with pytest.raises(OSError):
        await spool.append(b)
    monkeypatch.undo()
    await spool.remove()
    assert list(tmp_path.iterdir()) == []
