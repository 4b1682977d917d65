"""Jobs from the OpsLevel API: ``runnerGetPendingJob`` polled with ``lastUpdateToken``.

``claim()`` is only called while a worker slot is free, so a job it returns starts at once. It
polls again immediately after a job (the runner calls it again as soon as a slot is free) and
waits ``--poll-interval`` after an empty poll. Errors back off exponentially with jitter.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Mapping
from functools import partial
from typing import Any

import trio

from trunner.logs import markers
from trunner.logs.batch import Batch
from trunner.logs.mask import Masker
from trunner.logs.sinks import Sink
from trunner.models import JobOutcome, JobStatus, Outcome, RunnerJob, job_number
from trunner.net.retry import NO_RETRIES, deliver, exponential_backoff
from trunner.observability.runlog import job_fields
from trunner.opslevel.client import OpsLevelClient
from trunner.opslevel.errors import ApiError, ApiResponseTooLarge, ApiTransportError
from trunner.opslevel.metrics import ApiMetrics
from trunner.opslevel.operations import (
    RUNNER_GET_PENDING_JOB,
    GetPendingJobVariables,
    RunnerGetPendingJobPayload,
)
from trunner.opslevel.settings import PollSettings
from trunner.opslevel.sink import OpsLevelSink
from trunner.runner import ClaimedJob
from trunner.wire import WireError, structure

log = logging.getLogger("trunner.opslevel.source")

SETTLE_ON_SHUTDOWN = 5.0
"""Seconds a poll already sent may still take once shutdown starts. A poll cut off mid-flight may
have assigned a job on the server that the runner would never hear of; letting it finish means
such a job is seen and handed back as ``canceled`` instead of staying assigned forever."""

_ENUM_FIELDS = {"outcome": Outcome, "status": JobStatus}


def _go_zero_values(value: Any) -> Any:
    """``null`` members dropped, so they take their defaults, as Go decodes null into zero values."""
    if isinstance(value, dict):
        return {k: _go_zero_values(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_go_zero_values(v) for v in value]
    return value


def _job_fields(raw: Mapping[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = _go_zero_values(dict(raw))
    for name, enum in _ENUM_FIELDS.items():
        # Informational only: a status the server adds later must not make the job unreadable.
        if name in fields and fields[name] not in {member.value for member in enum}:
            log.debug("ignoring unknown job %s %r", name, fields.pop(name))
    return fields


def _secrets(raw: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(key, value) of the sensitive variables of a job the API sent, however malformed the rest."""
    variables = raw.get("variables")
    if not isinstance(variables, list):
        return []
    return [
        (str(v.get("key", "")), v["value"])
        for v in variables
        if isinstance(v, dict) and v.get("sensitive") and isinstance(v.get("value"), str) and v["value"]
    ]


