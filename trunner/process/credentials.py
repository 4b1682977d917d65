"""The runner's own credentials (the OpsLevel API token, the Faktory URL and password, the Sentry
DSN and its key), registered once the settings are read: every job's masker and the runner's own
log mask them, so a job that finds one (in a file, in another process) cannot ship it in clear."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit, urlunsplit

_registered: dict[str, str] = {}
"""value -> what it is (the name the masker's warnings use)."""


def register(name: str, value: str) -> None:
    value = value.rstrip("\r\n")
    if value.strip():
        _registered.setdefault(value, name)


def register_url(name: str, url: str) -> None:
    """The userinfo of a URL (the password, and a user name that is a key, as in a Sentry DSN),
    raw and percent-decoded."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return
    for part, what in ((parts.password, "password"), (parts.username, "user")):
        if part:
            register(f"{name} ({what})", part)
            register(f"{name} ({what})", unquote(part))


def registered() -> list[tuple[str, str]]:
    """``(what, value)`` pairs, as the masker takes them."""
    return [(name, value) for value, name in _registered.items()]


def forget_all() -> None:
    _registered.clear()


def redact_url(url: str) -> str:
    """``url`` with its userinfo (``user:password@``) replaced by ``***@``, for logs and errors."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<a URL that cannot be parsed>"
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"***@{host}"))
