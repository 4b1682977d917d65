"""A job stage that outlives its exec stream: launched detached in the pod once, then read by
byte offset over as many exec sessions as it takes.

The launch exec returns at once; the commands run on in the pod with their output appended to
files on the pod's work-directory volume (:mod:`trunner.executors.kubernetes.stage`). A reader
exec streams both files from the runner's offsets; when it is cut (a stream that ends without a
status is never success) or the API fails, the runner reconnects with jittered backoff (doubling
from ``base`` to ``cap``, reset once a session delivered bytes) for as long as the caller lets it
(the job's lifetime) and the job container runs, and reads on from the first byte it has not
handed to the job log. The log's state (line cuts, masking, outcome variables) lives in this
process, so the bytes it is fed are those of one uninterrupted stream. The stage is over when the
reader has seen the exit record and the offsets reach the sizes the record names; its exit code
comes from that record, never from the output.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence

import attrs
import trio

from trunner.contracts import OutputFeed, Stream
from trunner.executors.base import ExitKind, ExitResult
from trunner.executors.kubernetes.exec import ExecTiming, exec_stream
from trunner.executors.kubernetes.offsets import (
    MAX_EXIT_RECORD,
    ExitRecordError,
    StreamOffsets,
    parse_exit_record,
)
from trunner.executors.kubernetes.stage import NOT_STARTED, Stage
from trunner.executors.kubernetes.wait import pod_path
from trunner.kube.client import KubeClient
from trunner.kube.errors import KubeError, NotFound
from trunner.net.retry import exponential_backoff

logger = logging.getLogger("trunner.executors.kubernetes")

POD_CHECK_TIMEOUT = 10.0
KILLED_BY_SIGNAL = 128
"""A reader that exits with this code or above was killed (e.g. with its container): it is a
drop like a cut stream, and the pod tells whether there is anything left to read from."""


@attrs.frozen
class ResumePolicy:
    """Reconnecting to a detached stage: waits doubling from ``base`` to ``cap`` seconds,
    jittered; the reader looks for new output every ``poll_seconds`` (whole seconds: POSIX
    ``sleep``)."""

    base: float = 1.0
    cap: float = 30.0
    poll_seconds: int = 1

    def __attrs_post_init__(self) -> None:
        if not 0 < self.base <= self.cap:
            raise ValueError("the resume backoff needs 0 < base <= cap")
        if self.poll_seconds < 1:
            raise ValueError("the reader's poll interval is at least 1 s")

    def delay(self, retry: int, rng: random.Random | None = None) -> float:
        return exponential_backoff(retry, base=self.base, cap=self.cap, rng=rng)


@attrs.define
class StageTarget:
    """Where a stage runs: the pod, its container, and how to reach it."""

    client: KubeClient
    namespace: str
    pod: str
    container: str
    timing: ExecTiming


class _OffsetFeed:
    """Hands a reader session's bytes to the job log, counting them per stream."""

    def __init__(self, output: OutputFeed, offsets: StreamOffsets) -> None:
        self._output = output
        self._offsets = offsets
        self.received = 0
        self.first_at: float | None = None

    def feed(self, stream: Stream, data: bytes) -> None:
        if not data:
            return
        if self.first_at is None:
            self.first_at = trio.current_time()
        self._offsets.advance(stream, len(data))
        self.received += len(data)
        self._output.feed(stream, data)

    def note(self, text: str) -> None:
        self._output.note(text)

    async def wait_for_room(self) -> None:
        await self._output.wait_for_room()


