"""An HTTP forward proxy on loopback, as a company egress proxy behaves.

``CONNECT host:port`` opens a tunnel (``200 Connection established``, then bytes both ways) and an
absolute-form request (``GET http://host:port/path``) is forwarded in origin form, the answer piped
back; with ``credentials`` set, a request without the matching ``Proxy-Authorization: Basic`` is
answered ``407`` with ``Proxy-Authenticate``. Whatever host a request names, the double connects
to ``127.0.0.1`` at that port (or at the port ``routes`` gives for the host), so names that do
not resolve on this machine can be used and no traffic ever leaves loopback. It records every
request head it took (``requests``: method, target, headers).
"""

from __future__ import annotations

import base64
import functools
import queue
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress

import attrs
import h11
import trio

MAX_HEAD = 64 * 1024


@attrs.define
class ProxiedRequest:
    method: str
    target: str
    headers: dict[str, str]
    status: int = 0


@attrs.define
class ProxyDouble:
    credentials: tuple[str, str] | None = None
    routes: dict[str, int] = attrs.field(factory=dict)
    requests: list[ProxiedRequest] = attrs.field(factory=list)
    port: int = 0

    def url(self, *, userinfo: str = "") -> str:
        return f"http://{userinfo + '@' if userinfo else ''}127.0.0.1:{self.port}"

    @property
    def connects(self) -> list[str]:
        return [r.target for r in self.requests if r.method == "CONNECT" and r.status == 200]

    @property
    def forwarded(self) -> list[str]:
        return [r.target for r in self.requests if r.method != "CONNECT" and r.status == 200]

    def _upstream_port(self, host: str, port: int) -> int:
        return self.routes.get(host, port)

    def _authorized(self, headers: dict[str, str]) -> bool:
        if self.credentials is None:
            return True
        expected = base64.b64encode(":".join(self.credentials).encode()).decode()
        return headers.get("proxy-authorization", "") == f"Basic {expected}"

    async def handle(self, client: trio.SocketStream) -> None:
        try:
            await self._handle(client)
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError, OSError):
            pass
        finally:
            await trio.aclose_forcefully(client)

    async def _handle(self, client: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        request = await _next(client, conn)
        if not isinstance(request, h11.Request):
            return
        headers = {k.decode().lower(): v.decode() for k, v in request.headers}
        method, target = request.method.decode(), request.target.decode()
        record = ProxiedRequest(method, target, headers)
        self.requests.append(record)
        if not self._authorized(headers):
            record.status = 407
            await client.send_all(
                b'HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm="double"\r\n'
                b"Content-Length: 0\r\nConnection: close\r\n\r\n"
            )
            return
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
            upstream = await trio.open_tcp_stream(
                "127.0.0.1", self._upstream_port(host.strip("[]"), int(port))
            )
            record.status = 200
            await client.send_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            early = conn.trailing_data[0]
            if early:
                await upstream.send_all(early)
            await _pipe_both(client, upstream)
            return
        if not target.startswith("http://"):
            record.status = 400
            await client.send_all(
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            return
        body = b""
        while True:
            event = await _next(client, conn)
            if isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
            else:
                return
        authority, _, path = target.removeprefix("http://").partition("/")
        host, _, port = authority.rpartition(":") if ":" in authority else (authority, "", "80")
        upstream = await trio.open_tcp_stream("127.0.0.1", self._upstream_port(host, int(port)))
        record.status = 200
        kept = [
            (k, v)
            for k, v in request.headers
            if k.lower()
            not in (b"proxy-authorization", b"proxy-connection", b"connection", b"content-length")
            and k.lower() != b"transfer-encoding"
        ]
        head = f"{method} /{path} HTTP/1.1\r\n".encode()
        head += b"".join(k + b": " + v + b"\r\n" for k, v in kept)
        head += f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        await upstream.send_all(head + body)
        async with upstream:
            while data := await upstream.receive_some(65536):
                await client.send_all(data)


async def _next(stream: trio.SocketStream, conn: h11.Connection) -> object:
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        data = await stream.receive_some(MAX_HEAD)
        conn.receive_data(data)


async def _pipe_both(a: trio.SocketStream, b: trio.SocketStream) -> None:
    async def pipe(src: trio.SocketStream, dst: trio.SocketStream) -> None:
        try:
            while data := await src.receive_some(65536):
                await dst.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            with (
                trio.CancelScope(shield=True),
                suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError),
            ):
                await dst.send_eof()

    async with b, trio.open_nursery() as nursery:
        nursery.start_soon(pipe, a, b)
        nursery.start_soon(pipe, b, a)


@asynccontextmanager
async def serve_proxy(
    *, credentials: tuple[str, str] | None = None, routes: dict[str, int] | None = None
) -> AsyncIterator[ProxyDouble]:
    """Run the proxy on 127.0.0.1 (an ephemeral port) until the block ends."""
    proxy = ProxyDouble(credentials=credentials, routes=dict(routes or {}))
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(functools.partial(trio.serve_tcp, proxy.handle, 0, host="127.0.0.1"))
        proxy.port = listeners[0].socket.getsockname()[1]
        try:
            yield proxy
        finally:
            nursery.cancel_scope.cancel()


@contextmanager
def running_proxy(*, credentials: tuple[str, str] | None = None) -> Iterator[ProxyDouble]:
    """The proxy serving from its own thread until the block ends, for blocking clients."""
    started: queue.Queue[tuple[ProxyDouble, trio.lowlevel.TrioToken, trio.CancelScope] | BaseException] = (
        queue.Queue()
    )

    async def main() -> None:
        with trio.CancelScope() as scope:
            async with serve_proxy(credentials=credentials) as proxy:
                started.put((proxy, trio.lowlevel.current_trio_token(), scope))
                await trio.sleep_forever()

    def thread() -> None:
        try:
            trio.run(main)
        except BaseException as exc:
            started.put(exc)

    worker = threading.Thread(target=thread, name="proxy-double", daemon=True)
    worker.start()
    got = started.get(timeout=10)
    if isinstance(got, BaseException):
        raise got
    proxy, token, scope = got
    try:
        yield proxy
    finally:
        trio.from_thread.run_sync(scope.cancel, trio_token=token)
        worker.join(10)
