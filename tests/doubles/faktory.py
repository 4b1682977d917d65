"""A Faktory server double on loopback TCP, written from the Faktory v1.9.4 server code and the
protocol specification, independently of ``trunner.faktory``.

What it reproduces, byte for byte where the client can see it:
- greeting ``+HI {"v":2}`` or ``+HI {"v":2,"i":<iterations>,"s":"<hex salt>"}``; the HELLO must
  arrive within 2 s; the password hash is checked (``-ERR Invalid password`` and close);
  a HELLO with a ``wid`` registers a worker process (shared by all its connections);
- replies: ``+OK``, ``-ERR <message>``, bulk ``$<n>`` / ``$-1``;
- PUSH validation (jid of 8+ characters, jobtype, args, reserve_for <= 86400, ``at``), default
  retry 25, ``created_at``/``enqueued_at`` stamps; FETCH over queues in order, blocking up to 2 s,
  a quiet/terminating worker gets ``$-1`` after 2 s; ACK/FAIL of reserved jobs;
  BEAT answering ``+OK`` or ``$..{"state":"quiet"}``, ``-ERR unknown worker <wid>``;
  BATCH OPEN (Enterprise only; OSS answers the server's "only available in Faktory Enterprise").
- a restart loses the worker registry (in memory on the server) but keeps queues and
  reservations (Redis), as the real server reloads its working set.

Everything received is recorded; faults can be injected per command verb.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import random
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio

JOB_KEYS = (
    "retry",
    "failure",
    "custom",
    "jid",
    "queue",
    "jobtype",
    "created_at",
    "enqueued_at",
    "at",
    "args",
    "reserve_for",
    "backtrace",
)
OMITEMPTY = {"failure", "custom", "created_at", "enqueued_at", "at", "reserve_for", "backtrace"}


def server_hash(password: str, salt: str, iterations: int) -> str:
    digest = hashlib.sha256((password + salt).encode()).digest()
    for _ in range(1, iterations):
        digest = hashlib.sha256(digest).digest()
    return digest.hex()


def now_text() -> str:
    moment = dt.datetime.now(dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{moment.microsecond:06d}".rstrip("0").rstrip(".") + "Z"


def go_job_json(job: dict[str, Any]) -> bytes:
    """The job as the server's ``json.Marshal(client.Job)`` writes it."""
    ordered: dict[str, Any] = {}
    for key in JOB_KEYS:
        value = job.get(key)
        if key in OMITEMPTY and value in (None, "", 0, {}, []):
            continue
        ordered[key] = value
    return json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode()


@attrs.define
class Command:
    conn: int
    verb: str
    argument: str


@attrs.define
class Fault:
    verb: str
    action: str
    """``drop``: close the connection without processing; ``reject``: ``-ERR <message>`` without
    processing; ``delay``: wait ``seconds`` before processing."""
    remaining: int
    message: str = "injected failure"
    seconds: float = 0.0


@attrs.define
class WorkerProcess:
    wid: str
    hello: dict[str, Any]
    state: str = ""
    beats: int = 0


class _Closed(Exception):
    pass


