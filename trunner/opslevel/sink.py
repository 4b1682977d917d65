"""Where an API-mode job's logs and outcome go: ``runnerAppendJobLog`` and ``runnerReportJobOutcome``.

Both calls are made once per ``ship``/``report``, without client-level retries: the shipper
(for batches) and ``run_job`` (for the outcome) already retry a :class:`ShipError` with backoff
inside their own deadlines, and count what is finally lost. Retrying here as well would multiply
the time one batch can take and hide failed attempts from the shipper's metrics.
"""

from __future__ import annotations

import binascii
import time
from collections.abc import Callable, Iterator

from trunner.logs.batch import Batch
from trunner.models import JobOutcome
from trunner.opslevel.client import NO_RETRIES, OpsLevelClient, RequestBody, encode_body
from trunner.opslevel.errors import ApiError
from trunner.opslevel.operations import (
    RUNNER_APPEND_JOB_LOG,
    RUNNER_REPORT_JOB_OUTCOME,
    AppendJobLogVariables,
    ReportJobOutcomeVariables,
    RunnerAppendJobLogInput,
    RunnerReportJobOutcomeInput,
    rfc3339_nano,
)
from trunner.sinks import ShipError

PIECE_SIZE = 64 * 1024

_PLACEHOLDER = '"logChunk":["@"]'


def _base64_length(size: int) -> int:
    return 4 * ((size + 2) // 3)


def append_body(runner_id: str, job_id: str, sent_at: str, batch: Batch) -> RequestBody:
    """The ``runnerAppendJobLog`` request for ``batch``, byte for byte what :func:`encode_body` would
    make of ``logChunk = [base64(line) for line in batch]``, but produced in pieces: the encoded
    batch (a third larger than the batch) never exists whole in memory."""
    template = encode_body(
        RUNNER_APPEND_JOB_LOG,
        AppendJobLogVariables(RunnerAppendJobLogInput(runner_id, job_id, sent_at, ("@",))),
    )
    head, _, tail = template.partition(_PLACEHOLDER.encode())
    head += b'"logChunk":['
    tail = b"]" + tail
    sizes = [_base64_length(len(line)) + 2 for line in batch.lines()]
    length = len(head) + sum(sizes) + max(0, len(sizes) - 1) + len(tail)

    def pieces() -> Iterator[bytes]:
        piece = bytearray(head)
        separator = b'"'
        for line in batch.lines():
            piece += separator
            piece += binascii.b2a_base64(line, newline=False)
            piece += b'"'
            separator = b',"'
            if len(piece) >= PIECE_SIZE:
                yield bytes(piece)
                piece.clear()
        piece += tail
        yield bytes(piece)

    return RequestBody(length, pieces)


class OpsLevelSink:
    def __init__(
        self,
        client: OpsLevelClient,
        *,
        runner_id: str,
        job_id: str,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self._client = client
        self._runner_id = runner_id
        self._job_id = job_id
        self._clock_ns = clock_ns

    async def ship(self, batch: Batch) -> None:
        body = append_body(self._runner_id, self._job_id, rfc3339_nano(self._clock_ns()), batch)
        try:
            await self._client.send(RUNNER_APPEND_JOB_LOG, body, retry=NO_RETRIES)
        except ApiError as exc:
            raise ShipError(str(exc), retryable=exc.retryable, retry_after=exc.retry_after) from exc

    async def report(self, outcome: JobOutcome) -> None:
        variables = ReportJobOutcomeVariables(
            RunnerReportJobOutcomeInput(
                self._runner_id, self._job_id, outcome.outcome, outcome.outcome_variables
            )
        )
        try:
            await self._client.call(RUNNER_REPORT_JOB_OUTCOME, variables, retry=NO_RETRIES)
        except ApiError as exc:
            raise ShipError(str(exc), retryable=exc.retryable, retry_after=exc.retry_after) from exc
