"""Settings of OpsLevel API mode, under the Go runner's flag and environment variable names."""

from __future__ import annotations

from urllib.parse import urlsplit

import attrs

from trunner.config import non_negative, positive, setting
from trunner.opslevel.errors import TOKEN_HINT


def _http_url(value: str) -> str | None:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return "must be an http:// or https:// URL with a host"
    return None


def _token_given(value: str) -> str | None:
    return None if value.strip() else f"is required: {TOKEN_HINT}"


def _token_sendable(value: str) -> str | None:
    if any(not char.isprintable() or char.isspace() for char in value.strip()):
        return "holds a space or control character, which an HTTP header cannot carry (value not shown)"
    return None


@attrs.frozen(repr=False)
class ApiSettings:
    """OpsLevel API"""

    api_url: str = setting(
        "https://api.opslevel.com",
        help="OpsLevel API URL; requests go to <url>/graphql (a URL already ending in /graphql, "
        "or containing /LOCAL_TESTING/, is used as given).",
        env=("OPSLEVEL_API_URL", "OPSLEVEL_APP_URL"),
        checks=[_http_url],
    )
    api_token: str = setting(
        "",
        help="OpsLevel API token.",
        env="OPSLEVEL_API_TOKEN",
        secret=True,
        checks=[_token_given, _token_sendable],
    )
    api_timeout: float = setting(
        60.0,
        help="Seconds one API request may take before it counts as failed (the Go runner's 60).",
        checks=[positive],
    )
    api_max_retries: int = setting(
        5,
        help="Retries of an API call that failed with 429/502/503/504, a connection error or a timeout "
        "(registration, unregistration and polling; log batches are retried by the log shipper).",
        checks=[non_negative],
    )
    api_retry_timeout: float = setting(
        120.0,
        help="Seconds one API call may spend on retries (waits included) before it fails.",
        checks=[positive],
    )
    user_agent_extras: str = setting(
        "", help="Text appended to the User-Agent as 'user/<text>'.", env="OPSLEVEL_USER_AGENT_EXTRAS"
    )

    def __repr__(self) -> str:
        return (
            f"ApiSettings(api_url={self.api_url!r}, api_token=<{'set' if self.api_token else 'unset'}>, "
            f"api_timeout={self.api_timeout!r}, api_max_retries={self.api_max_retries!r}, "
            f"api_retry_timeout={self.api_retry_timeout!r}, user_agent_extras={self.user_agent_extras!r})"
        )


@attrs.frozen
class PollSettings:
    """OpsLevel job polling"""

    queue: str = setting(
        "", help="Queue this runner takes jobs from; empty means the default queue.", env="OPSLEVEL_QUEUE"
    )
    poll_interval: float = setting(
        10.0, help="Seconds between polls for pending jobs while none are waiting.", checks=[positive]
    )
    poll_error_backoff_max: float = setting(
        120.0,
        help="Longest wait between polls after repeated poll errors (the wait starts at --poll-interval "
        "and doubles, with jitter).",
        checks=[positive],
    )
    runner_pod_name: str = setting(
        "",
        help="Name of the pod this runner runs in (set from the downward API); logged at registration.",
        env="RUNNER_POD_NAME",
    )
