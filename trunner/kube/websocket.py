"""The WebSocket handshake with the API server over trio streams, and the stream wrapper and
reader nursery that make a failed handshake or a cancelled exec end promptly."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast
from urllib.parse import urlsplit

import trio
import trio_websocket

from trunner.kube.errors import KubeError, TransportError, error_from_response
from trunner.net.errors import describe_network_error
from trunner.net.proxy import Proxy, ProxyError, open_tunnel
from trunner.net.tls import system_trust_context


def single_exception(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one exception a nursery wrapped, or the group itself when it holds several."""
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        else:
            leaves.append(exc)

    walk(group)
    return leaves[0] if len(leaves) == 1 else group


@asynccontextmanager
async def reader_nursery() -> AsyncIterator[trio.Nursery]:
    """A nursery for a WebSocket's reader task that keeps running while the caller is being
    cancelled, until this context exits: the close handshake after a cancelled exec needs the
    reader to receive the server's close frame, or ``aclose`` waits out its whole timeout."""
    async with trio.open_nursery() as outer:
        shield = trio.CancelScope(shield=True)

        async def hold(task_status: trio.TaskStatus[trio.Nursery]) -> None:
            with shield:
                async with trio.open_nursery() as inner:
                    task_status.started(inner)
                    await trio.sleep_forever()

        nursery: trio.Nursery = await outer.start(hold)
        try:
            yield nursery
        finally:
            shield.cancel()


async def handshake(
    server: str,
    tls: ssl.SSLContext | None,
    tls_server_name: str | None,
    proxy: Proxy | None,
    headers: list[tuple[bytes, bytes]],
    nursery: trio.Nursery,
    resource: str,
    offered: list[str],
    limit: float,
    sizes: tuple[int, int, int],
    watched: list[HandshakeStream],
) -> trio_websocket.WebSocketConnection:
    """Connect to ``server`` (through a ``CONNECT`` tunnel of ``proxy`` when given; TLS when ``tls``
    is given) and upgrade to a WebSocket at ``resource``,
    all within ``limit`` seconds. The stream goes into ``watched`` first, so that a failed
    handshake can be explained from the answer it saw (:func:`ws_failure`)."""
    url = urlsplit(server)
    host = url.hostname or ""
    port = url.port or (443 if url.scheme == "https" else 80)
    host_header = url.netloc
    max_message_size, receive_buffer_size, message_queue_size = sizes
    where = resource.split("?")[0]
    try:
        with trio.fail_after(limit):
            stream: trio.abc.Stream
            if proxy is None:
                stream = await trio.open_tcp_stream(host, port)
            else:
                stream = await open_tunnel(proxy, host, port, proxy_tls=system_trust_context())
            if tls is not None:
                stream = trio.SSLStream(
                    stream,
                    tls,
                    server_hostname=tls_server_name or host,
                    https_compatible=True,
                )
                await stream.do_handshake()
            watched.append(HandshakeStream(stream))
            ws = await trio_websocket.wrap_client_stream(
                nursery,
                cast(Any, watched[0]),
                host_header,
                (url.path.rstrip("/") + resource) if url.path not in ("", "/") else resource,
                subprotocols=offered or None,
                extra_headers=headers,
                message_queue_size=message_queue_size,
                max_message_size=max_message_size,
                receive_buffer_size=receive_buffer_size,
            )
            watched[0].handshake_done()
    except trio.TooSlowError:
        raise TransportError(f"websocket {where}: no handshake within {limit:g} s") from None
    except (OSError, trio.BrokenResourceError, ssl.SSLError, ProxyError) as exc:
        raise TransportError(f"websocket {where}: cannot connect: {describe_network_error(exc)}") from None
    if offered and ws.subprotocol not in offered:
        with trio.CancelScope(shield=True), trio.move_on_after(1):
            await ws.aclose()
        raise TransportError(
            f"websocket {where}: server chose subprotocol {ws.subprotocol!r}, expected one of {offered}"
        )
    return ws


def ws_failure(exc: BaseException, path: str, watched: list[HandshakeStream]) -> KubeError:
    """The error for a WebSocket that failed before it was open. Anything the library raised
    while handling a bad answer (it crashes on some) becomes a :class:`TransportError`
    describing the answer; cancellation and other BaseExceptions propagate."""
    if isinstance(exc, trio_websocket.ConnectionRejected):
        return error_from_response(exc.status_code, exc.body or b"")
    if isinstance(exc, KubeError):
        return exc
    if not isinstance(exc, Exception):
        raise exc
    answer = watched[0].answer_summary() if watched else None
    if answer is not None:
        return TransportError(f"websocket {path}: the handshake answer was not accepted ({answer})")
    return TransportError(f"websocket {path}: handshake failed: {describe_network_error(exc)}")


class HandshakeStream(trio.abc.Stream):
    """Passes a stream through, watching the handshake answer. x/net answers a failed handshake
    with a bare status line and closes (no Content-Length), and wsproto rejects a 101 it does not
    like by closing the stream; in both cases trio-websocket would wait for the handshake until
    the connect timeout. Here an end of stream during the handshake raises at once: the
    rejection (``ConnectionRejected`` with the status and body) or a :class:`TransportError`."""

    _KEEP = 64 * 1024

    def __init__(self, inner: trio.abc.Stream) -> None:
        self._inner = inner
        self._answer = bytearray()
        self._watching = True
        self.transport_stream = inner

    def handshake_done(self) -> None:
        self._watching = False
        self._answer = bytearray()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if not self._watching:
            return await self._inner.receive_some(max_bytes)
        try:
            data = await self._inner.receive_some(max_bytes)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise self.failure() from None
        if not data:
            raise self.failure()
        if len(self._answer) < self._KEEP:
            self._answer += data[: self._KEEP - len(self._answer)]
        return data

    def _head(self) -> tuple[int, tuple[tuple[bytes, bytes], ...], bytes, str] | None:
        head, found, body = bytes(self._answer).partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if not found or len(parts) < 2 or not parts[1].isdigit():
            return None
        headers = tuple(
            (name.strip().lower().encode(), value.strip().encode())
            for name, _, value in (line.partition(":") for line in lines[1:])
        )
        return int(parts[1]), headers, body, lines[0]

    def answer_summary(self) -> str | None:
        """The status line and chosen subprotocol of a complete 101 answer, if one was seen."""
        head = self._head()
        if head is None or head[0] != 101:
            return None
        chosen = dict(head[1]).get(b"sec-websocket-protocol", b"").decode("latin-1")
        return f"{head[3]}; Sec-WebSocket-Protocol: {chosen or '(none)'}"

    def failure(self) -> Exception:
        """The error for a stream that ended during the handshake."""
        head = self._head()
        if head is None:
            return TransportError("the connection closed during the websocket handshake")
        code, headers, body, _ = head
        if code == 101:
            return TransportError(
                f"the websocket handshake answer was not accepted ({self.answer_summary()})"
            )
        return trio_websocket.ConnectionRejected(code, headers, body)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._inner.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self._inner.aclose()
