"""Where a Faktory job's log and outcome go: jobs pushed to the ``app`` queue for the OpsLevel
app to consume, as the Go runner's Faktory processors push them.

- ``Runners::Faktory::AppendJobLog`` with ``args[0] = {runnerId, runnerJobId, sentAt, logChunk}``,
  ``logChunk`` holding each line base64-encoded (standard alphabet, padded);
- ``Runners::Faktory::ReportJobOutcome`` with ``args[0] = {runnerId, runnerJobId, outcome,
  outcomeVariables}``, ``outcomeVariables`` left out when empty;
- both ``args[0]`` are the OpsLevel API's own inputs (:mod:`trunner.opslevel.operations`);
- ``runnerId`` is the literal ``"faktory"``; each push is a new job (random jid, retry 25);
- when the job being run belongs to a batch (``custom.bid``), each push joins that batch the
  way faktory_worker_go's ``helper.Batch`` does: ``BATCH OPEN <bid>`` and, on the same
  connection, ``PUSH`` with ``custom.bid`` set to the bid the server returned; no COMMIT.

Delivery only: batching, retries and deadlines belong to the shared shipper. Failures become
:class:`~trunner.net.retry.ShipError`, retryable when another attempt may succeed.
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

import attrs

from trunner.faktory import protocol
from trunner.faktory.client import FaktoryClient
from trunner.faktory.link import Link, is_link_failure
from trunner.faktory.metrics import FaktoryMetrics
from trunner.faktory.protocol import ConnectionLost, FaktoryError, ServerError
from trunner.logs.batch import Batch
from trunner.models import JobOutcome
from trunner.net.retry import ShipError
from trunner.opslevel import operations
from trunner.opslevel.operations import RunnerAppendJobLogInput, RunnerReportJobOutcomeInput

log = logging.getLogger("trunner.faktory.sink")

RUNNER_ID = "faktory"
APP_QUEUE = "app"
APPEND_JOB_LOG = "Runners::Faktory::AppendJobLog"
REPORT_JOB_OUTCOME = "Runners::Faktory::ReportJobOutcome"

_TRANSIENT_SERVER_ERRORS = ("shutdown in progress", "too many connections")
"""Error replies the server gives while stopping or overloaded: worth another attempt."""


def append_job_log_args(runner_job_id: str, batch: Batch, sent_at: dt.datetime) -> dict[str, Any]:
    chunk = tuple(base64.b64encode(line).decode("ascii") for line in batch.lines())
    payload = RunnerAppendJobLogInput(RUNNER_ID, runner_job_id, protocol.format_time(sent_at), chunk)
    result: dict[str, Any] = operations.converter.unstructure(payload)
    return result


def report_job_outcome_args(runner_job_id: str, outcome: JobOutcome) -> dict[str, Any]:
    payload = RunnerReportJobOutcomeInput(
        RUNNER_ID, runner_job_id, outcome.outcome, outcome.outcome_variables
    )
    result: dict[str, Any] = operations.converter.unstructure(payload)
    return result


def ship_error(exc: FaktoryError, what: str, *, pushing: bool = True) -> ShipError:
    """``pushing``: ``exc`` is the PUSH's own failure (not that of a command before it)."""
    if isinstance(exc, ServerError):
        transient = any(text in exc.message.lower() for text in _TRANSIENT_SERVER_ERRORS)
        return ShipError(f"{what}: Faktory refused: {exc}", retryable=transient)
    sent = pushing and isinstance(exc, ConnectionLost) and exc.sent
    return ShipError(f"{what}: {exc}", retryable=True, maybe_delivered=sent)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class FaktorySink:
    """The sink of one Faktory job (``runner_job_id``; ``bid`` when the job is in a batch)."""

    def __init__(
        self,
        client: FaktoryClient,
        *,
        runner_job_id: str,
        bid: str = "",
        metrics: FaktoryMetrics | None = None,
        clock: Callable[[], dt.datetime] = _utcnow,
        link: Link | None = None,
    ) -> None:
        self._client = client
        self.runner_job_id = runner_job_id
        self.bid = bid
        self._metrics = metrics
        self._clock = clock
        self._link = link

    async def ship(self, batch: Batch) -> None:
        args = append_job_log_args(self.runner_job_id, batch, self._clock())
        await self._push(APPEND_JOB_LOG, args, f"AppendJobLog ({batch.line_count} lines)")

    async def report(self, outcome: JobOutcome) -> None:
        args = report_job_outcome_args(self.runner_job_id, outcome)
        await self._push(REPORT_JOB_OUTCOME, args, f"ReportJobOutcome ({outcome.outcome.value})")

    async def _push(self, jobtype: str, args: dict[str, Any], what: str) -> None:
        job = protocol.new_job(jobtype, (args,), queue=APP_QUEUE, now=self._clock())
        command = "PUSH"
        try:
            async with self._client.connection() as conn:
                if self.bid:
                    command = "BATCH OPEN"
                    bid = await conn.batch_open(self.bid)
                    job = attrs.evolve(job, custom={"bid": bid})
                    command = "PUSH"
                await conn.push(job)
        except FaktoryError as exc:
            if self._link is not None and is_link_failure(exc):
                self._link.lost(exc)
            if self._metrics is not None:
                self._metrics.push_failed(command, in_batch=bool(self.bid))
            raise ship_error(exc, what, pushing=command == "PUSH") from None
        if self._link is not None:
            self._link.restored()
