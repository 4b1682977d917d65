"""The one shipper: takes batches from the job's log buffer and delivers them to any sink.

Each batch gets attempts until ``retry_timeout`` has passed since it was taken; then it is
counted as lost and the next batch that gets through starts with a marker saying so (the gap is
right there: batches are delivered in order). The shipper never holds more than the one batch
it is delivering.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from functools import partial

import trio

from trunner.logs import markers
from trunner.logs.batch import Batch
from trunner.logs.metrics import LogMetrics
from trunner.logs.sinks import Sink
from trunner.retry import deliver


class Shipper:
    def __init__(
        self,
        sink: Sink,
        take: Callable[[], Awaitable[Batch | None]],
        *,
        retry_timeout: float,
        line_prefix: Callable[[], bytes],
        on_delivered: Callable[[], object] = lambda: None,
        metrics: LogMetrics | None = None,
        log: logging.Logger | logging.LoggerAdapter[logging.Logger] | None = None,
    ) -> None:
        """``take()`` returns the next batch, or None once there will be no more."""
        self._sink = sink
        self._take = take
        self._retry_timeout = retry_timeout
        self._line_prefix = line_prefix
        self._on_delivered = on_delivered
        self._metrics = metrics
        self._log = log or logging.getLogger("trunner.shipper")
        self._unannounced_lines = 0
        self._unannounced_bytes = 0
        self._last_error = ""
        self.lost_lines = 0
        self.in_flight: Batch | None = None

    async def run(self) -> None:
        """Deliver batches until ``take`` says there are no more. If cancelled, the batch in
        flight stays in :attr:`in_flight` for the caller to count."""
        while (batch := await self._take()) is not None:
            self.in_flight = batch
            await self._deliver(batch)
            self.in_flight = None

    def in_flight_counts(self) -> tuple[int, int]:
        """Lines and bytes of the batch in flight, not counting a marker put in front of it."""
        batch = self.in_flight
        if batch is None:
            return 0, 0
        if self._unannounced_lines:
            return batch.line_count - 1 - batch.markers, batch.size - len(batch.blocks[0]) - 1
        return batch.line_count - batch.markers, batch.size

    def lose(self, lines: int, size: int, reason: str) -> None:
        """Count lines lost before they reached the shipper; the next delivered batch says so."""
        self._last_error = reason
        self._unannounced_lines += lines
        self._unannounced_bytes += size
        self.lost_lines += lines
        if self._metrics is not None:
            self._metrics.lines_dropped.inc(lines)
            self._metrics.bytes_dropped.inc(size)

    async def _deliver(self, batch: Batch) -> None:
        marked = bool(self._unannounced_lines)
        if marked:
            marker = markers.dropped(self._unannounced_lines, self._unannounced_bytes, self._last_error)
            batch.blocks.insert(0, self._line_prefix() + marker)
            batch.line_count += 1
            batch.size += len(batch.blocks[0]) + 1
        taken = trio.current_time()
        failure = await deliver(
            partial(self._sink.ship, batch),
            timeout=self._retry_timeout,
            what=f"log batch {batch.seq} delivery",
            log=self._log,
            on_failed_attempt=self._count_failed_attempt,
        )
        if failure is not None:
            if marked:
                batch.size -= len(batch.blocks.pop(0)) + 1
                batch.line_count -= 1
            self._fail(batch, failure)
            return
        self._unannounced_lines = self._unannounced_bytes = 0
        self._on_delivered()
        if self._metrics is not None:
            self._metrics.batches_shipped.inc()
            self._metrics.lines_shipped.inc(batch.line_count)
            self._metrics.bytes_shipped.inc(batch.size)
            self._metrics.ship_latency.observe(trio.current_time() - taken)

    def _count_failed_attempt(self) -> None:
        if self._metrics is not None:
            self._metrics.ship_attempts_failed.inc()

    def _fail(self, batch: Batch, reason: str) -> None:
        self._log.error("log batch %d (%d lines) lost: %s", batch.seq, batch.line_count, reason)
        self._lose(batch, reason)

    def _lose(self, batch: Batch, reason: str) -> None:
        """The batch's own lines are lost; the gaps its markers announced are announced again."""
        if self._metrics is not None:
            self._metrics.batches_failed.inc()
        self.lose(batch.line_count - batch.markers, batch.size, f"log delivery failed: {reason}")
        self._unannounced_lines += batch.announced
