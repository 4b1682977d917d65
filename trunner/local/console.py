"""A sink that prints a job's shipped lines and outcome to a text stream (``trunner test`` and
``trunner run --mode local``), terminal control characters shown as ``\\xNN`` (display only: what
is shipped to an API keeps them)."""

from __future__ import annotations

import sys
from typing import TextIO

import attrs
import trio

from trunner.logs.batch import Batch
from trunner.logs.settings import LogSettings
from trunner.models import JobOutcome
from trunner.observability.runlog import printable

_write_lock = trio.Lock()


def console_log_settings(settings: LogSettings) -> LogSettings:
    """A person at a terminal expects each line as it is printed: the console ships waiting lines
    at once (no ``--job-pod-log-max-interval``), batching only what arrives while it writes."""
    return attrs.evolve(settings, job_pod_log_max_interval=0.0)


FOLD_HEAD = 240
FOLD_TAIL = 60
"""A longer line shows its first ``FOLD_HEAD`` and last ``FOLD_TAIL`` characters around a marker
(the tail keeps a cut piece's ``[trunner: line continues]`` in view). Display only: the job's
log as shipped to an API is never folded."""


def fold_for_display(line: str) -> str:
    folded = len(line) - FOLD_HEAD - FOLD_TAIL
    if folded <= len(_FOLD_MARKER) + 16:
        return line
    return line[:FOLD_HEAD] + _FOLD_MARKER.format(folded) + line[-FOLD_TAIL:]


_FOLD_MARKER = " [trunner: {:,} characters folded for display] "


class ConsoleSink:
    def __init__(self, label: str = "", out: TextIO | None = None) -> None:
        self._label = f"{label} | " if label else ""
        self._out = out if out is not None else sys.stdout
        self.outcome: JobOutcome | None = None

    async def ship(self, batch: Batch) -> None:
        text = "".join(f"{self._label}{printable(fold_for_display(line))}\n" for line in batch.text_lines())
        async with _write_lock:
            await trio.to_thread.run_sync(self._write, text)

    async def report(self, outcome: JobOutcome) -> None:
        self.outcome = outcome
        lines = [f"{self._label}outcome: {outcome.outcome.value}"]
        if outcome.exit_code is not None:
            lines.append(f"{self._label}exit code: {outcome.exit_code}")
        if outcome.message:
            lines.append(f"{self._label}message: {outcome.message}")
        lines.extend(f"{self._label}outcome variable {v.key}={v.value}" for v in outcome.outcome_variables)
        async with _write_lock:
            await trio.to_thread.run_sync(self._write, "".join(printable(line) + "\n" for line in lines))

    def _write(self, text: str) -> None:
        self._out.write(text)
        self._out.flush()
