"""The Kubernetes API client: one ``httpx.AsyncClient`` per :class:`KubeClient`, TLS and
credentials from the :class:`~trunner.kube.config.KubeConfig`, a client-side QPS/burst limit,
bounded retries with jittered backoff on 429/5xx (honouring ``Retry-After``), typed errors,
watches, and WebSocket connections (for exec) sharing the same TLS and credentials.

Usage::

    config = load_config(context=settings.k8s_context or None)
    async with KubeClient.open(config, settings) as client:
        pod = await client.request("GET", f"/api/v1/namespaces/{client.namespace}/pods/x")
        async with client.watch(path, params={"fieldSelector": "metadata.name=x"}) as events:
            async for event in events: ...
"""

from __future__ import annotations

import enum
import json
import random
import ssl
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, cast
from urllib.parse import urlencode, urlsplit

import attrs
import httpx
import trio
import trio_websocket

from trunner.config import positive, setting
from trunner.kube.auth import Authenticator, Credentials, authenticator
from trunner.kube.config import KubeConfig
from trunner.kube.errors import (
    ApiError,
    KubeError,
    ServerError,
    StatusParseError,
    TooManyRequests,
    TransportError,
    Unauthorized,
    error_for_status,
    error_from_response,
    parse_status,
)
from trunner.kube.ratelimit import TokenBucket
from trunner.kube.tls import load_client_certificate, ssl_context
from trunner.retry import exponential_backoff, parse_retry_after

ParamValue = str | int | float | bool | Sequence[str]
Params = Mapping[str, ParamValue]

USER_AGENT = "trunner"


@attrs.frozen
class KubeApiSettings:
    """Kubernetes API client"""

    k8s_api_qps: float = setting(
        50.0, help="Kubernetes API requests per second this runner may make (sustained).", checks=[positive]
    )
    k8s_api_burst: int = setting(
        100, help="Kubernetes API requests that may be made at once above the QPS rate.", checks=[positive]
    )
    k8s_api_timeout: float = setting(
        30.0, help="Seconds one Kubernetes API call may take (per attempt).", checks=[positive]
    )
    k8s_context: str = setting("", help="kubeconfig context to use (empty: the current-context).")


@attrs.frozen
class RetryPolicy:
    """Retries of one call: at most ``max_attempts`` tries within ``max_total`` seconds."""

    max_attempts: int = 8
    max_total: float = 60.0
    base_delay: float = 0.25
    max_delay: float = 8.0


class WatchEventType(enum.Enum):
    ADDED = "ADDED"
    MODIFIED = "MODIFIED"
    DELETED = "DELETED"
    BOOKMARK = "BOOKMARK"


@attrs.frozen
class WatchEvent:
    """One watch event. ``ERROR`` events are raised as :class:`~trunner.kube.errors.ApiError`
    (an ``Expired`` for 410) instead of being returned."""

    type: WatchEventType
    object: dict[str, Any]

    @property
    def resource_version(self) -> str:
        metadata = self.object.get("metadata") or {}
        value = metadata.get("resourceVersion", "") if isinstance(metadata, dict) else ""
        return str(value)


_IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS"})


def _query_items(params: Params | None) -> tuple[tuple[str, str], ...]:
    items: list[tuple[str, str]] = []
    for key, value in (params or {}).items():
        if isinstance(value, bool):
            items.append((key, "true" if value else "false"))
        elif isinstance(value, str | int | float):
            items.append((key, str(value)))
        else:
            items.extend((key, str(part)) for part in value)
    return tuple(items)


def _single_exception(group: BaseExceptionGroup[BaseException]) -> BaseException:
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
async def _reader_nursery() -> AsyncIterator[trio.Nursery]:
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


