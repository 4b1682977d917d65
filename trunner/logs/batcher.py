"""Filling batches and offering them to the job log without ever waiting for it.

A batch is offered when it is full, when it is due (the interval passed since the last hand-off)
and at the end. A refused offer leaves the batch in place; the rest of the block that did not fit
waits, processed, in ``overflow`` and the batcher reports itself :attr:`held`, so the drain stops
taking input until the job log has room (:meth:`resume`). Only while the job log says delivery
has stalled (:meth:`start_dropping`) are lines dropped: each stream's drops are counted and
announced by one marker per stream as the first lines after the gap, before anything newer.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from trunner.contracts import Stream
from trunner.logs import markers
from trunner.logs.batch import RUNNER, SOURCES, STDERR, STDOUT, Batch
from trunner.logs.metrics import LogMetrics

Source = Stream | None
"""The stream a block came from; None for lines trunner writes itself."""

SOURCE_INDEX: dict[Source, int] = {Stream.STDOUT: STDOUT, Stream.STDERR: STDERR, None: RUNNER}
"""A source's place in :attr:`Batch.counts`."""


class Batcher:
    def __init__(
        self,
        offer: Callable[[Batch], bool],
        *,
        max_size: int,
        interval: float,
        line_prefix: Callable[[], bytes],
        busy: Callable[[], bool] = lambda: False,
        metrics: LogMetrics | None = None,
    ) -> None:
        """``offer(batch)`` takes a batch or refuses it (no room); ``busy()`` is true while the
        job log is still storing an earlier batch and wants no more input meanwhile."""
        self._offer = offer
        self._busy = busy
        self._max = max_size
        self._interval = interval
        self._line_prefix = line_prefix
        self._metrics = metrics
        self._current = Batch(seq=0)
        self._next_seq = 1
        self._handed_off_any = False
        self._full = False
        self._overflow: list[tuple[Source, bytes, int]] = []
        self._overflow_lines = 0
        self._overflow_size = 0
        self._dropping: str | None = None
        self._drops: dict[Source, list[int]] = {}
        self.last_handoff = trio.current_time()
        self.dropped_lines = 0
        self.dropped_bytes = 0
        self._changed = trio.Event()

    @property
    def current(self) -> Batch:
        return self._current

    @property
    def held(self) -> bool:
        """Whether the drain must stop taking input until :meth:`resume` succeeds."""
        return bool(self._overflow) or (self._dropping is None and self._busy())

    @property
    def dropping(self) -> bool:
        return self._dropping is not None

    def waiting(self) -> tuple[int, int]:
        """Lines and bytes not yet handed off: the current batch and the overflow."""
        return (
            self._current.line_count - self._current.markers + self._overflow_lines,
            self._current.size + self._overflow_size,
        )

    def add(self, stream: Source, block: bytes, lines: int) -> None:
        """Add ``lines`` finished lines (``block``, joined by ``\\n``) of ``stream``."""
        if self._dropping is not None and not self._handoff():
            self._drop(stream, lines, self._text_size(block, lines))
            return
        if self._overflow:
            self._hold(stream, block, lines)
            return
        was_empty = not self._current
        self._place(stream, block, lines)
        if not self._handed_off_any:
            self._handoff()
        elif was_empty and self._current:
            self._notify()

    def resume(self) -> bool:
        """Offer what waits for room again; True when nothing is held any more."""
        while self._overflow:
            if not self._handoff():
                return False
            waiting, self._overflow = self._overflow, []
            self._overflow_lines = self._overflow_size = 0
            for index, (stream, block, lines) in enumerate(waiting):
                if self._overflow:
                    for item in waiting[index:]:
                        self._hold(*item)
                    break
                self._place(stream, block, lines)
        if self._full and self._current and not self._busy():
            self._handoff()
        return not self.held

    def start_dropping(self, reason: str) -> None:
        """Drop everything held and all new lines, counted per stream, until an offer succeeds."""
        self._dropping = reason
        for stream, block, lines in self._overflow:
            self._drop(stream, lines, self._text_size(block, lines))
        self._overflow = []
        self._overflow_lines = self._overflow_size = 0

    async def wait_changed(self) -> None:
        """Returns after the next hand-off, or when lines start waiting in an empty batch."""
        await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def due(self) -> bool:
        return bool(self._current) and trio.current_time() >= self.last_handoff + self._interval

    def next_due_time(self) -> float:
        return self.last_handoff + self._interval

    def ship_if_ready(self) -> bool:
        """Offer the current batch if it is full or due; False if it was refused."""
        if self._overflow:
            return self.resume()
        if self._full or self.due() or self._dropping is not None:
            return self._handoff()
        return True

    def flush(self) -> bool:
        """Offer everything, due or not; True when nothing is left here."""
        if not self.resume():
            return False
        while self._current or self._drops:
            if not self._handoff():
                return False
        return True

    def _place(self, stream: Source, block: bytes, lines: int) -> None:
        source = SOURCE_INDEX[stream]
        prefix_size = len(self._line_prefix())
        while True:
            room = self._max - self._current.size
            if len(block) + 1 <= room:
                self._current.add_block(block, lines, source, prefix_size)
                return
            self._full = True
            if self._current and self._handoff():
                continue
            if not self._current:
                # Lines are cut to half a batch, so only a block of many lines gets here: it is
                # split below; a single line this long would be kept whole rather than held for ever.
                cut = block.rfind(b"\n", 0, room)
                if cut <= 0:
                    self._current.add_block(block, lines, source, prefix_size)
                    return
            else:
                cut = block.rfind(b"\n", 0, room)
            if cut <= 0:
                self._hold(stream, block, lines)
                return
            head = block[:cut]
            head_lines = head.count(b"\n") + 1
            self._current.add_block(head, head_lines, source, prefix_size)
            block, lines = block[cut + 1 :], lines - head_lines

    def _text_size(self, block: bytes, lines: int) -> int:
        """Bytes of the job's lines in ``block``: trunner's prefix of each line not counted."""
        return len(block) + 1 - lines * len(self._line_prefix())

    def _hold(self, stream: Source, block: bytes, lines: int) -> None:
        self._overflow.append((stream, block, lines))
        self._overflow_lines += lines
        self._overflow_size += len(block) + 1

    def _handoff(self) -> bool:
        if self._current and not self._offer(self._current):
            return False
        if self._current:
            self._handed_off_any = True
            self.last_handoff = trio.current_time()
            self._current = Batch(seq=self._next_seq)
            self._next_seq += 1
            self._notify()
        self._full = False
        if self._drops:
            self._announce_drops()
        self._dropping = None
        return True

    def _announce_drops(self) -> None:
        """The markers of the gap just closed, each stream's own, first in the new batch."""
        reason = self._dropping or ""
        drops, self._drops = self._drops, {}
        prefix = self._line_prefix()
        for stream, (lines, size) in drops.items():
            source = SOURCE_INDEX[stream]
            marker = markers.dropped(lines, size, reason, SOURCES[source])
            self._current.add_marker(prefix + marker, source, lines, size)

    def _drop(self, stream: Source, lines: int, size: int) -> None:
        counts = self._drops.setdefault(stream, [0, 0])
        counts[0] += lines
        counts[1] += size
        self.dropped_lines += lines
        self.dropped_bytes += size
        if self._metrics is not None:
            self._metrics.lines_dropped.inc(lines)
            self._metrics.bytes_dropped.inc(size)
