"""Settings of the per-job log pipeline."""

from __future__ import annotations

import tempfile

import attrs

from trunner.config import at_most, one_of, positive, setting

MIB = 1024 * 1024


def _batch_size(value: int) -> str | None:
    if value <= 0:
        return "must be greater than 0 (there is no unbounded setting)"
    return None if value >= 1024 else "must be at least 1024 bytes"


def _spool_size(value: int) -> str | None:
    if value <= 0:
        return "must be greater than 0 (for no spool at all, set --job-log-buffer memory)"
    return None if value >= 64 * 1024 else "must be at least 65536 bytes"


def _spool_dir(value: str) -> str | None:
    return None if value.strip() else "must name a directory"


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
    job_log_buffer: str = setting(
        "spool",
        help="Where a job's log batches wait when the sink is slower than the job: 'spool' (memory, then a "
        "file of up to --job-log-spool-size per job) or 'memory' (two batches; then the job's output waits).",
        checks=[one_of("spool", "memory")],
    )
    job_log_spool_size: int = setting(
        64 * MIB,
        help="Bytes of disk one job's log spool may use; when it is full the job's output waits.",
        checks=[_spool_size],
    )
    job_log_spool_dir: str = setting(
        tempfile.gettempdir(),
        help="Directory in which the runner makes its own private spool directory (trunner-spool-<random>, "
        "mode 0700) for the job log spools; it must belong to this user or root. Leftovers of a runner "
        "that died are removed at start-up.",
        checks=[_spool_dir],
    )
    log_stall_timeout: float = setting(
        60.0,
        help="Seconds a job's output may wait for room with no batch delivered before its lines are "
        "dropped (counted and marked) until delivery resumes.",
        checks=[positive],
    )
    log_flush_timeout: float = setting(
        60.0,
        help="Seconds the final flush of a job's log may go without a batch delivered before what is left "
        "is counted as lost (as long as one append may take: the default --api-timeout); also the flush's "
        "limit once the job was canceled by a shutdown.",
        checks=[positive],
    )
    log_flush_max_time: float = setting(
        300.0,
        help="Seconds the final flush of a job's log may take in all, even while it makes progress "
        "(its worker slot stays taken until then).",
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
