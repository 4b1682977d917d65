"""Errors from the Kubernetes API, typed by the ``metav1.Status`` the server sends.

Every failure of a call surfaces as a :class:`KubeError`: an :class:`StatusError` subclass when the
server answered (chosen by the Status ``reason``, else by the HTTP code), a
:class:`TransportError` when it could not be reached or did not answer in time.
"""

from __future__ import annotations

import json
from typing import Any

import attrs
import httpx

from trunner.config import ConfigError
from trunner.net.errors import describe_network_error
from trunner.wire import WireConverter, WireError, structure


@attrs.frozen
class StatusCause:
    reason: str = ""
    message: str = ""
    field: str = ""


@attrs.frozen
class StatusDetails:
    name: str = ""
    group: str = ""
    kind: str = ""
    uid: str = ""
    causes: tuple[StatusCause, ...] = ()
    retry_after_seconds: int | None = None


@attrs.frozen
class Status:
    """``metav1.Status``. ``kind``/``apiVersion`` are absent on the exec status channel."""

    status: str = ""
    message: str = ""
    reason: str = ""
    details: StatusDetails | None = None
    code: int | None = None


_converter = WireConverter(forbid_extra_keys=False)


class StatusParseError(ValueError):
    """Bytes that are not a ``metav1.Status``."""


def parse_status(data: bytes | str | dict[str, Any]) -> Status:
    """Parse a Status from JSON text or an already decoded object."""
    if isinstance(data, bytes | str):
        try:
            data = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise StatusParseError(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise StatusParseError(f"expected a JSON object, got {type(data).__name__}")
    try:
        return structure(data, Status, converter=_converter)
    except WireError as exc:
        raise StatusParseError(f"not a Status object: {exc}") from None


class KubeError(Exception):
    """Any failure talking to the Kubernetes API."""


class KubeConfigError(ConfigError):
    """No usable kubeconfig / in-cluster configuration; the message names the file and problem."""

    def __init__(self, where: str, problem: str) -> None:
        self.where = where
        self.problem = problem
        super().__init__([f"{where}: {problem}"])


class TransportError(KubeError):
    """The API server could not be reached, the connection broke, or a call timed out.
    ``request_not_sent`` is True when the request surely never reached the server (safe to
    retry even when not idempotent)."""

    def __init__(self, message: str, *, request_not_sent: bool = False) -> None:
        self.request_not_sent = request_not_sent
        super().__init__(message)


class ResponseTooLarge(KubeError):
    """An answer (or one watch event) larger than the client reads; not retried: the same call
    would get the same answer."""


class StatusError(KubeError):
    """The API server answered with an error. ``status`` is its ``metav1.Status`` (synthesised
    from the HTTP code and body text when the body was not a Status)."""

    def __init__(self, code: int, status: Status, *, retry_after: float | None = None) -> None:
        self.code = code
        self.status = status
        self.retry_after = retry_after
        super().__init__(f"{code} {status.reason or 'error'}: {status.message or '(no message)'}")

    @property
    def reason(self) -> str:
        return self.status.reason

    @property
    def message(self) -> str:
        return self.status.message


class BadRequest(StatusError):
    """400"""


class Unauthorized(StatusError):
    """401: the credentials were not accepted."""


class Forbidden(StatusError):
    """403: RBAC (or admission) forbids the call."""


class NotFound(StatusError):
    """404"""


class MethodNotAllowed(StatusError):
    """405"""


class AlreadyExists(StatusError):
    """409 with reason AlreadyExists (a create of an existing name)."""


class Conflict(StatusError):
    """409 otherwise (e.g. a stale ``resourceVersion`` on update)."""


class Expired(StatusError):
    """410 Gone / reason Expired: a watch or list resourceVersion is too old; list again."""


Gone = Expired


class Invalid(StatusError):
    """422: the object failed validation; ``status.details.causes`` name the fields."""


class TooManyRequests(StatusError):
    """429: throttled (API priority and fairness) or an eviction blocked by a disruption budget."""


class InternalError(StatusError):
    """5xx"""


_BY_REASON: dict[str, type[StatusError]] = {
    "BadRequest": BadRequest,
    "Unauthorized": Unauthorized,
    "Forbidden": Forbidden,
    "NotFound": NotFound,
    "MethodNotAllowed": MethodNotAllowed,
    "AlreadyExists": AlreadyExists,
    "Conflict": Conflict,
    "Gone": Expired,
    "Expired": Expired,
    "Invalid": Invalid,
    "TooManyRequests": TooManyRequests,
    "InternalError": InternalError,
    "ServerTimeout": InternalError,
    "Timeout": InternalError,
    "ServiceUnavailable": InternalError,
}

_BY_CODE: dict[int, type[StatusError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    405: MethodNotAllowed,
    409: Conflict,
    410: Expired,
    422: Invalid,
    429: TooManyRequests,
}

_REASON_FOR_CODE = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Expired",
    422: "Invalid",
    429: "TooManyRequests",
}


def error_for_status(code: int, status: Status, *, retry_after: float | None = None) -> StatusError:
    """The typed error for ``status`` received with HTTP ``code``."""
    cls = _BY_REASON.get(status.reason)
    if cls is None:
        cls = _BY_CODE.get(code, InternalError if code >= 500 else StatusError)
    if retry_after is None and status.details is not None and status.details.retry_after_seconds:
        retry_after = float(status.details.retry_after_seconds)
    return cls(code, status, retry_after=retry_after)


def error_from_response(code: int, body: bytes, *, retry_after: float | None = None) -> StatusError:
    """The typed error for an HTTP error response. A body that is not a Status (the plain-text
    429 of the max-in-flight filter, a proxy's HTML page, an empty 403) becomes the message."""
    try:
        status = parse_status(body)
    except StatusParseError:
        status = None
    if status is None or (not status.status and not status.reason and not status.message):
        text = body.decode("utf-8", "replace").strip()
        if len(text) > 500:
            text = text[:500] + "..."
        status = Status(
            status="Failure",
            message=text or f"HTTP {code} with an empty body",
            reason=_REASON_FOR_CODE.get(code, "InternalError" if code >= 500 else ""),
            code=code,
        )
    return error_for_status(code, status, retry_after=retry_after)


def transport_error(method: str, path: str, exc: httpx.HTTPError) -> TransportError:
    not_sent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
    return TransportError(
        f"{method} {path}: {type(exc).__name__}: {describe_network_error(exc)}", request_not_sent=not_sent
    )
