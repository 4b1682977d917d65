"""A stand-in for Sentry's ingest endpoint on loopback HTTP, recording envelopes.

It takes what a Sentry server (Relay) takes from an SDK: ``POST /api/<project>/envelope/`` with
``X-Sentry-Auth: Sentry sentry_key=<key>, sentry_version=7, ...`` (or ``?sentry_key=``), a body
of ``Content-Type: application/x-sentry-envelope`` compressed as ``Content-Encoding`` says (gzip,
deflate, br when the brotli module is installed, or none), and answers ``{"id": <event id>}``.
A wrong project is 404, a missing or wrong key 401/403, an encoding it cannot read 415 and an
envelope it cannot parse 400, as Relay answers. An envelope is a header line of JSON, then items:
an item header line of JSON (``type``, optional ``length``) followed by its payload, either
``length`` bytes or up to the next newline.

It runs its own trio loop in a thread, so a test may block (``sentry_sdk`` flushes synchronously)
or use a virtual clock while the SDK's transport thread talks to it. ``stall=True`` reads each
request and never answers.
"""

from __future__ import annotations

import functools
import gzip
import json
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qs, urlsplit

import attrs
import h11
import trio

from tests.doubles.http11 import serve_requests

PUBLIC_KEY = "0123456789abcdef0123456789abcdef"
PROJECT = "4242"


@attrs.frozen
class Item:
    headers: dict[str, Any]
    payload: bytes

    @property
    def type(self) -> str:
        return str(self.headers.get("type", ""))

    def json(self) -> Any:
        return json.loads(self.payload)


@attrs.frozen
class Envelope:
    headers: dict[str, Any]
    items: tuple[Item, ...]
    body: bytes
    """The decompressed body, every byte the SDK sent."""
    auth: str
    content_encoding: str


def parse_envelope(body: bytes) -> tuple[dict[str, Any], tuple[Item, ...]]:
    header_line, _, rest = body.partition(b"\n")
    headers = json.loads(header_line)
    items = []
    while rest.strip():
        item_line, _, rest = rest.partition(b"\n")
        item_headers = json.loads(item_line)
        if "length" in item_headers:
            length = int(item_headers["length"])
            if len(rest) < length:
                raise ValueError("item shorter than its length")
            payload, rest = rest[:length], rest[length:]
            rest = rest.removeprefix(b"\n")
        else:
            payload, _, rest = rest.partition(b"\n")
        items.append(Item(item_headers, payload))
    return headers, tuple(items)


def _decode(body: bytes, encoding: str) -> bytes:
    for step in reversed([e.strip() for e in encoding.lower().split(",") if e.strip()]):
        if step == "gzip":
            body = gzip.decompress(body)
        elif step == "deflate":
            body = zlib.decompress(body)
        elif step == "br":
            import brotli  # type: ignore[import-not-found]

            body = brotli.decompress(body)
        elif step != "identity":
            raise ValueError(f"unsupported Content-Encoding {step!r}")
    return body


def _auth_key(headers: dict[str, str], target: str) -> str | None:
    auth = headers.get("x-sentry-auth")
    if auth is not None:
        scheme, _, params = auth.partition(" ")
        if scheme != "Sentry":
            return None
        fields = dict(p.strip().partition("=")[::2] for p in params.split(","))
        return fields.get("sentry_key")
    keys = parse_qs(urlsplit(target).query).get("sentry_key")
    return keys[0] if keys else None


class SentryStandIn:
    def __init__(self, *, stall: bool = False) -> None:
        self.stall = stall
        self.envelopes: list[Envelope] = []
        self.rejected: list[tuple[int, str]] = []
        self.requests = 0
        self.port = 0
        self._lock = threading.Lock()

    @property
    def dsn(self) -> str:
        return f"http://{PUBLIC_KEY}@127.0.0.1:{self.port}/{PROJECT}"

    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            return [i.json() for e in self.envelopes for i in e.items if i.type == "event"]

    def bodies(self) -> list[bytes]:
        with self._lock:
            return [e.body for e in self.envelopes]

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._connection, listeners)

    async def _connection(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            await serve_requests(conn, stream, functools.partial(self._respond, stream, conn))
        finally:
            await trio.aclose_forcefully(stream)

    async def _respond(
        self, stream: trio.SocketStream, conn: h11.Connection, head: h11.Request, body: bytes
    ) -> bool:
        with self._lock:
            self.requests += 1
        if self.stall:
            await trio.sleep_forever()
        status, answer = self._handle(head, body)
        response = h11.Response(
            status_code=status,
            headers=[("Content-Type", "application/json"), ("Content-Length", str(len(answer)))],
        )
        await stream.send_all(conn.send(response) + conn.send(h11.Data(data=answer)))
        await stream.send_all(conn.send(h11.EndOfMessage()))
        return True

    def _handle(self, head: h11.Request, body: bytes) -> tuple[int, bytes]:
        headers = {k.decode().lower(): v.decode() for k, v in head.headers}
        target = head.target.decode()
        path = urlsplit(target).path
        if head.method != b"POST" or path != f"/api/{PROJECT}/envelope/":
            return self._reject(404, f"{head.method.decode()} {path}")
        key = _auth_key(headers, target)
        if key is None:
            return self._reject(401, "missing authorization information")
        if key != PUBLIC_KEY:
            return self._reject(403, "unknown public key")
        encoding = headers.get("content-encoding", "identity")
        try:
            decoded = _decode(body, encoding)
        except (ValueError, OSError, zlib.error, ImportError) as exc:
            return self._reject(415, str(exc))
        try:
            envelope_headers, items = parse_envelope(decoded)
        except ValueError as exc:
            return self._reject(400, f"invalid envelope: {exc}")
        envelope = Envelope(envelope_headers, items, decoded, headers["x-sentry-auth"], encoding)
        with self._lock:
            self.envelopes.append(envelope)
        return 200, json.dumps({"id": envelope_headers.get("event_id")}).encode()

    def _reject(self, status: int, detail: str) -> tuple[int, bytes]:
        with self._lock:
            self.rejected.append((status, detail))
        return status, json.dumps({"detail": detail}).encode()


@contextmanager
def running_sentry(*, stall: bool = False) -> Iterator[SentryStandIn]:
    """A stand-in serving from its own thread until the block ends."""
    standin = SentryStandIn(stall=stall)
    ready = threading.Event()
    scope_box: list[tuple[trio.lowlevel.TrioToken, trio.CancelScope]] = []
    failure: list[BaseException] = []

    async def main() -> None:
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                await nursery.start(standin.serve)
                scope_box.append((trio.lowlevel.current_trio_token(), scope))
                ready.set()

    def thread() -> None:
        try:
            trio.run(main)
        except BaseException as exc:
            failure.append(exc)
            ready.set()

    worker = threading.Thread(target=thread, name="sentry-standin", daemon=True)
    worker.start()
    ready.wait(10)
    if failure:
        raise failure[0]
    token, scope = scope_box[0]
    try:
        yield standin
    finally:
        trio.from_thread.run_sync(scope.cancel, trio_token=token)
        worker.join(10)


def unused_port_dsn() -> str:
    """A DSN whose port nothing listens on (a Sentry that is down)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://{PUBLIC_KEY}@127.0.0.1:{port}/{PROJECT}"
