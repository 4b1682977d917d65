"""Faktory as a job source: FETCH ``legacy`` jobs in strict queue priority, decode them as the
Go runner's ``legacyJobHandler`` does, ACK each after its outcome was reported, FAIL what cannot
be run, and BEAT so the server can quiet or terminate this process.

Decoding a ``legacy`` job (``cmd/faktory.go``):

1. ``args[0]`` is a RunnerJob by its json tags (``id`` must be a string; when missing it is "").
2. Custom fields, in this order: ``opslevel-runner-job-id`` (string, or a number printed as an
   integer; any other type gives "0"), ``opslevel-runner-image`` (replaces the image),
   ``opslevel-runner-commands`` (appended), ``opslevel-runner-extra-vars`` (``{key, value,
   sensitive}``, appended without scope), ``opslevel-runner-files`` (appended).
3. Added variables, not sensitive, for both containers: ``FAKTORY_BATCH_ID`` (when ``custom.bid``
   is set), ``FAKTORY_PROVIDER`` and ``FAKTORY_URL`` (when set in the runner's environment),
   ``RUNNER_JOB_ID`` (always).

Every problem is collected; a job with problems is answered with FAIL naming them, and the
worker goes on with the next job.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import trio

from trunner import wire
from trunner.faktory import protocol
from trunner.faktory.client import Backoff, FaktoryClient, rss_kb
from trunner.faktory.metrics import FaktoryMetrics
from trunner.faktory.protocol import (
    Beat,
    ConnectionLost,
    Fail,
    FaktoryError,
    Job,
    ProtocolViolation,
    ServerError,
)
from trunner.faktory.sink import FaktorySink
from trunner.models import JobFile, JobOutcome, JobVariable, RunnerJob
from trunner.runner import ClaimedJob

log = logging.getLogger("trunner.faktory")

LEGACY = "legacy"
CUSTOM_JOB_ID = "opslevel-runner-job-id"
CUSTOM_IMAGE = "opslevel-runner-image"
CUSTOM_COMMANDS = "opslevel-runner-commands"
CUSTOM_EXTRA_VARS = "opslevel-runner-extra-vars"
CUSTOM_FILES = "opslevel-runner-files"
RESULT_TIMEOUT = 30.0
"""Seconds an ACK or FAIL is retried, as faktory_worker_go's ``processOne`` does."""


# --- decoding -----------------------------------------------------------------------------------


class JobDecodeError(Exception):
    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


@attrs.frozen
class DecodedJob:
    job: RunnerJob
    bid: str
    warnings: tuple[str, ...] = ()


def decode_legacy_job(job: Job, environ: Mapping[str, str]) -> DecodedJob:
    """The RunnerJob a ``legacy`` Faktory job describes; raises :class:`JobDecodeError`."""
    problems: list[str] = []
    warnings: list[str] = []
    runner_job = _decode_args(job.args, problems)
    bid = _bid(job, problems)

    found, raw_id = job.custom_value(CUSTOM_JOB_ID)
    job_id = runner_job.id if runner_job is not None else ""
    if found:
        if isinstance(raw_id, str):
            job_id = raw_id
        elif isinstance(raw_id, int | float) and not isinstance(raw_id, bool):
            job_id = _go_int_text(raw_id, problems)
        else:
            job_id = "0"
            warnings.append(
                f"custom.{CUSTOM_JOB_ID} has unexpected type {_json_type(raw_id)} (value {raw_id!r}); using id 0"
            )

    image: str | None = None
    found, raw_image = job.custom_value(CUSTOM_IMAGE)
    if found:
        # mapstructure decodes null as the zero value, so null clears the image as in the Go runner.
        image = "" if raw_image is None else _string(raw_image, f"custom.{CUSTOM_IMAGE}", problems)
    commands = _string_list(job, CUSTOM_COMMANDS, problems)
    extra_vars = _records(job, CUSTOM_EXTRA_VARS, ("key", "value", "sensitive"), problems)
    files = _records(job, CUSTOM_FILES, ("name", "contents"), problems)

    if problems or runner_job is None:
        raise JobDecodeError(problems)

    variables = list(runner_job.variables)
    variables += [
        JobVariable(
            key=str(v.get("key", "")), value=str(v.get("value", "")), sensitive=bool(v.get("sensitive"))
        )
        for v in extra_vars
    ]
    if bid:
        variables.append(JobVariable("FAKTORY_BATCH_ID", bid))
    for name in ("FAKTORY_PROVIDER", "FAKTORY_URL"):
        if name in environ:
            variables.append(JobVariable(name, environ[name]))
    variables.append(JobVariable("RUNNER_JOB_ID", job_id))
    decoded = attrs.evolve(
        runner_job,
        id=job_id,
        image=runner_job.image if image is None else image,
        commands=runner_job.commands + tuple(commands),
        variables=tuple(variables),
        files=runner_job.files
        + tuple(JobFile(str(f.get("name", "")), str(f.get("contents", ""))) for f in files),
    )
    return DecodedJob(decoded, bid, tuple(warnings))


