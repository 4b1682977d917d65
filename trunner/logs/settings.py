"""Settings of the per-job log pipeline."""

from __future__ import annotations

import attrs

from trunner.config import at_most, positive, setting


def _batch_size(value: int) -> str | None:
    if value <= 0:
        return "must be greater than 0 (there is no unbounded setting)"
    return None if value >= 1024 else "must be at least 1024 bytes"


def _line_length(value: int) -> str | None:
    return None if value >= 256 else "must be at least 256 bytes"


@attrs.frozen
class LogSettings:
    """Job log pipeline"""

    job_pod_log_max_size: int = setting(
        1_000_000,
        help="Bytes of log text per shipped batch; bounds the memory each job holds (about 4x this).",
        checks=[_batch_size],
    )
    job_pod_log_max_interval: float = setting(
        30.0,
        help="Seconds after which waiting log lines are shipped even if the batch is not full.",
        checks=[positive],
    )
    job_pod_log_max_line_length: int = setting(
        65_536,
        help="Longest line kept whole; longer lines are cut into pieces with visible markers.",
        checks=[_line_length, at_most(16 * 1024 * 1024)],
    )
    log_flush_timeout: float = setting(
        30.0,
        help="Seconds the final flush of a job's log may take before what is left is counted as lost.",
        checks=[positive],
    )
    job_outcome_timeout: float = setting(
        30.0,
        help="Seconds the report of a job's outcome may take (retries included).",
        checks=[positive],
    )
    log_ship_retry_timeout: float = setting(
        60.0,
        help="Seconds one batch may be retried before it is counted as lost.",
        checks=[positive],
    )
