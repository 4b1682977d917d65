"""API mode figures, each against a baseline measured in the same run.

1. Memory with the append call stalled: 200 jobs print as fast as they can while every
   ``runnerAppendJobLog`` hangs. Peak RSS of the runner process, as
   (peak - idle baseline) / (200 x job-pod-log-max-size), next to the seed PR's 6x.
2. Throughput with a fast API: delivered lines/s across 200 jobs, against the same jobs through
   the same runner and pipeline with a sink that discards (no HTTP, no base64, no JSON).
3. Latency at low volume: time from a line's arrival in the runner to its append call reaching
   the API, p50/p99, as a fraction of ``--job-pod-log-max-interval``.

The runner runs as a child process (``trunner``'s API mode with a synthetic in-process executor
so the figures measure the runner, not 200 shells); the OpsLevel test double runs here.

    python bench/bench_api.py [--jobs 200] [--log-max-size 256000]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import trio
import trio.lowlevel

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from tests.doubles.opslevel import OpsLevelDouble, Stall, job_payload  # noqa: E402
from trunner.config import SettingsSource  # noqa: E402
from trunner.contracts import OutputFeed, Stream  # noqa: E402
from trunner.executors.base import ExitResult  # noqa: E402
from trunner.logs.batch import Batch  # noqa: E402
from trunner.logs.settings import LogSettings  # noqa: E402
from trunner.models import JobOutcome, RunnerJob  # noqa: E402
from trunner.observability.metrics import RunnerMetrics  # noqa: E402
from trunner.opslevel.mode import ApiMode  # noqa: E402
from trunner.runner import ClaimedJob, Runner, RunSettings  # noqa: E402

SEED_RATIO = 6.0
LATENCY_INTERVAL = 1.0
CLAIM_TIME = 20.0
"""Seconds allowed for claiming every flood job before they all start printing at once."""
FLOOD_SECONDS = 8.0

# --- child side: the runner under test ---------------------------------------------------------


class SyntheticExecutor:
    """``flood <start> <seconds> <width>``: from wall-clock time ``start`` (so that every job floods
    at once, whatever order they were claimed in), lines of ``width`` bytes as fast as possible;
    ``count <start> <lines> <width>``: from ``start``, that many lines as fast as possible;
    ``tick <lines> <every>``: one line carrying the wall-clock time every ``every`` seconds;
    ``longline <start> <bytes>``: one line of that many bytes; ``outvar <start> <bytes> <width>``:
    a multi-line outcome variable of that many bytes in lines of ``width``."""

    name = "synthetic"

    def check_job(self, job: RunnerJob) -> list[str]:
        return []

    async def run(self, job: RunnerJob, output: OutputFeed) -> ExitResult:
        verb, *words = job.commands[0].split()
        if verb in ("flood", "count", "longline", "outvar"):
            await trio.sleep(max(0.0, float(words.pop(0)) - time.time()))
        if verb == "longline":
            await _long_line(output, int(words[0]))
            return ExitResult.exited(0)
        if verb == "outvar":
            await _outcome_variable(output, int(words[0]), int(words[1]))
            return ExitResult.exited(0)
        first, second = words
        if verb == "tick":
            for _ in range(int(first)):
                output.feed(Stream.STDOUT, f"tick {time.time_ns()}\n".encode())
                await trio.sleep(float(second))
            return ExitResult.exited(0)
        width = int(second)
        per_chunk = max(1, 65536 // width)
        chunk = (b"y" * (width - 1) + b"\n") * per_chunk
        if verb == "flood":
            deadline = trio.current_time() + float(first)
            while trio.current_time() < deadline:
                output.feed(Stream.STDOUT, chunk)
                await output.wait_for_room()
                await trio.lowlevel.checkpoint()
        else:
            remaining = int(first)
            while remaining > 0:
                lines = min(per_chunk, remaining)
                output.feed(Stream.STDOUT, chunk[: lines * width])
                remaining -= lines
                await output.wait_for_room()
                await trio.lowlevel.checkpoint()
        return ExitResult.exited(0)


async def _long_line(output: OutputFeed, size: int) -> None:
    piece = b"z" * 65536
    for _ in range(size // len(piece)):
        output.feed(Stream.STDOUT, piece)
        await output.wait_for_room()
    output.feed(Stream.STDOUT, b"\n")
    await output.wait_for_room()


async def _outcome_variable(output: OutputFeed, size: int, width: int) -> None:
    line = b"v" * (width - 1) + b"\n"
    body = line * (size // width)
    output.feed(Stream.STDOUT, b"::start-multiline-outcome-var big\n")
    for start in range(0, len(body), 65536):
        output.feed(Stream.STDOUT, body[start : start + 65536])
        await output.wait_for_room()
    output.feed(Stream.STDOUT, b"::end-multiline-outcome-var\n")
    await output.wait_for_room()


@asynccontextmanager
async def open_synthetic(runner_id: str) -> AsyncIterator[SyntheticExecutor]:
    yield SyntheticExecutor()


async def child_api() -> int:
    source = SettingsSource(environ=os.environ)
    mode = ApiMode(source, source.get(RunSettings), open_executor=open_synthetic)
    return await mode.serve()


class CountingSink:
    def __init__(self, totals: dict[str, int]) -> None:
        self._totals = totals

    async def ship(self, batch: Batch) -> None:
        self._totals["lines"] += batch.line_count

    async def report(self, outcome: JobOutcome) -> None:
        self._totals["outcomes"] += 1


class ListSource:
    def __init__(self, jobs: list[RunnerJob], totals: dict[str, int]) -> None:
        self._jobs = jobs
        self._totals = totals

    async def claim(self) -> ClaimedJob | None:
        await trio.lowlevel.checkpoint()
        return ClaimedJob(self._jobs.pop(), CountingSink(self._totals)) if self._jobs else None


async def child_baseline(jobs: int, lines: int) -> None:
    source = SettingsSource(environ=os.environ)
    totals = {"lines": 0, "outcomes": 0}
    start = time.time() + 2
    command = f"count {start:.3f} {lines} 100"
    runner = Runner(
        source=ListSource([RunnerJob(id=f"b-{k}", commands=(command,)) for k in range(jobs)], totals),
        executor=SyntheticExecutor(),
        settings=source.get(RunSettings),
        log_settings=source.get(LogSettings),
        metrics=RunnerMetrics(),
        runner_id="baseline",
    )
    await runner.serve()
    print(json.dumps({"lines": totals["lines"], "seconds": time.time() - start}))


# --- parent side --------------------------------------------------------------------------------


def proc_status(pid: int, field: str) -> int:
    """A ``/proc/<pid>/status`` size field, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def runner_env(double: OpsLevelDouble, jobs: int, log_max_size: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPSLEVEL_", "FAKTORY_", "RUNNER_"))}
    env.update(
        OPSLEVEL_API_URL=double.url,
        OPSLEVEL_API_TOKEN=double.token,
        OPSLEVEL_METRICS_PORT="0",
        OPSLEVEL_POLL_INTERVAL="0.1",
        OPSLEVEL_JOB_CONCURRENCY=str(jobs),
        OPSLEVEL_JOB_POD_LOG_MAX_SIZE=str(log_max_size),
        OPSLEVEL_LOG_LEVEL="ERROR",
        PYTHONPATH=str(ROOT),
    )
    env.update(extra)
    return env


async def start_child(mode: str, env: dict[str, str], *extra: str) -> trio.Process:
    # The runner's own log is left out: with appends stalled it reports every lost batch.
    return await trio.lowlevel.open_process(
        [sys.executable, __file__, "--child", mode, *extra],
        env=env,
        stdin=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def stop(process: trio.Process) -> None:
    process.send_signal(signal.SIGTERM)
    with trio.move_on_after(60):
        await process.wait()
        return
    process.kill()
    await process.wait()


async def until(double: OpsLevelDouble, predicate: Callable[[], bool], timeout: float, what: str) -> None:
    with trio.move_on_after(timeout):
        await double.wait_until(predicate)
        return
    raise SystemExit(f"bench: timed out waiting for {what}")


async def with_double(fn: Callable[[OpsLevelDouble], Any], **double_options: Any) -> Any:
    double = OpsLevelDouble(record_bodies=False, keep_lines=False, **double_options)
    async with trio.open_nursery() as nursery:
        await nursery.start(double.serve)
        result = await fn(double)
        nursery.cancel_scope.cancel()
    return result


async def measure_memory(jobs: int, log_max_size: int) -> dict[str, float]:
    async def run(double: OpsLevelDouble) -> dict[str, float]:
        env = runner_env(double, jobs, log_max_size, OPSLEVEL_LOG_FLUSH_TIMEOUT="3")
        process = await start_child("api", env)
        await until(
            double, lambda: len(double.calls_to("RunnerGetPendingJob")) >= 5, 60, "the runner to poll"
        )
        await trio.sleep(2)
        idle = proc_status(process.pid, "VmRSS")
        double.inject(Stall(), operation="RunnerAppendJobLog", times=None)
        start = time.time() + CLAIM_TIME
        for k in range(jobs):
            double.add_job(job_payload(f"mem-{k}", [f"flood {start:.3f} {FLOOD_SECONDS:g} 100"]))
        await until(double, lambda: len(double.assigned) == jobs, CLAIM_TIME, "every flood job to be claimed")
        await until(double, lambda: len(double.outcomes) == jobs, 600, "the flood jobs to end")
        peak = proc_status(process.pid, "VmHWM")
        await stop(process)
        return {"idle": idle, "peak": peak}

    result: dict[str, float] = await with_double(run)
    return result


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def scrape(port: int, name: str) -> float:
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    )


async def measure_throughput(jobs: int, lines_per_job: int) -> dict[str, float]:
    async def run(double: OpsLevelDouble) -> dict[str, float]:
        port = free_port()
        env = runner_env(double, jobs, 1_000_000, OPSLEVEL_METRICS_PORT=str(port))
        process = await start_child("api", env)
        await until(
            double, lambda: len(double.calls_to("RunnerGetPendingJob")) >= 2, 60, "the runner to poll"
        )
        start = time.time() + CLAIM_TIME
        for k in range(jobs):
            double.add_job(job_payload(f"tp-{k}", [f"count {start:.3f} {lines_per_job} 100"]))
        await until(
            double, lambda: len(double.assigned) == jobs, CLAIM_TIME, "every counting job to be claimed"
        )
        await until(double, lambda: len(double.outcomes) == jobs, 900, "the counting jobs to end")
        seconds = time.time() - start
        dropped = await scrape(port, "trunner_log_lines_dropped_total")
        await stop(process)
        delivered = sum(double.line_counts.values())
        return {"lines": delivered, "dropped": dropped, "seconds": seconds}

    api: dict[str, float] = await with_double(run, decode_lines=False)
    baseline_env = {**os.environ, "OPSLEVEL_JOB_CONCURRENCY": str(jobs), "PYTHONPATH": str(ROOT)}
    baseline_env["OPSLEVEL_LOG_LEVEL"] = "ERROR"
    result = await trio.run_process(
        [sys.executable, __file__, "--child", "baseline", str(jobs), str(lines_per_job)],
        env=baseline_env,
        capture_stdout=True,
    )
    baseline = json.loads(result.stdout)
    return {
        "api_rate": api["lines"] / api["seconds"],
        "api_lines": api["lines"],
        "api_dropped": api["dropped"],
        "baseline_rate": baseline["lines"] / baseline["seconds"],
        "baseline_lines": baseline["lines"],
    }


async def measure_latency(jobs: int, lines_per_job: int, every: float) -> list[float]:
    latencies: list[float] = []

    def on_append(job_id: str, lines: list[str]) -> None:
        now = time.time_ns()
        for line in lines:
            _, found, stamp = line.partition(" tick ")
            if found:
                latencies.append((now - int(stamp)) / 1e9)

    async def run(double: OpsLevelDouble) -> None:
        env = runner_env(double, jobs, 1_000_000, OPSLEVEL_JOB_POD_LOG_MAX_INTERVAL=str(LATENCY_INTERVAL))
        process = await start_child("api", env)
        await until(
            double, lambda: len(double.calls_to("RunnerGetPendingJob")) >= 2, 60, "the runner to poll"
        )
        for k in range(jobs):
            double.add_job(job_payload(f"lat-{k}", [f"tick {lines_per_job} {every}"]))
        await until(double, lambda: len(double.outcomes) == jobs, 300, "the ticking jobs to end")
        await stop(process)

    await with_double(run, on_append=on_append)
    return latencies


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def main(args: argparse.Namespace) -> None:
    jobs, size = args.jobs, args.log_max_size
    print(f"API mode bench: {jobs} concurrent jobs, job-pod-log-max-size {size} bytes")

    memory = await measure_memory(jobs, size)
    ratio = (memory["peak"] - memory["idle"]) / (jobs * size)
    print(
        f"  memory, append stalled: idle RSS {memory['idle'] / 1e6:.0f} MB, peak RSS {memory['peak'] / 1e6:.0f} MB;"
        f" (peak - idle) / ({jobs} x {size}) = {ratio:.2f}x   (seed PR #303: {SEED_RATIO:.0f}x;"
        f" {ratio / SEED_RATIO:.2f} of it)"
    )

    tp = await measure_throughput(jobs, args.lines_per_job)
    print(
        f"  throughput, fast API: {tp['api_rate']:,.0f} lines/s delivered ({tp['api_lines']:,.0f} lines,"
        f" {tp['api_dropped']:,.0f} dropped);"
        f" same jobs with a discarding sink: {tp['baseline_rate']:,.0f} lines/s"
        f" ({tp['baseline_lines']:,.0f} lines); ratio {tp['api_rate'] / tp['baseline_rate']:.2f}"
    )

    latencies = await measure_latency(20, 40, 0.25)
    p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
    print(
        f"  latency, 20 jobs x 4 lines/s, max-interval {LATENCY_INTERVAL:g} s: line arrival -> append"
        f" p50 {p50 * 1000:.0f} ms ({p50 / LATENCY_INTERVAL:.2f} x interval),"
        f" p99 {p99 * 1000:.0f} ms ({p99 / LATENCY_INTERVAL:.2f} x interval), {len(latencies)} lines"
    )


def entry() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--log-max-size", type=int, default=256_000)
    parser.add_argument("--lines-per-job", type=int, default=20_000)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        if args.child[0] == "api":
            raise SystemExit(trio.run(child_api))
        trio.run(child_baseline, int(args.child[1]), int(args.child[2]))
        return
    trio.run(main, args)


if __name__ == "__main__":
    entry()
