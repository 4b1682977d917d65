"""Filling batches: a batch is sealed when the next lines do not fit, when it is due (the
interval passed since the last one was sealed) and at the end. No I/O, no waiting: the drain
hands sealed batches on. While delivery has stalled, the drain drops lines here instead
(:meth:`Batcher.drop`): each stream's drops are counted and announced by one marker per stream
(:meth:`Batcher.announce_drops`) as the first lines after the gap, before anything newer.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from trunner.contracts import Stream
from trunner.logs import markers
from trunner.logs.batch import COUNTS, RUNNER, SOURCES, STDERR, STDOUT, Batch
from trunner.logs.metrics import LogMetrics

Source = Stream | None
"""The stream a block came from; None for lines trunner writes itself."""

SOURCE_INDEX: dict[Source, int] = {Stream.STDOUT: STDOUT, Stream.STDERR: STDERR, None: RUNNER}
"""A source's place in :attr:`Batch.counts`."""


class Batcher:
    def __init__(
        self,
        *,
        max_size: int,
        interval: float,
        line_prefix: Callable[[], bytes],
        metrics: LogMetrics | None = None,
    ) -> None:
        self._max = max_size
        self._interval = interval
        self._line_prefix = line_prefix
        self._metrics = metrics
        self.current = Batch(seq=0)
        self._sealed_any = False
        self._drops: dict[Source, list[int]] = {}
        self.last_sealed = trio.current_time()
        self.dropped_lines = 0
        self.dropped_bytes = 0

    def add(self, stream: Source, block: bytes, lines: int) -> Batch | None:
        """Add ``lines`` finished lines (``block``, joined by ``\\n``, at most half a batch or
        one slice of the drain); returns the batch sealed to make room, if one was. The job's
        first lines are sealed at once, so they show without waiting for the interval."""
        source = SOURCE_INDEX[stream]
        prefix_size = len(self._line_prefix())
        sealed = None
        room = self._max - self.current.size
        if len(block) + 1 > room:
            cut = block.rfind(b"\n", 0, room) if self.current else -1
            if cut > 0:
                head = block[:cut]
                head_lines = head.count(b"\n") + 1
                self.current.add_block(head, head_lines, source, prefix_size)
                block, lines = block[cut + 1 :], lines - head_lines
            if self.current:
                sealed = self.seal()
        self.current.add_block(block, lines, source, prefix_size)
        if not self._sealed_any:
            return self.seal()
        return sealed

    def seal(self) -> Batch:
        batch = self.current
        self.current = Batch(seq=batch.seq + 1)
        self._sealed_any = True
        self.last_sealed = trio.current_time()
        return batch

    def due_time(self) -> float:
        """When the current batch is due; infinite while it is empty."""
        return self.last_sealed + self._interval if self.current else float("inf")

    def drop(self, stream: Source, block: bytes, lines: int) -> None:
        """Count ``block`` (``lines`` prefixed lines) as dropped: the job's bytes, without
        trunner's prefix of each line."""
        size = len(block) + 1 - lines * len(self._line_prefix())
        counts = self._drops.setdefault(stream, [0, 0])
        counts[0] += lines
        counts[1] += size
        self.dropped_lines += lines
        self.dropped_bytes += size
        if self._metrics is not None:
            self._metrics.lines_dropped.inc(lines)
            self._metrics.bytes_dropped.inc(size)

    def announce_drops(self, reason: str) -> None:
        """The markers of the gap just closed, each stream's own, as the next lines."""
        drops, self._drops = self._drops, {}
        prefix = self._line_prefix()
        for stream, (lines, size) in drops.items():
            source = SOURCE_INDEX[stream]
            marker = markers.dropped(lines, size, reason, SOURCES[source])
            self.current.add_marker(prefix + marker, source, lines, size)

    def unannounced(self) -> list[int]:
        """The drops not yet announced, as the announced part of a :attr:`Batch.counts` vector."""
        counts = [0] * COUNTS
        for stream, (lines, size) in self._drops.items():
            source = SOURCE_INDEX[stream]
            counts[4 * source + 2] += lines
            counts[4 * source + 3] += size
        return counts
