"""The runner's HTTP endpoints on ``--metrics-port``: ``/metrics`` (Prometheus exposition of the
runner's registry), ``/healthz`` (the process is alive) and ``/readyz`` (ready to take jobs).

One request per connection, each bounded: ``HEAD_TIMEOUT`` seconds to send the request head (at
most ``MAX_REQUEST_HEAD`` bytes), ``REQUEST_TIMEOUT`` seconds for the whole exchange, at most
``MAX_CONNECTIONS`` at a time. A connection beyond the limit takes the place of the oldest one still
waiting for its request head, which is closed: idle or slow clients holding connections cannot keep
a probe out, since a probe sends its request as soon as it connects. A newcomer is closed only when
every connection is already answering.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable
from functools import partial

import attrs
import h11
import trio
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry

from trunner.config import port, setting
from trunner.observability.gometrics import exposition

log = logging.getLogger("trunner.http")

MAX_CONNECTIONS = 32
HEAD_TIMEOUT = 2.0
REQUEST_TIMEOUT = 10.0
MAX_REQUEST_HEAD = 16 * 1024


def ip_address_or_empty(value: str) -> str | None:
    if not value:
        return None
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return "must be an IP address such as 127.0.0.1 or ::1, or empty for every address"
    return None


@attrs.frozen
class MetricsServerSettings:
    """Metrics and health endpoints"""

    metrics_port: int = setting(
        10354,
        help="Port of the HTTP server for /metrics, /healthz and /readyz (0 picks a free port).",
        checks=[port],
    )
    metrics_bind_address: str = setting(
        "",
        help="IP address the /metrics, /healthz and /readyz server listens on (empty: every address of "
        "the host, as the Go runner does).",
        checks=[ip_address_or_empty],
    )


@attrs.frozen
class Response:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    extra_headers: tuple[tuple[str, str], ...] = ()


def route(method: bytes, target: bytes, registry: CollectorRegistry, ready: Callable[[], bool]) -> Response:
    path = target.split(b"?", 1)[0]
    if path not in (b"/metrics", b"/healthz", b"/readyz"):
        return Response(404, b"not found\n")
    if method not in (b"GET", b"HEAD"):
        return Response(405, b"method not allowed\n", extra_headers=(("Allow", "GET, HEAD"),))
    if path == b"/metrics":
        return Response(200, exposition(registry), CONTENT_TYPE_LATEST)
    if path == b"/healthz":
        return Response(200, b"ok\n")
    return Response(200, b"ready\n") if ready() else Response(503, b"not ready\n")


class _Connections:
    """The open connections, oldest first, and which of them still wait for their request head."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open: dict[object, trio.CancelScope] = {}
        self.waiting: set[object] = set()

    def admit(self, token: object, scope: trio.CancelScope) -> bool:
        if len(self.open) >= self.limit:
            oldest = next((t for t in self.open if t in self.waiting), None)
            if oldest is None:
                return False
            self.open.pop(oldest).cancel()
            self.waiting.discard(oldest)
        self.open[token] = scope
        self.waiting.add(token)
        return True

    def answering(self, token: object) -> None:
        self.waiting.discard(token)

    def close(self, token: object) -> None:
        self.open.pop(token, None)
        self.waiting.discard(token)


async def serve_http(
    registry: CollectorRegistry,
    *,
    port: int,
    ready: Callable[[], bool],
    host: str | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled. ``task_status.started`` receives the bound port. Raises ``OSError``
    (before ``started``) if the port cannot be bound."""
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound: int = listeners[0].socket.getsockname()[1]
    log.info(
        "serving /metrics, /healthz and /readyz on %s port %d",
        f"address {host}" if host else "every address",
        bound,
    )
    task_status.started(bound)
    connections = _Connections(MAX_CONNECTIONS)
    await trio.serve_listeners(partial(_handle, registry, ready, connections), listeners)


async def _handle(
    registry: CollectorRegistry,
    ready: Callable[[], bool],
    connections: _Connections,
    stream: trio.SocketStream,
) -> None:
    token = object()
    try:
        with trio.move_on_after(REQUEST_TIMEOUT) as scope:
            if connections.admit(token, scope):
                await _serve_one(stream, registry, ready, lambda: connections.answering(token))
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        connections.close(token)
        await trio.aclose_forcefully(stream)


async def _serve_one(
    stream: trio.SocketStream,
    registry: CollectorRegistry,
    ready: Callable[[], bool],
    answering: Callable[[], None],
) -> None:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_HEAD)
    try:
        request = None
        with trio.move_on_after(HEAD_TIMEOUT):
            request = await _read_head(stream, conn)
        answering()
    except h11.RemoteProtocolError as exc:
        answering()
        body = b"bad request\n"
        await stream.send_all(
            f"HTTP/1.1 {exc.error_status_hint} Bad Request\r\nContent-Type: text/plain\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        return
    if request is None:
        return
    response = route(request.method, request.target, registry, ready)
    await _send(stream, conn, response, head_only=request.method == b"HEAD")


async def _read_head(stream: trio.SocketStream, conn: h11.Connection) -> h11.Request | None:
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await stream.receive_some(MAX_REQUEST_HEAD)
            conn.receive_data(data)
        elif isinstance(event, h11.Request):
            return event
        else:
            return None


async def _send(
    stream: trio.SocketStream, conn: h11.Connection, response: Response, *, head_only: bool
) -> None:
    headers = [
        ("Content-Type", response.content_type),
        ("Content-Length", str(len(response.body))),
        ("Connection", "close"),
        *response.extra_headers,
    ]
    data = conn.send(h11.Response(status_code=response.status, headers=headers)) or b""
    if not head_only:
        data += conn.send(h11.Data(data=response.body)) or b""
    await stream.send_all(data)
