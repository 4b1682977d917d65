"""The scaling decision, pure: how many jobs a runner takes and how many replicas to run."""

from __future__ import annotations


def jobs_per_runner(job_concurrency: int, factor: int) -> int:
    """The ``jobConcurrency`` sent to runnerScale (the Go runner's max(c,1) x max(f,1))."""
    return max(job_concurrency, 1) * max(factor, 1)


def clamp_replicas(recommended: int, minimum: int, maximum: int) -> int:
    return max(minimum, min(maximum, recommended))
