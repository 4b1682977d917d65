"""Wire models shared by every source, executor and sink.

Field names follow the Go runner's JSON tags (camelCase on the wire); the converter in
:mod:`trunner.wire` maps them onto these snake_case attributes.
"""

from __future__ import annotations

import base64
import collections
import enum
import re

import attrs


class Outcome(enum.Enum):
    UNSTARTED = "unstarted"
    CANCELED = "canceled"
    FAILED = "failed"
    SUCCESS = "success"
    QUEUE_TIMEOUT = "queue_timeout"
    EXECUTION_TIMEOUT = "execution_timeout"
    POD_TIMEOUT = "pod_timeout"


class JobStatus(enum.Enum):
    CREATED = "created"
    PENDING = "pending"
    RUNNING = "running"
    COMPLETE = "complete"


class VariableScope(enum.Enum):
    """Which container sees a variable. ``BOTH`` is the wire's empty string."""

    BOTH = ""
    INIT = "init"
    MAIN = "main"

    def reaches_init(self) -> bool:
        return self is not VariableScope.MAIN

    def reaches_main(self) -> bool:
        return self is not VariableScope.INIT


@attrs.frozen
class JobVariable:
    key: str
    value: str = ""
    sensitive: bool = False
    scope: VariableScope = VariableScope.BOTH


@attrs.frozen
class JobFile:
    name: str
    contents: str = ""


_JOB_GID_PREFIX = "gid://opslevel/Runners::JobRun/"
_RAW_URL_BASE64 = re.compile(r"[A-Za-z0-9_-]*")


def job_number(job_id: str) -> str:
    """The Go runner's ``RunnerJob.Number()``: the numeric part of a base64url job GID.

    Any id that is not valid unpadded base64url (or whose decoding is not text) is returned as is.
    """
    if not _RAW_URL_BASE64.fullmatch(job_id) or len(job_id) % 4 == 1:
        return job_id
    try:
        decoded = base64.urlsafe_b64decode(job_id + "=" * (-len(job_id) % 4)).decode()
    except ValueError:
        return job_id
    return decoded.replace(_JOB_GID_PREFIX, "")


@attrs.frozen
class RunnerJob:
    id: str
    image: str = ""
    commands: tuple[str, ...] = ()
    variables: tuple[JobVariable, ...] = ()
    files: tuple[JobFile, ...] = ()
    init_commands: tuple[str, ...] = ()
    init_image: str = ""
    outcome: Outcome | None = None
    status: JobStatus | None = None

    def number(self) -> str:
        """The Go runner's ``RunnerJob.Number()`` of this job's id (see :func:`job_number`)."""
        return job_number(self.id)

    def secrets(self) -> tuple[str, ...]:
        return tuple(v.value for v in self.variables if v.sensitive and v.value)


@attrs.frozen
class OutcomeVariable:
    key: str
    value: str


@attrs.frozen
class JobOutcome:
    outcome: Outcome
    message: str = ""
    exit_code: int | None = None
    outcome_variables: tuple[OutcomeVariable, ...] = ()


def validate_job(job: RunnerJob) -> list[str]:
    """Problems any executor would reject, as ``<field>: <reason>``."""
    problems = []
    names = [f.name for f in job.files]
    for index, name in enumerate(names):
        if not name or "/" in name or name in (".", "..") or "\0" in name:
            problems.append(f"files[{index}].name: {name!r} is not a plain file name")
    duplicates = sorted(n for n, count in collections.Counter(names).items() if count > 1)
    if duplicates:
        problems.append(f"files: duplicate name(s): {', '.join(duplicates)}")
    keys = [v.key for v in job.variables]
    for index, key in enumerate(keys):
        if not key:
            problems.append(f"variables[{index}].key: must not be empty")
    return problems
