"""The job log end to end (virtual time): spool order, back-pressure, stall, flush, cleanup."""

from __future__ import annotations

import errno
import math
from pathlib import Path

import pytest
import trio

from tests.doubles.executors import Chunk, RecordingSink, ScriptedExecutor
from tests.logs.support import MARKER, job_log_settings
from trunner.contracts import Stream
from trunner.job import run_job
from trunner.logs import spool as spool_module
from trunner.logs.batch import Batch
from trunner.logs.job_log import JobLog, clear_spool_dir
from trunner.models import JobOutcome, RunnerJob
from trunner.observability.metrics import RunnerMetrics

JOB = RunnerJob(id="7", commands=("true",))


settings = job_log_settings


class TimedSink(RecordingSink):
    """Appends take ``delay`` seconds; until virtual time ``stalled_until`` they hang until then."""

    def __init__(self, *, delay: float = 0.0, stalled_until: float = 0.0) -> None:
        super().__init__()
        self.delay = delay
        self.stalled_until = stalled_until

    async def ship(self, batch: Batch) -> None:
        if trio.current_time() < self.stalled_until:
            await trio.sleep_until(self.stalled_until)
        if self.delay:
            await trio.sleep(self.delay)
        self.batches.append(batch.text_lines())


def numbered(count: int, width: int = 40, start: int = 0) -> list[bytes]:
    return [f"{i:08d} ".encode() + b"x" * (width - 9) for i in range(start, start + count)]


def chunks_of(lines: list[bytes], size: int) -> list[bytes]:
    data = b"".join(line + b"\n" for line in lines)
    return [data[i : i + size] for i in range(0, len(data), size)]


def spool_files(tmp_path: Path) -> list[Path]:
    """What job spools left: the runner's own directory and its lock stay for the process's life."""
    root = tmp_path / "spool"
    return sorted(p for p in root.glob("*/*") if p.name != "lock") if root.exists() else []


async def test_a_slow_sink_loses_nothing_and_order_holds_across_memory_and_spool(autojump_clock, tmp_path):
    lines = numbered(6000)
    sink = TimedSink(delay=0.2)
    job_settings = settings(tmp_path, job_log_spool_size=1 << 20)
    job_log = JobLog(JOB, sink, job_settings)

    async def read() -> None:
        for chunk in chunks_of(lines, 7000):
            job_log.feed(Stream.STDOUT, chunk)
            await job_log.wait_for_room()

    await job_log.run(read)
    assert sink.bodies() == [line.decode() for line in lines]
    assert job_log.lost_lines == 0
    assert 0 < job_log.spool_peak <= job_settings.job_log_spool_size
    assert spool_files(tmp_path) == []


async def test_order_holds_when_the_sink_stalls_on_and_off(autojump_clock, tmp_path):
    """Batches switch between the memory channel and the spool several times."""
    lines = numbered(3000)

    class OnOff(RecordingSink):
        async def ship(self, batch: Batch) -> None:
            if (len(self.batches) // 5) % 2:
                await trio.sleep(3.0)
            await super().ship(batch)

    sink = OnOff()
    chunks = [Chunk(c, delay=0.5 if i % 10 == 0 else 0.0) for i, c in enumerate(chunks_of(lines, 3000))]
    outcome = await run_job(JOB, executor=ScriptedExecutor(chunks), sink=sink, settings=settings(tmp_path))
    assert sink.bodies() == [line.decode() for line in lines]
    assert outcome.message == ""


async def test_full_spool_holds_the_reader_instead_of_dropping(autojump_clock, tmp_path):
    lines = numbered(5000)
    sink = TimedSink(delay=1.0)
    job_settings = settings(tmp_path, job_log_spool_size=64 * 1024)
    held = []
    job_log = JobLog(JOB, sink, job_settings)

    async def read() -> None:
        for chunk in chunks_of(lines, 4000):
            job_log.feed(Stream.STDOUT, chunk)
            start = trio.current_time()
            await job_log.wait_for_room()
            held.append(trio.current_time() - start)

    await job_log.run(read)
    assert max(held) >= sink.delay
    assert sink.bodies() == [line.decode() for line in lines]
    assert job_log.spool_peak <= job_settings.job_log_spool_size


async def test_memory_only_holds_the_reader_and_never_touches_disk(autojump_clock, tmp_path):
    lines = numbered(2000)
    sink = TimedSink(delay=0.5)
    job_settings = settings(tmp_path, job_log_buffer="memory")
    outcome = await run_job(
        JOB, executor=ScriptedExecutor(chunks_of(lines, 4096)), sink=sink, settings=job_settings
    )
    assert sink.bodies() == [line.decode() for line in lines]
    assert outcome.message == ""
    assert not (tmp_path / "spool").exists()


@pytest.mark.parametrize("ending", ["success", "failure", "crash", "cancel"])
async def test_the_spool_is_removed_on_every_exit_path(autojump_clock, tmp_path, ending):
    from trunner.executors.base import ExitKind, ExitResult

    lines = numbered(3000)
    chunks = chunks_of(lines, 4096)
    executor = {
        "success": ScriptedExecutor(chunks),
        "failure": ScriptedExecutor(chunks, ExitResult(ExitKind.INFRASTRUCTURE, message="broken")),
        "crash": ScriptedExecutor(chunks, raise_after=RuntimeError("boom")),
        "cancel": ScriptedExecutor(chunks, hang=True),
    }[ending]
    sink = TimedSink(delay=2.0)
    seen_spool = []

    async def watch() -> None:
        while True:
            seen_spool.append(bool(spool_files(tmp_path)))
            await trio.sleep(1)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch)
        with trio.move_on_after(30):
            await run_job(JOB, executor=executor, sink=sink, settings=settings(tmp_path))
        nursery.cancel_scope.cancel()
    assert any(seen_spool)
    assert not any(p.is_file() for p in spool_files(tmp_path))


