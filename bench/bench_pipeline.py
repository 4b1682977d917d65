"""Pipeline figures from one run.

1. Throughput of the drain (split, outcome-variable scan, masking, prefix, batching) for
   100-byte lines fed in 32 KiB chunks, next to bare ``bytes.split`` over the same input
   measured in the same run. The ratio is the figure.
2. Peak memory held by one job whose sink stalls, as a multiple of ``log_max_size``.

Run: ``just bench`` or ``.venv/bin/python bench/bench_pipeline.py``.
"""

from __future__ import annotations

import math
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import trio
import trio.testing

from trunner.contracts import Stream
from trunner.executors.base import ExitResult
from trunner.job import run_job
from trunner.logs import spool
from trunner.logs.batch import Batch
from trunner.logs.job_log import JobLog
from trunner.logs.settings import LogSettings
from trunner.models import JobOutcome, JobVariable, RunnerJob

TOTAL_BYTES = 200 * 1024 * 1024
CHUNK = 32 * 1024
LINE = b"0123456789" * 9 + b"abcdefghi\n"  # 100 bytes with its newline


def make_input() -> list[bytes]:
    data = LINE * (TOTAL_BYTES // len(LINE))
    return [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]


def bare_split(chunks: list[bytes]) -> float:
    start = time.perf_counter()
    lines = 0
    for chunk in chunks:
        lines += len(chunk.split(b"\n"))
    return time.perf_counter() - start


class DiscardingSink:
    def __init__(self) -> None:
        self.lines = 0

    async def ship(self, batch: Batch) -> None:
        self.lines += batch.line_count

    async def report(self, outcome: JobOutcome) -> None:
        return None


def drain_seconds(
    chunks: list[bytes], job: RunnerJob, settings: LogSettings | None = None
) -> tuple[float, int]:
    """The job log's tasks (reader's channel send, drain, hand-off channel, shipper) carrying
    ``chunks`` of stdout into a sink that takes every batch at once; seconds and lines shipped."""
    sink = DiscardingSink()

    async def main() -> float:
        job_log = JobLog(job, sink, settings or LogSettings(job_log_buffer="memory"), worker="1")

        async def read() -> None:
            for chunk in chunks:
                job_log.feed(Stream.STDOUT, chunk)
                await job_log.wait_for_room()

        start = time.perf_counter()
        await job_log.run(read)
        return time.perf_counter() - start

    return trio.run(main), sink.lines


def pipeline_rate(chunks: list[bytes], job: RunnerJob) -> tuple[float, int]:
    return drain_seconds(chunks, job)


class StalledSink:
    async def ship(self, batch: Batch) -> None:
        await trio.sleep(math.inf)

    async def report(self, outcome: JobOutcome) -> None:
        return None


class Firehose:
    name = "firehose"

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    def check_job(self, job: RunnerJob) -> list[str]:
        return []

    async def run(self, job: RunnerJob, output) -> ExitResult:  # type: ignore[no-untyped-def]
        for i, chunk in enumerate(self.chunks):
            output.feed(Stream.STDOUT if i % 2 else Stream.STDERR, chunk)
            await output.wait_for_room()
            if i % 64 == 0:
                await trio.lowlevel.checkpoint()
        return ExitResult.exited(0)


async def _inline(fn: Callable[..., Any], *args: Any) -> Any:
    await trio.lowlevel.checkpoint()
    return fn(*args)


def peak_memory_multiple(chunks: list[bytes], log_max_size: int) -> float:
    """On a virtual clock, so spool file operations run inline (the clock would jump while a
    worker thread writes)."""
    settings = LogSettings(
        job_pod_log_max_size=log_max_size,
        log_flush_timeout=5.0,
        job_outcome_timeout=1.0,
        job_log_spool_dir=tempfile.mkdtemp(prefix="bench-spool-"),
    )
    spool.offload = _inline

    async def main() -> None:
        await run_job(RunnerJob(id="bench"), executor=Firehose(chunks), sink=StalledSink(), settings=settings)

    tracemalloc.start()
    baseline = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    peak = tracemalloc.get_traced_memory()[1] - baseline
    tracemalloc.stop()
    return peak / log_max_size


def main() -> None:
    chunks = make_input()
    megabytes = sum(map(len, chunks)) / 1e6
    lines = megabytes * 1e6 / len(LINE)
    split_seconds = min(bare_split(chunks) for _ in range(3))
    plain_seconds, shipped = min(pipeline_rate(chunks, RunnerJob(id="1")) for _ in range(2))
    assert shipped == lines, (shipped, lines)
    secrets = (
        JobVariable("TOKEN", "s3cr3t-token-value", sensitive=True),
        JobVariable("PW", "hunter22", sensitive=True),
    )
    masked_seconds, _ = pipeline_rate(chunks, RunnerJob(id="1", variables=secrets))
    print(f"input: {megabytes:.0f} MB, {lines:,.0f} lines of 100 bytes, fed in {CHUNK // 1024} KiB chunks")
    print(
        f"bare bytes.split        {megabytes / split_seconds:8.0f} MB/s {lines / split_seconds:12,.0f} lines/s"
    )
    for label, seconds in (("pipeline", plain_seconds), ("pipeline, 2 secrets", masked_seconds)):
        print(
            f"{label:<22}  {megabytes / seconds:8.0f} MB/s {lines / seconds:12,.0f} lines/s"
            f"   ratio to bare split {split_seconds / seconds:.2f} (target >= 0.10)"
        )
    memory_chunks = chunks[: (100 * 1024 * 1024) // CHUNK]
    for size in (256 * 1024, 1_000_000):
        multiple = peak_memory_multiple(memory_chunks, size)
        print(
            f"peak memory, 100 MB into a stalled sink, log_max_size={size:>9,}: "
            f"{multiple:.2f} x log_max_size (target <= 4, seed design 6)"
        )


if __name__ == "__main__":
    main()
