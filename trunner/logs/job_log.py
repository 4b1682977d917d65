"""A job's log: one nursery holding the exec stream reader, the drain, the spool stage and the
shipper, joined by trio memory channels, and the bounded final flush.

::

    reader ──input: channel(0), (stream, bytes) by reference──▶ drain (pipeline, batcher)
        a send that waits = back-pressure on the stream           │
                        ┌─── handoff: open_memory_channel(2), Batch objects by reference ◀┘
                        │          ▲ when it is full: requests: channel(0) ─▶ spool stage
                        ▼          └─ records in order, passed by reference ◀─ (writer, forwarder)
                     shipper ──▶ sink

Buffering, in order of use: the hand-off channel (two batches); once it is full, the spool (a
stage that owns its file: once anything is spooled, later batches queue behind it, and what it
passes on are references to its records, read when the shipper takes them); when the spool's
budget (a trio.Semaphore of slots of one largest record) is used up or the disk refuses,
back-pressure: the drain's send waits, so its receive does, so the reader's send does, so the
job's writes wait. Only when the drain's send has waited ``log_stall_timeout`` with no batch
delivered (each delivery moves the wait's deadline) does the drain drop lines, counted and marked
per stream at the gap, until a hand-off succeeds again.

Memory held by one job, whatever it prints and however slow the sink (``M`` = log_max_size;
a batch's size counts its text and one separator per line, and its blocks are at least 1 KiB
or joined, so the bytes objects holding it add at most 4 %)::

    batch in flight (shipper)             1 x M    (read back from the spool: one block)
      + its encoded request               one part at a time (16 KiB for the OpsLevel API)
    hand-off channel                      2 x M    (references, once anything is spooled)
    batch being filled, or the one        1 x M    (the drain waits while a batch is written to
      being written to the spool                    the spool: a new batch gets one part at most;
                                                    the write is a writev of its blocks, no copy)
    one part (pipeline.slice_budget)      M / 16
    = 4 x M + M/16 (one more M while the disk refuses and the stage passes batches through),
      plus the drain's own: two unfinished lines, outcome variables (1 MiB), a tail, the chunk
      being drained and the one the reader holds, and a fixed cost (tasks, masker, splitters)

Disk held by one job: at most ``job_log_spool_size`` (segments read through are deleted).
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TypeVar

import attrs
import trio

from trunner.contracts import Stream
from trunner.logs import spool as spool_io
from trunner.logs.batch import COUNTS, Batch
from trunner.logs.batcher import SOURCE_INDEX, Batcher, Source
from trunner.logs.mask import OFF_LOOP_COST, Masker, build_cost, masker_for
from trunner.logs.metrics import LogMetrics
from trunner.logs.pipeline import Part, Pipeline
from trunner.logs.settings import LogSettings
from trunner.logs.shipper import Shipper
from trunner.logs.sinks import Sink
from trunner.logs.spool import HEADER_SIZE, SEGMENTS_PER_BUDGET, Spool, remove_leftovers
from trunner.models import RunnerJob

HANDOFF_CAPACITY = 2
"""Batches the hand-off channel between the drain and the shipper holds."""

MARKER_ROOM = 1024
"""What gap markers may add to a full batch (three markers of under 300 bytes)."""

FINAL_MARKERS_TIME = 10.0
"""Most seconds kept from the final flush's limit (its overall one, or the shutdown deadline) for
the last batch of gap markers (at most a third of ``log_flush_timeout``), so that what is left is
announced in the log within that limit. A flush that ended because nothing was delivered for
``log_flush_timeout`` ships no such batch: the sink is not taking any."""

Log = logging.Logger | logging.LoggerAdapter[logging.Logger]
T = TypeVar("T")

logger = logging.getLogger("trunner.logs")


@attrs.frozen
class Note:
    text: str


@attrs.frozen
class EndOfOutput:
    severed: bool


@attrs.frozen
class Spooled:
    """A reference to the spool's record of batch ``seq``."""

    seq: int


Input = tuple[Stream, bytes] | Note | EndOfOutput


