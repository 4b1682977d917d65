"""The OpsLevel GraphQL client: one ``POST <api-url>/graphql`` per call, every attempt bounded by
a timeout, retryable failures repeated with jittered exponential backoff bounded in attempts and
in total time."""

from __future__ import annotations

import json
import logging
import platform
import random
import re
import ssl
import sys
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, TypeVar

import attrs
import httpx
import trio

from trunner import __version__
from trunner.net.errors import describe_network_error
from trunner.net.proxy import httpx_proxy, proxy_for
from trunner.net.retry import RetryPolicy, parse_retry_after
from trunner.net.tls import system_trust_context
from trunner.opslevel.errors import (
    ApiAuthenticationError,
    ApiError,
    ApiGraphQLError,
    ApiPayloadError,
    ApiResponseError,
    ApiResponseTooLarge,
    ApiStatusError,
    ApiTlsError,
    ApiTransportError,
)
from trunner.opslevel.metrics import ApiMetrics
from trunner.opslevel.operations import (
    ACCOUNT,
    Account,
    Operation,
    problems_from_json,
    request_body,
    structure_payload,
)
from trunner.opslevel.settings import ApiSettings
from trunner.process import credentials

V = TypeVar("V")
P = TypeVar("P")

log = logging.getLogger("trunner.opslevel.client")

MAX_RESPONSE_BYTES = 64 * 1024 * 1024
"""Job payloads carry file contents; anything larger than this is not a real response."""
OFF_LOOP_BYTES = 1024 * 1024
"""Answers larger than this are decoded in a worker thread: decoding tens of MiB (a job's files)
would stall every other task for as long."""
MAX_SCANNED_BYTES = 1024 * 1024 * 1024
"""How much of an oversized response is read (and discarded) looking for the ids it names."""
_ID_KEY = re.compile(rb'"id"\s*:\s*"((?:[^"\\]|\\.){1,512})"')
"""An ``"id"`` key with its text value. Never matches inside a JSON string, where every quote is
escaped."""
_ID_KEY_MAX = 1100

TOKEN_REJECTED_TEXT = "Please provide a valid OpsLevel API token"
"""What older API versions say in a GraphQL error when the token is wrong."""


def _json_text(raw: bytes) -> str:
    try:
        text = json.loads(b'"' + raw + b'"')
    except ValueError:
        return raw.decode("utf-8", "replace")
    return text if isinstance(text, str) else raw.decode("utf-8", "replace")


def graphql_endpoint(api_url: str) -> str:
    """opslevel-go's rule: trailing slashes stripped, ``/graphql`` appended unless the URL contains
    ``/LOCAL_TESTING/``. Unlike opslevel-go, a URL that already ends in ``/graphql`` (as in the Go
    runner's README) is not doubled into ``/graphql/graphql``."""
    url = api_url.rstrip("/")
    if "/LOCAL_TESTING/" in url or url.endswith("/graphql"):
        return url
    return url + "/graphql"


def user_agent(extras: str = "") -> str:
    base = f"trunner/{__version__} python/{platform.python_version()} {sys.platform}/{platform.machine()}"
    return f"{base} user/{extras}" if extras else base


def encode_body(operation: Operation[V, Any], variables: V) -> bytes:
    """The request body as opslevel-go writes it: compact JSON and a newline (``json.Encoder``)."""
    return json.dumps(request_body(operation, variables), separators=(",", ":")).encode() + b"\n"


@attrs.frozen
class RequestBody:
    """A request body of known length, produced piece by piece for each attempt, so a large log
    batch is never held a second time in encoded form."""

    length: int
    pieces: Callable[[], Iterable[bytes]]

    @classmethod
    def of(cls, data: bytes) -> RequestBody:
        return cls(len(data), lambda: (data,))

    def content(self, on_sent: Callable[[], object] = lambda: None) -> AsyncIterator[bytes]:
        """The pieces for one attempt; ``on_sent`` is called once the transport has asked past
        the last one, that is, has written the whole body."""

        async def produce() -> AsyncIterator[bytes]:
            for piece in self.pieces():
                yield piece
            on_sent()

        return produce()


