"""Filling batches and handing them to the shipper without ever waiting for it.

Memory bound per job: the batch being filled (<= ``max_size``), the channel's two batches and
the one the shipper is delivering: 4 x ``max_size`` of line text, whatever the job prints and
however slow the sink. When the channel is full the current batch keeps filling to its cap,
then whole lines are dropped and counted; the next batch to ship starts with a marker saying so.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from trunner.logs import markers
from trunner.logs.batch import Batch
from trunner.logs.metrics import LogMetrics

SHIPPING_BEHIND = "log shipping fell behind"


class Batcher:
    def __init__(
        self,
        send: trio.MemorySendChannel[Batch],
        *,
        max_size: int,
        interval: float,
        line_prefix: Callable[[], bytes],
        metrics: LogMetrics | None = None,
    ) -> None:
        self._send = send
        self._max = max_size
        self._interval = interval
        self._line_prefix = line_prefix
        self._metrics = metrics
        self._current = Batch(seq=0)
        self._next_seq = 1
        self._handed_off_any = False
        self._full = False
        self._unannounced_lines = 0
        self._unannounced_bytes = 0
        self._dropping_cut_line = False
        self.last_handoff = trio.current_time()
        self.dropped_lines = 0
        self._changed = trio.Event()

    @property
    def current(self) -> Batch:
        return self._current

    def add(self, block: bytes, lines: int, continues_cut_line: bool) -> None:
        """Add ``lines`` finished lines (``block``, joined by ``\\n``)."""
        if continues_cut_line and self._dropping_cut_line:
            first, newline, rest = block.partition(b"\n")
            self._drop(1, len(first) + 1)
            if not newline:
                self._dropping_cut_line = first.endswith(markers.CUT_SUFFIX)
                return
            block, lines = rest, lines - 1
        self._dropping_cut_line = False
        was_empty = not self._current
        while True:
            room = self._max - self._current.size
            if len(block) + 1 <= room:
                self._current.add_block(block, lines)
                break
            self._full = True
            if self._current and self._handoff():
                continue
            cut = block.rfind(b"\n", 0, room)
            if cut > 0:
                head = block[:cut]
                head_lines = head.count(b"\n") + 1
                self._current.add_block(head, head_lines)
                block, lines = block[cut + 1 :], lines - head_lines
                continue
            self._drop(lines, len(block) + 1)
            self._dropping_cut_line = block.endswith(markers.CUT_SUFFIX)
            break
        if not self._handed_off_any:
            self._handoff()
        elif was_empty and self._current:
            self._notify()

    async def wait_changed(self) -> None:
        """Returns after the next hand-off, or when lines start waiting in an empty batch."""
        await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def run_interval_timer(self) -> None:
        """Ships waiting lines ``interval`` after the last hand-off even when no new line arrives."""
        while True:
            if self._current and trio.current_time() >= self.next_due_time():
                if self.ship_if_ready():
                    continue
                await self.wait_changed()
            elif self._current:
                with trio.move_on_at(self.next_due_time()):
                    await self.wait_changed()
            else:
                await self.wait_changed()

    def due(self) -> bool:
        return bool(self._current) and trio.current_time() >= self.last_handoff + self._interval

    def next_due_time(self) -> float:
        return self.last_handoff + self._interval

    def ship_if_ready(self) -> bool:
        """Hand off the current batch if it is full or due; False if the channel is still full."""
        if self._full or self.due():
            return self._handoff()
        return True

    def final_batch(self) -> Batch | None:
        """The last batch, with a marker for lines dropped since the last hand-off."""
        batch = self._current
        if self._unannounced_lines:
            batch.add_block(self._marker(), 1)
            self._unannounced_lines = self._unannounced_bytes = 0
        self._current = Batch(seq=self._next_seq)
        return batch if batch else None

    def _marker(self) -> bytes:
        text = markers.dropped(self._unannounced_lines, self._unannounced_bytes, SHIPPING_BEHIND)
        return self._line_prefix() + text

    def _handoff(self) -> bool:
        if not self._current:
            return True
        try:
            self._send.send_nowait(self._current)
        except trio.WouldBlock:
            return False
        self._handed_off_any = True
        self._full = False
        self.last_handoff = trio.current_time()
        self._current = Batch(seq=self._next_seq)
        self._next_seq += 1
        self._notify()
        if self._unannounced_lines:
            self._current.add_block(self._marker(), 1)
            self._unannounced_lines = self._unannounced_bytes = 0
        return True

    def _drop(self, lines: int, size: int) -> None:
        self._unannounced_lines += lines
        self._unannounced_bytes += size
        self.dropped_lines += lines
        if self._metrics is not None:
            self._metrics.lines_dropped.inc(lines)
            self._metrics.bytes_dropped.inc(size)
