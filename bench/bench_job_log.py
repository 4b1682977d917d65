"""Job log figures, each next to a baseline measured in the same run.

(a) Delivery with a slow API: one job prints ``--lines`` 100-byte lines as fast as it can while
    each ``runnerAppendJobLog`` takes 0, 50 or 200 ms. Fraction of the lines the API received, and
    the job's wall time (claim to outcome) next to the same job into a discarding sink.
(b) Memory with the append call stalled: N jobs at once print 100-byte or 1-byte lines for a few
    seconds. (peak RSS - idle RSS) / (N x job-pod-log-max-size) of the runner process.
(c) Spool on disk: the most bytes the spool directory held during (b), against N x the budget.

The runner is ``trunner``'s API mode in a child process with bench_api's synthetic executor;
the OpsLevel test double runs here.

    python bench/bench_job_log.py [--lines 200000] [--log-max-size 256000] [--jobs 1,4,16,64,200]
        [--parts ab] [--widths 100,1]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import bench_api  # noqa: E402

from tests.doubles.opslevel import Delay, OpsLevelDouble, Stall, job_payload  # noqa: E402

SPOOL_BUDGET = 1 << 20
"""Per-job spool budget in (b)/(c): small, so that 200 jobs need 200 MiB of disk, not 12.8 GiB."""


def spool_bytes(root: Path) -> int:
    """Bytes of segment files under ``root``; spools come and go while it looks."""
    total = 0
    for directory, _, files in os.walk(root):
        for name in files:
            if name.endswith(".seg"):
                with contextlib.suppress(FileNotFoundError):
                    total += os.stat(os.path.join(directory, name)).st_size
    return total


async def delivery(lines: int, append_seconds: float) -> dict[str, float]:
    async def run(double: OpsLevelDouble) -> dict[str, float]:
        env = bench_api.runner_env(double, 1, 1_000_000)
        process = await bench_api.start_child("api", env)
        await bench_api.until(
            double, lambda: len(double.calls_to("RunnerGetPendingJob")) >= 2, 60, "the runner to poll"
        )
        if append_seconds:
            double.inject(Delay(append_seconds), operation="RunnerAppendJobLog", times=None)
        start = time.time() + 1
        double.add_job(job_payload("slow", [f"count {start:.3f} {lines} 100"]))
        await bench_api.until(double, lambda: len(double.outcomes) == 1, 900, "the job to end")
        seconds = time.time() - start
        await bench_api.stop(process)
        return {"lines": sum(double.line_counts.values()), "seconds": seconds}

    result: dict[str, float] = await bench_api.with_double(run, decode_lines=False)
    return result


async def discarding(lines: int) -> dict[str, float]:
    env = {**os.environ, "OPSLEVEL_JOB_CONCURRENCY": "1", "PYTHONPATH": str(ROOT)}
    env["OPSLEVEL_LOG_LEVEL"] = "ERROR"
    result = await trio.run_process(
        [sys.executable, bench_api.__file__, "--child", "baseline", "1", str(lines)],
        env=env,
        capture_stdout=True,
    )
    baseline: dict[str, float] = json.loads(result.stdout)
    return baseline


async def stalled_memory(jobs: int, width: int, log_max_size: int, flood: float) -> dict[str, float]:
    spool_root = Path(tempfile.mkdtemp(prefix="bench-spool-"))

    async def run(double: OpsLevelDouble) -> dict[str, float]:
        env = bench_api.runner_env(
            double,
            jobs,
            log_max_size,
            OPSLEVEL_LOG_FLUSH_TIMEOUT="3",
            OPSLEVEL_JOB_LOG_SPOOL_SIZE=str(SPOOL_BUDGET),
            OPSLEVEL_JOB_LOG_SPOOL_DIR=str(spool_root),
        )
        process = await bench_api.start_child("api", env)
        await bench_api.until(
            double, lambda: len(double.calls_to("RunnerGetPendingJob")) >= 5, 60, "the runner to poll"
        )
        await trio.sleep(2)
        idle = bench_api.proc_status(process.pid, "VmRSS")
        double.inject(Stall(), operation="RunnerAppendJobLog", times=None)
        claim = 3 + jobs * 0.1
        start = time.time() + claim
        for k in range(jobs):
            double.add_job(job_payload(f"mem-{k}", [f"flood {start:.3f} {flood:g} {width}"]))
        await bench_api.until(
            double, lambda: len(double.assigned) == jobs, claim + 30, "the jobs to be claimed"
        )
        most_spooled = 0

        async def watch_spool() -> None:
            nonlocal most_spooled
            while True:
                most_spooled = max(most_spooled, spool_bytes(spool_root))
                await trio.sleep(0.2)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch_spool)
            await bench_api.until(double, lambda: len(double.outcomes) == jobs, 900, "the jobs to end")
            nursery.cancel_scope.cancel()
        peak = bench_api.proc_status(process.pid, "VmHWM")
        await bench_api.stop(process)
        left = spool_bytes(spool_root)
        shutil.rmtree(spool_root, ignore_errors=True)
        return {"idle": idle, "peak": peak, "spooled": most_spooled, "left": left}

    result: dict[str, float] = await bench_api.with_double(run)
    return result


async def main(args: argparse.Namespace) -> None:
    if "a" in args.parts:
        await delivery_figures(args)
    if "b" in args.parts:
        await memory_figures(args)


async def delivery_figures(args: argparse.Namespace) -> None:
    print(f"job log bench: (a) {args.lines:,} lines of 100 bytes, one job")
    baseline = await discarding(args.lines)
    print(f"  discarding sink: {baseline['lines']:,.0f} lines in {baseline['seconds']:.2f} s")
    for ms in (0, 50, 200):
        got = await delivery(args.lines, ms / 1000)
        print(
            f"  append {ms:3d} ms: delivered {got['lines'] / args.lines:.4f} of the lines"
            f" ({got['lines']:,.0f}); wall {got['seconds']:.2f} s = {got['seconds'] / baseline['seconds']:.2f} x"
            " the discarding sink"
        )


async def memory_figures(args: argparse.Namespace) -> None:
    size = args.log_max_size
    print(f"(b)/(c) append stalled, job-pod-log-max-size {size:,}, spool budget {SPOOL_BUDGET:,} per job")
    for width, label in ((100, "100-byte"), (2, "1-byte")):
        if label.split("-")[0] not in args.widths:
            continue
        for jobs in args.jobs:
            m = await stalled_memory(jobs, width, size, args.flood)
            ratio = (m["peak"] - m["idle"]) / (jobs * size)
            print(
                f"  {label} lines, N={jobs:3d}: idle {m['idle'] / 1e6:.0f} MB, peak {m['peak'] / 1e6:.0f} MB,"
                f" marginal {ratio:.2f} x log_max_size per job; spool peak {m['spooled'] / 1e6:.1f} MB"
                f" = {m['spooled'] / (jobs * SPOOL_BUDGET):.2f} x N x budget, left after exit {m['left']:.0f} B"
            )


def entry() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--log-max-size", type=int, default=256_000)
    parser.add_argument("--flood", type=float, default=6.0, help="seconds each job floods in (b)")
    parser.add_argument(
        "--jobs", type=lambda text: [int(n) for n in text.split(",")], default=[1, 4, 16, 64, 200]
    )
    parser.add_argument("--parts", default="ab", help="which figures: a (delivery), b (memory and spool)")
    parser.add_argument(
        "--widths", type=lambda text: text.split(","), default=["100", "1"], help="line sizes in (b): 100,1"
    )
    trio.run(main, parser.parse_args())


if __name__ == "__main__":
    entry()
