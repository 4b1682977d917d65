"""How the checks every job goes through on the event loop scale with its number of files.

For jobs of 1,000 to 40,000 files (and as many variables): the time of ``validate_job`` (the
local executor's and job files' check) and of the Kubernetes executor's ``job_problems``, per
file, as a ratio against the 1,000-file job in the same run. Linear checks stay near 1.0 (a
quadratic one grows with the number of files).

    python bench/bench_job_checks.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trunner.executors.kubernetes.podspec import job_problems  # noqa: E402
from trunner.models import JobFile, JobVariable, RunnerJob, validate_job  # noqa: E402

SIZES = (1_000, 10_000, 40_000)


def job(files: int) -> RunnerJob:
    return RunnerJob(
        id="1",
        image="alpine",
        commands=("true",),
        files=tuple(JobFile(f"file-{i}", "x") for i in range(files)),
        variables=tuple(JobVariable(f"V{i}", "v", sensitive=i % 2 == 0) for i in range(files)),
    )


def best_seconds(check: Callable[[RunnerJob], object], subject: RunnerJob, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        check(subject)
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    jobs = {size: job(size) for size in SIZES}
    print("check            files   seconds   per-file ratio to 1,000 files")
    for name, check in (("validate_job", validate_job), ("job_problems", job_problems)):
        seconds = {size: best_seconds(check, jobs[size], args.repeat) for size in SIZES}
        baseline = seconds[SIZES[0]] / SIZES[0]
        for size in SIZES:
            print(f"{name:<14} {size:>7}   {seconds[size]:7.4f}   {seconds[size] / size / baseline:5.2f}")


if __name__ == "__main__":
    main()
