"""A batch of finished log lines, as handed from the drain to the shipper.

Lines are stored in a few large ``bytes`` blocks (lines joined by ``\\n``) rather than one object
per line: per-object overhead would otherwise dominate memory for short lines, and whole-block
operations run at C speed.
"""

from __future__ import annotations

from collections.abc import Iterator

import attrs


@attrs.define
class Batch:
    seq: int
    """0-based position of this batch within its job."""
    blocks: list[bytes] = attrs.Factory(list)
    line_count: int = 0
    size: int = 0
    """Bytes of line text held, counting one byte per line for its separator."""
    markers: int = 0
    """How many of the lines are trunner's gap markers (counted in ``line_count``)."""
    announced: int = 0
    """Lines those markers announce as dropped (not in this batch)."""

    def add_block(self, block: bytes, lines: int) -> None:
        self.blocks.append(block)
        self.line_count += lines
        self.size += len(block) + 1

    def add_marker(self, marker: bytes, announced: int) -> None:
        self.add_block(marker, 1)
        self.markers += 1
        self.announced += announced

    def lines(self) -> Iterator[bytes]:
        """Every line, UTF-8, without its newline."""
        for block in self.blocks:
            yield from block.split(b"\n")

    def text_lines(self) -> list[str]:
        return [line.decode() for line in self.lines()]

    def __bool__(self) -> bool:
        return self.line_count > 0
