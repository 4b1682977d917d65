"""Run a command in a pod container over the exec WebSocket and turn the session into an
:class:`~trunner.executors.base.ExitResult`.

Protocol (``v5.channel.k8s.io``, falling back to ``v4.channel.k8s.io``): every binary message is
``[channel][payload]``; channel 1 is stdout, 2 stderr, 3 the ``metav1.Status`` that ends the
session. The first message may be empty. A session that closes without a status (any close
code, 1000 included) is *severed*: the command's result is unknown and never counted as success.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import attrs
import trio
import trio_websocket

from trunner.contracts import OutputFeed, Stream
from trunner.executors.base import ExitKind, ExitResult
from trunner.kube.client import KubeClient
from trunner.kube.errors import KubeError, Status, StatusError, StatusParseError, parse_status
from trunner.kube.params import Params

SUBPROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
MAX_MESSAGE_SIZE = 32 * 1024 * 1024
RECEIVE_BUFFER_SIZE = 256 * 1024
STDOUT_CHANNEL = 1
STDERR_CHANNEL = 2
STATUS_CHANNEL = 3


@attrs.frozen
class ExecTiming:
    """Keepalive of an exec session: a ping after ``ping_interval`` seconds (5-30, as kubectl's
    5 s) in which the reader listened and heard nothing. The connection is dead when a ping is out
    and nothing at all (pong or data) is heard for ``ping_timeout`` seconds of the time the reader
    listens; time it is held by the log's back-pressure does not count."""

    ping_interval: float = 10.0
    ping_timeout: float = 60.0
    connect_timeout: float = 30.0
    close_timeout: float = 5.0

    def __attrs_post_init__(self) -> None:
        if not 5.0 <= self.ping_interval <= 30.0:
            raise ValueError("ping_interval must be between 5 and 30 seconds")
        if self.ping_timeout <= 0 or self.connect_timeout <= 0 or self.close_timeout <= 0:
            raise ValueError("timeouts must be positive")


def exec_path(namespace: str, pod: str) -> str:
    return f"/api/v1/namespaces/{namespace}/pods/{pod}/exec"


async def exec_stream(
    client: KubeClient,
    namespace: str,
    pod: str,
    container: str,
    command: Sequence[str],
    output: OutputFeed,
    *,
    timing: ExecTiming | None = None,
) -> ExitResult:
    """Run ``command`` (an argv, not run through a shell) in ``container`` of ``pod`` and feed
    its stdout/stderr to ``output`` as it arrives.

    Returns ``ExitResult.exited(code)`` when the API reports the exit status; ``SEVERED`` when the
    stream ended without one; ``INFRASTRUCTURE`` (with the API's message) when the exec was
    rejected, the API reported another failure (e.g. ``InternalError``) or could not be
    reached. Never raises for these; cancellation propagates after the socket is closed."""
    timing = timing or ExecTiming()
    params: Params = {"command": list(command), "container": container, "stdout": True, "stderr": True}
    try:
        async with client.open_websocket(
            exec_path(namespace, pod),
            params=params,
            subprotocols=SUBPROTOCOLS,
            max_message_size=MAX_MESSAGE_SIZE,
            receive_buffer_size=RECEIVE_BUFFER_SIZE,
            connect_timeout=timing.connect_timeout,
            close_timeout=timing.close_timeout,
        ) as ws:
            return await _session(ws, output, timing)
    except StatusError as exc:
        return ExitResult(ExitKind.INFRASTRUCTURE, message=_rejection(pod, exc))
    except KubeError as exc:
        return ExitResult(ExitKind.INFRASTRUCTURE, message=f"exec in pod {pod} failed: {exc}")


def _rejection(pod: str, error: StatusError) -> str:
    if error.code == 403 and error.message.endswith("with an empty body"):
        return (
            f"exec in pod {pod} was rejected: 403 Forbidden with an empty body (the API server accepts "
            f"none of the offered subprotocols {', '.join(SUBPROTOCOLS)})"
        )
    return f"exec in pod {pod} was rejected: {error.code} {error.reason}: {error.message}"


@attrs.define
class _Session:
    status_parts: list[bytes] = attrs.Factory(list)
    close: trio_websocket.CloseReason | None = None
    silent_for: float | None = None
    heard_at: float = 0.0
    """When the reader last took a message or was let go by the log: the server's silence counts
    from here. A reader held by back-pressure is not listening (trio-websocket's reader task waits
    on its full message queue, so pongs behind the data are not read), so silence is never
    counted while ``held``."""
    held: bool = False


async def _session(
    ws: trio_websocket.WebSocketConnection, output: OutputFeed, timing: ExecTiming
) -> ExitResult:
    session = _Session(heard_at=trio.current_time())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_keepalive, ws, timing, session, nursery.cancel_scope)
        await _read(ws, output, session)
        nursery.cancel_scope.cancel()
    return _result(session)


