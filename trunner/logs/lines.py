"""Splitting a byte stream into lines with a bounded partial-line buffer.

Works on whole blocks: a chunk's complete lines leave as one ``bytes`` block (lines joined by
``\\n``) so later stages run C-level operations over many lines at once.
"""

from __future__ import annotations

from collections.abc import Callable

from trunner.logs.markers import CONTINUED_PREFIX, CUT_SUFFIX

Segment = tuple[bytes, bool]
"""A block of lines and whether its first line continues a line cut earlier."""

CutGuard = Callable[[bytes, int], int]
"""Given a buffer and a proposed cut offset, returns an offset not inside a secret."""


def _no_guard(_: bytes, cut: int) -> int:
    return cut


def _utf8_boundary(buf: bytes, cut: int) -> int:
    """Moves ``cut`` back so it does not split a UTF-8 sequence (at most 3 continuation bytes)."""
    for _ in range(3):
        if cut <= 0 or (buf[cut] & 0xC0) != 0x80:
            break
        cut -= 1
    return cut


def to_utf8(block: bytes) -> bytes:
    """Valid UTF-8 of ``block``: invalid sequences become U+FFFD."""
    if block.isascii():
        return block
    try:
        block.decode()
    except UnicodeDecodeError:
        return block.decode("utf-8", "replace").encode()
    return block


class LineSplitter:
    """Lines of one stream. Memory held: at most ``max_line + holdback`` bytes of an unfinished line.

    ``\\r\\n`` ends a line like ``\\n``; a lone ``\\r`` (progress output) stays inside its line,
    so a progress bar without newlines becomes one long line, cut into marked pieces.
    """

    def __init__(self, max_line: int, guard: CutGuard = _no_guard, holdback: int = 0) -> None:
        """``holdback``: bytes an unfinished line may exceed ``max_line`` by before it is cut, so
        that anything ``guard`` protects (up to ``holdback + 1`` bytes) is wholly in the buffer."""
        if max_line < 1:
            raise ValueError("max_line must be positive")
        self.max_line = max_line
        self._guard = guard
        self._holdback = holdback
        self._partial = b""
        self._continuing = False
        self.cuts = 0

    def feed(self, data: bytes) -> list[Segment]:
        buf = self._partial + data if self._partial else data
        last_newline = buf.rfind(b"\n")
        out: list[Segment] = []
        if last_newline < 0:
            self._partial = buf
        else:
            self._partial = buf[last_newline + 1 :]
            out.extend(self._complete(buf[:last_newline]))
        if len(self._partial) > self.max_line + self._holdback:
            out.extend(self._cut_partial())
        return out

    def finish(self) -> list[Segment]:
        """The trailing line that never got a newline, if any."""
        if not self._partial:
            return []
        tail, self._partial = self._partial, b""
        return self._complete(tail)

    def _complete(self, block: bytes) -> list[Segment]:
        if b"\r" in block:
            block = block.replace(b"\r\n", b"\n")
            if block.endswith(b"\r"):
                block = block[:-1]
        continuing, self._continuing = self._continuing, False
        if len(block) > self.max_line:
            long_lines = [line for line in block.split(b"\n") if len(line) > self.max_line]
            if long_lines:
                return self._cut_block(block, continuing)
        if continuing:
            return [(CONTINUED_PREFIX + block, True)]
        return [(block, False)]

    def _cut_block(self, block: bytes, continuing: bool) -> list[Segment]:
        out: list[Segment] = []
        pending: list[bytes] = []
        pending_continues = continuing
        for index, line in enumerate(block.split(b"\n")):
            first_continues = continuing and index == 0
            if len(line) <= self.max_line:
                pending.append(CONTINUED_PREFIX + line if first_continues else line)
                continue
            if pending:
                out.append((b"\n".join(pending), pending_continues))
                pending = []
            pieces = self._pieces(line)
            out.append(
                (
                    b"\n".join(
                        (CONTINUED_PREFIX if (i > 0 or first_continues) else b"")
                        + piece
                        + (CUT_SUFFIX if i < len(pieces) - 1 else b"")
                        for i, piece in enumerate(pieces)
                    ),
                    first_continues,
                )
            )
            pending_continues = False
        if pending:
            out.append((b"\n".join(pending), pending_continues))
        return out

    def _pieces(self, line: bytes) -> list[bytes]:
        pieces = []
        start = 0
        while len(line) - start > self.max_line:
            cut = start + self._cut_offset(line[start : start + self.max_line + self._holdback + 1])
            pieces.append(line[start:cut])
            start = cut
            self.cuts += 1
        pieces.append(line[start:])
        return pieces

    def _cut_offset(self, buf: bytes) -> int:
        cut = _utf8_boundary(buf, self.max_line)
        guarded = self._guard(buf, cut)
        # A secret longer than the whole line budget cannot be kept in one piece; cut anyway.
        return guarded if guarded > 0 else (cut if cut > 0 else self.max_line)

    def _cut_partial(self) -> list[Segment]:
        out: list[Segment] = []
        buf, start = self._partial, 0
        while len(buf) - start > self.max_line + self._holdback:
            cut = start + self._cut_offset(buf[start : start + self.max_line + self._holdback + 1])
            head = CONTINUED_PREFIX if self._continuing else b""
            out.append((head + buf[start:cut] + CUT_SUFFIX, self._continuing))
            start = cut
            self.cuts += 1
            self._continuing = True
        self._partial = buf[start:]
        return out
