"""``trunner test -f FILE|-``: run one job through the full pipeline and print what it ships."""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Any

import trio

from trunner.cli.commands.common import add_common_arguments, settings_source
from trunner.config import add_settings_arguments
from trunner.executors import registry
from trunner.executors.base import ExecutorUnavailable
from trunner.executors.settings import JobRunSettings
from trunner.job import run_job
from trunner.kube.errors import KubeConfigError
from trunner.local.console import ConsoleSink, console_log_settings
from trunner.local.jobfile import DEFAULT_JOB_FILE, JobFileError, load_job
from trunner.logs.job_log import clear_spool_dir
from trunner.logs.settings import LogSettings
from trunner.models import JobOutcome, Outcome, RunnerJob
from trunner.observability.metrics import RunnerMetrics
from trunner.process import exits


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "test",
        help="Run one job file through the full pipeline and print its log, outcome and outcome variables.",
    )
    parser.add_argument(
        "-f",
        "--file",
        default=".",
        metavar="FILE",
        help=f"Job YAML/JSON file, or - for stdin (default {DEFAULT_JOB_FILE}).",
    )
    parser.add_argument(
        "--executor",
        choices=sorted(registry.SETTINGS_BY_EXECUTOR),
        default="kubernetes",
        help="Where the job runs: kubernetes, in a pod through the kubeconfig or in-cluster config, as the "
        "Go runner's test does; local, as processes on this machine (default kubernetes).",
    )
    add_common_arguments(parser)
    add_settings_arguments(parser, (LogSettings, JobRunSettings, *registry.settings_classes()))
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    source = settings_source(args)
    try:
        job = load_job(args.file)
    except JobFileError as exc:
        print(f"trunner: {exc}", file=sys.stderr)
        return exits.USAGE
    source.check(LogSettings, *registry.executor_settings(args.executor))
    try:
        settings = registry.load_settings(args.executor, source)
    except KubeConfigError as exc:
        print(
            f"trunner: no usable Kubernetes cluster config to run the job in a pod ({exc.where}: "
            f"{exc.problem}); use --executor local to run it on this machine",
            file=sys.stderr,
        )
        return exits.USAGE
    try:
        outcome, signum = trio.run(_run, job, settings, source.get(LogSettings))
    except ExecutorUnavailable as exc:
        print(f"trunner: cannot start the {args.executor} executor: {exc}", file=sys.stderr)
        return exits.FAILED
    if signum is not None:
        print(f"trunner: job canceled by {signal.Signals(signum).name}", file=sys.stderr)
        return exits.for_signal(signum)
    return exits.OK if outcome is Outcome.SUCCESS else exits.FAILED


async def _run(
    job: RunnerJob, settings: registry.ExecutorSettings, log_settings: LogSettings
) -> tuple[Outcome, int | None]:
    """The job's outcome, and the signal that canceled it, if one did."""
    sink = ConsoleSink()
    received: list[int] = []
    outcome: JobOutcome | None = None
    async with registry.open_executor(settings, runner_id="test") as executor, trio.open_nursery() as nursery:
        nursery.start_soon(_cancel_on_signal, nursery.cancel_scope, received)
        await clear_spool_dir(log_settings)
        outcome = await run_job(
            job,
            executor=executor,
            sink=sink,
            settings=console_log_settings(log_settings),
            metrics=RunnerMetrics().logs,
        )
        nursery.cancel_scope.cancel()
    if received or outcome is None:
        return Outcome.CANCELED, received[0] if received else None
    return outcome.outcome, None


async def _cancel_on_signal(scope: trio.CancelScope, received: list[int]) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            received.append(signum)
            scope.cancel()