async def test_leftover_spools_are_removed_at_start_up(autojump_clock, tmp_path):
    from trunner.logs.spool import LOCK_NAME, RUNNER_PREFIX

    job_settings = settings(tmp_path)
    dead = Path(job_settings.job_log_spool_dir) / f"{RUNNER_PREFIX}x-dead"
    dead.mkdir(parents=True)
    (dead / LOCK_NAME).touch()
    (dead / "00000000.seg").write_bytes(b"x" * 100)
    await clear_spool_dir(job_settings)
    assert not dead.exists()


async def test_disk_full_falls_back_to_back_pressure_with_one_warning(
    autojump_clock, tmp_path, monkeypatch, caplog
):
    calls = []

    real = spool_module._writev_all

    def full(fd: int, vectors: list[bytes | memoryview]) -> None:
        calls.append(len(vectors))
        if len(calls) > 4:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd, vectors)

    monkeypatch.setattr(spool_module, "_writev_all", full)
    lines = numbered(4000)
    sink = TimedSink(delay=0.5)
    outcome = await run_job(
        JOB, executor=ScriptedExecutor(chunks_of(lines, 4096)), sink=sink, settings=settings(tmp_path)
    )
    assert sink.bodies() == [line.decode() for line in lines]
    assert outcome.message == ""
    warnings = [r for r in caplog.records if "spool" in r.getMessage() and r.levelname == "WARNING"]
    assert len(warnings) == 1 and "No space left" in warnings[0].getMessage()
    assert not any(p.is_file() for p in spool_files(tmp_path))