def _decode_args(args: tuple[Any, ...], problems: list[str]) -> RunnerJob | None:
    if not args:
        problems.append("args: expected the RunnerJob as args[0], but args is empty")
        return None
    payload = args[0]
    if not isinstance(payload, dict):
        problems.append(f"args[0]: expected a JSON object (a RunnerJob), got {_json_type(payload)}")
        return None
    # JSON null decodes to the zero value in Go; outcome/status are server-side state, unused here.
    cleaned = {k: v for k, v in payload.items() if v is not None and k not in ("outcome", "status")}
    cleaned.setdefault("id", "")
    try:
        return wire.structure(cleaned, RunnerJob, what="args[0]")
    except wire.WireError as exc:
        problems.extend(f"args[0].{p}" for p in exc.problems)
        return None


def _bid(job: Job, problems: list[str]) -> str:
    found, bid = job.custom_value("bid")
    if not found or bid is None:
        return ""
    if not isinstance(bid, str):
        problems.append(f"custom.bid: expected a string (a batch id), got {_json_type(bid)}")
        return ""
    return bid


def _go_int_text(number: float, problems: list[str]) -> str:
    try:
        return str(int(number))
    except (OverflowError, ValueError):
        problems.append(f"custom.{CUSTOM_JOB_ID}: {number!r} is not a usable job id")
        return "0"


def _jid(raw: bytes) -> str | None:
    """The ``jid`` of a fetched job, if ``raw`` is a JSON object with a non-empty string one."""
    try:
        payload = json.loads(raw)
    except ValueError:
        return None
    jid = payload.get("jid") if isinstance(payload, dict) else None
    return jid if isinstance(jid, str) and jid else None


def _string(value: Any, where: str, problems: list[str]) -> str:
    if not isinstance(value, str):
        problems.append(f"{where}: expected a string, got {_json_type(value)}")
        return ""
    return value


def _custom_list(job: Job, key: str, items: str, problems: list[str]) -> list[Any]:
    """``custom[key]`` as a list of ``items``: absent or null is empty; anything else is a problem."""
    found, raw = job.custom_value(key)
    if not found or raw is None:
        return []
    if not isinstance(raw, list):
        problems.append(f"custom.{key}: expected a list of {items}, got {_json_type(raw)}")
        return []
    return raw


def _string_list(job: Job, key: str, problems: list[str]) -> list[str]:
    raw = _custom_list(job, key, "strings", problems)
    return [_string(item, f"custom.{key}[{index}]", problems) for index, item in enumerate(raw)]


_FIELD_TYPES: dict[str, tuple[type[Any], str]] = {
    "key": (str, "a string"),
    "value": (str, "a string"),
    "name": (str, "a string"),
    "contents": (str, "a string"),
    "sensitive": (bool, "true or false"),
}


def _records(job: Job, key: str, fields: tuple[str, ...], problems: list[str]) -> list[dict[str, Any]]:
    """A list of objects decoded as mapstructure does: field names match case-insensitively,
    other keys are ignored, missing fields are zero values, types must match exactly."""
    records: list[dict[str, Any]] = []
    for index, item in enumerate(_custom_list(job, key, "objects", problems)):
        where = f"custom.{key}[{index}]"
        if not isinstance(item, dict):
            problems.append(f"{where}: expected an object with {', '.join(fields)}, got {_json_type(item)}")
            continue
        record: dict[str, Any] = {}
        for field in fields:
            present, value = _field(item, field)
            if not present or value is None:
                continue
            kind, label = _FIELD_TYPES[field]
            if not isinstance(value, kind):
                problems.append(f"{where}.{field}: expected {label}, got {_json_type(value)}")
                continue
            record[field] = value
        records.append(record)
    return records


def _field(item: Mapping[str, Any], name: str) -> tuple[bool, Any]:
    if name in item:
        return True, item[name]
    for key, value in item.items():
        if isinstance(key, str) and key.lower() == name:
            return True, value
    return False, None


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


