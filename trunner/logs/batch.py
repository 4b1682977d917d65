"""A batch of finished log lines, as handed from the drain to the shipper.

Lines are stored in a few large ``bytes`` blocks (lines joined by ``\\n``) rather than one object
per line: per-object overhead would otherwise dominate memory for short lines, and whole-block
operations run at C speed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import attrs

SOURCES = ("stdout", "stderr", "runner")
"""Whose lines a batch holds, in the order of :attr:`Batch.counts`: the job's two streams and
the lines trunner writes itself."""
STDOUT, STDERR, RUNNER = range(len(SOURCES))
COUNTS = 4 * len(SOURCES)

SMALL_BLOCK = 1024
"""A block shorter than this is joined to the last block while the two stay under twice this:
a bytes object and its list slot cost about 41 bytes, so a batch of one-line blocks would
otherwise hold many times its size. Every block is then either this long, or follows one that
makes the pair at least twice this long: at most 4 % on top of the text."""


def _zero_counts() -> list[int]:
    return [0] * COUNTS


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
    counts: list[int] = attrs.Factory(_zero_counts)
    """Per source (:data:`SOURCES`), four numbers: its lines and bytes in this batch (markers
    not included; bytes of the lines as printed, each with its line break, without trunner's
    prefix), then the lines and bytes its markers announce as dropped (not in this batch)."""

    def add_block(self, block: bytes, lines: int, source: int = RUNNER, prefix_size: int = 0) -> None:
        """``prefix_size``: bytes of trunner's prefix in front of each line, which the byte
        counts leave out (markers state the job's bytes)."""
        self._append(block, lines)
        self.counts[4 * source] += lines
        self.counts[4 * source + 1] += len(block) + 1 - lines * prefix_size

    def add_marker(self, marker: bytes, source: int, lines: int, size: int) -> None:
        """A marker line announcing ``lines`` lines (``size`` bytes) of ``source`` dropped."""
        self._append(marker, 1)
        self.markers += 1
        self.counts[4 * source + 2] += lines
        self.counts[4 * source + 3] += size

    def _append(self, block: bytes, lines: int) -> None:
        blocks = self.blocks
        if len(block) < SMALL_BLOCK and blocks and len(blocks[-1]) + len(block) < 2 * SMALL_BLOCK:
            blocks[-1] = b"\n".join((blocks[-1], block))
        else:
            blocks.append(block)
        self.line_count += lines
        self.size += len(block) + 1

    def lines(self) -> Iterator[bytes]:
        """Every line, UTF-8, without its newline."""
        for block in self.blocks:
            yield from block.split(b"\n")

    def text_lines(self) -> list[str]:
        return [line.decode() for line in self.lines()]

    def gaps(self) -> list[tuple[int, int]]:
        """Per source, the lines and bytes missing from the log if this batch is lost: its own,
        and those its markers announced."""
        return gaps_of(self.counts)

    def __bool__(self) -> bool:
        return self.line_count > 0


def gaps_of(counts: Sequence[int]) -> list[tuple[int, int]]:
    """Per source, own plus announced lines and bytes of a :attr:`Batch.counts` vector."""
    return [
        (counts[4 * s] + counts[4 * s + 2], counts[4 * s + 1] + counts[4 * s + 3])
        for s in range(len(SOURCES))
    ]