async def test_stall_drops_after_the_timeout_marks_each_stream_at_the_gap_then_recovers(
    autojump_clock, tmp_path
):
    job_settings = settings(tmp_path, job_log_spool_size=64 * 1024, log_stall_timeout=60.0)
    sink = TimedSink(stalled_until=500.0)
    out_lines = numbered(200_000 // 40, start=0)
    chunks: list[Chunk] = []
    for i, chunk in enumerate(chunks_of(out_lines, 4000)):
        chunks.append(Chunk(chunk, Stream.STDOUT, delay=1.0))
        chunks.append(Chunk(b"err %d\n" % i, Stream.STDERR))
    chunks.append(Chunk(b"after the stall\n", Stream.STDOUT, delay=600.0))
    metrics = RunnerMetrics()
    outcome = await run_job(
        JOB, executor=ScriptedExecutor(chunks), sink=sink, settings=job_settings, metrics=metrics.logs
    )
    bodies = sink.bodies()
    markers = [(i, MARKER.fullmatch(b)) for i, b in enumerate(bodies) if MARKER.fullmatch(b)]
    assert {m[3] for _, m in markers} == {"stdout", "stderr"}
    assert all(m[4] == "log delivery stalled for 60s" for _, m in markers)
    real_out = [line.decode() for line in out_lines]
    shipped_out = [b for b in bodies if b[:8].isdigit()]
    dropped_out = sum(int(m[1]) for _, m in markers if m[3] == "stdout")
    dropped_err = sum(int(m[1]) for _, m in markers if m[3] == "stderr")
    assert len(shipped_out) + dropped_out == len(real_out)
    assert len([b for b in bodies if b.startswith("err ")]) + dropped_err == len(chunks) // 2
    # The gap is where the marker is: shipped stdout lines are the real ones minus one run.
    first_marker = markers[0][0]
    before = [b for b in bodies[:first_marker] if b[:8].isdigit()]
    after = [b for b in bodies[first_marker:] if b[:8].isdigit()]
    assert before == real_out[: len(before)]
    assert after == real_out[len(real_out) - len(after) :]
    assert bodies[-1] == "after the stall"
    lost = dropped_out + dropped_err
    assert f"{lost} log lines could not be delivered" in outcome.message
    assert metrics.registry.get_sample_value("trunner_log_lines_dropped_total", {"runner": ""}) == lost


async def test_no_drop_while_batches_keep_being_accepted(autojump_clock, tmp_path):
    """Held for far longer than the stall timeout, but a batch goes through every 20 s."""
    sink = TimedSink(delay=20.0)
    lines = numbered(2000)
    outcome = await run_job(
        JOB,
        executor=ScriptedExecutor(chunks_of(lines, 4096)),
        sink=sink,
        settings=settings(
            tmp_path, job_log_spool_size=64 * 1024, log_stall_timeout=30.0, log_flush_max_time=1e6
        ),
    )
    assert trio.current_time() > 300
    assert sink.bodies() == [line.decode() for line in lines]
    assert outcome.message == ""


async def test_final_flush_continues_while_it_makes_progress(autojump_clock, tmp_path):
    """Each append takes 20 s, under the 30 s no-progress limit: the flush runs far longer than
    30 s and delivers everything."""
    lines = numbered(1500)
    sink = TimedSink(delay=20.0)
    job_settings = settings(tmp_path, log_flush_max_time=1e6)
    outcome = await run_job(
        JOB, executor=ScriptedExecutor(chunks_of(lines, 60_000)), sink=sink, settings=job_settings
    )
    assert sink.bodies() == [line.decode() for line in lines]
    assert outcome.message == ""
    assert trio.current_time() > 10 * job_settings.log_flush_timeout


async def test_final_flush_stops_without_progress_and_counts_what_is_left(autojump_clock, tmp_path):
    lines = numbered(800)
    sink = TimedSink(delay=math.inf)
    job_settings = settings(tmp_path)
    metrics = RunnerMetrics()
    start = trio.current_time()
    outcome = await run_job(
        JOB,
        executor=ScriptedExecutor(chunks_of(lines, 60_000)),
        sink=sink,
        settings=job_settings,
        metrics=metrics.logs,
    )
    assert (
        trio.current_time() - start <= job_settings.log_flush_timeout + job_settings.job_outcome_timeout + 1
    )
    assert f"{len(lines)} log lines could not be delivered" in outcome.message
    assert "no log batch was delivered for 30s" in outcome.message
    registry = metrics.registry
    assert registry.get_sample_value("trunner_log_lines_unflushed_total", {"runner": ""}) == len(lines)
    assert not any(p.is_file() for p in spool_files(tmp_path))


async def test_final_flush_stops_at_its_overall_cap(autojump_clock, tmp_path):
    lines = numbered(800)
    sink = TimedSink(delay=10.0)
    job_settings = settings(tmp_path, log_flush_max_time=100.0)
    start = trio.current_time()
    outcome = await run_job(
        JOB, executor=ScriptedExecutor(chunks_of(lines, 200_000)), sink=sink, settings=job_settings
    )
    elapsed = trio.current_time() - start
    assert 100 <= elapsed <= 100 + job_settings.job_outcome_timeout + 1
    delivered = len(sink.bodies())
    assert 0 < delivered < len(lines)
    assert f"{len(lines) - delivered} log lines could not be delivered" in outcome.message
    assert "overall limit of 100s" in outcome.message


async def test_shutdown_during_the_flush_ends_it_at_the_shutdown_deadline(autojump_clock, tmp_path):
    lines = numbered(800)
    sink = TimedSink(delay=10.0)
    job_settings = settings(tmp_path, log_flush_max_time=1e6)
    outcomes: list[JobOutcome] = []
    with trio.move_on_after(50):
        outcomes.append(
            await run_job(
                JOB, executor=ScriptedExecutor(chunks_of(lines, 200_000)), sink=sink, settings=job_settings
            )
        )
    assert trio.current_time() <= 50 + job_settings.log_flush_timeout + job_settings.job_outcome_timeout + 1
    assert outcomes == []
    assert "could not be delivered" in sink.outcomes[0].message
    assert "shutdown deadline" in sink.outcomes[0].message


async def test_a_spool_that_cannot_be_read_back_is_announced_per_stream_at_the_gap(
    autojump_clock, tmp_path, monkeypatch
):
    real_read = spool_module.Spool._read_sync
    broken = []

    def read_once_broken(self):
        if not broken:
            broken.append(self.counts[:])
            raise spool_module.SpoolError(errno.EIO, "spool record does not read back intact")
        return real_read(self)

    monkeypatch.setattr(spool_module.Spool, "_read_sync", read_once_broken)
    out_lines = numbered(3000)
    chunks: list[Chunk] = []
    for i, chunk in enumerate(chunks_of(out_lines, 4000)):
        chunks.append(Chunk(chunk, Stream.STDOUT))
        chunks.append(Chunk(b"err %d\n" % i, Stream.STDERR))
    sink = TimedSink(delay=0.5)
    outcome = await run_job(
        JOB,
        executor=ScriptedExecutor(chunks),
        sink=sink,
        settings=settings(tmp_path, job_log_spool_size=1 << 20),
    )
    bodies = sink.bodies()
    markers = [(i, MARKER.fullmatch(b)) for i, b in enumerate(bodies) if MARKER.fullmatch(b)]
    assert [m[3] for _, m in markers] == ["stdout", "stderr"]
    assert all("could not be read back" in m[4] for _, m in markers)
    # Each marker states exactly its own stream's lines and bytes, and stands where they were.
    out_index, err_index = markers[0][0], markers[1][0]
    assert err_index == out_index + 1
    shipped_out = [b for b in bodies if b[:8].isdigit()]
    shipped_err = [b for b in bodies if b.startswith("err ")]
    dropped_out, dropped_err = int(markers[0][1][1]), int(markers[1][1][1])
    assert dropped_out and dropped_err
    assert len(shipped_out) + dropped_out == len(out_lines)
    assert len(shipped_err) + dropped_err == len(chunks) // 2
    assert (dropped_out, int(markers[0][1][2]), dropped_err, int(markers[1][1][2])) == tuple(
        broken[0][:2] + broken[0][4:6]
    )
    real_out = [line.decode() for line in out_lines]
    before = [b for b in bodies[:out_index] if b[:8].isdigit()]
    after = [b for b in bodies[out_index:] if b[:8].isdigit()]
    assert before + real_out[len(before) : len(before) + dropped_out] + after == real_out
    assert f"{dropped_out + dropped_err} log lines could not be delivered" in outcome.message
    assert spool_files(tmp_path) == []


async def test_a_rejected_batch_that_carried_gap_markers_announces_them_again_per_stream(
    autojump_clock, tmp_path
):
    from trunner.net.retry import ShipError

    class RejectsFirstMarkedBatch(TimedSink):
        rejected = 0

        async def ship(self, batch: Batch) -> None:
            if not self.rejected and any(b"dropped: log delivery stalled" in block for block in batch.blocks):
                self.rejected = batch.line_count
                raise ShipError("rejected", retryable=False)
            await super().ship(batch)

    job_settings = settings(tmp_path, job_log_spool_size=64 * 1024, log_stall_timeout=60.0)
    sink = RejectsFirstMarkedBatch(stalled_until=500.0)
    out_lines = numbered(200_000 // 40)
    chunks: list[Chunk] = []
    for i, chunk in enumerate(chunks_of(out_lines, 4000)):
        chunks.append(Chunk(chunk, Stream.STDOUT, delay=1.0))
        chunks.append(Chunk(b"err %d\n" % i, Stream.STDERR))
    chunks.append(Chunk(b"after the stall\n", Stream.STDOUT, delay=600.0))
    outcome = await run_job(JOB, executor=ScriptedExecutor(chunks), sink=sink, settings=job_settings)
    assert sink.rejected
    bodies = sink.bodies()
    markers = [MARKER.fullmatch(b) for b in bodies if MARKER.fullmatch(b)]
    assert all(m[3] in ("stdout", "stderr") for m in markers)
    again = [m for m in markers if "log delivery failed: rejected" in m[4]]
    assert sorted(m[3] for m in again) == ["stderr", "stdout"]
    dropped = {name: sum(int(m[1]) for m in markers if m[3] == name) for name in ("stdout", "stderr")}
    shipped_out = [b for b in bodies if b[:8].isdigit()]
    shipped_err = [b for b in bodies if b.startswith("err ")]
    assert len(shipped_out) + dropped["stdout"] == len(out_lines)
    assert len(shipped_err) + dropped["stderr"] == len(chunks) // 2
    assert bodies[-1] == "after the stall"
    assert f"{dropped['stdout'] + dropped['stderr']} log lines could not be delivered" in outcome.message
