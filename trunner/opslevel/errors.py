"""Typed failures of OpsLevel API calls, each carrying the API's own words.

``retryable`` says whether the same call may succeed if repeated (429/502/503/504, connection
errors, timeouts); ``retry_after`` is the server's ``Retry-After`` in seconds, when it sent one.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

TOKEN_HINT = "set a valid token with 'export OPSLEVEL_API_TOKEN=<token>' or '--api-token=<token>'"


class ApiError(Exception):
    retryable: bool = False
    maybe_done: bool = False
    """Whether the server may have carried the call out all the same: the whole request reached
    it and no answer said it was refused."""

    def __init__(self, operation: str, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(f"{operation}: {message}")
        self.operation = operation
        self.retry_after = retry_after


class ApiTransportError(ApiError):
    """No HTTP response: connection refused or reset, or no answer within the timeout.
    ``sent``: the whole request had been written to the connection."""

    retryable = True

    def __init__(self, operation: str, message: str, *, sent: bool = False) -> None:
        super().__init__(operation, message)
        self.maybe_done = sent


class ApiStatusError(ApiError):
    """An HTTP status other than 200/201."""

    RETRYABLE = frozenset({429, 502, 503, 504})

    def __init__(self, operation: str, status: int, detail: str, *, retry_after: float | None = None) -> None:
        text = f"HTTP {status}" + (f": {detail}" if detail else "")
        super().__init__(operation, text, retry_after=retry_after)
        self.status = status
        self.detail = detail
        self.retryable = status in self.RETRYABLE
        # A 503 (or a 4xx) says the request was not handled; after a 500, or from a gateway
        # (502, 504), the server behind may have carried it out.
        self.maybe_done = status >= 500 and status != 503


class ApiAuthenticationError(ApiError):
    """The API did not accept the token. The message says how to set one; it never holds the token."""

    def __init__(self, operation: str, detail: str) -> None:
        super().__init__(operation, f"the OpsLevel API rejected the API token ({detail}); {TOKEN_HINT}")
        self.detail = detail


@attrs.frozen
class GraphQLProblem:
    """One entry of a top-level ``errors`` array or of a payload's ``errors{message,path}``."""

    message: str
    path: tuple[str, ...] = ()

    def describe(self) -> str:
        # opslevel-go prints a path of exactly ["base"] as ''.
        where = "" if self.path == ("base",) else ".".join(self.path)
        return f"'{where}' {self.message}" if where or self.path else self.message


class ApiGraphQLError(ApiError):
    """Top-level GraphQL ``errors``: the request itself was refused (unknown field, bad variables...)."""

    def __init__(self, operation: str, problems: Sequence[GraphQLProblem]) -> None:
        self.problems = tuple(problems)
        super().__init__(operation, "OpsLevel API error: " + "; ".join(p.describe() for p in self.problems))


class ApiPayloadError(ApiError):
    """The operation ran but its payload reports ``errors{message,path}``."""

    def __init__(self, operation: str, problems: Sequence[GraphQLProblem]) -> None:
        self.problems = tuple(problems)
        super().__init__(operation, "OpsLevel API errors: " + "; ".join(p.describe() for p in self.problems))


class ApiResponseError(ApiError):
    """A 200 response that is not the GraphQL document the operation expects."""

    maybe_done = True


class ApiResponseTooLarge(ApiResponseError):
    """A response over the size limit. ``ids`` are the values of its ``"id"`` keys, found by
    scanning the whole response (read and discarded past the limit, within the call's timeout)."""

    def __init__(self, operation: str, limit: int, ids: Sequence[str]) -> None:
        self.limit = limit
        self.ids = tuple(ids)
        super().__init__(operation, f"the response is larger than {limit} bytes")
