"""The exec side of the Kubernetes API double: one WebSocket session after the 101, emulating
the apiserver's stream translator (k8s_exec.md section 8) on wsproto frames.

A session either runs the argv as a local subprocess (with the container's env from the stored
pod) or plays a script of steps, which is how faults are injected: stalled output, a dead peer,
close 1000 without a status, a TCP abort, an InternalError status, a status split across two
channel-3 messages, a very large frame. A subprocess session can also be cut once it has sent a
given number of output bytes (:class:`CutBudget`).

As on a kubelet, a command outlives its exec session: when the session is cut or closed, the
process keeps running (writing to its stdout or stderr fails, as on a dropped stream) until it ends or its pod is
deleted, which kills its whole process group, including anything it left running in the
background.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
import subprocess
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import trio
from wsproto.connection import Connection, ConnectionState
from wsproto.events import BytesMessage, CloseConnection, Ping, TextMessage
from wsproto.utilities import LocalProtocolError

from tests.doubles.kube_store import go_json

OUTPUT_CHUNK = 32 * 1024
STDIN, STDOUT, STDERR, STATUS, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255


# --- statuses as the translator writes them (k8s_exec.md section 4) ------------------------------


def success_status() -> bytes:
    return go_json({"metadata": {}, "status": "Success"})


def exit_code_status(code: int) -> bytes:
    return go_json(
        {
            "metadata": {},
            "status": "Failure",
            "message": f"command terminated with non-zero exit code: command terminated with exit code {code}",
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
        }
    )


def internal_error_status(cause: str) -> bytes:
    return go_json(
        {
            "metadata": {},
            "status": "Failure",
            "message": f"Internal error occurred: {cause}",
            "reason": "InternalError",
            "details": {"causes": [{"message": cause}]},
            "code": 500,
        }
    )


# --- script steps --------------------------------------------------------------------------------


@attrs.frozen
class Stdout:
    data: bytes


@attrs.frozen
class Stderr:
    data: bytes


@attrs.frozen
class Repeat:
    """``data`` repeated ``count`` times, sent in messages of at most 32 KiB (whole copies of
    ``data`` per message when it fits)."""

    data: bytes
    count: int
    channel: int = STDOUT


@attrs.frozen
class Pause:
    """Stalled output: nothing is written for ``seconds`` (pings are still answered)."""

    seconds: float


@attrs.frozen
class RawMessage:
    """Exactly this message, channel byte included (e.g. a frame larger than the client allows)."""

    data: bytes


@attrs.frozen
class Exit:
    """The status for exit ``code`` (Success for 0), then close 1000 and FIN."""

    code: int


@attrs.frozen
class Fail:
    """An InternalError status carrying ``cause``, then close 1000 and FIN."""

    cause: str


@attrs.frozen
class StatusBytes:
    """Any channel-3 payload; ``split_at`` sends it as two channel-3 messages."""

    data: bytes
    split_at: int | None = None


@attrs.frozen
class Sever:
    """A close frame with ``code`` and no status, then FIN."""

    code: int = 1000
    reason: str = ""


@attrs.frozen
class Abort:
    """A TCP reset with no close frame (the client sees 1006)."""


@attrs.frozen
class Hang:
    """A dead peer: nothing is read or written any more (pings go unanswered)."""


ExecStep = Stdout | Stderr | Repeat | Pause | RawMessage | Exit | Fail | StatusBytes | Sever | Abort | Hang


@attrs.frozen
class Script:
    steps: tuple[ExecStep, ...]


@attrs.frozen
class Subprocess:
    argv: tuple[str, ...]
    env: dict[str, str]
    cwd: str | None = None


ExecPlan = Script | Subprocess


@attrs.frozen
class ExecRequest:
    namespace: str
    pod_name: str
    container: str
    command: tuple[str, ...]
    stdin: bool
    stdout: bool
    stderr: bool
    tty: bool
    pod: dict[str, Any]
    env: dict[str, str]
    """The container's environment from the pod spec (value, valueFrom and envFrom resolved)."""


@attrs.define
class ExecSession:
    """What happened in one exec session, for assertions."""

    request: ExecRequest
    subprotocol: str
    offered: tuple[str, ...]
    stdin: bytearray = attrs.Factory(bytearray)
    resizes: list[bytes] = attrs.Factory(list)
    stdin_closed: bool = False
    client_close_code: int | None = None
    client_fragmented: bool = False
    status_sent: bytes | None = None
    pings_answered: int = 0
    killed: bool = False
    cut: bool = False
    """The double cut this session (:class:`CutBudget`)."""
    process: trio.Process | None = None
    finished: trio.Event = attrs.Factory(trio.Event)