class FaktoryDouble:
    def __init__(
        self,
        *,
        password: str = "",
        enterprise: bool = True,
        ssl_context: ssl.SSLContext | None = None,
        seed: int = 7419,
        iterations: int | None = None,
    ) -> None:
        self.password = password
        self.iterations = iterations
        """The password hash iteration count the greeting asks for; None: 4000-8095 at random, as the
        Faktory server chooses it."""
        self.enterprise = enterprise
        self.ssl_context = ssl_context
        self.port = 0
        self._rng = random.Random(seed)
        # server state (queues/reservations survive a restart; the worker registry does not)
        self.queues: dict[str, list[dict[str, Any]]] = {}
        self.scheduled: list[dict[str, Any]] = []
        self.working: dict[str, dict[str, Any]] = {}
        self.retries: list[dict[str, Any]] = []
        self.workers: dict[str, WorkerProcess] = {}
        self.batches: set[str] = set()
        # records
        self.commands: list[Command] = []
        self.hellos: list[dict[str, Any]] = []
        self.greetings: list[bytes] = []
        self.pushed: list[dict[str, Any]] = []
        self.pushed_raw: list[str] = []
        self.fetched: list[dict[str, Any]] = []
        self.acks: list[str] = []
        self.fails: list[dict[str, Any]] = []
        self.beats: list[dict[str, Any]] = []
        self.batch_opens: list[str] = []
        self.rejected_hellos = 0
        self.connections_opened = 0
        self.faults: list[Fault] = []
        self._changed = trio.lowlevel.ParkingLot()
        self._nursery: trio.Nursery | None = None
        self._listeners: list[trio.SocketListener] = []
        self._accept_scope: trio.CancelScope | None = None
        self._streams: set[trio.abc.Stream] = set()
        self.running = False

    # --- test-facing helpers ---

    def url(self, password: str | None = None, *, tls: bool = False) -> str:
        secret = self.password if password is None else password
        auth = f":{secret}@" if secret else ""
        return f"{'tcp+tls' if tls else 'tcp'}://{auth}127.0.0.1:{self.port}"

    def enqueue(self, jobtype: str, args: list[Any], *, queue: str = "default", **fields: Any) -> str:
        """Put a job on a queue as a producer's PUSH would."""
        jid = fields.pop("jid", None) or f"jid-{self._rng.getrandbits(48):012x}"
        job: dict[str, Any] = {"retry": 25, "jid": jid, "queue": queue, "jobtype": jobtype, "args": args}
        job.update(fields)
        job.setdefault("created_at", now_text())
        job["enqueued_at"] = now_text()
        self.queues.setdefault(queue, []).append(job)
        self._notify()
        return jid

    def enqueue_raw(self, queue: str, payload: dict[str, Any]) -> None:
        """Put an arbitrary payload on a queue (what a misbehaving producer could leave there)."""
        self.queues.setdefault(queue, []).append(payload)
        self._notify()

    def signal(self, wid: str, state: str) -> None:
        """Quiet or terminate a worker process from the server side (the Web UI's buttons)."""
        worker = self.workers[wid]
        if worker.state == "" or (worker.state == "quiet" and state == "terminate"):
            worker.state = state

    def inject(
        self,
        verb: str,
        action: str,
        *,
        times: int = 1,
        message: str = "injected failure",
        seconds: float = 0.0,
    ) -> None:
        self.faults.append(Fault(verb, action, times, message, seconds))

    def verbs(self) -> list[str]:
        return [c.verb for c in self.commands]

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            await self._changed.park()

    def _notify(self) -> None:
        self._changed.unpark_all()

    # --- lifecycle ---

    async def start(self) -> None:
        assert self._nursery is not None
        self._listeners = await trio.open_tcp_listeners(self.port, host="127.0.0.1")
        self.port = self._listeners[0].socket.getsockname()[1]
        self._accept_scope = trio.CancelScope()
        self.running = True
        self._nursery.start_soon(self._accept_loop, self._accept_scope, self._listeners)

    async def stop(self) -> None:
        """Go down: close the listener and every connection; forget worker processes."""
        self.running = False
        if self._accept_scope is not None:
            self._accept_scope.cancel()
        for listener in self._listeners:
            await listener.aclose()
        for stream in list(self._streams):
            await trio.aclose_forcefully(stream)
        self._streams.clear()
        self.workers.clear()
        self._notify()

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    async def _accept_loop(self, scope: trio.CancelScope, listeners: list[trio.SocketListener]) -> None:
        assert self._nursery is not None
        with scope:
            while True:
                stream = await listeners[0].accept()
                self._nursery.start_soon(self._handle, stream)

    # --- one connection ---

    async def _handle(self, raw: trio.SocketStream) -> None:
        self.connections_opened += 1
        conn_id = self.connections_opened
        stream: trio.abc.Stream = raw
        if self.ssl_context is not None:
            stream = trio.SSLStream(raw, self.ssl_context, server_side=True)
        self._streams.add(stream)
        reader = _LineReader(stream)
        try:
            worker = await self._handshake(stream, reader)
            if worker is None:
                return
            while True:
                line = await reader.line()
                verb, _, argument = line.partition(" ")
                self.commands.append(Command(conn_id, verb, argument))
                self._notify()
                fault = self._fault_for(verb)
                if fault is not None:
                    if fault.action == "drop":
                        return
                    if fault.action == "reject":
                        await stream.send_all(f"-ERR {fault.message}\r\n".encode())
                        continue
                    await trio.sleep(fault.seconds)
                if verb == "END":
                    return
                reply = await self._dispatch(verb, argument, worker)
                await stream.send_all(reply)
                self._notify()
        except (_Closed, trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            self._streams.discard(stream)
            await trio.aclose_forcefully(stream)

    def _fault_for(self, verb: str) -> Fault | None:
        for fault in self.faults:
            if fault.verb == verb and fault.remaining > 0:
                fault.remaining -= 1
                return fault
        return None

    async def _handshake(self, stream: trio.abc.Stream, reader: _LineReader) -> WorkerProcess | None:
        iterations = self._rng.randrange(4000, 4000 + 4096) if self.iterations is None else self.iterations
        salt = f"{self._rng.getrandbits(63):x}"
        greeting = b'+HI {"v":2'
        if self.password:
            greeting += b',"i":' + str(iterations).encode() + b',"s":"' + salt.encode() + b'"}'
        else:
            greeting += b"}"
        greeting += b"\r\n"
        self.greetings.append(greeting)
        await stream.send_all(greeting)
        line = None
        with trio.move_on_after(2.0):
            line = await reader.line()
        if line is None or not line.startswith("HELLO {"):
            return None
        try:
            hello = json.loads(line[6:])
        except ValueError:
            return None
        self.hellos.append(hello)
        self._notify()
        fault = self._fault_for("HELLO")
        if fault is not None and fault.action == "reject":
            await stream.send_all(f"-ERR {fault.message}\r\n".encode())
            return None
        if fault is not None and fault.action == "drop":
            return None
        if fault is not None:
            await trio.sleep(fault.seconds)
        if self.password:
            expected = server_hash(self.password, salt, iterations if hello.get("v", 0) >= 2 else 1)
            if hello.get("pwdhash") != expected:
                self.rejected_hellos += 1
                await stream.send_all(b"-ERR Invalid password\r\n")
                return None
        wid = hello.get("wid") or ""
        worker = self.workers.get(wid) if wid else None
        if wid and worker is None:
            worker = self.workers[wid] = WorkerProcess(wid, hello)
        await stream.send_all(b"+OK\r\n")
        self._notify()
        return worker or WorkerProcess("", hello)

    async def _dispatch(self, verb: str, argument: str, worker: WorkerProcess) -> bytes:
        handler = {
            "PUSH": self._push,
            "FETCH": self._fetch,
            "ACK": self._ack,
            "FAIL": self._fail,
            "BEAT": self._beat,
            "BATCH": self._batch,
        }.get(verb)
        if handler is None:
            return f"-ERR unknown command {verb}\r\n".encode()
        return await handler(argument, worker)

    async def _push(self, argument: str, worker: WorkerProcess) -> bytes:
        try:
            job = json.loads(argument)
        except ValueError as exc:
            return f"-ERR invalid JSON: {exc}\r\n".encode()
        self.pushed_raw.append(argument)
        problem = _push_problem(job)
        if problem:
            return f"-ERR {problem}\r\n".encode()
        self.pushed.append(job)
        if job.get("retry") is None:
            job["retry"] = 25
        job.setdefault("created_at", now_text())
        if not job.get("queue"):
            job["queue"] = "default"
        if job.get("at") and dt.datetime.fromisoformat(job["at"]) > dt.datetime.now(dt.UTC):
            self.scheduled.append(job)
        else:
            job["enqueued_at"] = now_text()
            self.queues.setdefault(job["queue"], []).append(job)
        return b"+OK\r\n"

    async def _fetch(self, argument: str, worker: WorkerProcess) -> bytes:
        names = argument.split(" ") if argument else ["default"]
        current = self.workers.get(worker.wid)
        if current is not None and current.state:
            await trio.sleep(2.0)
            return b"$-1\r\n"
        with trio.move_on_after(2.0):
            while True:
                for name in names:
                    queue = self.queues.get(name)
                    if queue:
                        job = queue.pop(0)
                        self.working[str(job.get("jid"))] = job
                        self.fetched.append(job)
                        data = go_job_json(job)
                        return b"$" + str(len(data)).encode() + b"\r\n" + data + b"\r\n"
                await self._changed.park()
        return b"$-1\r\n"

    async def _ack(self, argument: str, worker: WorkerProcess) -> bytes:
        payload = _json_object(argument)
        jid = None if payload is None else payload.get("jid")
        if not isinstance(jid, str):
            return f"-ERR invalid ACK {argument}\r\n".encode()
        self.acks.append(jid)
        self.working.pop(jid, None)
        return b"+OK\r\n"

    async def _fail(self, argument: str, worker: WorkerProcess) -> bytes:
        failure = _json_object(argument)
        if failure is None:
            return f"-ERR invalid FAIL {argument}\r\n".encode()
        if not failure.get("jid"):
            return b"-ERR missing JID\r\n"
        self.fails.append(failure)
        job = self.working.pop(failure["jid"], None)
        if job is not None:
            self.retries.append(job)
        return b"+OK\r\n"

    async def _beat(self, argument: str, worker: WorkerProcess) -> bytes:
        beat = _json_object(argument)
        if beat is None:
            return f"-ERR invalid BEAT {argument}\r\n".encode()
        self.beats.append(beat)
        process = self.workers.get(beat.get("wid", ""))
        if process is None:
            return f"-ERR unknown worker {beat.get('wid', '')}\r\n".encode()
        process.beats += 1
        state = beat.get("current_state") or ""
        if state in ("quiet", "terminate"):
            self.signal(process.wid, state)
        if not process.state:
            return b"+OK\r\n"
        data = json.dumps({"state": process.state}, separators=(",", ":")).encode()
        return b"$" + str(len(data)).encode() + b"\r\n" + data + b"\r\n"

    async def _batch(self, argument: str, worker: WorkerProcess) -> bytes:
        if not self.enterprise:
            return b"-ERR batch subsystem is only available in Faktory Enterprise\r\n"
        sub, _, bid = argument.partition(" ")
        if sub != "OPEN":
            return f"-ERR unsupported BATCH subcommand {sub}\r\n".encode()
        self.batch_opens.append(bid)
        if bid not in self.batches:
            return f"-ERR No such batch {bid}\r\n".encode()
        return f"+{bid}\r\n".encode()


def _json_object(argument: str) -> dict[str, Any] | None:
    """A command's argument as a JSON object, or None if it is not one."""
    try:
        value = json.loads(argument)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _push_problem(job: Any) -> str | None:
    if not isinstance(job, dict):
        return "invalid JSON: expected an object"
    if not isinstance(job.get("jid"), str) or len(job["jid"]) < 8:
        return "jobs must have a reasonable jid parameter"
    if not job.get("jobtype"):
        return "jobs must have a jobtype parameter"
    if job.get("args") is None:
        return "jobs must have an args parameter"
    if int(job.get("reserve_for") or 0) > 86400:
        return "jobs cannot be reserved for more than one day"
    if job.get("at"):
        try:
            dt.datetime.fromisoformat(job["at"])
        except ValueError as exc:
            return f"invalid timestamp for 'at': {job['at']!r}: {exc}"
    return None


class _LineReader:
    def __init__(self, stream: trio.abc.Stream) -> None:
        self._stream = stream
        self._buffer = bytearray()

    async def line(self) -> str:
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                raw = bytes(self._buffer[:end])
                del self._buffer[: end + 1]
                return raw.removesuffix(b"\r").decode()
            data = await self._stream.receive_some(65536)
            if not data:
                raise _Closed
            self._buffer += data


@asynccontextmanager
async def faktory_double(**options: Any) -> AsyncIterator[FaktoryDouble]:
    double = FaktoryDouble(**options)
    async with trio.open_nursery() as nursery:
        double._nursery = nursery
        await double.start()
        try:
            yield double
        finally:
            await double.stop()
            nursery.cancel_scope.cancel()
