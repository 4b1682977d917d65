"""Faktory connections over trio streams: where the server is, the handshake, one command at a
time with a deadline, and a small pool shared by the worker, its heartbeat and the sinks.

Where the server is follows the Go client (``client.ReadFromEnv``): ``FAKTORY_PROVIDER`` names
the environment variable that holds the URL; otherwise ``FAKTORY_URL``; otherwise
``tcp://localhost:7419``. ``tcp+tls://`` selects TLS; the password is the URL's.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import ssl
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, suppress
from urllib.parse import unquote, urlsplit

import attrs
import trio

from trunner.config import ConfigError
from trunner.faktory import protocol
from trunner.faktory.protocol import (
    Ack,
    Beat,
    BeatReply,
    ConnectionLost,
    ErrorReply,
    Fail,
    HandshakeRejected,
    Hello,
    Hi,
    Job,
    ProtocolViolation,
    Reply,
    ReplyParser,
    SimpleString,
)
from trunner.net.errors import describe_network_error
from trunner.net.retry import exponential_backoff
from trunner.net.tls import system_trust_context

log = logging.getLogger("trunner.faktory")

FETCH_BLOCK = 2.0
"""Seconds the server may hold a FETCH open waiting for a job on the first queue."""
_RECEIVE_SIZE = 65536


# --- where the server is ------------------------------------------------------------------------


@attrs.frozen
class ServerLocation:
    host: str = "localhost"
    port: int = protocol.DEFAULT_PORT
    tls: bool = False
    username: str = ""
    password: str = attrs.field(default="", repr=False)

    def describe(self) -> str:
        """The address without the password, for logs and errors."""
        return f"{'tcp+tls' if self.tls else 'tcp'}://{self.host}:{self.port}"


def parse_server_url(url: str, *, origin: str) -> ServerLocation:
    """``tcp://[:password@]host[:port]`` or ``tcp+tls://...``; ``origin`` names where the URL
    came from in errors. A missing host means localhost and a missing port 7419."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise ConfigError([f"{origin}: cannot parse {_redact(url)!r} as a URL: {exc}"]) from None
    if parts.scheme not in ("tcp", "tcp+tls"):
        raise ConfigError(
            [f"{origin}: unsupported scheme {parts.scheme!r} in {_redact(url)!r} (use tcp:// or tcp+tls://)"]
        )
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError([f"{origin}: {_redact(url)!r} has a path or query; expected tcp://host:port"])
    return ServerLocation(
        host=parts.hostname or "localhost",
        port=protocol.DEFAULT_PORT if port is None else port,
        tls=parts.scheme == "tcp+tls",
        username=unquote(parts.username or ""),
        password=unquote(parts.password or ""),
    )


def _redact(url: str) -> str:
    """``url`` without its password, also when it cannot be parsed (then all userinfo goes)."""
    try:
        password = urlsplit(url).password
    except ValueError:
        scheme, separator, rest = url.partition("://")
        return scheme + separator + ("***@" + rest.rsplit("@", 1)[1] if "@" in rest else rest)
    if password is None:
        return url
    return url.replace(f":{password}@", ":***@", 1)


def locate_server(environ: Mapping[str, str]) -> ServerLocation:
    provider = environ.get("FAKTORY_PROVIDER")
    if provider is not None:
        if ":" in provider:
            raise ConfigError(
                [
                    "FAKTORY_PROVIDER: it is the NAME of the environment variable holding the URL, not a URL "
                    "(e.g. FAKTORY_PROVIDER=FOO_URL and FOO_URL=tcp://:password@faktory.example.com:7419)"
                ]
            )
        if provider not in environ:
            raise ConfigError([f"FAKTORY_PROVIDER: names {provider!r}, which is not set in the environment"])
        return parse_server_url(environ[provider], origin=provider)
    if "FAKTORY_URL" in environ:
        return parse_server_url(environ["FAKTORY_URL"], origin="FAKTORY_URL")
    return ServerLocation()


# --- who we are ---------------------------------------------------------------------------------

_BASE32_DIGITS = "0123456789abcdefghijklmnopqrstuv"


def random_wid() -> str:
    """A random 63-bit number in base 32, the form faktory_worker_go gives a process's wid."""
    value = random.SystemRandom().getrandbits(63)
    digits = ""
    while True:
        value, digit = divmod(value, 32)
        digits = _BASE32_DIGITS[digit] + digits
        if not value:
            return digits


@attrs.frozen
class WorkerIdentity:
    """Sent in every HELLO. A consumer has a ``wid``; every connection of one process uses the
    same values, as the protocol requires."""

    hostname: str
    wid: str
    pid: int
    labels: tuple[str, ...]

    @classmethod
    def consumer(cls, labels: tuple[str, ...]) -> WorkerIdentity:
        return cls(socket.gethostname(), random_wid(), os.getpid(), labels)

    @classmethod
    def producer(cls, labels: tuple[str, ...] = ()) -> WorkerIdentity:
        return cls(socket.gethostname(), "", os.getpid(), labels)