class KubeClient:
    """A connection to one API server. Create with :meth:`open`; safe to share between tasks."""

    def __init__(
        self,
        config: KubeConfig,
        settings: KubeApiSettings,
        *,
        retry: RetryPolicy,
        auth: Authenticator,
        http: httpx.AsyncClient,
        tls: ssl.SSLContext | None,
        rng: random.Random,
    ) -> None:
        self.config = config
        self.settings = settings
        self.retry = retry
        self._auth = auth
        self._http = http
        self._tls = tls
        self._loaded_cert: bytes | None = config.client_cert_pem
        self._rng = rng
        self.limiter = TokenBucket(settings.k8s_api_qps, settings.k8s_api_burst)

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        config: KubeConfig,
        settings: KubeApiSettings,
        *,
        retry: RetryPolicy | None = None,
        auth: Authenticator | None = None,
        rng: random.Random | None = None,
    ) -> AsyncIterator[KubeClient]:
        """A client for ``config``; the HTTP connection pool is closed on exit. ``auth`` and
        ``rng`` (backoff jitter) may be given for tests."""
        tls = ssl_context(config) if config.server.startswith("https://") else None
        http = httpx.AsyncClient(
            base_url=config.server,
            verify=tls if tls is not None else False,
            timeout=httpx.Timeout(settings.k8s_api_timeout),
            headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
            trust_env=False,
        )
        client = cls(
            config,
            settings,
            retry=retry or RetryPolicy(),
            auth=auth or authenticator(config.auth),
            http=http,
            tls=tls,
            rng=rng or random.Random(),
        )
        try:
            yield client
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await http.aclose()

    @property
    def namespace(self) -> str:
        """The namespace of the kubeconfig context (or of the service account)."""
        return self.config.namespace

    # --- credentials ---------------------------------------------------------------------------

    async def _credentials(self) -> Credentials:
        credentials = await self._auth.credentials()
        if (
            self._tls is not None
            and credentials.client_cert_pem is not None
            and credentials.client_key_pem is not None
            and credentials.client_cert_pem != self._loaded_cert
        ):
            load_client_certificate(self._tls, credentials.client_cert_pem, credentials.client_key_pem)
            self._loaded_cert = credentials.client_cert_pem
        return credentials

    async def _auth_headers(self) -> dict[str, str]:
        credentials = await self._credentials()
        return {"Authorization": f"Bearer {credentials.token}"} if credentials.token else {}

    @property
    def _extensions(self) -> dict[str, Any]:
        name = self.config.tls_server_name
        return {"sni_hostname": name} if name else {}

    # --- retries -------------------------------------------------------------------------------

    def _backoff(self, attempt: int) -> float:
        return exponential_backoff(
            attempt - 1, base=self.retry.base_delay, cap=self.retry.max_delay, rng=self._rng
        )

    def _retry_delay(self, error: KubeError, method: str, attempt: int) -> float | None:
        """Seconds to wait before trying ``method`` again after ``error``, or None to give up."""
        if isinstance(error, ApiError):
            throttled = isinstance(error, TooManyRequests) and error.code == 429
            unavailable = error.code >= 500 and (error.retry_after is not None or method in _IDEMPOTENT)
            if not (throttled or unavailable):
                return None
            retry_after = error.retry_after
            if retry_after is not None:
                return retry_after + self._rng.uniform(0, min(1.0, retry_after * 0.1 + 0.05))
            return self._backoff(attempt)
        if isinstance(error, TransportError) and (error.request_not_sent or method in _IDEMPOTENT):
            return self._backoff(attempt)
        return None

    async def _with_retries(self, method: str, call: Any) -> Any:
        """Run ``call()`` (one rate-limited attempt) until it succeeds or retrying is pointless."""
        deadline = trio.current_time() + self.retry.max_total
        attempt = 0
        reauthenticated = False
        while True:
            attempt += 1
            await self.limiter.acquire()
            try:
                return await call()
            except Unauthorized:
                if reauthenticated or not self._auth.invalidate():
                    raise
                reauthenticated = True
                attempt -= 1
                continue
            except (ApiError, TransportError) as error:
                delay = self._retry_delay(error, method, attempt)
                if (
                    delay is None
                    or attempt >= self.retry.max_attempts
                    or trio.current_time() + delay > deadline
                ):
                    raise
                await trio.sleep(delay)

    # --- REST ----------------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Params | None = None,
        timeout: float | None = None,
        content_type: str | None = None,
    ) -> Any:
        """One API call; returns the decoded JSON body (None for an empty body).

        ``path`` starts with ``/api`` or ``/apis``. ``json`` is sent as the body:
        ``application/json``, or ``application/merge-patch+json`` for PATCH unless
        ``content_type`` says otherwise. ``timeout`` bounds each attempt (default
        ``--k8s-api-timeout``). Raises :class:`ApiError` subclasses and :class:`TransportError`.
        """
        method = method.upper()
        limit = self.settings.k8s_api_timeout if timeout is None else timeout
        body = None if json is None else _encode(json)
        kind = content_type or ("application/merge-patch+json" if method == "PATCH" else "application/json")

        async def attempt() -> Any:
            headers = await self._auth_headers()
            if body is not None:
                headers["Content-Type"] = kind
            try:
                with trio.fail_after(limit):
                    response = await self._http.request(
                        method,
                        path,
                        params=httpx.QueryParams(_query_items(params)),
                        content=body,
                        headers=headers,
                        extensions=self._extensions,
                    )
            except trio.TooSlowError:
                raise TransportError(f"{method} {path}: no answer within {limit:g} s") from None
            except httpx.HTTPError as exc:
                raise _transport_error(method, path, exc) from None
            if response.status_code >= 400:
                raise error_from_response(
                    response.status_code,
                    response.content,
                    retry_after=parse_retry_after(response.headers.get("Retry-After")),
                )
            if not response.content:
                return None
            try:
                return response.json()
            except ValueError:
                raise TransportError(f"{method} {path}: answer {response.status_code} is not JSON") from None

        return await self._with_retries(method, attempt)

    # --- watch ---------------------------------------------------------------------------------

    @asynccontextmanager
    async def watch(
        self,
        path: str,
        *,
        params: Params | None = None,
        read_timeout: float = 330.0,
    ) -> AsyncIterator[AsyncIterator[WatchEvent]]:
        """Watch the collection at ``path`` (``watch=1`` is added). Yields an iterator of
        :class:`WatchEvent` that ends when the server ends the stream (resume from the last
        ``resource_version`` seen). ``ERROR`` events raise their typed error (``Expired`` for a
        too old resourceVersion: list again). No data for ``read_timeout`` seconds (set it above
        the ``timeoutSeconds`` param) raises :class:`TransportError`."""
        query = (*_query_items(params), ("watch", "1"))
        connect_limit = self.settings.k8s_api_timeout
        timeout = httpx.Timeout(connect_limit, read=read_timeout)

        async def attempt() -> httpx.Response:
            headers = await self._auth_headers()
            request = self._http.build_request(
                "GET",
                path,
                params=httpx.QueryParams(query),
                headers=headers,
                timeout=timeout,
                extensions=self._extensions,
            )
            try:
                with trio.fail_after(connect_limit):
                    response = await self._http.send(request, stream=True)
                    if response.status_code >= 400:
                        try:
                            content = await response.aread()
                        finally:
                            await response.aclose()
                        raise error_from_response(
                            response.status_code,
                            content,
                            retry_after=parse_retry_after(response.headers.get("Retry-After")),
                        )
            except trio.TooSlowError:
                raise TransportError(f"watch {path}: no answer within {connect_limit:g} s") from None
            except httpx.HTTPError as exc:
                raise _transport_error("GET", path, exc) from None
            return response

        response: httpx.Response = await self._with_retries("GET", attempt)
        try:
            yield _watch_events(response, path, read_timeout)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await response.aclose()

    # --- websocket -----------------------------------------------------------------------------

    @asynccontextmanager
    async def open_websocket(
        self,
        path: str,
        *,
        params: Params | None = None,
        subprotocols: Iterable[str] = (),
        max_message_size: int = 32 * 1024 * 1024,
        receive_buffer_size: int = 256 * 1024,
        message_queue_size: int = 1,
        connect_timeout: float | None = None,
        close_timeout: float = 5.0,
    ) -> AsyncIterator[trio_websocket.WebSocketConnection]:
        """A WebSocket to ``path`` (ws/wss from the server URL) with the cluster's TLS and the
        same credentials as REST (a 401 refreshes them once). Rejections before the upgrade
        raise the :class:`ApiError` of the response (an empty body becomes the message
        ``HTTP 403 with an empty body``); connection problems raise :class:`TransportError`.
        The subprotocols are offered as one header line; a server answer outside them fails
        the handshake. The socket is closed (shielded, bounded by ``close_timeout``) on exit."""
        limit = self.settings.k8s_api_timeout if connect_timeout is None else connect_timeout
        offered = list(subprotocols)
        resource = path + ("?" + urlencode(_query_items(params)) if params else "")
        reauthenticated = False
        while True:
            await self.limiter.acquire()
            connected = False
            watched: list[_HandshakeStream] = []
            try:
                async with _reader_nursery() as nursery:
                    ws = await self._ws_handshake(
                        nursery,
                        resource,
                        offered,
                        limit,
                        (max_message_size, receive_buffer_size, message_queue_size),
                        watched,
                    )
                    connected = True
                    try:
                        yield ws
                    finally:
                        with trio.CancelScope(shield=True), trio.move_on_after(close_timeout):
                            await ws.aclose()
                return
            except BaseExceptionGroup as group:
                single = _single_exception(group)
                if connected:
                    raise single from None
                error = _ws_failure(single, path, watched)
            except (trio_websocket.ConnectionRejected, KubeError) as exc:
                if connected:
                    raise
                error = _ws_failure(exc, path, watched)
            if isinstance(error, Unauthorized) and not reauthenticated and self._auth.invalidate():
                reauthenticated = True
                continue
            raise error

    async def _ws_handshake(
        self,
        nursery: trio.Nursery,
        resource: str,
        offered: list[str],
        limit: float,
        sizes: tuple[int, int, int],
        watched: list[_HandshakeStream],
    ) -> trio_websocket.WebSocketConnection:
        url = urlsplit(self.config.server)
        host = url.hostname or ""
        port = url.port or (443 if url.scheme == "https" else 80)
        host_header = url.netloc
        headers = [(k.lower().encode(), v.encode()) for k, v in (await self._auth_headers()).items()]
        headers.append((b"user-agent", USER_AGENT.encode()))
        max_message_size, receive_buffer_size, message_queue_size = sizes
        where = resource.split("?")[0]
        try:
            with trio.fail_after(limit):
                stream: trio.SocketStream | trio.SSLStream[trio.SocketStream]
                stream = await trio.open_tcp_stream(host, port)
                if self._tls is not None:
                    stream = trio.SSLStream(
                        stream,
                        self._tls,
                        server_hostname=self.config.tls_server_name or host,
                        https_compatible=True,
                    )
                    await stream.do_handshake()
                watched.append(_HandshakeStream(stream))
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
        except (OSError, trio.BrokenResourceError, ssl.SSLError) as exc:
            raise TransportError(f"websocket {where}: cannot connect: {_describe(exc)}") from None
        if offered and ws.subprotocol not in offered:
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                await ws.aclose()
            raise TransportError(
                f"websocket {where}: server chose subprotocol {ws.subprotocol!r}, expected one of {offered}"
            )
        return ws


