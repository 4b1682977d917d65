"""A job's log from the executor's bytes to the sink: the one owner of the buffers, the tasks
that empty them, and the bounded final flush.

::

    executor reader ──feed──▶ pipeline (drain, sync) ──offer──▶ LogBuffer ──take──▶ shipper ──▶ sink
          ▲ wait_for_room: the reader waits while          memory: 2 batches ┐ oldest first
          │ the pipeline is held (back-pressure)           spool: disk, budget┘

Buffering, in order of use: the memory channel (two batches); once it is full, the spool (one
batch at a time is written, in order: once anything is spooled, later batches queue behind it);
when the spool's budget is used up or the disk refuses, back-pressure: the pipeline holds and
the reader waits, so the job's writes wait. Only when the reader has been held for
``log_stall_timeout`` with no batch delivered does the pipeline drop lines, counted and marked
per stream at the gap, until an offer succeeds again.

Memory held by one job, whatever it prints and however slow the sink (``M`` = log_max_size;
a batch's size counts its text and one separator per line, and its blocks are at least 1 KiB
or joined, so the bytes objects holding it add at most 4 %)::

    batch in flight (shipper)             1 x M    (read back from the spool: one block)
      + its encoded request               one part at a time (16 KiB for the OpsLevel API)
    memory channel                        2 x M
    batch being filled, or the one        1 x M    (the drain is held while a batch is written to
      being written to the spool                    the spool: a new batch gets one slice at most;
                                                    the write is a writev of its blocks, no copy)
    held-back rest of one slice           M / 16   (pipeline.slice_budget)
    = 4 x M + M/16, plus the drain's own: two unfinished lines, outcome variables (1 MiB), a tail,
      the executor's last read, and about 30 KB of fixed cost (tasks, masker, splitters)

Disk held by one job: at most ``job_log_spool_size`` (segments read through are deleted).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from trunner.contracts import Stream
from trunner.logs import spool as spool_io
from trunner.logs.batch import COUNTS, Batch
from trunner.logs.mask import OFF_LOOP_COST, Masker, build_cost, masker_for
from trunner.logs.metrics import LogMetrics
from trunner.logs.pipeline import Pipeline
from trunner.logs.settings import LogSettings
from trunner.logs.shipper import Shipper
from trunner.logs.sinks import Sink
from trunner.logs.spool import Spool, remove_leftovers
from trunner.models import RunnerJob

CHANNEL_CAPACITY = 2
"""Batches the memory channel holds."""

Log = logging.Logger | logging.LoggerAdapter[logging.Logger]

logger = logging.getLogger("trunner.logs")


class LogBuffer:
    """Batches in hand-off order: the memory channel, then the spool, then the one batch staged
    for the spool. ``offer`` never waits; ``take`` returns the oldest batch."""

    def __init__(
        self,
        spool: Spool | None,
        *,
        on_lost: Callable[[Sequence[int], str], None],
        metrics: LogMetrics | None = None,
        log: Log = logger,
    ) -> None:
        self._memory: deque[Batch] = deque()
        self._spool = spool
        self._spool_broken = False
        self._staged: Batch | None = None
        self._writing = False
        self._closed = False
        self._changed = trio.Event()
        self._on_lost = on_lost
        self._metrics = metrics
        self._log = log
        self.spool_peak = 0
        self._gauge_bytes = 0

    def offer(self, batch: Batch) -> bool:
        if self._closed:
            raise trio.ClosedResourceError("the job log is closed")
        spooled = self._spool is not None and self._spool.records > 0
        if not spooled and self._staged is None and len(self._memory) < CHANNEL_CAPACITY:
            self._memory.append(batch)
        elif self._staged is not None:
            return False
        elif self._spool_usable(batch):
            self._staged = batch
        elif spooled and self._spool_broken and len(self._memory) < CHANNEL_CAPACITY:
            self._staged = batch  # after what is spooled; kept in memory, in a channel slot's place
        else:
            return False
        self.notify()
        return True

    def busy(self) -> bool:
        """A batch is being written to the spool: take no more input until it is stored."""
        return self._staged is not None and not self._spool_broken

    def close(self) -> None:
        """No more offers; ``take`` returns None once everything is taken."""
        self._closed = True
        self.notify()

    def notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_changed(self) -> None:
        await self._changed.wait()

    async def take(self) -> Batch | None:
        while True:
            if self._memory:
                batch = self._memory.popleft()
                self.notify()
                return batch
            spool = self._spool
            if spool is not None and spool.records:
                try:
                    batch = await spool.read()
                except OSError as exc:
                    self._lose_spool(exc)
                    continue
                self._spool_gauge()
                self.notify()
                return batch
            if self._staged is not None and not self._writing and (spool is None or self._spool_broken):
                batch, self._staged = self._staged, None
                self.notify()
                return batch
            if self._closed and self._staged is None:
                return None
            await self.wait_changed()

    async def run_writer(self) -> None:
        """Write each staged batch to the spool; on a disk error, fall back to back-pressure."""
        while True:
            staged = self._staged
            if staged is None or self._spool_broken or self._spool is None:
                await self.wait_changed()
                continue
            self._writing = True
            try:
                await self._spool.append(staged)
            except OSError as exc:
                self._spool_broken = True
                self._log.warning(
                    "job log spool in %s failed (%s): the job's output now waits for the sink instead",
                    self._spool.root,
                    exc.strerror or exc,
                )
            else:
                self._staged = None
                self.spool_peak = max(self.spool_peak, self._spool.used)
                self._spool_gauge()
            finally:
                self._writing = False
                self.notify()

    def waiting(self) -> tuple[int, int]:
        """Lines and bytes not yet taken."""
        batches = [*self._memory, *([self._staged] if self._staged is not None else [])]
        lines = sum(b.line_count - b.markers for b in batches)
        size = sum(b.size for b in batches)
        if self._spool is not None:
            lines += self._spool.lines
            size += self._spool.size
        return lines, size

    async def remove_spool(self) -> None:
        if self._spool is not None:
            try:
                await self._spool.remove()
            except OSError as exc:
                self._log.warning("could not remove the job log spool %s: %s", self._spool.path, exc)
            self._spool_gauge()

    def _spool_usable(self, batch: Batch) -> bool:
        return self._spool is not None and not self._spool_broken and self._spool.fits(batch)

    def _spool_gauge(self) -> None:
        """The runner-wide gauge moves by this job's change (jobs share it)."""
        if self._metrics is not None and self._spool is not None:
            self._metrics.spool_bytes.inc(self._spool.used - self._gauge_bytes)
            self._gauge_bytes = self._spool.used

    def _lose_spool(self, exc: OSError) -> None:
        spool = self._spool
        assert spool is not None
        self._log.error("job log spool %s cannot be read back (%s): its lines are lost", spool.path, exc)
        self._on_lost(spool.counts, f"the log spool could not be read back: {exc.strerror or exc}")
        spool.records = spool.lines = spool.size = 0
        spool.counts = [0] * COUNTS
        self._spool_broken = True


