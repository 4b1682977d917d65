"""An executor's contract with the runner: run a job, feed its output, say how it ended."""

from __future__ import annotations

import enum
from typing import Protocol

import attrs

from trunner.contracts import OutputFeed
from trunner.models import Outcome, RunnerJob


class JobNaming(enum.Enum):
    """Which part of a job names its objects."""

    NUMBER = "number"
    """API mode: ``RunnerJob.number()``, the numeric part of the job's GID."""
    ID = "id"
    """Faktory mode: the job id as it came."""


class ExitKind(enum.Enum):
    EXITED = "exited"
    """The commands ran to completion; ``exit_code`` says how."""
    SEVERED = "severed"
    """The output stream ended without an exit status: the result is unknown, never success."""
    LIFETIME_EXCEEDED = "lifetime_exceeded"
    COULD_NOT_START = "could_not_start"
    POD_TIMEOUT = "pod_timeout"
    """The job's environment was not ready within the allowed wait."""
    INFRASTRUCTURE = "infrastructure"
    """The executor's own machinery failed (API error, exec rejected, internal error status)."""


_OUTCOMES = {
    ExitKind.SEVERED: Outcome.EXECUTION_TIMEOUT,
    ExitKind.LIFETIME_EXCEEDED: Outcome.EXECUTION_TIMEOUT,
    ExitKind.COULD_NOT_START: Outcome.FAILED,
    ExitKind.POD_TIMEOUT: Outcome.POD_TIMEOUT,
    ExitKind.INFRASTRUCTURE: Outcome.FAILED,
}


@attrs.frozen
class ExitResult:
    kind: ExitKind
    exit_code: int | None = None
    message: str = ""

    @classmethod
    def exited(cls, code: int) -> ExitResult:
        return cls(ExitKind.EXITED, code, "" if code == 0 else f"command exited with code {code}")

    def outcome(self) -> Outcome:
        if self.kind is ExitKind.EXITED:
            return Outcome.SUCCESS if self.exit_code == 0 else Outcome.FAILED
        return _OUTCOMES[self.kind]


class Executor(Protocol):
    name: str

    def check_job(self, job: RunnerJob) -> list[str]:
        """Problems that make ``job`` impossible to run here (e.g. no image for a pod), as
        ``<field>: <reason>``; an empty list means runnable."""
        ...

    async def run(self, job: RunnerJob, output: OutputFeed) -> ExitResult:
        """Run the job to completion, feeding its output. Failures of the job or of the
        environment are returned as an :class:`ExitResult`, not raised. On cancellation the
        executor cleans up what it created (shielded, with its own deadline) and re-raises."""
        ...


class ExecutorUnavailable(Exception):
    """The executor cannot work at all here (e.g. its API is unreachable); the message says what
    to check. Raised when the executor is opened, before any job is taken."""