async def _read(ws: trio_websocket.WebSocketConnection, output: OutputFeed, session: _Session) -> None:
    feed = output.feed
    parts = session.status_parts
    now = trio.current_time
    while True:
        try:
            message = await ws.get_message()
        except trio_websocket.ConnectionClosed as closed:
            session.close = closed.reason
            return
        if isinstance(message, str):
            message = message.encode()
        if message:
            channel = message[0]
            if channel in (STDOUT_CHANNEL, STDERR_CHANNEL):
                if len(message) > 1:
                    feed(Stream.STDOUT if channel == STDOUT_CHANNEL else Stream.STDERR, message[1:])
                    session.held = True
                    try:
                        await output.wait_for_room()
                    finally:
                        session.held = False
            elif channel == STATUS_CHANNEL:
                parts.append(message[1:])
        session.heard_at = now()


async def _keepalive(
    ws: trio_websocket.WebSocketConnection,
    timing: ExecTiming,
    session: _Session,
    reader: trio.CancelScope,
) -> None:
    """Pings once the reader has listened for ``ping_interval`` without hearing anything; the
    connection is dead when a ping has been out for ``ping_timeout`` of the reader's listening
    time without any frame heard.

    Nothing is sent while the reader is held: a pong could not be read anyway, and the server may
    have written its last output and closed meanwhile; a frame sent to a closed socket is answered
    with a reset, which may cost what the kernel still holds for the reader (the end of the output
    and the exit status). After ``ping_interval`` of listening in silence, nothing is left unread."""
    while True:
        now = trio.current_time()
        quiet_from = session.heard_at + timing.ping_interval
        if session.held or now < quiet_from:
            await trio.sleep_until(
                max(quiet_from, now + timing.ping_interval) if session.held else quiet_from
            )
            continue
        answered = await _ping_watched(ws, timing, session)
        if answered is None:
            reader.cancel()
            return
        if not answered:
            return


async def _ping_watched(
    ws: trio_websocket.WebSocketConnection, timing: ExecTiming, session: _Session
) -> bool | None:
    """True when the pong came, False when the connection closed meanwhile, None when the server
    stayed silent for ``ping_timeout`` while the reader listened."""
    sent = trio.current_time()
    answered = False
    async with trio.open_nursery() as nursery:

        async def ping() -> None:
            nonlocal answered
            with contextlib.suppress(trio_websocket.ConnectionClosed):
                await ws.ping()
                answered = True
                session.heard_at = max(session.heard_at, trio.current_time())
            nursery.cancel_scope.cancel()

        nursery.start_soon(ping)
        while True:
            now = trio.current_time()
            deadline = max(sent, session.heard_at) + timing.ping_timeout
            if session.held:
                deadline = max(deadline, now + timing.ping_timeout)
            elif now >= deadline:
                session.silent_for = timing.ping_timeout
                nursery.cancel_scope.cancel()
                return None
            await trio.sleep_until(deadline)
    return answered


def _result(session: _Session) -> ExitResult:
    if session.status_parts:
        return status_result(b"".join(session.status_parts))
    if session.silent_for is not None:
        return ExitResult(
            ExitKind.SEVERED,
            message="the exec stream was severed: the API server did not answer a ping within "
            f"{session.silent_for:g} s; the command's result is unknown",
        )
    close = session.close
    how = "closed"
    if close is not None:
        how = f"closed with code {close.code}" + (f" ({close.reason})" if close.reason else "")
    return ExitResult(
        ExitKind.SEVERED,
        message=f"the exec stream was severed: the connection {how} without an exit status; "
        "the command's result is unknown",
    )


def status_result(data: bytes) -> ExitResult:
    """The result of a session from its channel-3 bytes, decoded as client-go does."""
    try:
        status = parse_status(data)
    except StatusParseError as exc:
        return _protocol_error(f"{exc} in {data[:200]!r}")
    if status.status == "Success":
        return ExitResult.exited(0)
    if status.status != "Failure":
        return _protocol_error(f"unknown status {status.status!r}")
    if status.reason == "NonZeroExitCode":
        return _exit_code_result(status)
    return ExitResult(
        ExitKind.INFRASTRUCTURE, message=status.message or status.reason or "exec failed without a message"
    )


def _exit_code_result(status: Status) -> ExitResult:
    if status.details is None:
        return _protocol_error("details must be set")
    cause = next((c for c in status.details.causes if c.reason == "ExitCode"), None)
    if cause is None:
        return _protocol_error("no ExitCode cause given")
    text = cause.message
    if not (text.isascii() and text.isdigit()) or int(text) > 255:
        return _protocol_error(f"invalid exit code value {text!r}")
    return ExitResult.exited(int(text))


def _protocol_error(detail: str) -> ExitResult:
    return ExitResult(ExitKind.INFRASTRUCTURE, message=f"exec error stream protocol error: {detail}")