class _Capture:
    """The stdout of a launch or status exec, kept up to a small bound; stderr is ignored."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.data = bytearray()
        self.overflow = False

    def feed(self, stream: Stream, data: bytes) -> None:
        if stream is Stream.STDOUT:
            room = self.limit - len(self.data)
            self.data += data[: max(room, 0)]
            self.overflow = self.overflow or len(data) > room

    def note(self, text: str) -> None:
        logger.info("%s", text)

    async def wait_for_room(self) -> None:
        return


@attrs.define
class _Resumes:
    """The backoff of one stage and its resume metric."""

    policy: ResumePolicy
    observe: Callable[[float], None] | None
    rng: random.Random | None
    retry: int = 0
    dropped_at: float | None = None
    count: int = 0

    async def wait(self) -> None:
        if self.dropped_at is None:
            self.dropped_at = trio.current_time()
        await trio.sleep(self.policy.delay(self.retry, self.rng))
        self.retry += 1

    def resumed(self, at: float) -> None:
        """A session after a drop delivered bytes or finished at ``at``."""
        self.retry = 0
        if self.dropped_at is not None:
            self.count += 1
            if self.observe is not None:
                self.observe(at - self.dropped_at)
            self.dropped_at = None


async def run_stage(
    target: StageTarget,
    stage: Stage,
    argv: Sequence[str],
    output: OutputFeed,
    *,
    policy: ResumePolicy | None = None,
    observe_resume: Callable[[float], None] | None = None,
    rng: random.Random | None = None,
) -> ExitResult:
    """Runs ``argv`` as the detached ``stage`` and feeds its output to ``output``; returns the
    exit code from the stage's exit record. Returns at once (as a single exec would) when the
    launch fails before the stage ever started; afterwards, a severed stream or an API failure
    is retried while the job container runs. The caller bounds the whole by the job's lifetime
    (cancellation)."""
    resumes = _Resumes(policy or ResumePolicy(), observe_resume, rng)
    launched = await _launch(target, stage, argv, resumes)
    if launched is not None:
        return launched
    offsets = StreamOffsets()
    while True:
        feed = _OffsetFeed(output, offsets)
        read = stage.read(offsets.stdout, offsets.stderr, resumes.policy.poll_seconds)
        result = await exec_stream(
            target.client, target.namespace, target.pod, target.container, read, feed, timing=target.timing
        )
        if feed.first_at is not None:
            resumes.resumed(feed.first_at)
        if result.kind is ExitKind.EXITED and (result.exit_code or 0) < KILLED_BY_SIGNAL:
            if result.exit_code == NOT_STARTED:
                return ExitResult(
                    ExitKind.INFRASTRUCTURE,
                    message=f"the job's commands are not running in pod {target.pod}: their stage "
                    f"directory {stage.directory} has no start marker (was the pod's volume lost?)",
                )
            if result.exit_code != 0:
                return ExitResult(
                    ExitKind.INFRASTRUCTURE,
                    message=f"reading the job's output in pod {target.pod} failed: the reader exited "
                    f"with code {result.exit_code}",
                )
            resumes.resumed(trio.current_time())
            finished = await _finish(target, stage, offsets, resumes)
            if finished is not None:
                return finished
            continue
        stop = await _stopped(target, result)
        if stop is not None:
            return stop
        logger.info(
            "reading the output of pod %s stopped at stdout byte %d, stderr byte %d (%s); resuming",
            target.pod,
            offsets.stdout,
            offsets.stderr,
            result.message,
        )
        await resumes.wait()


async def _launch(
    target: StageTarget, stage: Stage, argv: Sequence[str], resumes: _Resumes
) -> ExitResult | None:
    """None once the stage runs (started now or by an earlier launch)."""
    while True:
        capture = _Capture(0)
        result = await exec_stream(
            target.client,
            target.namespace,
            target.pod,
            target.container,
            stage.launch(argv),
            capture,
            timing=target.timing,
        )
        if result.kind is ExitKind.EXITED:
            if result.exit_code == 0:
                return None
            return ExitResult(
                ExitKind.COULD_NOT_START,
                message=f"could not start the job's commands in pod {target.pod}: creating their stage "
                f"directory {stage.directory} failed (exit code {result.exit_code})",
            )
        if result.kind is not ExitKind.SEVERED:
            return result
        stop = await _stopped(target, result)
        if stop is not None:
            return stop
        await resumes.wait()


async def _finish(
    target: StageTarget, stage: Stage, offsets: StreamOffsets, resumes: _Resumes
) -> ExitResult | None:
    """The stage's result from its exit record, or None when bytes remain to be read."""
    while True:
        capture = _Capture(MAX_EXIT_RECORD + 1)
        result = await exec_stream(
            target.client,
            target.namespace,
            target.pod,
            target.container,
            stage.status(),
            capture,
            timing=target.timing,
        )
        if result == ExitResult.exited(0):
            break
        if result.kind is ExitKind.EXITED:
            return ExitResult(
                ExitKind.INFRASTRUCTURE,
                message=f"the exit record of the job's commands in pod {target.pod} cannot be read "
                f"(exit code {result.exit_code}) though the reader saw it",
            )
        stop = await _stopped(target, result)
        if stop is not None:
            return stop
        await resumes.wait()
    try:
        record = parse_exit_record(bytes(capture.data))
    except ExitRecordError as exc:
        return ExitResult(ExitKind.INFRASTRUCTURE, message=f"pod {target.pod}: {exc}")
    if offsets.beyond(record):
        return ExitResult(
            ExitKind.INFRASTRUCTURE,
            message=f"the output files in pod {target.pod} are shorter than what was read from them "
            f"(read {offsets.stdout}/{offsets.stderr} bytes, exit record {record.stdout_size}/"
            f"{record.stderr_size}): they were changed while the job ran",
        )
    if offsets.behind(record):
        return None
    return ExitResult.exited(record.code)


async def _stopped(target: StageTarget, result: ExitResult) -> ExitResult | None:
    """``result`` when the job container is no longer running (nothing more will come), else
    None (reconnect). An API that does not answer counts as running: it may come back."""
    try:
        with trio.move_on_after(POD_CHECK_TIMEOUT):
            pod = await target.client.request(
                "GET", pod_path(target.namespace, target.pod), timeout=POD_CHECK_TIMEOUT / 2
            )
            if _container_running(pod, target.container):
                return None
            return result
    except NotFound:
        return result
    except KubeError as exc:
        logger.info("could not read pod %s after its exec ended: %s", target.pod, exc)
    return None


def _container_running(pod: object, container: str) -> bool:
    if not isinstance(pod, dict):
        return False
    metadata = pod.get("metadata") or {}
    if metadata.get("deletionTimestamp"):
        return False
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if isinstance(status, dict) and status.get("name") == container:
            return bool((status.get("state") or {}).get("running"))
    return False
