"""Outcome variables set by a job's stdout, as the Go runner parses them.

``::set-outcome-var KEY=VALUE`` sets one; ``::start-multiline-outcome-var KEY`` ... lines ...
``::end-multiline-outcome-var`` sets a multi-line one. Lines echoed by ``set -x`` (``+ ...``)
are never parsed. Directive lines and multi-line bodies are consumed, not shipped as log text.

A line longer than the line limit reaches here cut into marked pieces (``... [trunner: line
continues]``, ``[trunner: continued] ...``); the pieces of a directive or of a multi-line body's
line are joined back without their markers, so a value is what the job printed. Keys and values
together are bounded by ``max_total_bytes``; that bound holds while a long value is collected.
"""

from __future__ import annotations

import re

from trunner.logs.markers import CONTINUED_PREFIX, CUT_SUFFIX

_SET = re.compile(rb"::set-outcome-var\s([\w-]+)=(.*)", re.DOTALL)
_START = re.compile(rb"::start-multiline-outcome-var\s([\w-]+)")
_END = re.compile(rb"::end-multiline-outcome-var")
_TRACE = re.compile(rb"\+\s")
_KEY_SO_FAR = re.compile(rb"::set-outcome-var\s[\w-]*", re.DOTALL)
"""A first piece whose key runs on into the next piece."""

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


def _shown(key: str) -> str:
    """A key as warnings name it: keys may be as long as a line, warnings stay short."""
    return repr(key) if len(key) <= 60 else repr(key[:60]) + f"... ({len(key)} characters)"