# --- the worker ---------------------------------------------------------------------------------


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
    ) -> None:
        self._client = client
        self.queues = queues
        self._environ = environ
        self.heartbeat_interval = heartbeat_interval
        self._metrics = metrics or FaktoryMetrics()
        self._backoff = backoff or Backoff()
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
        # Shielded (each FETCH is bounded by its own timeout): a FETCH cut short could leave a job
        # reserved by the server but unseen here until its reservation expires (30 min by default).
        try:
            with trio.CancelScope(shield=True):
                async with self._client.connection() as conn:
                    raw = await conn.fetch(self.queues)
        except FaktoryError as exc:
            self._metrics.command_failed("FETCH")
            delay = self._backoff.next_delay()
            if not self._fetch_failing:
                log.warning("cannot fetch jobs from Faktory, retrying: %s", exc)
            else:
                log.debug("fetch failed again, next attempt in %.1fs: %s", delay, exc)
            self._fetch_failing = True
            await trio.sleep(delay)
            return None
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
        jid = _jid(raw)
        if jid is None:
            return
        rejection = Rejection("Shutdown", "the runner shut down before the job started")
        log.info("handing job %s back to Faktory: the runner is shutting down", jid)
        with trio.CancelScope(shield=True), trio.move_on_after(self._client.timeout * 2):
            await self._answer("FAIL", jid, rejection)

    async def _accept(self, raw: bytes) -> ClaimedJob | None:
        jid = _jid(raw)
        if jid is None:
            self._metrics.job_rejected("unidentifiable")
            log.error("Faktory sent a job without a jid; it cannot be answered and will expire: %.200r", raw)
            return None
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
        for warning in decoded.warnings:
            log.warning("job %s (jid %s): %s", decoded.job.id, jid, warning)
        self._outstanding[jid] = decoded.job.id
        log.info("claimed Faktory job %s (jid %s, queue %s)", decoded.job.id, jid, job.queue)
        sink = FaktorySink(self._client, runner_job_id=decoded.job.id, bid=decoded.bid, metrics=self._metrics)
        return ClaimedJob(decoded.job, sink, finished=_Finisher(self, jid))

    async def _reject(self, jid: str, reason: str, rejection: Rejection) -> None:
        log.error("job %s not run, answering FAIL: %s", jid, rejection.message)
        self._metrics.job_rejected(reason)
        await self._answer("FAIL", jid, rejection)

    async def acknowledge(self, jid: str, outcome: JobOutcome) -> None:
        """The job ran and its outcome was reported (whatever it was): ACK, as the Go handler
        returns nil once a job has run."""
        await self._answer("ACK", jid, None)

    async def _answer(self, command: str, jid: str, rejection: Rejection | None) -> None:
        """ACK or FAIL ``jid``, retrying for up to 30 s; the server's reservation covers a failure."""
        backoff = Backoff(initial=0.5, maximum=5.0)
        try:
            await self._answer_until(command, jid, rejection, backoff)
        finally:
            self._outstanding.pop(jid, None)

    async def _answer_until(
        self, command: str, jid: str, rejection: Rejection | None, backoff: Backoff
    ) -> None:
        with trio.move_on_after(RESULT_TIMEOUT) as scope:
            while True:
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
                    return
                except FaktoryError as exc:
                    self._metrics.command_failed(command)
                    delay = backoff.next_delay()
                    log.warning("%s %s failed, retrying in %.1fs: %s", command, jid, delay, exc)
                    await trio.sleep(delay)
        if scope.cancelled_caught:
            log.error(
                "could not %s job %s within %gs; Faktory will retry it when its reservation expires",
                command,
                jid,
                RESULT_TIMEOUT,
            )

    async def release_unfinished(self) -> None:
        """FAIL every job claimed but never finished (shutdown before it ran), so Faktory
        retries it now instead of after its reservation expires. Bounded and shielded."""
        with trio.CancelScope(shield=True):
            for jid, job_id in list(self._outstanding.items()):
                rejection = Rejection("Shutdown", f"the runner shut down before job {job_id or jid} ran")
                with trio.move_on_after(self._client.timeout * 2):
                    await self._answer("FAIL", jid, rejection)

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
        current = self.state or ("terminate" if shutting_down() else "")
        beat = Beat(current_state=current, rss_kb=rss_kb(), wid=self.wid)
        try:
            state = await self._beat(beat, fresh=False)
        except ServerError as exc:
            if "unknown worker" not in exc.message.lower():
                self._metrics.command_failed("BEAT")
                log.error("heartbeat refused by Faktory: %s", exc)
                return
            # The server forgot this process (no BEAT for a minute); a new HELLO registers it again.
            log.warning("Faktory no longer knows worker %s; registering again", self.wid)
            await self._client.discard_idle()
            try:
                state = await self._beat(beat, fresh=True)
            except FaktoryError as again:
                self._metrics.command_failed("BEAT")
                log.error("heartbeat failed after registering again: %s", again)
                return
        except (ConnectionLost, ProtocolViolation) as exc:
            self._metrics.command_failed("BEAT")
            log.warning("heartbeat failed: %s", exc)
            return
        if state:
            self.apply_server_state(state, on_terminate)

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