def _binary_size(size: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{size / scale:g} {unit}"
    return f"{size} bytes"


def _log_line(text: str) -> Batch:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    batch = Batch(seq=0)
    batch.add_block(f"{stamp} [poller] ".encode() + markers.note(text), 1)
    return batch


class PendingJobSource:
    def __init__(
        self,
        client: OpsLevelClient,
        *,
        runner_id: str,
        settings: PollSettings,
        metrics: ApiMetrics,
        report_timeout: float,
        rng: random.Random | None = None,
    ) -> None:
        self._client = client
        self._runner_id = runner_id
        self._settings = settings
        self._metrics = metrics
        self._report_timeout = report_timeout
        self._rng = rng or random.Random()
        self._token = ""
        self.polls = 0

    def sink_for(self, job_id: str) -> Sink:
        return OpsLevelSink(self._client, runner_id=self._runner_id, job_id=job_id)

    async def claim(self) -> ClaimedJob | None:
        failures = 0
        while True:
            try:
                payload = await self._poll()
            except ApiResponseTooLarge as exc:
                if len(exc.ids) != 1:
                    failures += 1
                    self._metrics.poll_error()
                    wait = self.error_wait(failures, None)
                    log.error(
                        "the API's answer to a poll is larger than %d bytes and names no single job "
                        "(ids found: %s); next poll in %.1fs",
                        exc.limit,
                        ", ".join(exc.ids) or "none",
                        wait,
                    )
                    await trio.sleep(wait)
                    continue
                failures = 0
                await self._reject_oversized(exc.ids[0], exc.limit)
                continue
            except ApiError as exc:
                failures += 1
                self._metrics.poll_error()
                wait = self.error_wait(failures, exc.retry_after)
                log.warning(
                    "polling for jobs failed (%d in a row); next poll in %.1fs: %s", failures, wait, exc
                )
                await trio.sleep(wait)
                continue
            failures = 0
            raw = payload.runner_job
            if isinstance(raw, Mapping) and raw.get("id") not in (None, ""):
                claimed = await self._accept(raw)
                if claimed is not None:
                    return claimed
                continue
            if raw is not None and not isinstance(raw, Mapping):
                self._metrics.job_rejected()
                log.error("the API sent a runnerJob that is not an object: %.200r", raw)
            elif isinstance(raw, Mapping) and _has_content(raw):
                self._metrics.job_rejected()
                log.error(
                    "the API sent a job with no id (fields %s): it can neither run nor be reported; dropped",
                    ", ".join(sorted(str(key) for key in raw if _has_content({key: raw[key]}))),
                )
            await trio.sleep(self._settings.poll_interval)

    def error_wait(self, failures: int, retry_after: float | None) -> float:
        """Seconds before the next poll after ``failures`` failed polls in a row: from
        ``poll_interval`` doubling to ``poll_error_backoff_max``, jittered to 50-100 %, and never
        shorter than the server's ``Retry-After`` (up to the same cap)."""
        cap = self._settings.poll_error_backoff_max
        wait = exponential_backoff(failures - 1, base=self._settings.poll_interval, cap=cap, rng=self._rng)
        if retry_after is not None:
            wait = max(wait, min(retry_after, cap))
        return wait

    async def _poll(self) -> RunnerGetPendingJobPayload:
        """One poll. Once sent it is allowed to finish (bounded) even if shutdown cancels the claim;
        a job it brings after that is handed back as canceled."""
        variables = GetPendingJobVariables(self._runner_id, self._token or None)
        request = trio.CancelScope(shield=True, deadline=trio.current_time() + self._client.timeout + 1)
        result: RunnerGetPendingJobPayload | ApiError | None = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._settle_on_cancel, request)
            with request:
                self.polls += 1
                try:
                    result = await self._client.call(RUNNER_GET_PENDING_JOB, variables, retry=NO_RETRIES)
                except ApiError as exc:
                    result = exc
            if isinstance(result, RunnerGetPendingJobPayload):
                self._token = result.last_update_token or ""
                if trio.current_effective_deadline() == -math.inf:  # shutdown cancelled the claim
                    await self._hand_back(result.runner_job)
            nursery.cancel_scope.cancel()
        if isinstance(result, ApiError):
            raise result
        if result is None:
            raise ApiTransportError(RUNNER_GET_PENDING_JOB.label, "the poll was cut short by shutdown")
        return result

    @staticmethod
    async def _settle_on_cancel(request: trio.CancelScope) -> None:
        try:
            await trio.sleep_forever()
        finally:
            request.deadline = min(request.deadline, trio.current_time() + SETTLE_ON_SHUTDOWN)

    async def _accept(self, raw: Mapping[str, Any]) -> ClaimedJob | None:
        job_id = str(raw["id"])
        with job_fields(job_number(job_id)):
            return await self._accept_job(job_id, raw)

    async def _accept_job(self, job_id: str, raw: Mapping[str, Any]) -> ClaimedJob | None:
        try:
            job = structure(_job_fields(raw), RunnerJob, what="runnerJob")
        except WireError as exc:
            self._metrics.job_rejected()
            message = f"the job sent by the API cannot be run: {exc}"
            message = Masker(_secrets(raw)).mask_text(message)
            log.error("job %s rejected: %s", job_id, message)
            await self._close_unrun(job_id, JobOutcome(Outcome.FAILED, message))
            return None
        log.info("claimed job %s", job.number())
        return ClaimedJob(job, self.sink_for(job.id))

    async def _reject_oversized(self, job_id: str, limit: int) -> None:
        self._metrics.job_rejected()
        with job_fields(job_number(job_id)):
            message = (
                f"the job sent by the API cannot be run: its definition is larger than {limit} bytes "
                f"({_binary_size(limit)}), the most this runner reads"
            )
            log.error("job %s rejected: %s", job_id, message)
            await self._close_unrun(job_id, JobOutcome(Outcome.FAILED, message))

    async def _hand_back(self, raw: Any) -> None:
        if isinstance(raw, Mapping) and raw.get("id") not in (None, ""):
            job_id = str(raw["id"])
            with job_fields(job_number(job_id)):
                log.warning("job %s arrived while shutting down; reporting it canceled", job_id)
                outcome = JobOutcome(
                    Outcome.CANCELED, "the runner shut down before the job started; it was not run"
                )
                await self._close_unrun(job_id, outcome)

    async def _close_unrun(self, job_id: str, outcome: JobOutcome) -> None:
        """Tell the API about a job that will not run: one log line with the reason, then the outcome.
        Shielded and bounded, so shutdown cannot leave the job assigned and silent."""
        sink = self.sink_for(job_id)
        batch = _log_line(outcome.message)
        with trio.CancelScope(shield=True, deadline=trio.current_time() + self._report_timeout) as scope:
            # No deadline of deliver's own: the scope above bounds both steps together.
            failure = await deliver(
                partial(sink.ship, batch), timeout=math.inf, what=f"job {job_id}'s log", log=log
            )
            if failure is not None:
                log.error("could not deliver job %s's log: %s", job_id, failure)
            failure = await deliver(
                partial(sink.report, outcome), timeout=math.inf, what=f"job {job_id}'s outcome", log=log
            )
            if failure is not None:
                log.error("could not report job %s as %s: %s", job_id, outcome.outcome.value, failure)
        if scope.cancelled_caught:
            log.error(
                "reporting job %s as %s took longer than %gs",
                job_id,
                outcome.outcome.value,
                self._report_timeout,
            )


_STATE_FIELDS = frozenset({"id", "outcome", "status"})


def _has_content(raw: Mapping[str, Any]) -> bool:
    """Whether a ``runnerJob`` holds anything a job is made of: an empty object (or one of nulls)
    may be how the API says no job is pending."""
    return any(value not in (None, "", [], {}) for key, value in raw.items() if key not in _STATE_FIELDS)
