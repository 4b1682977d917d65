"""Splitting a byte stream into lines with a bounded partial-line buffer.

Works on whole blocks: a chunk's complete lines leave as one ``bytes`` block (lines joined by
``\\n``) so later stages run C-level operations over many lines at once. The input is already
valid UTF-8 and masked (:class:`trunner.logs.mask.StreamMasker`), so a cut needs no knowledge of
secrets: it only keeps multi-byte characters whole.
"""

from __future__ import annotations

from trunner.logs.markers import CONTINUED_PREFIX, CUT_SUFFIX, MASK

Segment = tuple[bytes, bool]
"""A block of lines and whether its first line continues a line cut earlier."""

_STAR = MASK[0]


def _utf8_boundary(buf: bytes, cut: int) -> int:
    """Moves ``cut`` back so it does not split a UTF-8 sequence (at most 3 continuation bytes)."""
    for _ in range(3):
        if cut <= 0 or cut >= len(buf) or (buf[cut] & 0xC0) != 0x80:
            break
        cut -= 1
    return cut


def _mask_boundary(buf: bytes, cut: int) -> int:
    """Moves ``cut`` back to the start of a ``**********`` it falls inside, so a mask stays whole."""
    if cut <= 0 or cut >= len(buf) or buf[cut - 1] != _STAR or buf[cut] != _STAR:
        return cut
    run = 1
    while run < len(MASK) and cut - run > 0 and buf[cut - run - 1] == _STAR:
        run += 1
    return cut - run if run < len(MASK) else cut


class LineSplitter:
    """Lines of one stream. Memory held: at most ``max_line`` bytes of an unfinished line.

    ``\\r\\n`` ends a line like ``\\n``; a lone ``\\r`` (progress output) stays inside its line,
    so a progress bar without newlines becomes one long line, cut into marked pieces.
    """

    def __init__(self, max_line: int) -> None:
        if max_line < 1:
            raise ValueError("max_line must be positive")
        self.max_line = max_line
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
        if len(self._partial) > self.max_line:
            out.extend(self._cut_partial())
        return out

    @property
    def partial(self) -> bytes:
        """The unfinished line."""
        return self._partial

    def finish(self, *, cut: bool = False) -> list[Segment]:
        """The trailing line that never got a newline, if any; with ``cut`` (the stream was cut
        off) it ends with the cut marker: what followed it is unknown."""
        if not self._partial:
            return []
        tail, self._partial = self._partial, b""
        segments = self._complete(tail)
        if cut:
            block, continues = segments[-1]
            segments[-1] = (block + CUT_SUFFIX, continues)
        return segments

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
            cut = start + self._cut_offset(line, start)
            pieces.append(line[start:cut])
            start = cut
            self.cuts += 1
        pieces.append(line[start:])
        return pieces

    def _cut_offset(self, buf: bytes, start: int) -> int:
        """Where the piece starting at ``start`` ends, relative to ``start``."""
        cut = _mask_boundary(buf, _utf8_boundary(buf, start + self.max_line)) - start
        return cut if cut > 0 else self.max_line

    def _cut_partial(self) -> list[Segment]:
        out: list[Segment] = []
        buf, start = self._partial, 0
        while len(buf) - start > self.max_line:
            cut = start + self._cut_offset(buf, start)
            head = CONTINUED_PREFIX if self._continuing else b""
            out.append((head + buf[start:cut] + CUT_SUFFIX, self._continuing))
            start = cut
            self.cuts += 1
            self._continuing = True
        self._partial = buf[start:]
        return out