class OutcomeVarParser:
    def __init__(self, max_total_bytes: int = MAX_TOTAL_BYTES) -> None:
        self._values: dict[str, str] = {}
        self._max_total = max_total_bytes
        self._total = 0
        self._multiline_key: str | None = None
        self._multiline = bytearray()
        """The value so far, its lines joined by newlines: one object, not one per line."""
        self._multiline_lines = 0
        self._multiline_size = 0
        self._multiline_truncated = False
        self._cut: str | None = None
        """What the line being received in pieces is: "set", "multiline", "skip" (consumed, not
        kept) or "log" (shipped); None between lines."""
        self._set_key = ""
        self._set_parts: list[bytes] | None = []
        self._set_size = 0
        self._key_pieces: list[bytes] = []
        self._key_text = b""
        self._released: list[bytes] = []
        """Pieces held while it was unclear whether they start a directive, now shipped after all."""
        self.warnings: list[str] = []

    def filter(self, block: bytes) -> bytes | None:
        """``block`` without the lines consumed as directives; None when nothing is left."""
        if self._multiline_key is None and self._cut is None and not _may_hold_directive(block):
            return block
        kept: list[bytes] = []
        for line in block.split(b"\n"):
            if not self._consume(line):
                kept.append(line)
            elif self._released:
                kept.extend(self._released)
                self._released = []
        return b"\n".join(kept) if kept else None

    def finish(self) -> None:
        if self._multiline_key is not None:
            self.warnings.append(
                f"outcome variable {_shown(self._multiline_key)} was not closed by ::end-multiline-outcome-var; "
                "kept what was printed"
            )
            self._close_multiline()

    def variables(self) -> dict[str, str]:
        return dict(self._values)

    def _consume(self, line: bytes) -> bool:
        if self._cut is not None:
            if line.startswith(CONTINUED_PREFIX):
                return self._continue_piece(line[len(CONTINUED_PREFIX) :])
            self._cut = None
        more = line.endswith(CUT_SUFFIX)
        text = line[: -len(CUT_SUFFIX)] if more else line
        if _TRACE.match(line) or line.startswith(CONTINUED_PREFIX):
            if more and self._multiline_key is not None:
                self._cut = "log"
            return False
        if self._multiline_key is not None:
            if _END.match(line) and not more:
                self._close_multiline()
            else:
                self._append_multiline(text)
                self._cut = "multiline" if more else None
            return True
        if more and _KEY_SO_FAR.fullmatch(text):
            self._cut, self._key_pieces, self._key_text = "key", [line], text
            return True
        if match := _SET.match(text):
            if more:
                self._cut, self._set_key, self._set_parts, self._set_size = "set", match[1].decode(), [], 0
                self._collect(match[2])
            else:
                self._set(match[1].decode(), match[2])
            return True
        if match := _START.match(text):
            self._multiline_key = match[1].decode()
            self._multiline, self._multiline_size, self._multiline_truncated = (
                bytearray(),
                len(match[1]),
                False,
            )
            self._multiline_lines = 0
            self._cut = "skip" if more else None
            return True
        return False

    def _continue_piece(self, piece: bytes) -> bool:
        kind = self._cut
        more = piece.endswith(CUT_SUFFIX)
        if more:
            piece = piece[: -len(CUT_SUFFIX)]
        else:
            self._cut = None
        if kind == "log":
            return False
        if kind == "key":
            return self._continue_key(piece, more)
        if kind == "set":
            self._collect(piece)
            if not more and self._set_parts is not None:
                self._set(self._set_key, b"".join(self._set_parts))
        elif kind == "multiline" and not self._multiline_truncated:
            self._join_multiline(piece)
        return True

    def _continue_key(self, piece: bytes, more: bool) -> bool:
        """A key cut into pieces: a directive once its ``=`` arrives; shipped as the pieces it
        was if anything but a key character comes first."""
        self._key_pieces.append(CONTINUED_PREFIX + piece + (CUT_SUFFIX if more else b""))
        self._key_text += piece
        if match := _SET.match(self._key_text):
            self._key_pieces, self._key_text = [], b""
            self._set_key, self._set_parts, self._set_size = match[1].decode(), [], 0
            self._collect(match[2])
            if more:
                self._cut = "set"
            elif self._set_parts is not None:
                self._set(self._set_key, b"".join(self._set_parts))
            return True
        if more and _KEY_SO_FAR.fullmatch(self._key_text):
            if len(self._key_text) > self._room():
                self._warn_dropped(self._key_text[18:60].decode(errors="replace"))
                self._key_pieces, self._key_text, self._cut = [], b"", "skip"
            else:
                self._cut = "key"
            return True
        self._released, self._key_pieces, self._key_text = self._key_pieces, [], b""
        self._cut = "log" if more else None
        return True

    def _collect(self, part: bytes) -> None:
        """Gather a long single-line value, giving up (with a warning) once it cannot fit."""
        if self._set_parts is None:
            return
        self._set_size += len(part)
        if len(self._set_key) + self._set_size > self._room() + self._size_of(self._set_key):
            self._warn_dropped(self._set_key)
            self._set_parts = None
            return
        self._set_parts.append(part)

    def _append_multiline(self, line: bytes) -> None:
        if self._multiline_truncated:
            return
        if self._multiline_size + len(line) + 1 > self._room() + self._size_of(self._multiline_key or ""):
            self._truncate_multiline()
            return
        if self._multiline_lines:
            self._multiline += b"\n"
        self._multiline += line
        self._multiline_lines += 1
        self._multiline_size += len(line) + 1

    def _join_multiline(self, piece: bytes) -> None:
        if self._multiline_size + len(piece) > self._room() + self._size_of(self._multiline_key or ""):
            self._truncate_multiline()
            return
        self._multiline += piece
        self._multiline_size += len(piece)

    def _truncate_multiline(self) -> None:
        self.warnings.append(
            f"outcome variable {_shown(self._multiline_key or '')} truncated: outcome variables are limited "
            f"to {self._max_total} bytes in all"
        )
        self._multiline_truncated = True

    def _close_multiline(self) -> None:
        key = self._multiline_key
        assert key is not None
        value = self._multiline
        while value.endswith(b"\n"):
            del value[-1]
        self._set(key, value)
        self._multiline_key, self._multiline = None, bytearray()

    def _room(self) -> int:
        return self._max_total - self._total

    def _size_of(self, key: str) -> int:
        """Bytes ``key`` holds now, which setting it again frees."""
        value = self._values.get(key)
        return 0 if value is None else len(key) + len(value.encode())

    def _warn_dropped(self, key: str) -> None:
        self.warnings.append(
            f"outcome variable {_shown(key)} dropped: outcome variables are limited to {self._max_total} "
            "bytes in all"
        )

    def _set(self, key: str, value: bytes | bytearray) -> None:
        previous = self._values.pop(key, None)
        if previous is not None:
            self._total -= len(key) + len(previous.encode())
        if len(key) + len(value) > self._room():
            self._warn_dropped(key)
            return
        self._values[key] = value.decode()
        self._total += len(key) + len(value)
