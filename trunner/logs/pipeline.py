"""The drain: executor bytes -> valid UTF-8 -> masking -> lines -> outcome variables -> prefix -> batches.

Everything here is synchronous and does no I/O; the only hand-off to the network side is the
batcher's non-blocking offer. Lines reach the batcher in parts that grow (with their prefixes)
to at most :func:`slice_budget` bytes; once the batcher is held, the rest waits in order
(:attr:`Pipeline.held`) until :meth:`Pipeline.resume`. Memory held here (see
:mod:`trunner.logs.job_log` for the job's whole bound): per stream, the masker's hold-back
(below 2 x the longest needle) and an unfinished line (<= ``max_line``), outcome variables
(<= 1 MiB), a 20-line tail, and the chunk the executor last fed (masked: a run of a one-character
secret grows at most 10 times).
"""

from __future__ import annotations

import collections
import logging
import time
from collections import deque
from collections.abc import Callable

from trunner.contracts import Stream
from trunner.logs import markers
from trunner.logs.batch import Batch
from trunner.logs.batcher import Batcher, Source
from trunner.logs.lines import LineSplitter, Segment
from trunner.logs.mask import MaskedLog, Masker, masker_for
from trunner.logs.metrics import LogMetrics
from trunner.logs.outcome_vars import OutcomeVarParser
from trunner.logs.settings import LogSettings
from trunner.models import OutcomeVariable, RunnerJob

TAIL_LINES = 20

_PREFIX_SLACK = 256
"""Room in a batch beyond the longest line for its prefix and markers."""