class JobLog:
    """What an executor feeds (:class:`~trunner.executors.base.OutputFeed`) and what ``run_job``
    asks at the end. Run it with :meth:`running`."""

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
        spool = None
        if settings.job_log_buffer == "spool":
            spool = Spool(Path(settings.job_log_spool_dir), _spool_name(job.id), settings.job_log_spool_size)
        # The pipeline owns the job's masker, so everything below logs through its masked log: a
        # sink's or the spool's error text may quote the job's output.
        self.pipeline = Pipeline(
            job,
            lambda batch: self._buffer.offer(batch),
            busy=lambda: self._buffer.busy(),
            settings=settings,
            worker=worker,
            metrics=metrics,
            wallclock=wallclock,
            log=log,
            masker=masker,
        )
        self._log = masked = self.pipeline.log
        self._buffer = LogBuffer(spool, on_lost=self._lose, metrics=metrics, log=masked)
        self._shipper = Shipper(
            sink,
            self._buffer.take,
            retry_timeout=settings.log_ship_retry_timeout,
            line_prefix=self.pipeline.line_prefix,
            on_delivered=self._delivered,
            metrics=metrics,
            log=masked,
        )
        self._last_accepted = trio.current_time()
        self._delivery_scope = trio.CancelScope(shield=True)
        self._delivery_done = trio.Event()
        self._timer_scope = trio.CancelScope()
        self._stalls = 0
        self._input_finished = False
        self.unflushed_lines = 0
        self.unflushed_bytes = 0
        self.flush_end: str = ""
        """Why the final flush ended before everything was delivered; empty if it did not."""

    # --- OutputFeed ---

    def feed(self, stream: Stream, data: bytes) -> None:
        self.pipeline.feed(stream, data)

    def note(self, text: str) -> None:
        self.pipeline.note(text)

    async def wait_for_room(self) -> None:
        """Returns once the pipeline takes input again: at once unless it is held. While held
        with no batch delivered for ``log_stall_timeout``, it starts dropping instead."""
        pipeline = self.pipeline
        if not pipeline.held:
            return
        held_since = trio.current_time()
        while not pipeline.resume():
            deadline = max(held_since, self._last_accepted) + self._settings.log_stall_timeout
            if trio.current_time() >= deadline:
                self._stalls += 1
                if self._stalls == 1:
                    self._log.warning(
                        "no log batch delivered for %gs while the job's output waited: dropping its lines "
                        "(counted, marked in the log) until delivery resumes",
                        self._settings.log_stall_timeout,
                    )
                pipeline.start_dropping(f"log delivery stalled for {self._settings.log_stall_timeout:g}s")
                return
            with trio.move_on_at(deadline):
                await self._buffer.wait_changed()

    # --- what run_job reads at the end ---

    @property
    def lost_lines(self) -> int:
        """Lines that did not reach the sink: dropped while stalled, given up by the shipper, or
        left when the final flush ended."""
        return self.pipeline.batcher.dropped_lines + self._shipper.lost_lines + self.unflushed_lines

    @property
    def unconfirmed_lines(self) -> int:
        """Lines whose delivery failed after an attempt that may have delivered them all the
        same (not in :attr:`lost_lines`)."""
        return self._shipper.unconfirmed_lines

    @property
    def spool_peak(self) -> int:
        """Most bytes the spool held on disk."""
        return self._buffer.spool_peak

    # --- tasks ---

    @asynccontextmanager
    async def running(self) -> AsyncIterator[JobLog]:
        """The log with its shipper, spool writer and interval timer running; on exit the final
        flush (bounded, see :class:`JobLog`), and the spool removed, whatever ended the job."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._deliver)
            nursery.start_soon(self._interval_timer)
            canceled = False
            try:
                yield self
            except BaseException as exc:
                canceled = is_cancellation(exc)
                raise
            finally:
                await self._final_flush(canceled)

    async def _deliver(self) -> None:
        with self._delivery_scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._buffer.run_writer)
                await self._shipper.run()
                nursery.cancel_scope.cancel()
        self._delivery_done.set()
        self._buffer.notify()

    async def _interval_timer(self) -> None:
        """Ships waiting lines ``interval`` after the last hand-off even when no input arrives,
        and takes up held input when room appears while the reader is not waiting for it."""
        batcher = self.pipeline.batcher
        with self._timer_scope:
            while True:
                if self.pipeline.held:
                    await self._buffer.wait_changed()
                    self.pipeline.resume()
                elif batcher.current and trio.current_time() >= batcher.next_due_time():
                    if not batcher.ship_if_ready():
                        await self._buffer.wait_changed()
                elif batcher.current:
                    with trio.move_on_at(batcher.next_due_time()):
                        await batcher.wait_changed()
                else:
                    await batcher.wait_changed()

    def _delivered(self) -> None:
        self._last_accepted = trio.current_time()
        self._buffer.notify()

    def _lose(self, counts: Sequence[int], reason: str) -> None:
        self._shipper.lose(counts, reason)

    # --- the final flush ---

    async def _final_flush(self, canceled: bool) -> None:
        """Deliver what is left while that makes progress, within ``log_flush_max_time``; once the
        job is canceled (the runner's shutdown deadline), within ``log_flush_timeout`` more.
        Then count what could not be delivered and remove the spool."""
        self._timer_scope.cancel()
        settings = self._settings
        try:
            if not canceled:
                try:
                    await self._flush(settings.log_flush_max_time, "its overall limit")
                    return
                except trio.Cancelled:
                    with trio.CancelScope(shield=True):
                        await self._flush(settings.log_flush_timeout, "the runner's shutdown deadline")
                    raise
            with trio.CancelScope(shield=True):
                await self._flush(settings.log_flush_timeout, "the runner's shutdown deadline")
        finally:
            with trio.CancelScope(shield=True):
                await self._end_delivery()

    async def _flush(self, limit: float, limit_name: str) -> None:
        start = trio.current_time()
        hard = start + limit
        progress_timeout = self._settings.log_flush_timeout
        while True:
            if not self.pipeline.held or self.pipeline.resume():
                if not self._input_finished:
                    self._finish_input_safely()
                    continue
                if self.pipeline.batcher.flush():
                    self._buffer.close()
                    if self._delivery_done.is_set():
                        return
            now = trio.current_time()
            no_progress = max(start, self._last_accepted) + progress_timeout
            if now >= hard:
                self.flush_end = f"the final flush reached {limit_name} of {limit:g}s"
                return
            if now >= no_progress:
                self.flush_end = f"no log batch was delivered for {progress_timeout:g}s"
                return
            with trio.move_on_at(min(hard, no_progress)):
                await self._buffer.wait_changed()

    def _finish_input_safely(self) -> None:
        self._input_finished = True
        try:
            self.pipeline.finish()
        except Exception:
            self._log.exception("flushing the job's last lines failed; shipping what was batched")

    async def _end_delivery(self) -> None:
        if not self._delivery_done.is_set():
            self._delivery_scope.cancel()
            await self._delivery_done.wait()
        lines, size = self.pipeline.waiting()
        buffered_lines, buffered_size = self._buffer.waiting()
        flight_lines, flight_size = self._shipper.in_flight_counts()
        self.unflushed_lines = lines + buffered_lines + flight_lines
        self.unflushed_bytes = size + buffered_size + flight_size
        if self.unflushed_lines:
            self._log.error(
                "%d log lines (%d bytes) could not be delivered: %s",
                self.unflushed_lines,
                self.unflushed_bytes,
                self.flush_end or "the final flush ended",
            )
            if self._metrics is not None:
                self._metrics.lines_unflushed.inc(self.unflushed_lines)
                self._metrics.lines_dropped.inc(self.unflushed_lines)
                self._metrics.bytes_dropped.inc(self.unflushed_bytes)
        await self._buffer.remove_spool()


async def build_masker(job: RunnerJob) -> Masker:
    """``job``'s masker, built in a worker thread when that is expensive (:data:`OFF_LOOP_COST`),
    so other jobs keep running meanwhile. A cancel waits for the build (it is bounded by the
    longest value a job may have): no thread outlives the job."""
    if build_cost(job) < OFF_LOOP_COST:
        return masker_for(job)
    return await trio.to_thread.run_sync(masker_for, job, abandon_on_cancel=False)


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
