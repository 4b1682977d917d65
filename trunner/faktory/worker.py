"""Faktory as a job source: FETCH ``legacy`` jobs in strict queue priority, decode them
(:mod:`trunner.faktory.decode`), ACK each after its outcome was reported, FAIL what cannot
be run, and BEAT so the server can quiet or terminate this process.

A job that cannot be decoded is answered with FAIL naming every problem, and the worker goes on
with the next job.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Mapping

import attrs
import trio

from trunner.faktory import protocol
from trunner.faktory.client import Backoff, FaktoryClient, rss_kb
from trunner.faktory.decode import CUSTOM_JOB_ID, JobDecodeError, decode_legacy_job
from trunner.faktory.link import Link, is_link_failure
from trunner.faktory.metrics import FaktoryMetrics
from trunner.faktory.protocol import (
    Beat,
    Fail,
    FaktoryError,
    Job,
    ProtocolViolation,
    ServerError,
)
from trunner.faktory.sink import FaktorySink
from trunner.models import JobOutcome, job_number
from trunner.observability.runlog import job_fields
from trunner.runner import ClaimedJob

log = logging.getLogger("trunner.faktory")

LEGACY = "legacy"
RESULT_TIMEOUT = 30.0
"""Seconds an ACK or FAIL refused by the server is retried. A lost connection is waited out
(:class:`~trunner.faktory.link.Link`) within the caller's deadline."""
RECONNECT_MAX_TIME = 300.0


def _jid(raw: bytes) -> str | None:
    """The ``jid`` of a fetched job, if ``raw`` is a JSON object with a non-empty string one."""
    return _identify(raw)[0]


def _identify(raw: bytes) -> tuple[str | None, str | None]:
    """The ``jid`` and the RunnerJob number (``custom.opslevel-runner-job-id``, else ``args[0].id``,
    as the decoder reads it) of a fetched job, each where ``raw`` has it as a non-empty string,
    however malformed the rest."""
    try:
        payload = json.loads(raw)
    except ValueError:
        return None, None
    if not isinstance(payload, dict):
        return None, None
    jid = payload.get("jid")
    args = payload.get("args")
    first = args[0] if isinstance(args, list) and args else None
    job_id = first.get("id") if isinstance(first, dict) else None
    custom = payload.get("custom")
    if isinstance(custom, dict) and CUSTOM_JOB_ID in custom:
        job_id = custom[CUSTOM_JOB_ID]
    return (
        jid if isinstance(jid, str) and jid else None,
        job_number(job_id) if isinstance(job_id, str) and job_id else None,
    )


def _fields(jid: str, job_id: str) -> contextlib.AbstractContextManager[None]:
    """Runner log fields of the Faktory job ``jid`` (RunnerJob id ``job_id``, or "" if not known)."""
    return job_fields(job_number(job_id) if job_id else None, jid=jid)


@attrs.frozen
class Rejection:
    """Why a fetched job is answered with FAIL instead of being run."""

    errtype: str
    message: str
    backtrace: tuple[str, ...] = ()


