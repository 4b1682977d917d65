"""Reading jobs from YAML or JSON files (the Go runner's ``test -f job.yaml`` schema)."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from trunner import wire
from trunner.models import RunnerJob, validate_job


class JobFileError(ValueError):
    """A job file that cannot be run; the message names the file and each bad field."""


def parse_job(text: str, source: str) -> RunnerJob:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise JobFileError(f"{source}: not valid YAML or JSON: {exc}") from None
    try:
        job = wire.structure(data, RunnerJob, what=source, converter=wire.strict)
    except wire.WireError as exc:
        raise JobFileError(str(exc)) from None
    problems = validate_job(job)
    if problems:
        raise JobFileError(f"{source}: " + "; ".join(problems))
    return job


def load_job(path: str) -> RunnerJob:
    """Load a job from ``path``, or from standard input when ``path`` is ``-``."""
    if path == "-":
        return parse_job(sys.stdin.read(), "<stdin>")
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise JobFileError(f"{path}: cannot read job file: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise JobFileError(f"{path}: not a UTF-8 text file") from None
    return parse_job(text, path)


JOB_SUFFIXES = (".yaml", ".yml", ".json")


def job_files(directory: str) -> list[Path]:
    folder = Path(directory)
    if not folder.is_dir():
        raise JobFileError(f"{directory}: not a directory")
    return sorted(p for p in folder.iterdir() if p.suffix in JOB_SUFFIXES and p.is_file())
