"""What gap markers state: the job's own lines and bytes (trunner's prefix not counted), and
never a loss that may not have happened."""

from __future__ import annotations

import re
from pathlib import Path

import trio

from tests.doubles.executors import Chunk, RecordingSink, ScriptedExecutor
from trunner.contracts import Stream
from trunner.job import run_job
from trunner.logs.batch import Batch
from trunner.logs.settings import LogSettings
from trunner.models import RunnerJob
from trunner.net.retry import ShipError

JOB = RunnerJob(id="10", commands=("true",))
GAP = re.compile(r"\[trunner: (\d+) lines \((\d+) bytes\) of (\w+) dropped: (.*)\]")


def hundred_byte_lines(count: int, start: int = 0) -> bytes:
    return b"".join(b"%08d " % i + b"y" * 90 + b"\n" for i in range(start, start + count))


def settings(tmp_path: Path, **overrides: object) -> LogSettings:
    values: dict[str, object] = {
        "job_pod_log_max_size": 16 * 1024,
        "job_pod_log_max_interval": 5.0,
        "job_log_buffer": "memory",
        "job_log_spool_dir": str(tmp_path / "spool"),
        "log_stall_timeout": 60.0,
        "log_flush_max_time": 1e6,
        "log_ship_retry_timeout": 60.0,
        **overrides,
    }
    return LogSettings(**values)  # type: ignore[arg-type]


def gaps(sink: RecordingSink) -> list[re.Match[str]]:
    return [m for m in map(GAP.fullmatch, sink.bodies()) if m]


class StalledUntil(RecordingSink):
    def __init__(self, until: float) -> None:
        super().__init__()
        self.until = until

    async def ship(self, batch: Batch) -> None:
        if trio.current_time() < self.until:
            await trio.sleep_until(self.until)
        await super().ship(batch)


async def test_a_stall_marker_counts_the_job_s_bytes_not_trunner_s_prefix(autojump_clock, tmp_path):
    chunks = [Chunk(hundred_byte_lines(100, 100 * i), delay=1.0) for i in range(40)]
    chunks.append(Chunk(b"after\n", delay=600.0))
    sink = StalledUntil(300.0)
    job_settings = settings(tmp_path, log_ship_retry_timeout=1000.0)
    await run_job(JOB, executor=ScriptedExecutor(chunks), sink=sink, settings=job_settings)
    found = gaps(sink)
    assert found and all(m[3] == "stdout" for m in found)
    assert sum(int(m[2]) for m in found) == 100 * sum(int(m[1]) for m in found)


async def test_a_lost_batch_s_marker_counts_the_job_s_bytes(autojump_clock, tmp_path):
    def reject_second(batch: Batch, attempt: int) -> ShipError | None:
        return ShipError("rejected", retryable=False) if batch.seq == 1 else None

    chunks = [Chunk(hundred_byte_lines(2000), Stream.STDOUT), Chunk(b"after\n", delay=30.0)]
    sink = RecordingSink(fail=reject_second)
    await run_job(JOB, executor=ScriptedExecutor(chunks), sink=sink, settings=settings(tmp_path))
    (found,) = gaps(sink)
    assert found[4] == "log delivery failed: rejected"
    assert int(found[2]) == 100 * int(found[1])
