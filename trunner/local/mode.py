"""``trunner run --mode local --jobs DIR``: every job file in a folder, through the same
runner, pipeline and executors as the other modes, printed to the console."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from trunner.config import ConfigError, SettingsSource
from trunner.executors import registry
from trunner.local.console import ConsoleSink, console_log_settings
from trunner.local.jobfile import JobFileError, job_files, load_job
from trunner.logs.settings import LogSettings
from trunner.models import Outcome
from trunner.observability.metrics import RunnerMetrics
from trunner.process import exits
from trunner.runner import ClaimedJob, JobRecord, Runner, RunSettings
from trunner.service import Shutdown, executor_name, serve_until_signalled

logger = logging.getLogger("trunner.local")

SETTINGS: tuple[type[Any], ...] = ()


class DirectorySource:
    """Claims each valid job file once; invalid files are reported, not run."""

    def __init__(self, paths: list[Path]) -> None:
        self._paths = list(paths)
        self.invalid: list[tuple[Path, str]] = []

    async def claim(self) -> ClaimedJob | None:
        while self._paths:
            path = self._paths.pop(0)
            try:
                job = load_job(str(path))
            except JobFileError as exc:
                logger.error("skipping %s", exc)
                self.invalid.append((path, str(exc)))
                continue
            return ClaimedJob(job, ConsoleSink(label=path.stem))
        return None


async def serve(source: SettingsSource, args: argparse.Namespace) -> int:
    if not args.jobs:
        raise ConfigError(["--jobs: --mode local needs a folder of job files"])
    try:
        paths = job_files(args.jobs)
    except JobFileError as exc:
        raise ConfigError([f"--jobs: {exc}"]) from None
    settings = source.get(RunSettings)
    name = executor_name(settings.executor, auto="local")
    source.check(LogSettings, *registry.executor_settings(name))
    jobs = DirectorySource(paths)
    async with registry.open_executor(registry.load_settings(name, source), runner_id="local") as executor:
        runner = Runner(
            source=jobs,
            executor=executor,
            settings=settings,
            log_settings=console_log_settings(source.get(LogSettings)),
            metrics=RunnerMetrics(runner_id="local"),
            runner_id="local",
            keep_records=True,
        )
        shutdown = Shutdown()
        records = await serve_until_signalled(runner, shutdown=shutdown)
    print(summary_table(records, jobs.invalid), file=sys.stdout)
    return _exit_status(records, jobs.invalid, shutdown.first_signal)


def _exit_status(records: list[JobRecord], invalid: list[tuple[Path, str]], signum: int | None) -> int:
    """Says on stderr how many jobs did not succeed; non-zero if any did not."""
    failed = sum(1 for record in records if record.outcome.outcome is not Outcome.SUCCESS)
    total = len(records) + len(invalid)
    problems = []
    if failed:
        problems.append(f"{failed} of {total} jobs did not succeed")
    if invalid:
        problems.append(f"{len(invalid)} job file{'s' if len(invalid) > 1 else ''} could not be read")
    if signum is not None:
        problems.append(f"stopped by {signal.Signals(signum).name}")
    if problems:
        print("trunner: " + "; ".join(problems), file=sys.stderr)
    if signum is not None:
        return exits.for_signal(signum)
    return exits.FAILED if problems else exits.OK


def _cell(text: str, width: int = 40) -> str:
    flat = text.replace("\n", "\\n")
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def summary_table(records: list[JobRecord], invalid: list[tuple[Path, str]]) -> str:
    rows = [("job", "outcome", "exit", "seconds", "outcome variables")]
    for record in sorted(records, key=lambda r: r.job.id):
        variables = ", ".join(f"{v.key}={_cell(v.value)}" for v in record.outcome.outcome_variables)
        exit_code = "" if record.outcome.exit_code is None else str(record.outcome.exit_code)
        rows.append(
            (record.job.id, record.outcome.outcome.value, exit_code, f"{record.duration:.1f}", variables)
        )
    for path, _ in invalid:
        rows.append((path.name, "invalid job file", "", "", ""))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
