"""The visible marks trunner leaves in a job's log where it had to alter the output.

Every shipped line is a real line, a piece of a real line framed by these markers, or a marker
line; nothing is ever joined across line boundaries.
"""

from __future__ import annotations

CUT_SUFFIX = b" [trunner: line continues]"
"""Ends a piece of a line that was longer than the maximum line length."""

CONTINUED_PREFIX = b"[trunner: continued] "
"""Starts each following piece of such a line."""

MASK = b"**********"


MAX_REASON_BYTES = 200
"""UTF-8 bytes of a reason a gap marker quotes. A sink's error text can be of any length; cut, it
keeps every marker's text under 300 bytes, which bounds what markers add to a batch."""


UNCONFIRMED = "not confirmed, may have been delivered"
"""What a marker says of lines whose delivery failed after an attempt whose result is unknown
(sent in full, then no answer): they may be in the log already, so they are not called dropped."""

_UNCONFIRMED_REASON_BYTES = MAX_REASON_BYTES - len(UNCONFIRMED) + len("dropped")


def _cut(reason: str, limit: int) -> str:
    encoded = reason.encode("utf-8", "replace")
    if len(encoded) > limit:
        return encoded[: limit - 3].decode("utf-8", "ignore") + "…"
    return reason


def dropped(lines: int, size: int, reason: str, stream: str | None = None) -> bytes:
    """Announces a gap; ``stream`` names whose lines they were when the gap is one stream's."""
    of = f" of {stream}" if stream else ""
    reason = _cut(reason, MAX_REASON_BYTES)
    return f"[trunner: {lines} lines ({size} bytes){of} dropped: {reason}]".encode("utf-8", "replace")


def unconfirmed(lines: int, size: int, reason: str, stream: str) -> bytes:
    """Announces lines that may or may not have reached the sink (as long as :func:`dropped`)."""
    reason = _cut(reason, _UNCONFIRMED_REASON_BYTES)
    text = f"[trunner: {lines} lines ({size} bytes) of {stream} {UNCONFIRMED}: {reason}]"
    return text.encode("utf-8", "replace")


def note(text: str) -> bytes:
    return f"[trunner] {text}".encode("utf-8", "replace")