def rss_kb() -> int:
    """Resident memory of this process in KiB (``VmRSS``), 0 when unknown."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


# --- one connection -----------------------------------------------------------------------------


class Connection:
    """One identified connection. Commands run one at a time (the protocol has no tags); each
    has a deadline. After a transport failure, timeout, cancellation mid-command or a protocol
    violation the connection is ``broken`` and must be closed."""

    def __init__(self, stream: trio.abc.Stream, *, timeout: float, label: str) -> None:
        self._stream = stream
        self._parser = ReplyParser()
        self._timeout = timeout
        self._label = label
        self._lock = trio.Lock()
        self.broken = False
        self.closed = False

    async def call(self, verb: str, argument: str | None = None, *, extra_wait: float = 0.0) -> Reply:
        """Send one command and return its reply; an error reply is returned, not raised."""
        line = protocol.encode_command(verb, argument)
        async with self._lock:
            if self.broken or self.closed:
                raise ConnectionLost(f"{self._label}: connection already failed")
            completed = sent = False
            try:
                with trio.fail_after(self._timeout + extra_wait):
                    await self._stream.send_all(line)
                    sent = True
                    reply = await self._read_reply()
                completed = True
                return reply
            except trio.TooSlowError:
                raise ConnectionLost(
                    f"{self._label}: no reply to {verb} within {self._timeout + extra_wait:g}s", sent=sent
                ) from None
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError, ssl.SSLError) as exc:
                raise ConnectionLost(
                    f"{self._label}: {verb} failed: {describe_network_error(exc)}", sent=sent
                ) from None
            finally:
                if not completed:
                    self.broken = True

    async def greeting(self) -> Reply:
        """The server's first message, read before any command."""
        try:
            with trio.fail_after(self._timeout):
                return await self._read_reply()
        except trio.TooSlowError:
            self.broken = True
            raise ConnectionLost(f"{self._label}: no greeting within {self._timeout:g}s") from None
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError, ssl.SSLError) as exc:
            self.broken = True
            raise ConnectionLost(f"{self._label}: {describe_network_error(exc)}") from None

    async def _read_reply(self) -> Reply:
        while True:
            try:
                reply = self._parser.next_reply()
            except ProtocolViolation as exc:
                self.broken = True
                raise ProtocolViolation(f"{self._label}: {exc}") from None
            if reply is not None:
                return reply
            data = await self._stream.receive_some(_RECEIVE_SIZE)
            if not data:
                raise trio.BrokenResourceError("the server closed the connection")
            self._parser.feed(data)

    # --- commands ---

    async def push(self, job: Job) -> None:
        protocol.expect_ok(await self.call("PUSH", protocol.to_json(job)))

    async def fetch(self, queues: tuple[str, ...]) -> bytes | None:
        """A job's raw JSON, or None when no job came within the server's blocking window."""
        reply = await self.call("FETCH", " ".join(queues), extra_wait=FETCH_BLOCK)
        if isinstance(reply, ErrorReply):
            raise reply.error()
        if isinstance(reply, SimpleString):
            return reply.text.encode()
        text = protocol.reply_text(reply)
        return None if not text else text.encode()

    async def ack(self, jid: str) -> None:
        protocol.expect_ok(await self.call("ACK", protocol.to_json(Ack(jid))))

    async def fail(self, failure: Fail) -> None:
        protocol.expect_ok(await self.call("FAIL", protocol.to_json(failure)))

    async def beat(self, beat: Beat) -> str:
        """The state the server asks for (``quiet``/``terminate``), or "" for OK."""
        text = protocol.reply_text(await self.call("BEAT", protocol.to_json(beat)))
        if not text or text == "OK":
            return ""
        return protocol.from_json(text, BeatReply, what="BEAT reply").state

    async def batch_open(self, bid: str) -> str:
        """Reopen a batch to add jobs to it; returns the bid the server gives back."""
        text = protocol.reply_text(await self.call("BATCH OPEN", bid))
        if not text:
            raise ProtocolViolation(f"{self._label}: BATCH OPEN {bid} returned no batch id")
        return text

    async def aclose(self) -> None:
        """Say END (the server closes without replying) and close; bounded, even when cancelled."""
        if self.closed:
            return
        self.closed = True
        with trio.CancelScope(shield=True), trio.move_on_after(self._timeout):
            if not self.broken:
                with suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError, ssl.SSLError):
                    await self._stream.send_all(protocol.encode_command("END"))
            await trio.aclose_forcefully(self._stream)


async def connect(
    location: ServerLocation,
    identity: WorkerIdentity,
    *,
    timeout: float,
    ssl_context: ssl.SSLContext | None = None,
) -> Connection:
    """Open a connection and complete the HI/HELLO handshake within ``timeout`` each step."""
    label = f"Faktory {location.describe()}"
    try:
        with trio.fail_after(timeout):
            stream: trio.abc.Stream = await trio.open_tcp_stream(location.host, location.port)
    except trio.TooSlowError:
        raise ConnectionLost(f"{label}: could not connect within {timeout:g}s") from None
    except OSError as exc:
        raise ConnectionLost(f"{label}: cannot connect: {describe_network_error(exc)}") from None
    if location.tls:
        context = ssl_context or _default_tls_context()
        stream = trio.SSLStream(stream, context, server_hostname=location.host)
    conn = Connection(stream, timeout=timeout, label=label)
    try:
        await _handshake(conn, location, identity)
    except BaseException:
        conn.broken = True
        await conn.aclose()
        raise
    return conn


