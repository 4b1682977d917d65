"""What the job-log tests share: their settings and the gap marker's pattern."""

from __future__ import annotations

import re
from pathlib import Path

import attrs

from trunner.logs.settings import LogSettings

MARKER = re.compile(r"\[trunner: (\d+) lines \((\d+) bytes\)(?: of (\w+))? dropped: (.*)\]")


def job_log_settings(tmp_path: Path, **overrides: object) -> LogSettings:
    """Small batches and a 64 KiB spool under ``tmp_path``, with ``overrides`` applied."""
    base = LogSettings(
        job_pod_log_max_size=4096,
        job_pod_log_max_interval=5.0,
        job_pod_log_max_line_length=1024,
        job_log_spool_dir=str(tmp_path / "spool"),
        job_log_spool_size=64 * 1024,
        log_stall_timeout=60.0,
        log_flush_timeout=30.0,
        log_flush_max_time=300.0,
        job_outcome_timeout=10.0,
        log_ship_retry_timeout=600.0,
    )
    return attrs.evolve(base, **overrides)
