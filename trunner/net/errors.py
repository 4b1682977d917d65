"""The words for a network error, the same from every client (Kubernetes, OpsLevel, Faktory)."""

from __future__ import annotations

import re
import ssl

import h11
import httpcore
import httpx

_SSL_SOURCE = re.compile(r"\s*\(_ssl\.c:\d+\)$")
# What the HTTP stack refused to send: its text quotes the offending header, which may be the
# Authorization header, so neither it nor anything it wraps is repeated.
_REFUSED_TO_SEND = (httpx.LocalProtocolError, httpcore.LocalProtocolError, h11.LocalProtocolError)
REFUSED_TO_SEND = "the request could not be sent (a header value is not valid)"


def describe_network_error(exc: BaseException) -> str:
    """What went wrong reaching a server: the messages along the exception's cause chain, outermost
    first, each once (httpx and trio wrap the OS or TLS error that says what actually happened).

    An OS error gives its ``strerror`` (no errno number), a TLS error ``TLS:`` and its reason (and
    why the certificate was refused); an exception group gives its message, and its member when it
    has only one (trio's connect gives one group per address tried). A request the HTTP stack
    refused to send is described without its text, which may quote a credential."""
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, _REFUSED_TO_SEND):
            parts.append(REFUSED_TO_SEND)
            break
        group = current if isinstance(current, BaseExceptionGroup) else None
        text = group.message.strip() if group is not None else _words(current)
        if text and text not in parts:
            parts.append(text)
        if group is not None and len(group.exceptions) == 1:
            current = group.exceptions[0]
        else:
            # also past ``from None``: httpcore raises its ConnectError that way, hiding the OS error
            current = current.__cause__ or current.__context__
    return ": ".join(parts) or type(exc).__name__


def _words(exc: BaseException) -> str:
    # SSLError is an OSError whose strerror is the whole "[SSL: ...] ... (_ssl.c:N)" text.
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or _SSL_SOURCE.sub("", str(exc)).strip() or type(exc).__name__
        why = getattr(exc, "verify_message", None)
        return f"TLS: {reason} ({why})" if why else f"TLS: {reason}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.strip()
    return str(exc).strip()
