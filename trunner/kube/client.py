"""The Kubernetes API client: one ``httpx.AsyncClient`` per :class:`KubeClient`, TLS and
credentials from the :class:`~trunner.kube.config.KubeConfig`, a client-side QPS/burst limit,
bounded retries with jittered backoff on 429/5xx (honouring ``Retry-After``), typed errors,
watches (events parsed in :mod:`~trunner.kube.watch`), and WebSocket connections for exec
(handshake in :mod:`~trunner.kube.websocket`) sharing the same TLS and credentials.

Usage::

    config = load_config(context=settings.k8s_context or None)
    async with KubeClient.open(config, settings) as client:
        pod = await client.request("GET", f"/api/v1/namespaces/{client.namespace}/pods/x")
        async with client.watch(path, params={"fieldSelector": "metadata.name=x"}) as events:
            async for event in events: ...
"""

from __future__ import annotations

import json
import random
import ssl
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlencode

import attrs
import httpx
import trio
import trio_websocket

from trunner.config import positive, setting
from trunner.kube.auth import Authenticator, Credentials, authenticator
from trunner.kube.config import KubeConfig
from trunner.kube.errors import (
    KubeError,
    ResponseTooLarge,
    StatusError,
    TooManyRequests,
    TransportError,
    Unauthorized,
    error_from_response,
    transport_error,
)
from trunner.kube.params import Params, query_items
from trunner.kube.ratelimit import TokenBucket
from trunner.kube.tls import load_client_certificate, ssl_context
from trunner.kube.watch import WatchEvent, watch_events
from trunner.kube.websocket import HandshakeStream, handshake, reader_nursery, single_exception, ws_failure
from trunner.net.proxy import httpx_proxy
from trunner.net.retry import RetryPolicy, parse_retry_after
from trunner.net.tls import system_trust_context

USER_AGENT = "trunner"
MAX_RESPONSE_BYTES = 64 * 1024 * 1024
"""The largest answer read (a list of a namespace's job objects is far smaller)."""


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
        60.0,
        help="Seconds one Kubernetes API call may take (per attempt); the Go runner's 60, which it "
        "takes from --job-pod-exec-max-wait.",
        checks=[positive],
    )
    k8s_context: str = setting("", help="kubeconfig context to use (empty: the current-context).")


DEFAULT_RETRY = RetryPolicy(max_retries=7, total=60.0, base=0.25, cap=8.0)


_IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS"})


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
            proxy=httpx_proxy(config.proxy, system_trust_context()),
        )
        client = cls(
            config,
            settings,
            retry=retry or DEFAULT_RETRY,
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
        return self.retry.backoff(attempt - 1, self._rng)

    def _retry_delay(self, error: KubeError, method: str, attempt: int) -> float | None:
        """Seconds to wait before trying ``method`` again after ``error``, or None to give up."""
        if isinstance(error, StatusError):
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
        deadline = trio.current_time() + self.retry.total
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
            except (StatusError, TransportError) as error:
                delay = self._retry_delay(error, method, attempt)
                if (
                    delay is None
                    or attempt > self.retry.max_retries
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
        ``--k8s-api-timeout``). Raises :class:`StatusError` subclasses and :class:`TransportError`.
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
                    async with self._http.stream(
                        method,
                        path,
                        params=httpx.QueryParams(query_items(params)),
                        content=body,
                        headers=headers,
                        extensions=self._extensions,
                    ) as response:
                        content = await _read_bounded(response, method, path)
            except trio.TooSlowError:
                raise TransportError(f"{method} {path}: no answer within {limit:g} s") from None
            except httpx.HTTPError as exc:
                raise transport_error(method, path, exc) from None
            if response.status_code >= 400:
                raise error_from_response(
                    response.status_code,
                    content,
                    retry_after=parse_retry_after(response.headers.get("Retry-After")),
                )
            if not content:
                return None
            try:
                return _decode(content)
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
        query = (*query_items(params), ("watch", "1"))
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
                raise transport_error("GET", path, exc) from None
            return response

        response: httpx.Response = await self._with_retries("GET", attempt)
        try:
            yield watch_events(response, path, read_timeout)
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
        raise the :class:`StatusError` of the response (an empty body becomes the message
        ``HTTP 403 with an empty body``); connection problems raise :class:`TransportError`.
        The subprotocols are offered as one header line; a server answer outside them fails
        the handshake. The socket is closed (shielded, bounded by ``close_timeout``) on exit."""
        limit = self.settings.k8s_api_timeout if connect_timeout is None else connect_timeout
        offered = list(subprotocols)
        resource = path + ("?" + urlencode(query_items(params)) if params else "")
        reauthenticated = False
        while True:
            await self.limiter.acquire()
            connected = False
            watched: list[HandshakeStream] = []
            try:
                async with reader_nursery() as nursery:
                    headers = [
                        (k.lower().encode(), v.encode()) for k, v in (await self._auth_headers()).items()
                    ]
                    headers.append((b"user-agent", USER_AGENT.encode()))
                    ws = await handshake(
                        self.config.server,
                        self._tls,
                        self.config.tls_server_name,
                        self.config.proxy,
                        headers,
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
                single = single_exception(group)
                if connected:
                    raise single from None
                error = ws_failure(single, path, watched)
            except (trio_websocket.ConnectionRejected, KubeError) as exc:
                if connected:
                    raise
                error = ws_failure(exc, path, watched)
            if isinstance(error, Unauthorized) and not reauthenticated and self._auth.invalidate():
                reauthenticated = True
                continue
            raise error


def _decode(content: bytes) -> Any:
    return json.loads(content)


async def _read_bounded(response: httpx.Response, method: str, path: str) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > MAX_RESPONSE_BYTES:
            raise ResponseTooLarge(f"{method} {path}: the answer is larger than {MAX_RESPONSE_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _encode(body: Any) -> bytes:
    if isinstance(body, bytes):
        return body
    return json.dumps(body, separators=(",", ":")).encode()
