"""Reading jobs from YAML or JSON files (the Go runner's ``test -f job.yaml`` schema)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import yaml

from trunner import wire
from trunner.local.gojob import go_job_view
from trunner.models import RunnerJob, validate_job

log = logging.getLogger("trunner.jobfile")

DEFAULT_JOB_FILE = "./job.yaml"
"""What ``test`` reads without ``-f`` (or with the Go runner's ``-f .``)."""


class JobFileError(ValueError):
    """A job file that cannot be run; the message names the file and each bad field."""


MAX_JOB_FILE_BYTES = 4 * 1024 * 1024
"""Larger than any job the API sends (a pod's files go into one ConfigMap of at most 1 MiB, and
the commands into one argument the kernel caps at 128 KiB); parsing stays well under a second."""

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's loader where PyYAML was built with it (about 5x faster), else the pure-Python one."""


def parse_job(text: str, source: str) -> RunnerJob:
    try:
        data = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        raise JobFileError(f"{source}: not valid YAML or JSON: {exc}") from None
    data, warnings = go_job_view(data)
    for warning in warnings:
        log.warning("%s: %s", source, warning)
    try:
        job = wire.structure(data, RunnerJob, what=source, converter=wire.strict)
    except wire.WireError as exc:
        raise JobFileError(str(exc)) from None
    problems = validate_job(job)
    if problems:
        raise JobFileError(f"{source}: " + "; ".join(problems))
    return job


def load_job(path: str) -> RunnerJob:
    """Load a job from ``path``, or from standard input when ``path`` is ``-`` (``.`` is
    ``./job.yaml``, as in the Go runner)."""
    if path == ".":
        path = DEFAULT_JOB_FILE
    source = "<stdin>" if path == "-" else path
    try:
        if path == "-":
            data = sys.stdin.buffer.read(MAX_JOB_FILE_BYTES + 1)
        else:
            with open(path, "rb") as handle:
                data = handle.read(MAX_JOB_FILE_BYTES + 1)
    except OSError as exc:
        raise JobFileError(f"{path}: cannot read job file: {exc.strerror}") from None
    if len(data) > MAX_JOB_FILE_BYTES:
        raise JobFileError(f"{source}: job file is larger than {MAX_JOB_FILE_BYTES // (1024 * 1024)} MiB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise JobFileError(f"{source}: not a UTF-8 text file") from None
    return parse_job(text, source)


JOB_SUFFIXES = (".yaml", ".yml", ".json")


def job_files(directory: str) -> list[Path]:
    folder = Path(directory)
    if not folder.is_dir():
        raise JobFileError(f"{directory}: not a directory")
    return sorted(p for p in folder.iterdir() if p.suffix in JOB_SUFFIXES and p.is_file())