class SessionEnded(Exception):
    """The session ended from the client's side (close frame, malformed 255, EOF)."""


@attrs.define
class CutBudget:
    """The next ``times`` subprocess sessions that send ``after_bytes`` bytes of output are cut
    there: a TCP reset (``abort``) or a close frame with code 1006-like ``code`` and no status."""

    times: int
    after_bytes: int
    abort: bool = True
    code: int = 1001

    def __attrs_post_init__(self) -> None:
        if self.times < 0 or self.after_bytes <= 0:
            raise ValueError("a cut needs times >= 0 and after_bytes > 0")

    def take(self) -> bool:
        if self.times <= 0:
            return False
        self.times -= 1
        return True


class WsPeer:
    """The server end of one WebSocket on a stream, writing frames under a lock."""

    def __init__(self, stream: trio.abc.Stream, ws: Connection, session: ExecSession) -> None:
        self.stream = stream
        self.ws = ws
        self.session = session
        self._lock = trio.Lock()
        self.hung = False
        self.closed = False
        self.client_gone = trio.Event()
        self.stdin_eof = trio.Event()
        self._stdin_send, self.stdin_receive = trio.open_memory_channel[bytes](16)
        self.cuts: CutBudget | None = None
        self.output_sent = 0

    async def send_raw(self, event: Any) -> None:
        if self.closed:
            raise SessionEnded()
        async with self._lock:
            if self.ws.state not in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
                raise SessionEnded()
            try:
                data = self.ws.send(event)
            except LocalProtocolError:
                raise SessionEnded() from None
            try:
                await self.stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                raise SessionEnded() from None

    async def message(self, data: bytes) -> None:
        await self.send_raw(BytesMessage(data=data))

    async def output(self, channel: int, data: bytes) -> None:
        for start in range(0, len(data), OUTPUT_CHUNK):
            await self.message(bytes([channel]) + data[start : start + OUTPUT_CHUNK])

    async def command_output(self, channel: int, data: bytes) -> None:
        """Output of the running command; the session is cut here when its budget says so."""
        await self.message(bytes([channel]) + data)
        self.output_sent += len(data)
        cuts = self.cuts
        # Both output pumps come through here: the second can pass the threshold while the first
        # is still sending the close frame, and a session is cut (and counted) once.
        if cuts is not None and not self.session.cut and self.output_sent >= cuts.after_bytes and cuts.take():
            self.session.cut = True
            if cuts.abort:
                await self.abort()
            else:
                await self.close(cuts.code, "cut by the test")
            raise SessionEnded()

    async def reader(self) -> None:
        """Reads client frames as x/net does: one frame is one message; pings get pongs."""
        frame = bytearray()
        try:
            while not self.hung:
                try:
                    data = await self.stream.receive_some(65536)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    data = b""
                if self.hung:
                    return
                if not data:
                    return
                self.ws.receive_data(data)
                for event in self.ws.events():
                    if isinstance(event, Ping):
                        self.session.pings_answered += 1
                        await self.send_raw(event.response())
                    elif isinstance(event, CloseConnection):
                        self.session.client_close_code = event.code
                        return
                    elif isinstance(event, BytesMessage | TextMessage):
                        payload = event.data.encode() if isinstance(event, TextMessage) else event.data
                        frame += payload
                        if not event.frame_finished:
                            continue
                        if not event.message_finished:
                            self.session.client_fragmented = True
                        message, frame = bytes(frame), bytearray()
                        if not await self._client_message(message):
                            return
        except SessionEnded:
            return
        finally:
            self.client_gone.set()

    async def _client_message(self, message: bytes) -> bool:
        if not message:
            return True
        channel, payload = message[0], message[1:]
        if channel == STDIN and self.session.request.stdin:
            self.session.stdin += payload
            await self._stdin_send.send(payload)
        elif channel == RESIZE:
            self.session.resizes.append(payload)
        elif channel == CLOSE:
            if len(message) != 2 or message[1] >= 5 or self.session.subprotocol != "v5.channel.k8s.io":
                return self.session.subprotocol != "v5.channel.k8s.io"
            if message[1] == STDIN:
                self.session.stdin_closed = True
                self._stdin_send.close()
        return True

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close frame then FIN at once, as x/net's ``Conn.Close`` does."""
        with contextlib.suppress(SessionEnded):
            await self.send_raw(CloseConnection(code=code, reason=reason or None))
        await self.close_tcp()

    async def close_tcp(self) -> None:
        self.closed = True
        with trio.move_on_after(2) as scope:
            scope.shield = True
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await self.stream.aclose()

    async def abort(self) -> None:
        """A TCP reset: SO_LINGER 0 and close, no close frame and no TLS close_notify."""
        raw: Any = self.stream
        while not isinstance(raw, trio.SocketStream):
            raw = raw.transport_stream
        raw.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        raw.socket.close()
        self.closed = True