def _ws_failure(exc: BaseException, path: str, watched: list[_HandshakeStream]) -> KubeError:
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
    return TransportError(f"websocket {path}: handshake failed: {_describe(exc)}")


def _encode(body: Any) -> bytes:
    if isinstance(body, bytes):
        return body
    return json.dumps(body, separators=(",", ":")).encode()


def _describe(exc: BaseException) -> str:
    """The messages along an exception's cause chain (httpx and trio wrap the SSL error that
    says what actually went wrong)."""
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        text = str(current).strip()
        if text and text not in parts:
            parts.append(text)
        current = current.__cause__ or current.__context__
    return ": ".join(parts) or "connection failed"


def _transport_error(method: str, path: str, exc: httpx.HTTPError) -> TransportError:
    not_sent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
    return TransportError(
        f"{method} {path}: {type(exc).__name__}: {_describe(exc)}", request_not_sent=not_sent
    )


class _HandshakeStream(trio.abc.Stream):
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


class _WatchEvents:
    """Async iterator over the JSON lines of a watch response."""

    def __init__(self, response: httpx.Response, path: str, read_timeout: float) -> None:
        self._lines = response.aiter_lines()
        self._path = path
        self._read_timeout = read_timeout

    def __aiter__(self) -> _WatchEvents:
        return self

    async def __anext__(self) -> WatchEvent:
        while True:
            try:
                line = await self._lines.__anext__()
            except httpx.ReadTimeout:
                raise TransportError(f"watch {self._path}: no data for {self._read_timeout:g} s") from None
            except httpx.HTTPError as exc:
                raise _transport_error("GET", self._path, exc) from None
            if line.strip():
                return _parse_event(line, self._path)


def _watch_events(response: httpx.Response, path: str, read_timeout: float) -> AsyncIterator[WatchEvent]:
    return _WatchEvents(response, path, read_timeout)


def _parse_event(line: str, path: str) -> WatchEvent:
    try:
        raw = json.loads(line)
    except json.JSONDecodeError:
        raise TransportError(f"watch {path}: event is not JSON: {line[:200]!r}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("object"), dict):
        raise TransportError(f"watch {path}: event without an object: {line[:200]!r}")
    kind = raw.get("type")
    if kind == "ERROR":
        try:
            status = parse_status(raw["object"])
        except StatusParseError as exc:
            raise ServerError(500, parse_status({"message": f"watch error event: {exc}"})) from None
        raise error_for_status(status.code or 500, status)
    try:
        event_type = WatchEventType(kind)
    except ValueError:
        raise TransportError(f"watch {path}: unknown event type {kind!r}") from None
    return WatchEvent(event_type, raw["object"])
