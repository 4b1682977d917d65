"""Where an API-mode job's logs and outcome go: ``runnerAppendJobLog`` and ``runnerReportJobOutcome``.

Both calls are made once per ``ship``/``report``, without client-level retries: the shipper
(for batches) and ``run_job`` (for the outcome) already retry a :class:`ShipError` with backoff
inside their own deadlines, and count what is finally lost. Retrying here as well would multiply
the time one batch can take and hide failed attempts from the shipper's metrics.
"""

from __future__ import annotations

import binascii
import functools
import operator
import time
from collections.abc import Callable, Iterator
from itertools import repeat

from trunner.logs.batch import Batch
from trunner.models import JobOutcome
from trunner.net.retry import NO_RETRIES, ShipError
from trunner.opslevel.client import OpsLevelClient, RequestBody, encode_body
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

_PLACEHOLDER = '"logChunk":["@"]'

PART_SIZE = 16 * 1024
"""Bytes of a block encoded at a time: a request in flight holds one encoded part, not the batch."""

_encode_line = functools.partial(binascii.b2a_base64, newline=False)


def _encoded_length(block: bytes) -> tuple[int, int]:
    """(lines, bytes of their quoted base64 entries without separators) of one block."""
    sizes = list(map(len, block.split(b"\n")))
    padded = sum(map(operator.floordiv, map(operator.add, sizes, repeat(2)), repeat(3)))
    return len(sizes), 4 * padded + 2 * len(sizes)


def parts_of(block: bytes) -> Iterator[bytes]:
    """``block`` cut at newlines into parts of about ``PART_SIZE`` bytes (a longer line stays
    whole); the lines of the parts are the lines of the block, in order."""
    start = 0
    while len(block) - start > PART_SIZE:
        cut = block.rfind(b"\n", start, start + PART_SIZE)
        if cut < 0:
            cut = block.find(b"\n", start + PART_SIZE)
            if cut < 0:
                break
        yield block[start:cut]
        start = cut + 1
    yield block[start:]


def append_body(runner_id: str, job_id: str, sent_at: str, batch: Batch) -> RequestBody:
    """The ``runnerAppendJobLog`` request for ``batch``, byte for byte what :func:`encode_body` would
    make of ``logChunk = [base64(line) for line in batch.lines()]``, produced a part at a time so that
    the encoded batch (a third larger than the batch) never exists whole in memory."""
    template = encode_body(
        RUNNER_APPEND_JOB_LOG,
        AppendJobLogVariables(RunnerAppendJobLogInput(runner_id, job_id, sent_at, ("@",))),
    )
    head, _, tail = template.partition(_PLACEHOLDER.encode())
    head += b'"logChunk":['
    tail = b"]" + tail
    lines = encoded = 0
    for block in batch.blocks:
        block_lines, block_encoded = _encoded_length(block)
        lines += block_lines
        encoded += block_encoded
    length = len(head) + encoded + max(0, lines - 1) + len(tail)

    def pieces() -> Iterator[bytes]:
        yield head
        opening = b'"'
        for block in batch.blocks:
            for part in parts_of(block):
                yield opening
                yield b'","'.join(map(_encode_line, part.split(b"\n")))
                yield b'"'
                opening = b',"'
        yield tail

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
            raise ShipError(
                str(exc), retryable=exc.retryable, retry_after=exc.retry_after, maybe_delivered=exc.maybe_done
            ) from exc

    async def report(self, outcome: JobOutcome) -> None:
        variables = ReportJobOutcomeVariables(
            RunnerReportJobOutcomeInput(
                self._runner_id, self._job_id, outcome.outcome, outcome.outcome_variables
            )
        )
        try:
            await self._client.call(RUNNER_REPORT_JOB_OUTCOME, variables, retry=NO_RETRIES)
        except ApiError as exc:
            raise ShipError(
                str(exc), retryable=exc.retryable, retry_after=exc.retry_after, maybe_delivered=exc.maybe_done
            ) from exc