def _exit_status(code: int) -> bytes:
    return success_status() if code == 0 else exit_code_status(code)


async def _send_status(peer: WsPeer, data: bytes, split_at: int | None = None) -> None:
    peer.session.status_sent = data
    if split_at is None:
        await peer.message(bytes([STATUS]) + data)
    else:
        await peer.message(bytes([STATUS]) + data[:split_at])
        await peer.message(bytes([STATUS]) + data[split_at:])


async def play_script(peer: WsPeer, steps: Sequence[ExecStep]) -> None:
    """Plays ``steps``; without a terminal step the session ends with Success."""
    for step in steps:
        if isinstance(step, Stdout):
            await peer.output(STDOUT, step.data)
        elif isinstance(step, Stderr):
            await peer.output(STDERR, step.data)
        elif isinstance(step, Repeat):
            per_message = max(1, OUTPUT_CHUNK // max(1, len(step.data)))
            block = bytes([step.channel]) + step.data * per_message
            full, rest = divmod(step.count, per_message)
            for _ in range(full):
                await peer.message(block)
            if rest:
                await peer.message(bytes([step.channel]) + step.data * rest)
        elif isinstance(step, Pause):
            await trio.sleep(step.seconds)
        elif isinstance(step, RawMessage):
            await peer.message(step.data)
        elif isinstance(step, Exit):
            await _send_status(peer, _exit_status(step.code))
            await peer.close()
            return
        elif isinstance(step, Fail):
            await _send_status(peer, internal_error_status(step.cause))
            await peer.close()
            return
        elif isinstance(step, StatusBytes):
            await _send_status(peer, step.data, step.split_at)
            await peer.close()
            return
        elif isinstance(step, Sever):
            await peer.close(step.code, step.reason)
            return
        elif isinstance(step, Abort):
            await peer.abort()
            return
        elif isinstance(step, Hang):
            peer.hung = True
            await trio.sleep_forever()
    await _send_status(peer, success_status())
    await peer.close()


def durable_stage_script(
    *steps: ExecStep, stdout_size: int, stderr_size: int = 0, code: int = 0
) -> Callable[[ExecRequest], ExecPlan]:
    """An exec plan that plays trunner's durable stage without running it: the launch succeeds,
    the first reader plays ``steps`` (the job's output, then Success), the exit record says
    ``code`` and the sizes the reader must have reached. Other execs run as subprocesses."""
    read_once = False

    def plan(request: ExecRequest) -> ExecPlan:
        nonlocal read_once
        role = request.command[3] if len(request.command) > 3 else ""
        if role == "trunner-launch":
            return Script((Exit(0),))
        if role == "trunner-read" and not read_once:
            read_once = True
            return Script((*steps, Exit(0)))
        if role == "trunner-status":
            return Script((Stdout(f"{code} {stdout_size} {stderr_size}\n".encode()), Exit(0)))
        return Subprocess(request.command, dict(request.env))

    return plan


def _returncode(code: int) -> int:
    return 128 - code if code < 0 else code


async def run_subprocess(
    peer: WsPeer, plan: Subprocess, orphan: Callable[[trio.Process], None] | None = None
) -> None:
    """Runs the argv, forwarding stdout/stderr as they come; the exit code becomes the status.
    A missing executable is the InternalError the runtime reports. When the session ends before
    the process, the process is handed to ``orphan`` and keeps running (killed without one)."""
    request = peer.session.request
    try:
        process = await trio.lowlevel.open_process(
            list(plan.argv),
            stdin=subprocess.PIPE if request.stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=plan.env,
            cwd=plan.cwd,
            start_new_session=True,
        )
    except OSError as exc:
        name = plan.argv[0] if plan.argv else ""
        why = "executable file not found in $PATH" if isinstance(exc, FileNotFoundError) else exc.strerror
        cause = (
            "error executing command in container: failed to exec in container: failed to start exec: "
            f'OCI runtime exec failed: exec failed: unable to start container process: exec: "{name}": '
            f"{why}: unknown"
        )
        await _send_status(peer, internal_error_status(cause))
        await peer.close()
        return
    peer.session.process = process
    try:
        async with trio.open_nursery() as nursery:

            async def pump(source: trio.abc.ReceiveStream | None, channel: int) -> None:
                assert source is not None
                try:
                    while chunk := await source.receive_some(OUTPUT_CHUNK):
                        await peer.command_output(channel, chunk)
                except SessionEnded:
                    return

            async def feed_stdin() -> None:
                assert process.stdin is not None
                async with process.stdin:
                    async for data in peer.stdin_receive:
                        await process.stdin.send_all(data)

            nursery.start_soon(pump, process.stdout, STDOUT)
            nursery.start_soon(pump, process.stderr, STDERR)
            if request.stdin:
                nursery.start_soon(feed_stdin)
        code = await process.wait()
    finally:
        if process.returncode is None:
            if orphan is not None:
                orphan(process)
            else:
                peer.session.killed = True
                _kill_group(process)
                with trio.CancelScope(shield=True):
                    await process.wait()
    await _send_status(peer, _exit_status(_returncode(code)))
    await peer.close()


def kill_session(session: ExecSession) -> None:
    """The container is killed (pod deleted): the command dies of SIGKILL, reported as 137, and
    so does everything it left running in its process group."""
    if session.process is not None:
        if session.process.returncode is None:
            session.killed = True
        _kill_group(session.process)


async def reap_orphan(process: trio.Process) -> None:
    """Waits for a process whose session ended; its output pipes are closed first, so writing
    to them fails as writing to a dropped exec stream does."""
    for pipe in (process.stdout, process.stderr, process.stdin):
        if pipe is not None:
            with (
                contextlib.suppress(trio.ClosedResourceError, trio.BrokenResourceError, OSError),
                trio.CancelScope(shield=True),
            ):
                await pipe.aclose()
    await process.wait()


def _kill_group(process: trio.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def container_env(pod: dict[str, Any], container: dict[str, Any], lookup: Any) -> dict[str, str]:
    """The container's env as the kubelet builds it: ``envFrom`` first, then ``env`` (later
    entries win); ``valueFrom`` config map and secret keys resolved through ``lookup(plural,
    name, key)``; ``fieldRef`` for the pod's name and namespace."""
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        for kind, plural in (("configMapRef", "configmaps"), ("secretRef", "secrets")):
            ref = source.get(kind)
            if ref:
                for key, value in (lookup(plural, ref.get("name", ""), None) or {}).items():
                    env[prefix + key] = value
    metadata = pod.get("metadata") or {}
    fields = {"metadata.name": metadata.get("name", ""), "metadata.namespace": metadata.get("namespace", "")}
    for var in container.get("env") or []:
        name = var.get("name", "")
        if "value" in var:
            env[name] = str(var["value"])
            continue
        source = var.get("valueFrom") or {}
        if "fieldRef" in source:
            env[name] = fields.get(source["fieldRef"].get("fieldPath", ""), "")
        for kind, plural in (("configMapKeyRef", "configmaps"), ("secretKeyRef", "secrets")):
            ref = source.get(kind)
            if ref:
                value = lookup(plural, ref.get("name", ""), ref.get("key", ""))
                if value is not None:
                    env[name] = value
        if not source:
            env[name] = ""
    return env


__all__ = [
    "Abort",
    "CutBudget",
    "ExecPlan",
    "ExecRequest",
    "ExecSession",
    "ExecStep",
    "Exit",
    "Fail",
    "Hang",
    "Pause",
    "RawMessage",
    "Repeat",
    "Script",
    "Sever",
    "StatusBytes",
    "Stderr",
    "Stdout",
    "Subprocess",
    "WsPeer",
    "container_env",
    "durable_stage_script",
    "exit_code_status",
    "internal_error_status",
    "kill_session",
    "play_script",
    "reap_orphan",
    "run_subprocess",
    "success_status",
]