def _default_tls_context() -> ssl.SSLContext:
    context = system_trust_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


async def _password_hash(location: ServerLocation, hi: Hi) -> str:
    """Off the event loop: thousands of hash rounds would stall every other task. Abandoning the
    thread on cancellation is safe: the hash is a pure function, bounded by the iteration limit."""
    if hi.i > protocol.MAX_HASH_ITERATIONS:
        raise ProtocolViolation(
            f"Faktory {location.describe()} asks for {hi.i} password hash iterations, more than the "
            f"{protocol.MAX_HASH_ITERATIONS} this client computes (a Faktory server asks for 4000-8095)"
        )
    return await trio.to_thread.run_sync(
        protocol.password_hash, location.password, hi.s, hi.i, abandon_on_cancel=True
    )


async def _handshake(conn: Connection, location: ServerLocation, identity: WorkerIdentity) -> None:
    greeting = await conn.greeting()
    if isinstance(greeting, ErrorReply):
        raise HandshakeRejected(greeting.code, greeting.message)
    if not isinstance(greeting, SimpleString) or not greeting.text.startswith("HI "):
        raise ProtocolViolation(f"expected the server's HI greeting, got {greeting!r}")
    hi = protocol.from_json(greeting.text[3:], Hi, what="HI greeting")
    if hi.v != protocol.PROTOCOL_VERSION:
        log.warning(
            "Faktory server speaks protocol version %s, this client %s",
            hi.v,
            protocol.PROTOCOL_VERSION,
            extra={"server": location.describe()},
        )
    pwdhash = await _password_hash(location, hi) if hi.s else ""
    hello = Hello(
        hostname=identity.hostname,
        wid=identity.wid,
        username=location.username,
        pwdhash=pwdhash,
        labels=identity.labels,
        pid=identity.pid,
    )
    reply = await conn.call("HELLO", protocol.to_json(hello))
    if isinstance(reply, ErrorReply):
        hint = ""
        if "password" in reply.message.lower():
            hint = (
                " (check the password in FAKTORY_URL)"
                if location.password
                else " (FAKTORY_URL has no password)"
            )
        raise HandshakeRejected(reply.code, reply.message + hint)
    protocol.expect_ok(reply)


# --- the pool -----------------------------------------------------------------------------------


class FaktoryClient:
    """A bounded pool of identified connections to one server.

    ``connection()`` lends one connection for a short exchange (a FETCH, a BATCH OPEN+PUSH);
    broken connections are closed instead of returned, so the next borrower reconnects."""

    def __init__(
        self,
        location: ServerLocation,
        identity: WorkerIdentity,
        *,
        timeout: float,
        max_connections: int,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.location = location
        self.identity = identity
        self.timeout = timeout
        self._ssl_context = ssl_context
        self._slots = trio.Semaphore(max_connections)
        self._idle: list[Connection] = []
        self._closed = False

    @asynccontextmanager
    async def connection(self, *, fresh: bool = False) -> AsyncIterator[Connection]:
        """Lend a connection (``fresh``: a newly opened one, which registers this process again)."""
        if self._closed:
            raise ConnectionLost("the Faktory client is closed")
        async with self._slots:
            conn = self._idle.pop() if self._idle and not fresh else await self._open()
            try:
                yield conn
            finally:
                if conn.broken or self._closed:
                    await conn.aclose()
                else:
                    self._idle.append(conn)

    async def _open(self) -> Connection:
        return await connect(
            self.location, self.identity, timeout=self.timeout, ssl_context=self._ssl_context
        )

    async def discard_idle(self) -> None:
        """Close pooled connections, e.g. after the server forgot this worker."""
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.aclose()

    async def aclose(self) -> None:
        self._closed = True
        await self.discard_idle()

    async def __aenter__(self) -> FaktoryClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


# --- retrying -----------------------------------------------------------------------------------


class Backoff:
    """Exponential backoff with jitter: attempt n waits a random time in
    [delay/2, delay] with delay = min(maximum, initial * 2**n); ``reset()`` after a success."""

    def __init__(
        self, *, initial: float = 0.5, maximum: float = 30.0, rng: random.Random | None = None
    ) -> None:
        self.initial = initial
        self.maximum = maximum
        self._rng = rng or random.Random()
        self._attempt = 0

    def next_delay(self) -> float:
        delay = exponential_backoff(self._attempt, base=self.initial, cap=self.maximum, rng=self._rng)
        self._attempt += 1
        return delay

    def reset(self) -> None:
        self._attempt = 0

    async def sleep(self) -> None:
        await trio.sleep(self.next_delay())