def _certificate_failure(exc: BaseException) -> str | None:
    """The verification error behind a failed connection, or None when it is not one."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, ssl.SSLCertVerificationError):
            return cause.verify_message or str(cause)
        cause = cause.__cause__ or cause.__context__
    return None


def _detail(body: bytes) -> str:
    """The API's words from an error response: GraphQL error messages if it is JSON, else the text."""
    try:
        document = json.loads(body)
    except ValueError:
        document = None
    if isinstance(document, dict):
        try:
            problems = problems_from_json(document.get("errors"))
        except TypeError:
            problems = ()
        if problems:
            return "; ".join(p.describe() for p in problems)
        if isinstance(document.get("message"), str):
            return str(document["message"])
    text = " ".join(body.decode("utf-8", "replace").split())
    return text[:300] + ("..." if len(text) > 300 else "")


class OpsLevelClient:
    def __init__(
        self,
        *,
        endpoint: str,
        token: str,
        timeout: float,
        metrics: ApiMetrics,
        retry: RetryPolicy,
        agent: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.shown_endpoint = credentials.redact_url(endpoint)
        """The endpoint as logs show it: without its userinfo."""
        self.timeout = timeout
        self.retry = retry
        self._metrics = metrics
        self._rng = rng or random.Random()
        self._http = httpx.AsyncClient(
            headers={
                "Content-Type": "application/json",
                "Authorization": f"Bearer {token}",
                "GraphQL-Visibility": "internal",
                "User-Agent": agent or user_agent(),
            },
            timeout=timeout,
            # No pool limit: each job holds at most one append and one report, so connections are
            # bounded by --job-concurrency; a cap would let stalled appends starve polls and reports.
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=32),
            transport=transport,
            follow_redirects=False,
            # The system's trust store rather than certifi's bundle: a private CA or an intercepting
            # proxy is trusted the same way as for every other client of the runner.
            verify=system_trust_context(),
            trust_env=False,
            proxy=httpx_proxy(proxy_for(endpoint), system_trust_context()) if transport is None else None,
        )

    @classmethod
    def from_settings(
        cls,
        settings: ApiSettings,
        metrics: ApiMetrics,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        rng: random.Random | None = None,
    ) -> OpsLevelClient:
        return cls(
            endpoint=graphql_endpoint(settings.api_url),
            token=settings.api_token,
            timeout=settings.api_timeout,
            metrics=metrics,
            retry=RetryPolicy(settings.api_max_retries, settings.api_retry_timeout),
            agent=user_agent(settings.user_agent_extras),
            transport=transport,
            rng=rng,
        )

    async def __aenter__(self) -> OpsLevelClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True, deadline=trio.current_time() + 5):
            await self._http.aclose()

    async def check_token(self) -> Account:
        """``{account{id}}``, as opslevel-go's ``Validate`` sends it."""
        return await self.call(ACCOUNT, None)

    async def call(self, operation: Operation[V, P], variables: V, *, retry: RetryPolicy | None = None) -> P:
        """Send ``operation``; return its payload or raise an :class:`ApiError`."""
        return await self.send(operation, RequestBody.of(encode_body(operation, variables)), retry=retry)

    async def send(
        self, operation: Operation[Any, P], body: RequestBody, *, retry: RetryPolicy | None = None
    ) -> P:
        """Send a request body already encoded for ``operation``."""
        policy = self.retry if retry is None else retry
        give_up_at = trio.current_time() + policy.total
        retry_number = 0
        while True:
            try:
                return await self._attempt(operation, body)
            except ApiError as exc:
                if not exc.retryable or retry_number >= policy.max_retries:
                    raise
                wait = exc.retry_after
                if wait is None:
                    wait = policy.backoff(retry_number, self._rng)
                if trio.current_time() + wait > give_up_at:
                    raise
                retry_number += 1
                self._metrics.retry(operation.label)
                log.warning(
                    "OpsLevel API call failed, retrying",
                    extra={"error": str(exc), "retry_in": round(wait, 3), "retry": retry_number},
                )
                await trio.sleep(wait)

    async def _attempt(self, operation: Operation[Any, P], body: RequestBody) -> P:
        label = operation.label
        started = trio.current_time()
        status = "connection_error"
        sent = False

        def whole_body_sent() -> None:
            nonlocal sent
            sent = True

        try:
            with trio.fail_after(self.timeout):
                async with self._http.stream(
                    "POST",
                    self.endpoint,
                    content=body.content(whole_body_sent),
                    headers={"Content-Length": str(body.length)},
                ) as response:
                    status = str(response.status_code)
                    answer = await self._read_body(response, label)
        except (trio.TooSlowError, httpx.TimeoutException):
            status = "timeout"
            raise ApiTransportError(label, f"no response within {self.timeout:g} s", sent=sent) from None
        except httpx.TransportError as exc:
            verification = _certificate_failure(exc)
            if verification is not None:
                raise ApiTlsError(
                    label,
                    f"TLS verification of {self.shown_endpoint} failed ({verification}); the system trust "
                    "store (or SSL_CERT_FILE) must hold the CA that signed the server's certificate",
                ) from None
            raise ApiTransportError(
                label, f"connection failed ({describe_network_error(exc)})", sent=sent
            ) from None
        finally:
            elapsed = trio.current_time() - started
            self._metrics.request(label, status, elapsed)
            log.debug("OpsLevel API call", extra={"operation": label, "status": status, "seconds": elapsed})
        if len(answer) > OFF_LOOP_BYTES:
            return await trio.to_thread.run_sync(
                self._payload, operation, response.status_code, response.headers, answer
            )
        return self._payload(operation, response.status_code, response.headers, answer)

    @staticmethod
    async def _read_body(response: httpx.Response, label: str) -> bytes:
        chunks: list[bytes] = []
        size = 0
        ids: list[str] = []
        tail = b""
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > MAX_RESPONSE_BYTES:
                if not ids:
                    # Scanned as it streams by, so that a too large job answer still names its job.
                    window = b"".join(chunks) + chunk if chunks else tail + chunk
                    chunks.clear()
                    ids = [_json_text(m[1]) for m in _ID_KEY.finditer(window)]
                    tail = window[-_ID_KEY_MAX:]
                if ids or size > MAX_SCANNED_BYTES:
                    raise ApiResponseTooLarge(label, MAX_RESPONSE_BYTES, ids)
                continue
            chunks.append(chunk)
        if size > MAX_RESPONSE_BYTES:
            raise ApiResponseTooLarge(label, MAX_RESPONSE_BYTES, ids)
        return b"".join(chunks)

    @staticmethod
    def _payload(operation: Operation[Any, P], status: int, headers: Mapping[str, str], body: bytes) -> P:
        label = operation.label
        if status == 401:
            detail = _detail(body)
            raise ApiAuthenticationError(label, "HTTP 401" + (f": {detail}" if detail else ""))
        if status not in (200, 201):
            raise ApiStatusError(
                label, status, _detail(body), retry_after=parse_retry_after(headers.get("retry-after"))
            )
        try:
            document = json.loads(body)
        except ValueError:
            raise ApiResponseError(label, f"the response is not JSON: {_detail(body)!r}") from None
        if not isinstance(document, dict):
            raise ApiResponseError(label, "the response is not a JSON object")
        try:
            problems = problems_from_json(document.get("errors"))
        except TypeError as exc:
            raise ApiResponseError(label, f"malformed 'errors': {exc}") from None
        if problems:
            if any(TOKEN_REJECTED_TEXT in p.message for p in problems):
                raise ApiAuthenticationError(label, "; ".join(p.message for p in problems))
            raise ApiGraphQLError(label, problems)
        try:
            payload = structure_payload(operation, document.get("data"))
        except ValueError as exc:
            raise ApiResponseError(label, str(exc)) from None
        payload_problems = getattr(payload, "errors", ())
        if payload_problems:
            raise ApiPayloadError(label, payload_problems)
        return payload
