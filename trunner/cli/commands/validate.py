"""``trunner validate -f job.yaml`` / ``-c config.yaml``: check a job file or a config file (and
the settings in the environment) without running anything."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from trunner.cli.commands.common import add_common_arguments, settings_source
from trunner.cli.commands.run import setting_groups
from trunner.config import ConfigError, SettingsSource
from trunner.executors import registry
from trunner.executors.kubernetes import podspec
from trunner.executors.local import LocalExecutor
from trunner.executors.settings import JobRunSettings
from trunner.local.jobfile import JobFileError, load_job
from trunner.models import RunnerJob
from trunner.process import exits

GO_TOLERATED = {
    "--job-concurrency": "the Go runner runs 1 job at a time for a value below 1",
    "--log-level": "the Go runner logs at INFO for a level it does not know",
    "--log-format": "the Go runner writes JSON for any format but TEXT",
    "--poll-interval": "the Go runner polls without pause for 0",
    "--job-pod-log-max-size": "the Go runner ships every line on its own for 0",
}
"""Values the Go runner starts with and trunner refuses: what the Go runner does with each."""
MISSING_CONFIG_FILE = "config file not found"


def go_note(problem: str) -> str:
    """``problem`` with what the Go runner would do instead, where it would start regardless."""
    flag = problem.split(" ", 1)[0]
    if flag in GO_TOLERATED:
        return f"{problem} ({GO_TOLERATED[flag]}; trunner refuses to start)"
    if problem.endswith(MISSING_CONFIG_FILE):
        return (
            f"{problem} (the Go runner creates it empty and starts with defaults; trunner refuses to start)"
        )
    return problem


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "validate",
        help="Check job files and a config file without running anything.",
        description="Check job files (-f, repeatable) and a config file (-c) with the settings the "
        "environment gives, and list every problem. Nothing is run or contacted.",
    )
    parser.add_argument(
        "-f",
        "--file",
        action="append",
        default=[],
        metavar="FILE",
        help="Job YAML/JSON file, or - for stdin.",
    )
    parser.add_argument(
        "--executor",
        choices=sorted(registry.SETTINGS_BY_EXECUTOR),
        default="local",
        help="Executor the job files must be runnable on (default local).",
    )
    add_common_arguments(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if not args.file and args.config is None:
        print("trunner validate: nothing to check: give -f JOB_FILE and/or -c CONFIG_FILE", file=sys.stderr)
        print("Run 'trunner validate --help' for usage.", file=sys.stderr)
        return exits.USAGE
    failed = False
    source: SettingsSource | None = None
    if args.config is not None:
        try:
            source = settings_source(args)
            _check_config(source)
        except ConfigError as exc:
            failed = True
            print(f"{args.config}: invalid configuration:", file=sys.stderr)
            for problem in exc.problems:
                print(f"  - {go_note(problem)}", file=sys.stderr)
        else:
            print(f"{source.source_name}: valid configuration")
    for path in args.file:
        try:
            job = load_job(path)
        except JobFileError as exc:
            failed = True
            print(f"trunner validate: {exc}", file=sys.stderr)
            continue
        problems = _executor_problems(job, args.executor, source)
        if problems:
            failed = True
            print(
                f"{path}: cannot run on the {args.executor} executor: " + "; ".join(problems), file=sys.stderr
            )
        else:
            print(f"{path}: valid job {job.id} ({_counts(job)})")
    return exits.FAILED if failed else exits.OK


def _check_config(source: SettingsSource) -> None:
    problems: list[str] = []
    try:
        source.check_given(*setting_groups())
    except ConfigError as exc:
        problems.extend(exc.problems)
    try:
        registry.job_pod_config(source)
    except ConfigError as exc:
        problems.extend(p for p in exc.problems if p not in problems)
    if problems:
        raise ConfigError(problems)


def _executor_problems(job: RunnerJob, executor: str, source: SettingsSource | None) -> list[str]:
    if executor == "local":
        settings = source.get(JobRunSettings) if source is not None else JobRunSettings()
        return LocalExecutor(settings, base_env={}).check_job(job)
    return podspec.job_problems(job)


def _counts(job: RunnerJob) -> str:
    def count(n: int, what: str) -> str:
        return f"{n} {what}{'' if n == 1 else 's'}"

    parts = [count(len(job.commands), "command")]
    if job.init_commands:
        parts.append(count(len(job.init_commands), "init command"))
    parts += [count(len(job.files), "file"), count(len(job.variables), "variable")]
    return ", ".join(parts)
