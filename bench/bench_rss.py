"""The job log's memory bound, measured from outside: peak VmRSS of the runner process.

The runner is ``trunner``'s API mode (what ``trunner run`` runs) in a child process, with the
default settings except ``job-pod-log-max-size`` = ``M`` (256 KB), so each job has the default
64 MiB spool; bench_api's in-process executor stands in for the pods, so that the figure is the
runner's own. The OpsLevel double runs here; every ``runnerAppendJobLog`` hangs. N jobs start
at once and print for ``--flood`` seconds (or their fixed output), in one of these shapes:

    lines100    100-byte lines as fast as they go
    lines1      1-byte lines as fast as they go
    line50mb    one 50 MB line (cut into marked pieces)
    outvar900k  a 900 KB multi-line outcome variable of 20-byte lines
    secret1m    100-byte lines, the job has one 1 MiB sensitive variable
    secrets500  100-byte lines, the job has 500 sensitive variables of 32 bytes

For each, (peak - before) / (N x M), where "before" is the idle runner's VmRSS; the growth per
job from N = 4 to N = 16, ((peak16 - peak4) / 12) / M, is the part the README's formula covers.

    python bench/bench_rss.py [--jobs 1,4,16,64] [--shapes lines100,lines1,...] [--flood 4]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_api

from tests.doubles.opslevel import OpsLevelDouble, Stall, job_payload

M = 256_000
SHAPES = ("lines100", "lines1", "line50mb", "outvar900k", "secret1m", "secrets500")


def job_for(shape: str, job_id: str, start: float, flood: float) -> dict[str, Any]:
    variables: list[dict[str, Any]] = []
    command = f"flood {start:.3f} {flood:g} 100"
    if shape == "lines1":
        command = f"flood {start:.3f} {flood:g} 2"
    elif shape == "line50mb":
        command = f"longline {start:.3f} {50_000_000}"
    elif shape == "outvar900k":
        command = f"outvar {start:.3f} {900_000} 20"
    elif shape == "secret1m":
        variables = [{"key": "BIG", "value": "s" * (1 << 20), "sensitive": True, "scope": None}]
    elif shape == "secrets500":
        variables = [
            {"key": f"S{i}", "value": f"{i:04d}" + "k" * 28, "sensitive": True, "scope": None}
            for i in range(500)
        ]
    return job_payload(job_id, [command], variables=variables)


async def measure(shape: str, jobs: int, flood: float) -> dict[str, float]:
    spool_root = Path(tempfile.mkdtemp(prefix="bench-rss-"))

    async def run(double: OpsLevelDouble) -> dict[str, float]:
        env = bench_api.runner_env(
            double, jobs, M, OPSLEVEL_LOG_FLUSH_TIMEOUT="3", OPSLEVEL_JOB_LOG_SPOOL_DIR=str(spool_root)
        )
        process = await bench_api.start_child("api", env)
        await bench_api.until(
            double, lambda: len(double.calls_to("RunnerGetPendingJob")) >= 5, 60, "the runner to poll"
        )
        await trio.sleep(2)
        before = bench_api.proc_status(process.pid, "VmRSS")
        double.inject(Stall(), operation="RunnerAppendJobLog", times=None)
        claim = 3 + jobs * 0.1
        start = time.time() + claim
        for k in range(jobs):
            double.add_job(job_for(shape, f"rss-{k}", start, flood))
        await bench_api.until(double, lambda: len(double.outcomes) == jobs, 900, "the jobs to end")
        peak = bench_api.proc_status(process.pid, "VmHWM")
        await bench_api.stop(process)
        return {"before": before, "peak": peak}

    try:
        result: dict[str, float] = await bench_api.with_double(run)
    finally:
        shutil.rmtree(spool_root, ignore_errors=True)
    return result


async def main(args: argparse.Namespace) -> None:
    print(
        f"runner VmRSS, appends stalled, default settings (64 MiB spool per job), M = {M:,};"
        f" (peak - before) / (N x M)"
    )
    for shape in args.shapes:
        peaks: dict[int, float] = {}
        row = []
        for jobs in args.jobs:
            m = await measure(shape, jobs, args.flood)
            peaks[jobs] = m["peak"]
            grown = m["peak"] - m["before"]
            row.append(f"N={jobs}: {grown / 1e6:6.1f} MB = {grown / (jobs * M):5.2f} x")
        marginal = ""
        if 4 in peaks and 16 in peaks:
            per_job = (peaks[16] - peaks[4]) / 12
            marginal = f"; per job from N=4 to 16: {per_job / 1e6:.2f} MB = {per_job / M:.2f} x M"
        print(f"  {shape:<11} " + ", ".join(row) + marginal, flush=True)


def entry() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=lambda text: [int(n) for n in text.split(",")], default=[1, 4, 16, 64])
    parser.add_argument("--shapes", type=lambda text: text.split(","), default=list(SHAPES))
    parser.add_argument("--flood", type=float, default=4.0, help="seconds each flooding job prints")
    trio.run(main, parser.parse_args())


if __name__ == "__main__":
    entry()