def spool_slots(settings: LogSettings) -> int:
    """Records of the largest batch the spool may hold unread: with the segment read through
    but not yet deleted, the files stay within the budget."""
    record = settings.job_pod_log_max_size + MARKER_ROOM + HEADER_SIZE
    budget = settings.job_log_spool_size
    return max(0, (budget - max(budget // SEGMENTS_PER_BUDGET, record)) // record)


class SpoolStage:
    """Writes what the drain cannot hand off to the spool, in order, and passes references to
    its records on (writer and forwarder). When the disk refuses or the records cannot be read
    back, it passes batches straight on instead (back-pressure)."""

    def __init__(
        self,
        spool: Spool,
        slots: int,
        requests: trio.MemoryReceiveChannel[Batch],
        written: trio.MemorySendChannel[None],
        handoff: trio.MemorySendChannel[Batch | Spooled],
        *,
        on_lost: Callable[[Sequence[int], str], None],
        metrics: LogMetrics | None,
        log: Log,
    ) -> None:
        self.spool = spool
        self.slots = trio.Semaphore(slots, max_value=slots)
        """One per unread record: the writer takes one, reading the record gives it back."""
        self._requests = requests
        self._written = written
        self._handoff = handoff
        self._index_send, self._index = trio.open_memory_channel[Spooled](math.inf)
        self._on_lost = on_lost
        self._metrics = metrics
        self._log = log
        self.pending = 0
        """Batches taken from the drain and not yet in the hand-off channel."""
        self.in_hand: Batch | None = None
        self.broken = False
        self.lost_through = -1
        """Records up to this batch were lost with the spool; their references are skipped."""
        self._last_written = -1
        self.peak = 0
        self._gauge_bytes = 0

    async def run(self) -> None:
        with self._handoff, self._requests:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._forward)
                with self._index_send:
                    await self._write()
            await self._pass_through()

    async def read(self, record: Spooled) -> Batch | None:
        """The batch of ``record``, or None if it was lost with the spool."""
        try:
            if record.seq <= self.lost_through:
                return None
            try:
                batch = await self.spool.read()
            except OSError as exc:
                self._lose(exc)
                return None
            self._gauge()
            return batch
        finally:
            self.slots.release()

    async def remove(self) -> None:
        try:
            await self.spool.remove()
        except OSError as exc:
            self._log.warning("could not remove the job log spool %s: %s", self.spool.path, exc)
        self._gauge()

    async def _write(self) -> None:
        while True:
            await self.slots.acquire()
            try:
                batch = await self._requests.receive()
            except trio.EndOfChannel:
                self.slots.release()
                return
            self.pending += 1
            self.in_hand = batch
            if self.broken:
                self.slots.release()
                return
            try:
                await self.spool.append(batch)
            except OSError as exc:
                self.slots.release()
                self.broken = True
                self._log.warning(
                    "job log spool in %s failed (%s): the job's output now waits for the sink instead",
                    self.spool.root,
                    exc.strerror or exc,
                )
                return
            self.in_hand = None
            self._last_written = batch.seq
            del batch  # written: not held while the next one is awaited
            self._index_send.send_nowait(Spooled(self._last_written))
            self.peak = max(self.peak, self.spool.used)
            self._gauge()
            self._written.send_nowait(None)

    async def _forward(self) -> None:
        async for record in self._index:
            await self._handoff.send(record)
            self.pending -= 1

    async def _pass_through(self) -> None:
        """After the spool failed: every spooled record is in the hand-off channel; batches go
        straight there now."""
        while True:
            if self.in_hand is None:
                try:
                    self.in_hand = await self._requests.receive()
                except trio.EndOfChannel:
                    return
                self.pending += 1
            self._written.send_nowait(None)
            await self._handoff.send(self.in_hand)
            self.in_hand = None
            self.pending -= 1

    def _lose(self, exc: OSError) -> None:
        spool = self.spool
        self._log.error("job log spool %s cannot be read back (%s): its lines are lost", spool.path, exc)
        self._on_lost(spool.counts, f"the log spool could not be read back: {exc.strerror or exc}")
        spool.records = spool.lines = spool.size = 0
        spool.counts = [0] * COUNTS
        self.lost_through = self._last_written
        self.broken = True

    def _gauge(self) -> None:
        """The runner-wide gauge moves by this job's change (jobs share it)."""
        if self._metrics is not None:
            self._metrics.spool_bytes.inc(self.spool.used - self._gauge_bytes)
            self._gauge_bytes = self.spool.used


class Drain:
    """Takes the reader's input, makes batches and hands them on; never awaits the network.
    Its sends wait for room (back-pressure) until delivery has stalled; then it drops."""

    def __init__(
        self,
        pipeline: Pipeline,
        batcher: Batcher,
        source: trio.MemoryReceiveChannel[Input],
        handoff: trio.MemorySendChannel[Batch | Spooled],
        stage: SpoolStage | None,
        requests: trio.MemorySendChannel[Batch],
        written: trio.MemoryReceiveChannel[None],
        *,
        settings: LogSettings,
        log: Log,
    ) -> None:
        self._pipeline = pipeline
        self.batcher = batcher
        self._input = source
        self._handoff = handoff
        self._stage = stage
        self._requests = requests
        self._written = written
        self._stall_timeout = settings.log_stall_timeout
        self._interval = settings.job_pod_log_max_interval
        self._log = log
        self._ended = False
        self._flushing = False
        self._stalls = 0
        self._reason = ""
        self.held: Batch | None = None
        """A sealed batch kept back while lines are dropped."""
        self._stall_scope: trio.CancelScope | None = None
        self._waiting: trio.CancelScope | None = None
        self.sending: Batch | None = None

    async def run(self) -> None:
        with self._input, self._handoff, self._requests:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._interval_timer)
                await self._drain()
                nursery.cancel_scope.cancel()

    async def _drain(self) -> None:
        batcher = self.batcher
        while not isinstance(item := await self._next(), trio.EndOfChannel):
            if item is None or (batcher.current and batcher.due_time() <= trio.current_time()):
                await self._timer()
            if item is not None:
                await self._take(item)
                del item
        await self._finish()

    async def _take(self, item: Input) -> None:
        if isinstance(item, tuple):
            parts = self._pipeline.parts(*item)
        elif isinstance(item, Note):
            parts = self._pipeline.note(item.text)
        else:
            self._ended = True
            parts = self._pipeline.finish(severed=item.severed)
        add = self.batcher.add
        for part in parts:
            if self.held is not None:
                await self._add(part)
            elif (sealed := add(*part)) is not None:
                await self._hand_off(sealed)
                del sealed  # handed on: the shipper's now, not held here

    async def _next(self) -> Input | trio.EndOfChannel | None:
        """The next input; None when the interval timer ended the wait for it."""
        try:
            return self._input.receive_nowait()
        except trio.WouldBlock:
            batcher = self.batcher
            if self.held is None and batcher.current and batcher.due_time() <= trio.current_time():
                return None
        except trio.EndOfChannel as end:
            return end
        # No deadline here: a deadline per wait would be one per read; the timer cancels the wait.
        with trio.CancelScope() as self._waiting:
            try:
                return await self._input.receive()
            except trio.EndOfChannel as end:
                return end
            finally:
                self._waiting = None
        return None

    async def _interval_timer(self) -> None:
        """Ends the drain's wait for input when the current batch is due, or every interval
        while a batch is kept back, so that they go while the job is silent."""
        while True:
            now = trio.current_time()
            wake = self.batcher.last_sealed + self._interval
            if self.held is not None or wake <= now:
                # Kept back: retry every interval. Past due: the drain seals it before it waits.
                wake = now + self._interval
            await trio.sleep_until(wake)
            due = self.held is not None or self.batcher.due_time() <= trio.current_time()
            if due and self._waiting is not None:
                self._waiting.cancel()

    async def _timer(self) -> None:
        if self.held is not None:
            await self._retry_held()
        elif self.batcher.current:
            await self._hand_off(self.batcher.seal())

    async def _add(self, part: Part) -> None:
        source, block, lines = part
        if self.held is not None:
            if self._flushing:
                held, self.held = self.held, None
                await self._hand_off(held)
                self.batcher.announce_drops(self._reason)
            elif not await self._retry_held():
                self.batcher.drop(source, block, lines)
                return
        sealed = self.batcher.add(source, block, lines)
        if sealed is not None:
            await self._hand_off(sealed)

    async def _finish(self) -> None:
        self._flushing = True
        if not self._ended:
            for part in self._pipeline.finish(severed=True):
                await self._add(part)
        if self.held is not None:
            held, self.held = self.held, None
            await self._hand_off(held)
            self.batcher.announce_drops(self._reason)
        if self.batcher.current:
            await self._hand_off(self.batcher.seal())

    def delivered(self) -> None:
        """A batch was delivered: a send waiting for room waits ``log_stall_timeout`` from now."""
        if self._stall_scope is not None and not self._flushing:
            self._stall_scope.deadline = trio.current_time() + self._stall_timeout

    async def _retry_held(self) -> bool:
        assert self.held is not None
        if not await self._offer(self.held):
            return False
        self.held = None
        self.batcher.announce_drops(self._reason)
        return True

    async def _offer(self, batch: Batch) -> bool:
        """Hand ``batch`` on if that needs no wait for room (a spool write may be waited for)."""
        stage = self._stage
        if stage is None or stage.pending == 0:
            try:
                self._handoff.send_nowait(batch)
                return True
            except trio.WouldBlock:
                if stage is None:
                    return False
        try:
            self._requests.send_nowait(batch)
        except trio.WouldBlock:
            return False
        await self._written.receive()
        return True

    async def _hand_off(self, batch: Batch) -> None:
        """Hand ``batch`` on, waiting for room; once the wait reaches the stall timeout (not
        during the final flush), keep it back and drop lines until it can go."""
        if await self._offer(batch):
            return
        self.sending = batch
        deadline = math.inf if self._flushing else trio.current_time() + self._stall_timeout
        with trio.CancelScope(deadline=deadline) as self._stall_scope:
            if self._stage is None:
                await self._handoff.send(batch)
            else:
                await self._requests.send(batch)
            self.sending = self._stall_scope = None
            if self._stage is not None:
                await self._written.receive()
            return
        self.sending = self._stall_scope = None
        self.held = batch
        self._reason = f"log delivery stalled for {self._stall_timeout:g}s"
        self._stalls += 1
        if self._stalls == 1:
            self._log.warning(
                "no log batch delivered for %gs while the job's output waited: dropping its lines "
                "(counted, marked in the log) until delivery resumes",
                self._stall_timeout,
            )


class JobLog:
    """What an executor feeds (:class:`~trunner.contracts.OutputFeed`) and what ``run_job`` asks
    at the end. :meth:`run` runs the job's reader with the log's tasks."""

    def __init__(
        self,
        job: RunnerJob,
        sink: Sink,
        settings: LogSettings,
        *,
        metrics: LogMetrics | None = None,
        worker: str = "1",
        wallclock: Callable[[], float] = time.time,
        log: Log = logger,
        masker: Masker | None = None,
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        # The pipeline owns the job's masker, so everything below logs through its masked log: a
        # sink's or the spool's error text may quote the job's output.
        self.pipeline = Pipeline(
            job,
            settings=settings,
            worker=worker,
            metrics=metrics,
            wallclock=wallclock,
            log=log,
            masker=masker,
        )
        self._log = masked = self.pipeline.log
        self._input, source = trio.open_memory_channel[Input](0)
        handoff, self._handoff = trio.open_memory_channel[Batch | Spooled](HANDOFF_CAPACITY)
        requests, to_spool = trio.open_memory_channel[Batch](0)
        written, acks = trio.open_memory_channel[None](1)
        self._stage: SpoolStage | None = None
        slots = spool_slots(settings)
        if settings.job_log_buffer == "spool" and slots:
            spool = Spool(Path(settings.job_log_spool_dir), _spool_name(job.id), settings.job_log_spool_size)
            self._stage = SpoolStage(
                spool,
                slots,
                to_spool,
                written,
                handoff.clone(),
                on_lost=self._lose,
                metrics=metrics,
                log=masked,
            )
        elif settings.job_log_buffer == "spool":
            masked.warning(
                "the job log spool (%d bytes) cannot hold a batch of %d bytes: the job's output waits "
                "for the sink instead",
                settings.job_log_spool_size,
                settings.job_pod_log_max_size,
            )
        batcher = Batcher(
            max_size=settings.job_pod_log_max_size,
            interval=settings.job_pod_log_max_interval,
            line_prefix=self.pipeline.line_prefix,
            metrics=metrics,
        )
        self._drain = Drain(
            self.pipeline,
            batcher,
            source,
            handoff,
            self._stage,
            requests,
            acks,
            settings=settings,
            log=masked,
        )
        self._shipper = Shipper(
            sink,
            self._take,
            retry_timeout=settings.log_ship_retry_timeout,
            line_prefix=self.pipeline.line_prefix,
            on_delivered=self._delivered,
            metrics=metrics,
            log=masked,
        )
        self._unsent: deque[Input] = deque()
        self._sending = trio.Lock()
        self._scope = trio.CancelScope(shield=True)
        self._reader_scope = trio.CancelScope()
        self._reserve = min(FINAL_MARKERS_TIME, settings.log_flush_timeout / 3)
        self._flushing = False
        self._closing = False
        self._done = False
        self._hard = (math.inf, "")
        self.canceled = False
        self.failure: BaseException | None = None
        """What broke one of the log's own tasks, if anything did."""
        self.unflushed_lines = 0
        self.unflushed_bytes = 0
        self.flush_end: str = ""
        """Why the final flush ended before everything was delivered; empty if it did not."""

    # --- OutputFeed ---

    def feed(self, stream: Stream, data: bytes) -> None:
        self._put((stream, data))

    def note(self, text: str) -> None:
        self._put(Note(text))

    def end_of_output(self, *, severed: bool) -> None:
        """No more bytes of the job's streams; ``severed``: they were cut off, so an unfinished
        last line is shipped with the cut marker."""
        self._put(EndOfOutput(severed))

    async def wait_for_room(self) -> None:
        """The reader's send: returns once the drain has taken what was fed. Readers of several
        streams (a local job's stdout and stderr pipes) may wait at once: one sends everything
        fed so far, in the order it was fed, while the others wait their turn."""
        async with self._sending:
            while self._unsent:
                await self._input.send(self._unsent[0])
                self._unsent.popleft()

    def _put(self, item: Input) -> None:
        if not self._unsent:
            try:
                self._input.send_nowait(item)
                return
            except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
                pass
        self._unsent.append(item)

    # --- what run_job reads at the end ---

    @property
    def lost_lines(self) -> int:
        """Lines that did not reach the sink: dropped while stalled, given up by the shipper, or
        left when the final flush ended."""
        return self._drain.batcher.dropped_lines + self._shipper.lost_lines

    @property
    def unconfirmed_lines(self) -> int:
        """Lines whose delivery failed after an attempt that may have delivered them all the
        same (not in :attr:`lost_lines`)."""
        return self._shipper.unconfirmed_lines

    @property
    def spool_peak(self) -> int:
        """Most bytes the spool held on disk."""
        return self._stage.peak if self._stage is not None else 0

    # --- the nursery ---

    async def run(self, reader: Callable[[], Awaitable[T]]) -> T | None:
        """Run ``reader`` (the executor, feeding this log) with the drain, the spool stage and
        the shipper; then the final flush (bounded, see :class:`JobLog`), the markers of what
        is left, and the spool removed, whatever ended the job. Returns what ``reader`` returned
        (None if it was canceled or the log failed); a cancel from outside propagates."""
        result: list[T] = []
        try:
            async with trio.open_nursery() as guard:
                guard.start_soon(self._watch_for_shutdown)
                with self._scope:
                    try:
                        async with trio.open_nursery() as tasks:
                            tasks.start_soon(self._read, reader, result)
                            tasks.start_soon(self._drain.run)
                            if self._stage is not None:
                                tasks.start_soon(self._stage.run)
                            tasks.start_soon(self._shipper.run)
                    except Exception as exc:
                        self.failure = exc
                        self._log.error("the job log failed", exc_info=exc)
                self._done = True
                guard.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await self._end()
        return result[0] if result else None

    async def _read(self, reader: Callable[[], Awaitable[T]], result: list[T]) -> None:
        with self._reader_scope:
            result.append(await reader())
        self._start_flush()
        await self.wait_for_room()
        self._input.close()

    async def _watch_for_shutdown(self) -> None:
        try:
            await trio.sleep_forever()
        finally:
            if not self._done:
                self.canceled = True
                self._reader_scope.cancel()
                self._limit(self._settings.log_flush_timeout, "the runner's shutdown deadline")

    async def _take(self) -> Batch | None:
        while not self._closing:
            try:
                item = await self._handoff.receive()
            except (trio.EndOfChannel, trio.ClosedResourceError):
                return None
            if isinstance(item, Batch):
                return item
            assert self._stage is not None
            batch = await self._stage.read(item)
            if batch is not None:
                return batch
        return None

    # --- the final flush ---

    def _start_flush(self) -> None:
        """Deliver what is left while that makes progress, within ``log_flush_max_time``; once
        the job is canceled (the runner's shutdown deadline), within ``log_flush_timeout``."""
        self._flushing = True
        self._limit(self._settings.log_flush_max_time, "its overall limit")

    def _limit(self, seconds: float, name: str) -> None:
        hard = trio.current_time() + seconds
        if hard < self._hard[0]:
            self._hard = (hard, f"the final flush reached {name} of {seconds:g}s")
        self._scope.deadline = min(self._scope.deadline, self._deadline())

    def _deadline(self) -> float:
        return min(self._hard[0] - self._reserve, trio.current_time() + self._settings.log_flush_timeout)

    def _delivered(self) -> None:
        self._drain.delivered()
        if self._flushing:
            self._scope.deadline = self._deadline()

    def _lose(self, counts: Sequence[int], reason: str) -> None:
        self._shipper.lose(counts, reason)

    async def _end(self) -> None:
        """Count what is left and announce it in the log (bounded), then remove the spool."""
        left = self._left()
        at_limit = trio.current_time() >= self._hard[0] - self._reserve
        if any(left[0::4]) or any(left[2::4]):
            if self.failure is not None:
                self.flush_end = f"the job log failed: {describe_exception(self.failure)}"
            elif at_limit:
                self.flush_end = self._hard[1]
            else:
                self.flush_end = f"no log batch was delivered for {self._settings.log_flush_timeout:g}s"
            self.unflushed_lines = sum(left[0::4])
            self.unflushed_bytes = sum(left[1::4])
            self._log.error(
                "%d log lines (%d bytes) could not be delivered: %s",
                self.unflushed_lines,
                self.unflushed_bytes,
                self.flush_end,
            )
            if self._metrics is not None:
                self._metrics.lines_unflushed.inc(self.unflushed_lines)
            self._shipper.in_flight = None
            self._shipper.lose(left, self.flush_end)
        if self.flush_end and (at_limit or self.failure is not None):
            # The sink was still taking batches: the log ends with the markers of what is left.
            self._closing = True
            with trio.move_on_after(self._reserve):
                await self._shipper.run()
        if self._stage is not None:
            await self._stage.remove()

    def _left(self) -> list[int]:
        """What did not reach the sink, as a :attr:`Batch.counts` vector."""
        left = [0] * COUNTS
        drain = self._drain

        def add_own(source: Source, lines: int, size: int) -> None:
            index = 4 * SOURCE_INDEX[source]
            left[index] += lines
            left[index + 1] += size

        for item in self._unsent:
            if isinstance(item, tuple):
                add_own(item[0], item[1].count(b"\n") or 1, len(item[1]))
            elif isinstance(item, Note):
                add_own(None, 1, len(item.text) + 1)
        for stream, (lines, size) in self.pipeline.unfinished().items():
            add_own(stream, lines, size)
        batches = [drain.batcher.current, drain.held, drain.sending, self._shipper.in_flight]
        if self._stage is not None:
            batches.append(self._stage.in_hand)
            batches.append(Batch(seq=-1, counts=list(self._stage.spool.counts)))
        while True:
            try:
                handed = self._handoff.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                break
            if isinstance(handed, Batch):
                batches.append(handed)
        left = [a + b for a, b in zip(left, drain.batcher.unannounced(), strict=True)]
        for batch in batches:
            if batch is not None:
                left = [a + b for a, b in zip(left, batch.counts, strict=True)]
        return left


async def build_masker(job: RunnerJob) -> Masker:
    """``job``'s masker, built in a worker thread when that is expensive (:data:`OFF_LOOP_COST`),
    so other jobs keep running meanwhile. A cancel waits for the build (it is bounded by the
    longest value a job may have): no thread outlives the job."""
    if build_cost(job) < OFF_LOOP_COST:
        return masker_for(job)
    return await trio.to_thread.run_sync(masker_for, job, abandon_on_cancel=False)


def describe_exception(exc: BaseException) -> str:
    """``Type: message`` of each leaf of an exception group, for outcome messages."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(describe_exception(inner) for inner in exc.exceptions)
    return f"{type(exc).__name__}: {exc}"


def is_cancellation(exc: BaseException) -> bool:
    """Cancellation arrives bare or wrapped in the groups of the nurseries it crossed."""
    if isinstance(exc, BaseExceptionGroup):
        return exc.subgroup(trio.Cancelled) is not None
    return isinstance(exc, trio.Cancelled)


def _spool_name(job_id: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in job_id)[:40]
    return safe or "job"


async def clear_spool_dir(settings: LogSettings, log: Log = logger) -> None:
    """Remove spools left by a runner that died; an unusable directory is logged, not fatal (the
    first job to spool reports it and falls back to back-pressure)."""
    if settings.job_log_buffer != "spool":
        return
    root = Path(settings.job_log_spool_dir)
    try:
        removed = await spool_io.offload(remove_leftovers, root)
    except OSError as exc:
        log.warning("cannot clear the job log spool directory %s: %s", root, exc)
        return
    if removed:
        log.info("removed %d job log spool(s) left by an earlier runner in %s", removed, root)
