"""The job log under faults in its own parts: a failing task, a spool that cannot be read back
or is damaged, losses at the end of the final flush, a spool left without its lock, a severed
stream's unfinished last line."""

from __future__ import annotations

import errno
import itertools
from pathlib import Path

import trio

from tests.doubles.executors import Chunk, RecordingSink, ScriptedExecutor
from tests.logs.support import MARKER, job_log_settings
from trunner.contracts import Stream
from trunner.executors.base import ExitKind, ExitResult
from trunner.job import run_job
from trunner.logs import spool as spool_module
from trunner.logs.batch import Batch
from trunner.logs.markers import CUT_SUFFIX
from trunner.logs.settings import LogSettings
from trunner.logs.spool import DIR_PREFIX, SpoolError
from trunner.models import Outcome, RunnerJob
from trunner.observability.metrics import RunnerMetrics

JOB = RunnerJob(id="7", commands=("true",))


def settings(tmp_path: Path, **overrides: object) -> LogSettings:
    return job_log_settings(tmp_path, **{"job_log_spool_size": 1 << 20, **overrides})


def numbered(count: int, width: int = 40, start: int = 0) -> list[bytes]:
    return [f"{i:08d} ".encode() + b"x" * (width - 9) for i in range(start, start + count)]


def chunks_of(lines: list[bytes], size: int, stream: Stream = Stream.STDOUT) -> list[Chunk]:
    data = b"".join(line + b"\n" for line in lines)
    return [Chunk(data[i : i + size], stream) for i in range(0, len(data), size)]


class SlowSink(RecordingSink):
    def __init__(self, delay: float, *, stalled_until: float = 0.0) -> None:
        super().__init__()
        self.delay = delay
        self.stalled_until = stalled_until
        self.shipped_at: list[float] = []

    async def ship(self, batch: Batch) -> None:
        if trio.current_time() < self.stalled_until:
            await trio.sleep_until(self.stalled_until)
        await trio.sleep(self.delay)
        self.batches.append(batch.text_lines())
        self.shipped_at.append(trio.current_time())


class BrokenCounter:
    """A metric that raises on its third use, as ``Counter.inc`` does for a negative amount."""

    def __init__(self) -> None:
        self.calls = 0

    def inc(self, amount: float = 1) -> None:
        self.calls += 1
        if self.calls == 3:
            raise ValueError("Counters can only be incremented by non-negative amounts.")


async def test_an_exception_in_the_shipper_ends_the_job_with_an_outcome(autojump_clock, tmp_path):
    metrics = RunnerMetrics().logs
    metrics.batches_shipped = BrokenCounter()  # type: ignore[assignment]
    sink = SlowSink(1.0)
    with trio.fail_after(1000):
        outcome = await run_job(
            JOB,
            executor=ScriptedExecutor(chunks_of(numbered(3000), 4000)),
            sink=sink,
            settings=settings(tmp_path),
            metrics=metrics,
        )
    assert outcome.outcome is Outcome.FAILED
    assert "non-negative" in outcome.message
    assert sink.outcomes == [outcome]
    # The runner's own spool directory keeps only its lock; every job's spool is gone.
    assert not list((tmp_path / "spool").glob(f"*/{DIR_PREFIX}*"))


async def test_a_spool_that_cannot_be_read_back_releases_the_reader_at_once(
    autojump_clock, tmp_path, monkeypatch
):
    real_read = spool_module.Spool._read_sync
    broken: list[bool] = []

    def read_once_broken(self):
        if not broken:
            broken.append(True)
            raise SpoolError(errno.EIO, "spool record does not read back intact")
        return real_read(self)

    monkeypatch.setattr(spool_module.Spool, "_read_sync", read_once_broken)
    lines = numbered(8000)
    sink = SlowSink(0.1, stalled_until=20.0)
    job_settings = settings(tmp_path, job_log_spool_size=64 * 1024, log_stall_timeout=80.0)
    outcome = await run_job(
        JOB, executor=ScriptedExecutor(chunks_of(lines, 4000)), sink=sink, settings=job_settings
    )
    assert broken
    markers = [MARKER.fullmatch(b) for b in sink.bodies() if MARKER.fullmatch(b)]
    assert markers and all("could not be read back" in m[4] for m in markers)
    # The reader was never held until the stall deadline: nothing dropped for a stall.
    assert "stalled" not in outcome.message
    assert sink.shipped_at[-1] < 80.0


async def test_lines_left_when_the_final_flush_ends_are_marked_in_the_log_per_stream(
    autojump_clock, tmp_path
):
    out = numbered(800)
    err = [b"QRS %d" % i for i in range(300)]
    pairs = itertools.zip_longest(chunks_of(out, 4000), chunks_of(err, 400, Stream.STDERR))
    chunks = [c for pair in pairs for c in pair if c is not None]
    sink = SlowSink(6.0)
    job_settings = settings(tmp_path, log_flush_max_time=40.0)
    outcome = await run_job(JOB, executor=ScriptedExecutor(chunks), sink=sink, settings=job_settings)
    bodies = sink.bodies()
    last = [MARKER.fullmatch(b.split("] ", 1)[1]) for b in sink.batches[-1]]
    assert last and all(last), sink.batches[-1]
    by_stream = {m[3]: int(m[1]) for m in last if m is not None}
    shipped_out = [b for b in bodies if b[:8].isdigit()]
    shipped_err = [b for b in bodies if b.startswith("QRS ")]
    assert by_stream["stdout"] == len(out) - len(shipped_out)
    assert by_stream.get("stderr", 0) == len(err) - len(shipped_err)
    assert f"{sum(by_stream.values())} log lines could not be delivered" in outcome.message
    assert sink.outcomes == [outcome]


async def test_a_severed_streams_unfinished_line_is_shipped_cut(autojump_clock, tmp_path):
    sink = SlowSink(0.0)
    severed = ExitResult(ExitKind.SEVERED, message="the exec stream was severed")
    await run_job(
        JOB,
        executor=ScriptedExecutor([Chunk(b"whole\nhalf a li")], severed),
        sink=sink,
        settings=settings(tmp_path),
    )
    bodies = sink.bodies()
    assert bodies[0] == "whole"
    assert bodies[1] == "half a li" + CUT_SUFFIX.decode()
    assert "severed" in bodies[2]


async def test_an_exited_commands_unfinished_line_is_shipped_whole(autojump_clock, tmp_path):
    sink = SlowSink(0.0)
    await run_job(
        JOB, executor=ScriptedExecutor([Chunk(b"no newline")]), sink=sink, settings=settings(tmp_path)
    )
    assert sink.bodies() == ["no newline"]
