"""The one shipper: takes batches from the job's log buffer and delivers them to any sink.

Each batch gets attempts until ``retry_timeout`` has passed since it was taken; then it is
counted as lost and the next batch that gets through starts with one marker per stream it had
lines of, each stating that stream's lines and bytes (the gap is right there: batches are
delivered in order). The shipper never holds more than the one batch it is delivering.

The sinks have no idempotency key, so an attempt that was sent in full and got no answer may
have been carried out: the retry may deliver the batch twice, and if every attempt fails its
lines are not called dropped but counted apart and announced as not confirmed.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from functools import partial

import trio

from trunner.logs import markers
from trunner.logs.batch import COUNTS, SOURCES, Batch, gaps_of
from trunner.logs.metrics import LogMetrics
from trunner.logs.sinks import Sink
from trunner.net.retry import deliver


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
        self._gaps = [(0, 0)] * len(SOURCES)
        """Per source, lines and bytes lost and not yet announced."""
        self._unconfirmed = [(0, 0)] * len(SOURCES)
        """Per source, lines and bytes that may or may not have been delivered, not yet announced."""
        self._front = (0, 0)
        """Lines and bytes of the markers put in front of the batch in flight."""
        self._last_error = ""
        self._unconfirmed_error = ""
        self._result_unknown = False
        """Whether an attempt at the batch in flight failed in a way that may have delivered it."""
        self.lost_lines = 0
        self.unconfirmed_lines = 0
        """Lines whose batch failed after an attempt with an unknown result (not in ``lost_lines``)."""
        self.in_flight: Batch | None = None

    async def run(self) -> None:
        """Deliver batches until ``take`` says there are no more, then the markers of lines lost
        since the last delivered one, if any. If cancelled, the batch in flight stays in
        :attr:`in_flight` for the caller to count."""
        seq = -1
        while (batch := await self._take()) is not None:
            seq = batch.seq
            self.in_flight = batch
            await self._deliver(batch)
            self.in_flight = batch = None  # not held while the next one is awaited
        if self._announcing():
            # Lines lost at the very end: the log ends with their markers, not silently.
            self.in_flight = Batch(seq=seq + 1)
            await self._deliver(self.in_flight)
            self.in_flight = None

    def in_flight_counts(self) -> tuple[int, int]:
        """Lines and bytes of the batch in flight, not counting a marker put in front of it."""
        batch = self.in_flight
        if batch is None:
            return 0, 0
        front_lines, front_size = self._front
        return batch.line_count - front_lines - batch.markers, batch.size - front_size

    def lose(self, counts: Sequence[int], reason: str) -> None:
        """Count the lines of a :attr:`Batch.counts` vector as lost before they reached the
        sink (the gaps its markers announced are announced again, not counted twice); the next
        delivered batch says so, one marker per source."""
        assert len(counts) == COUNTS
        self._last_error = reason
        self._gaps = [(a + b, c + d) for (a, c), (b, d) in zip(self._gaps, gaps_of(counts), strict=True)]
        lines = sum(counts[0::4])
        self.lost_lines += lines
        if self._metrics is not None:
            self._metrics.lines_dropped.inc(lines)
            self._metrics.bytes_dropped.inc(sum(counts[1::4]))

    def _announcing(self) -> bool:
        return any(lines for lines, _ in self._gaps) or any(lines for lines, _ in self._unconfirmed)

    def _put_markers_in_front(self, batch: Batch) -> None:
        prefix = self._line_prefix()
        front = [
            prefix + markers.dropped(lines, size, self._last_error, SOURCES[source])
            for source, (lines, size) in enumerate(self._gaps)
            if lines
        ]
        front += [
            prefix + markers.unconfirmed(lines, size, self._unconfirmed_error, SOURCES[source])
            for source, (lines, size) in enumerate(self._unconfirmed)
            if lines
        ]
        batch.blocks[:0] = front
        self._front = (len(front), sum(len(marker) + 1 for marker in front))
        batch.line_count += self._front[0]
        batch.size += self._front[1]

    def _take_markers_off(self, batch: Batch) -> None:
        del batch.blocks[: self._front[0]]
        batch.line_count -= self._front[0]
        batch.size -= self._front[1]
        self._front = (0, 0)

    async def _deliver(self, batch: Batch) -> None:
        if self._announcing():
            self._put_markers_in_front(batch)
        taken = trio.current_time()
        self._result_unknown = False
        failure = await deliver(
            partial(self._sink.ship, batch),
            timeout=self._retry_timeout,
            what=f"log batch {batch.seq} delivery",
            log=self._log,
            on_failed_attempt=self._count_failed_attempt,
            on_unknown_result=self._unknown_result,
        )
        if failure is not None:
            self._take_markers_off(batch)
            if self._result_unknown:
                self._unconfirm(batch, failure)
            else:
                self._fail(batch, failure)
            return
        if self._result_unknown:
            self._log.warning(
                "log batch %d (%d lines) was sent again after an attempt whose result is unknown: "
                "its lines may appear twice in the job's log",
                batch.seq,
                batch.line_count,
            )
            if self._metrics is not None:
                self._metrics.batches_resent.inc()
        self._gaps = [(0, 0)] * len(SOURCES)
        self._unconfirmed = [(0, 0)] * len(SOURCES)
        self._front = (0, 0)
        self._on_delivered()
        if self._metrics is not None:
            self._metrics.batches_shipped.inc()
            self._metrics.lines_shipped.inc(batch.line_count)
            self._metrics.bytes_shipped.inc(batch.size)
            self._metrics.ship_latency.observe(trio.current_time() - taken)

    def _unknown_result(self) -> None:
        self._result_unknown = True

    def _unconfirm(self, batch: Batch, reason: str) -> None:
        """The batch's own lines may have been delivered: counted apart and announced as such;
        the gaps its markers announced are certain, so they are announced again as dropped."""
        self._log.error(
            "log batch %d (%d lines) not confirmed: %s; it may have been delivered",
            batch.seq,
            batch.line_count,
            reason,
        )
        counts = batch.counts
        own = [(counts[4 * s], counts[4 * s + 1]) for s in range(len(SOURCES))]
        announced = [(counts[4 * s + 2], counts[4 * s + 3]) for s in range(len(SOURCES))]
        self._unconfirmed = [(a + b, c + d) for (a, c), (b, d) in zip(self._unconfirmed, own, strict=True)]
        self._unconfirmed_error = f"log delivery failed: {reason}"
        if any(lines for lines, _ in announced):
            self._gaps = [(a + b, c + d) for (a, c), (b, d) in zip(self._gaps, announced, strict=True)]
            self._last_error = self._unconfirmed_error
        lines = sum(lines for lines, _ in own)
        self.unconfirmed_lines += lines
        if self._metrics is not None:
            self._metrics.batches_unconfirmed.inc()
            self._metrics.lines_unconfirmed.inc(lines)

    def _count_failed_attempt(self) -> None:
        if self._metrics is not None:
            self._metrics.ship_attempts_failed.inc()

    def _fail(self, batch: Batch, reason: str) -> None:
        self._log.error("log batch %d (%d lines) lost: %s", batch.seq, batch.line_count, reason)
        self._lose(batch, reason)

    def _lose(self, batch: Batch, reason: str) -> None:
        if self._metrics is not None:
            self._metrics.batches_failed.inc()
        self.lose(batch.counts, f"log delivery failed: {reason}")