class FaktoryWorker:
    """A :class:`~trunner.runner.JobSource` over Faktory, plus the heartbeat task.

    States (the protocol's consumer lifecycle): running -> quiet (no more FETCH, keep beating)
    -> terminate (the runner is asked to shut down gracefully)."""

    def __init__(
        self,
        client: FaktoryClient,
        *,
        queues: tuple[str, ...],
        environ: Mapping[str, str],
        heartbeat_interval: float = 15.0,
        metrics: FaktoryMetrics | None = None,
        backoff: Backoff | None = None,
        link: Link | None = None,
    ) -> None:
        self._client = client
        self.queues = queues
        self._environ = environ
        self.heartbeat_interval = heartbeat_interval
        self._metrics = metrics or FaktoryMetrics()
        self._backoff = backoff or Backoff()
        self.link = link or Link(client, max_down=RECONNECT_MAX_TIME, metrics=self._metrics)
        self.state = ""
        self._outstanding: dict[str, str] = {}
        """jid -> RunnerJob id of jobs claimed and not yet ACKed or FAILed."""
        self._fetch_failing = False

    @property
    def wid(self) -> str:
        return self._client.identity.wid

    @property
    def outstanding(self) -> dict[str, str]:
        return dict(self._outstanding)

    # --- JobSource ---

    async def claim(self) -> ClaimedJob | None:
        while True:
            if self.state:
                # Quiet or terminating: never fetch again; shutdown cancels this wait.
                await trio.sleep_forever()
            raw = await self._fetch()
            if raw is None:
                continue
            claimed = await self._accept(raw)
            if claimed is not None:
                return claimed

    async def _fetch(self) -> bytes | None:
        if not await self.link.wait_up():
            # Given up: the mode is shutting down, which cancels this wait.
            await trio.sleep_forever()
        # Shielded (each FETCH is bounded by its own timeout): a FETCH cut short could leave a job
        # reserved by the server but unseen here until its reservation expires (30 min by default).
        try:
            with trio.CancelScope(shield=True):
                async with self._client.connection() as conn:
                    raw = await conn.fetch(self.queues)
        except FaktoryError as exc:
            self._metrics.command_failed("FETCH")
            if is_link_failure(exc):
                self.link.lost(exc)
                return None
            delay = self._backoff.next_delay()
            if not self._fetch_failing:
                log.warning("Faktory refused FETCH, retrying: %s", exc)
            else:
                log.debug("FETCH refused again, next attempt in %.1fs: %s", delay, exc)
            self._fetch_failing = True
            await trio.sleep(delay)
            return None
        self.link.restored()
        if self._fetch_failing:
            log.info("fetching jobs from Faktory again")
            self._fetch_failing = False
        self._backoff.reset()
        try:
            await trio.lowlevel.checkpoint_if_cancelled()
        except trio.Cancelled:
            if raw is not None:
                await self._hand_back(raw)
            raise
        return raw

    async def _hand_back(self, raw: bytes) -> None:
        """FAIL a job fetched just as claiming was cancelled (shutdown), so Faktory retries it now."""
        jid, job = _identify(raw)
        if jid is None:
            return
        rejection = Rejection("Shutdown", "the runner shut down before the job started")
        with job_fields(job, jid=jid):
            log.info("handing job %s back to Faktory: the runner is shutting down", jid)
            with trio.CancelScope(shield=True), trio.move_on_after(self._client.timeout * 2):
                await self._answer("FAIL", jid, rejection, patient=False)

    async def _accept(self, raw: bytes) -> ClaimedJob | None:
        jid, job = _identify(raw)
        with job_fields(job, jid=jid):
            if jid is None:
                self._metrics.job_rejected("unidentifiable")
                log.error(
                    "Faktory sent a job without a jid; it cannot be answered and will expire: %.200r", raw
                )
                return None
            return await self._accept_job(jid, raw)

    async def _accept_job(self, jid: str, raw: bytes) -> ClaimedJob | None:
        self._outstanding[jid] = ""
        try:
            job = protocol.from_json(raw, Job, what="job")
        except ProtocolViolation as exc:
            await self._reject(jid, "invalid_job", Rejection("InvalidJob", str(exc)))
            return None
        if job.jobtype != LEGACY:
            message = f"No handler registered for job type {job.jobtype}"
            await self._reject(jid, "unknown_jobtype", Rejection("UnknownJobType", message))
            return None
        try:
            decoded = decode_legacy_job(job, self._environ)
        except JobDecodeError as exc:
            message = f"cannot decode the legacy job: {exc}"
            await self._reject(
                jid, "bad_payload", Rejection("InvalidRunnerJob", message, tuple(exc.problems))
            )
            return None
        with job_fields(decoded.job.number()):
            for warning in decoded.warnings:
                log.warning("job %s (jid %s): %s", decoded.job.id, jid, warning)
            self._outstanding[jid] = decoded.job.id
            log.info("claimed Faktory job %s (jid %s, queue %s)", decoded.job.id, jid, job.queue)
        sink = FaktorySink(
            self._client, runner_job_id=decoded.job.id, bid=decoded.bid, metrics=self._metrics, link=self.link
        )
        return ClaimedJob(decoded.job, sink, finished=_Finisher(self, jid), redelivered=_Left(self, jid))

    async def _reject(self, jid: str, reason: str, rejection: Rejection) -> None:
        log.error("job %s not run, answering FAIL: %s", jid, rejection.message)
        self._metrics.job_rejected(reason)
        await self._answer("FAIL", jid, rejection)

    async def acknowledge(self, jid: str, outcome: JobOutcome) -> None:
        """The job ran and its outcome was reported (whatever it was): ACK, as the Go handler
        returns nil once a job has run."""
        await self._answer("ACK", jid, None)

    async def leave(self, jid: str) -> None:
        """The shutdown interrupted the job: no ACK and no FAIL (a FAIL would count a retry, and
        with ``retry: 0`` bury the job), so Faktory delivers it again when its reservation
        expires, as it does for the Go runner's interrupted jobs."""
        job_id = self._outstanding.pop(jid, "")
        with _fields(jid, job_id):
            log.info("job %s not acknowledged: Faktory delivers it again when its reservation expires", jid)
        self._metrics.job_left()

    async def _answer(
        self, command: str, jid: str, rejection: Rejection | None, *, patient: bool = True
    ) -> None:
        """ACK or FAIL ``jid``: through a lost connection (unless not ``patient``) until the
        caller's deadline or the link is given up, and for up to 30 s of error replies. An answer
        not delivered is logged and counted; the server's reservation then covers the job."""
        problem = "not delivered before its deadline"
        with _fields(jid, self._outstanding.get(jid, "")):
            try:
                problem = await self._answer_until(command, jid, rejection, patient=patient)
            finally:
                self._outstanding.pop(jid, None)
                if problem:
                    self._metrics.answer_undelivered(command)
                    log.error(
                        "could not %s job %s (%s); Faktory will retry it when its reservation expires",
                        command,
                        jid,
                        problem,
                    )

    async def _answer_until(
        self, command: str, jid: str, rejection: Rejection | None, *, patient: bool
    ) -> str:
        backoff = Backoff(initial=0.5, maximum=5.0)
        refused_until = trio.current_time() + RESULT_TIMEOUT
        while True:
            if not await self.link.wait_up(patient=patient):
                return f"Faktory is unreachable: {self.link.last_error}"
            try:
                async with self._client.connection() as conn:
                    if rejection is None:
                        await conn.ack(jid)
                    else:
                        fail = Fail(
                            backtrace=rejection.backtrace,
                            errtype=rejection.errtype,
                            jid=jid,
                            message=rejection.message,
                        )
                        await conn.fail(fail)
            except FaktoryError as exc:
                self._metrics.command_failed(command)
                if is_link_failure(exc):
                    self.link.lost(exc)
                    continue
                delay = backoff.next_delay()
                if trio.current_time() + delay > refused_until:
                    return f"refused for {RESULT_TIMEOUT:g}s: {exc}"
                log.warning("%s %s refused, retrying in %.1fs: %s", command, jid, delay, exc)
                await trio.sleep(delay)
                continue
            self.link.restored()
            return ""

    async def release_unfinished(self) -> None:
        """FAIL every job claimed but never finished (shutdown before it ran), so Faktory
        retries it now instead of after its reservation expires. Bounded and shielded."""
        with trio.CancelScope(shield=True):
            for jid, job_id in list(self._outstanding.items()):
                rejection = Rejection("Shutdown", f"the runner shut down before job {job_id or jid} ran")
                with trio.move_on_after(self._client.timeout * 2):
                    await self._answer("FAIL", jid, rejection, patient=False)

    # --- heartbeat ---

    async def heartbeat(
        self, on_terminate: Callable[[], None], shutting_down: Callable[[], bool] = lambda: False
    ) -> None:
        """BEAT every ``heartbeat_interval`` seconds until cancelled; never stops on errors."""
        while True:
            await trio.sleep(self.heartbeat_interval)
            await self.beat_once(on_terminate, shutting_down)

    async def beat_once(
        self, on_terminate: Callable[[], None], shutting_down: Callable[[], bool] = lambda: False
    ) -> None:
        if not self.link.up:
            return  # the link reconnects (and registers this process again) by itself
        current = self.state or ("terminate" if shutting_down() else "")
        beat = Beat(current_state=current, rss_kb=rss_kb(), wid=self.wid)
        try:
            state = await self._beat(beat, fresh=False)
        except ServerError as exc:
            if is_link_failure(exc) or "unknown worker" not in exc.message.lower():
                self._beat_failed(exc)
                return
            # The server forgot this process (no BEAT for a minute); a new HELLO registers it again.
            log.warning("Faktory no longer knows worker %s; registering again", self.wid)
            await self._client.discard_idle()
            try:
                state = await self._beat(beat, fresh=True)
            except FaktoryError as again:
                self._beat_failed(again)
                return
        except FaktoryError as exc:
            self._beat_failed(exc)
            return
        self.link.restored()
        if state:
            self.apply_server_state(state, on_terminate)

    def _beat_failed(self, exc: FaktoryError) -> None:
        self._metrics.command_failed("BEAT")
        if is_link_failure(exc):
            self.link.lost(exc)
        else:
            log.error("heartbeat refused by Faktory: %s", exc)

    async def _beat(self, beat: Beat, *, fresh: bool) -> str:
        async with self._client.connection(fresh=fresh) as conn:
            return await conn.beat(beat)

    def apply_server_state(self, state: str, on_terminate: Callable[[], None]) -> None:
        if state == "quiet":
            if not self.state:
                log.info("Faktory asked this worker to go quiet: no new jobs, running jobs continue")
                self._set_state("quiet")
        elif state == "terminate":
            if self.state != "terminate":
                log.info("Faktory asked this worker to terminate: shutting down gracefully")
                self._set_state("terminate")
                on_terminate()
        else:
            log.warning("Faktory asked for unknown worker state %r; ignored", state)

    def _set_state(self, state: str) -> None:
        self.state = state


@attrs.frozen
class _Finisher:
    worker: FaktoryWorker
    jid: str

    async def __call__(self, outcome: JobOutcome) -> None:
        await self.worker.acknowledge(self.jid, outcome)


@attrs.frozen
class _Left:
    worker: FaktoryWorker
    jid: str

    async def __call__(self, outcome: JobOutcome) -> None:
        await self.worker.leave(self.jid)