def slice_budget(settings: LogSettings) -> int:
    """Most bytes one slice of input may become (prefixes included) before the drain checks
    for room again: what the batcher may hold beyond a full batch."""
    return max(1024, settings.job_pod_log_max_size // 16)


def effective_max_line(settings: LogSettings) -> int:
    """A line (plus prefix and markers) must fit in one batch: cap it at half a batch."""
    return max(
        64, min(settings.job_pod_log_max_line_length, settings.job_pod_log_max_size // 2 - _PREFIX_SLACK)
    )


class Pipeline:
    def __init__(
        self,
        job: RunnerJob,
        offer: Callable[[Batch], bool],
        *,
        busy: Callable[[], bool] = lambda: False,
        settings: LogSettings,
        worker: str,
        metrics: LogMetrics | None = None,
        wallclock: Callable[[], float] = time.time,
        log: logging.Logger | logging.LoggerAdapter[logging.Logger] | None = None,
        masker: Masker | None = None,
    ) -> None:
        """``masker``: ``job``'s masker if it is built already; otherwise it is built here."""
        self._masker = masker if masker is not None else masker_for(job)
        self.log = MaskedLog(log or logging.getLogger("trunner.pipeline"), self._masker)
        """The runner's log for this job, masked."""
        for warning in self._masker.warnings:
            self.log.warning("%s", warning)
        self.refusals = tuple(self._masker.refused)
        """Why the job must not run (secrets that cannot be masked); empty when it may."""
        self._stream_maskers = {stream: self._masker.stream() for stream in Stream}
        max_line = effective_max_line(settings)
        self._splitters = {stream: LineSplitter(max_line) for stream in Stream}
        self._outcome_vars = OutcomeVarParser()
        self._worker = worker
        self._wallclock = wallclock
        self._prefix_second = -1
        self._prefix = b""
        self._metrics = metrics
        self._tail: collections.deque[bytes] = collections.deque(maxlen=TAIL_LINES)
        self._slice = slice_budget(settings)
        self._pending: deque[tuple[Source, bytes, int, int]] = deque()
        """Input waiting for room, in order: (stream, bytes not yet split, -1, from where) or
        (stream, processed lines not yet prefixed, their count, 0)."""
        self.batcher = Batcher(
            offer,
            busy=busy,
            max_size=settings.job_pod_log_max_size,
            interval=settings.job_pod_log_max_interval,
            line_prefix=self.line_prefix,
            metrics=metrics,
        )

    # --- OutputFeed ---

    def feed(self, stream: Stream, data: bytes) -> None:
        data = self._stream_maskers[stream].feed(data) if data else data
        if not data:
            return
        if self._pending or self.batcher.held:
            self._pending.append((stream, data, -1, 0))
        else:
            self._consume(stream, data, 0)

    def note(self, text: str) -> None:
        block = self._masker.mask(markers.note(text).replace(b"\n", b" "))
        self._emit(None, block, 1)

    # --- room ---

    @property
    def held(self) -> bool:
        """Whether fed input is waiting for room (the executor's reader should wait too)."""
        return bool(self._pending) or self.batcher.held

    def resume(self) -> bool:
        """Process waiting input as far as room allows; True when none is left waiting."""
        if not self.batcher.resume():
            return False
        while self._pending:
            source, data, lines, position = self._pending.popleft()
            rest, self._pending = self._pending, deque()
            if lines < 0:
                assert source is not None
                self._consume(source, data, position)
            else:
                self._emit(source, data, lines)
            self._pending.extend(rest)
            if self.batcher.held:
                return False
        return True

    def start_dropping(self, reason: str) -> None:
        """Delivery has stalled: drop (counted, marked) instead of waiting for room."""
        self.batcher.start_dropping(reason)
        self.resume()

    def waiting(self) -> tuple[int, int]:
        """Lines and bytes not yet handed to the job log (unprocessed input counted by its
        newlines, and at least one line for a piece without one)."""
        lines, size = self.batcher.waiting()
        for _, data, count, position in self._pending:
            lines += count if count >= 0 else (data.count(b"\n", position) or 1)
            size += len(data) - position
        return lines, size

    # --- end of job ---

    def finish(self) -> None:
        """Flush unfinished lines into the batcher; call once nothing is :attr:`held`."""
        for stream in self._splitters:
            masked = self._stream_maskers[stream].finish()
            if masked:
                self._split(stream, masked)
            self._split(stream, None)
        self._outcome_vars.finish()
        self._drain_warnings()

    def outcome_variables(self) -> tuple[OutcomeVariable, ...]:
        return tuple(
            OutcomeVariable(self._masker.mask_text(key), self._masker.mask_text(value))
            for key, value in self._outcome_vars.variables().items()
        )

    def mask_text(self, text: str) -> str:
        """``text`` with this job's secrets masked: for anything else about the job that leaves
        trunner (outcome messages, the runner's log)."""
        return self._masker.mask_text(text)

    def tail(self) -> list[str]:
        """The last lines processed (masked, without prefix), for failure messages."""
        return [line.decode() for line in self._tail]

    def line_prefix(self) -> bytes:
        now = int(self._wallclock())
        if now != self._prefix_second:
            self._prefix_second = now
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
            self._prefix = f"{stamp} [{self._worker}] ".encode()
        return self._prefix

    # --- internals ---

    def _consume(self, stream: Stream, data: bytes, position: int) -> None:
        """Split ``data[position:]``, a slice budget of input at a time when it is longer than
        that (so one large read is never held processed in full); the rest waits once held."""
        if position == 0 and len(data) <= self._slice:
            self._split(stream, data)
            return
        while position < len(data):
            if self.batcher.held:
                self._pending.append((stream, data, -1, position))
                return
            self._split(stream, data[position : position + self._slice])
            position += self._slice

    def _split(self, stream: Stream, data: bytes | None) -> None:
        """Feed ``data`` to the stream's splitter (None: the end of the stream) and process it."""
        splitter = self._splitters[stream]
        cuts = splitter.cuts
        self._process(stream, splitter.feed(data) if data is not None else splitter.finish())
        if splitter.cuts != cuts and self._metrics is not None:
            self._metrics.lines_cut.inc(splitter.cuts - cuts)

    def _process(self, stream: Stream, segments: list[Segment]) -> None:
        for block, _continues in segments:
            if stream is Stream.STDOUT:
                filtered = self._outcome_vars.filter(block)
                if self._outcome_vars.warnings:
                    self._drain_warnings()
                if filtered is None:
                    continue
                block = filtered
            self._emit(stream, block, block.count(b"\n") + 1)

    def _emit(self, stream: Source, block: bytes, lines: int) -> None:
        """Prefix ``block`` and add it to the batcher, in parts that grow to at most the slice
        budget; once the batcher is held, what is left waits (processed, unprefixed) in order."""
        if self._pending or self.batcher.held:
            self._pending.append((stream, block, lines, 0))
            return
        prefix = self.line_prefix()
        if len(block) + lines * len(prefix) > self._slice:
            self._emit_in_parts(stream, block, lines, prefix)
            return
        self._tail.extend(block.rsplit(b"\n", TAIL_LINES)[-TAIL_LINES:])
        self.batcher.add(stream, prefix + block.replace(b"\n", b"\n" + prefix), lines)

    def _emit_in_parts(self, stream: Source, block: bytes, lines: int, prefix: bytes) -> None:
        position, end_of_block = 0, len(block)
        step = max(1, self._slice * end_of_block // (end_of_block + lines * len(prefix)))
        while position < end_of_block:
            if self.batcher.held:
                rest = block[position:]
                self._pending.append((stream, rest, rest.count(b"\n") + 1, 0))
                return
            end = min(end_of_block, position + step)
            if end < end_of_block:
                cut = block.rfind(b"\n", position, end)
                end = cut if cut > position else block.find(b"\n", end)
                if end < 0:
                    end = end_of_block
            part = block[position:end]
            count = part.count(b"\n") + 1
            if count > 1 and len(part) + count * len(prefix) > self._slice:
                step = max(1, step // 2)  # denser than the block's average: a smaller part
                continue
            self._tail.extend(part.rsplit(b"\n", TAIL_LINES)[-TAIL_LINES:])
            self.batcher.add(stream, prefix + part.replace(b"\n", b"\n" + prefix), count)
            position = end + 1

    def _drain_warnings(self) -> None:
        warnings, self._outcome_vars.warnings = self._outcome_vars.warnings, []
        for warning in warnings:
            self.note(warning)
