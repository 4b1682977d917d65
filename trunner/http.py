"""The runner's HTTP endpoints on ``--metrics-port``: ``/metrics`` (Prometheus exposition of the
runner's registry), ``/healthz`` (the process is alive) and ``/readyz`` (ready to take jobs).

One request per connection, each bounded: at most ``MAX_CONNECTIONS`` at a time (more are closed
at once), ``REQUEST_TIMEOUT`` seconds per connection, ``MAX_REQUEST_HEAD`` bytes of request head.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial

import attrs
import h11
import trio
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry

from trunner.config import port, setting
from trunner.gometrics import exposition

log = logging.getLogger("trunner.http")

MAX_CONNECTIONS = 32
REQUEST_TIMEOUT = 10.0
MAX_REQUEST_HEAD = 16 * 1024


@attrs.frozen
class MetricsServerSettings:
    """Metrics and health endpoints"""

    metrics_port: int = setting(
        10354,
        help="Port of the HTTP server for /metrics, /healthz and /readyz (0 picks a free port).",
        checks=[port],
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
    def __init__(self) -> None:
        self.open = 0


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
    log.info("serving /metrics, /healthz and /readyz on port %d", bound)
    task_status.started(bound)
    await trio.serve_listeners(partial(_handle, registry, ready, _Connections()), listeners)


async def _handle(
    registry: CollectorRegistry,
    ready: Callable[[], bool],
    connections: _Connections,
    stream: trio.SocketStream,
) -> None:
    try:
        if connections.open >= MAX_CONNECTIONS:
            return
        connections.open += 1
        try:
            with trio.move_on_after(REQUEST_TIMEOUT):
                await _serve_one(stream, registry, ready)
        finally:
            connections.open -= 1
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        await trio.aclose_forcefully(stream)


async def _serve_one(
    stream: trio.SocketStream, registry: CollectorRegistry, ready: Callable[[], bool]
) -> None:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_HEAD)
    try:
        request = await _read_head(stream, conn)
    except h11.RemoteProtocolError as exc:
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
