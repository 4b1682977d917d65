"""Outcome variables set by a job's stdout, as the Go runner parses them.

``::set-outcome-var KEY=VALUE`` sets one; ``::start-multiline-outcome-var KEY`` ... lines ...
``::end-multiline-outcome-var`` sets a multi-line one. Lines echoed by ``set -x`` (``+ ...``)
are never parsed. Directive lines and multi-line bodies are consumed, not shipped as log text.
"""

from __future__ import annotations

import re

from trunner.logs.markers import CONTINUED_PREFIX, CUT_SUFFIX

_SET = re.compile(rb"::set-outcome-var\s([\w-]+)=(.*)", re.DOTALL)
_START = re.compile(rb"::start-multiline-outcome-var\s([\w-]+)")
_END = re.compile(rb"::end-multiline-outcome-var")
_TRACE = re.compile(rb"\+\s")

MAX_TOTAL_BYTES = 1024 * 1024
"""Outcome variables are held until the job ends; this bounds that memory."""


def _may_hold_directive(block: bytes) -> bool:
    """Whether a line of ``block`` may start a directive. Checked before any line is split:
    a one-byte search runs at memchr speed and longer needles skip faster than ``b"::"``."""
    if b":" not in block:
        return False
    return (
        block.startswith(b"::")
        or b"\n::set-outcome-var" in block
        or b"\n::start-multiline-outcome-var" in block
    )


class OutcomeVarParser:
    def __init__(self, max_total_bytes: int = MAX_TOTAL_BYTES) -> None:
        self._values: dict[str, str] = {}
        self._max_total = max_total_bytes
        self._total = 0
        self._multiline_key: str | None = None
        self._multiline: list[bytes] = []
        self._multiline_size = 0
        self._multiline_truncated = False
        self.warnings: list[str] = []

    def filter(self, block: bytes) -> bytes | None:
        """``block`` without the lines consumed as directives; None when nothing is left."""
        if self._multiline_key is None and not _may_hold_directive(block):
            return block
        kept: list[bytes] = []
        for line in block.split(b"\n"):
            if not self._consume(line):
                kept.append(line)
        return b"\n".join(kept) if kept else None

    def finish(self) -> None:
        if self._multiline_key is not None:
            self.warnings.append(
                f"outcome variable {self._multiline_key!r} was not closed by ::end-multiline-outcome-var; "
                "kept what was printed"
            )
            self._close_multiline()

    def variables(self) -> dict[str, str]:
        return dict(self._values)

    def _consume(self, line: bytes) -> bool:
        if line.startswith(CONTINUED_PREFIX) or line.endswith(CUT_SUFFIX) or _TRACE.match(line):
            if self._multiline_key is not None and not _TRACE.match(line):
                self._append_multiline(line)
                return True
            return False
        if self._multiline_key is not None:
            if _END.match(line):
                self._close_multiline()
            else:
                self._append_multiline(line)
            return True
        if match := _SET.match(line):
            self._set(match[1].decode(), match[2])
            return True
        if match := _START.match(line):
            self._multiline_key = match[1].decode()
            self._multiline, self._multiline_size, self._multiline_truncated = [], 0, False
            return True
        return False

    def _append_multiline(self, line: bytes) -> None:
        if self._multiline_truncated:
            return
        if self._multiline_size + len(line) + 1 > self._room():
            self.warnings.append(
                f"outcome variable {self._multiline_key!r} truncated: outcome variables are limited "
                f"to {self._max_total} bytes in all"
            )
            self._multiline_truncated = True
            return
        self._multiline.append(line)
        self._multiline_size += len(line) + 1

    def _close_multiline(self) -> None:
        key = self._multiline_key
        assert key is not None
        self._set(key, b"\n".join(self._multiline).rstrip(b"\n"))
        self._multiline_key, self._multiline = None, []

    def _room(self) -> int:
        return self._max_total - self._total

    def _set(self, key: str, value: bytes) -> None:
        previous = self._values.pop(key, None)
        if previous is not None:
            self._total -= len(previous.encode())
        if len(value) > self._room():
            self.warnings.append(
                f"outcome variable {key!r} dropped: outcome variables are limited to {self._max_total} bytes in all"
            )
            return
        text = value.decode()
        self._values[key] = text
        self._total += len(value)
