"""The drain's work: executor bytes -> valid UTF-8 -> masking -> lines -> outcome variables -> prefix.

Everything here is synchronous and does no I/O. Input leaves as prefixed parts (blocks of whole
lines) that grow to at most :func:`slice_budget` bytes, one at a time (:meth:`Pipeline.parts` is
a generator), so the drain hands each on before the next is made and one large read is never
held processed in full. Memory held here (see :mod:`trunner.logs.job_log` for the job's whole
bound): per stream, the masker's hold-back (below 2 x the longest needle) and an unfinished line
(<= ``max_line``), outcome variables (<= 1 MiB), a tail of :data:`TAIL_LINES` lines of at most
:data:`TAIL_LINE_BYTES`, and the chunk being drained (masked: a run of a one-character secret
grows at most 10 times).
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable, Iterator

from trunner.contracts import Stream
from trunner.logs import markers
from trunner.logs.batcher import Source
from trunner.logs.lines import LineSplitter, Segment
from trunner.logs.mask import MaskedLog, Masker, masker_for
from trunner.logs.metrics import LogMetrics
from trunner.logs.outcome_vars import OutcomeVarParser
from trunner.logs.settings import LogSettings
from trunner.models import OutcomeVariable, RunnerJob

TAIL_LINES = 20
TAIL_LINE_BYTES = 1024
"""The failure tail keeps the start of each of its lines only: 20 cut 64 KiB lines would
otherwise stay in memory for a message that shows a few lines."""

_PREFIX_SLACK = 256
"""Room in a batch beyond the longest line for its prefix and markers."""

Part = tuple[Source, bytes, int]
"""Prefixed lines joined by ``\\n``, their source and how many there are."""


def slice_budget(settings: LogSettings) -> int:
    """Most bytes one part may have (prefixes included), unless it is one line."""
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
        *,
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
        self.unread: tuple[Stream, bytes, int] | None = None
        """The chunk being drained and where the rest after the slice being drained starts."""
        self._draining: tuple[Stream, list[Segment]] | None = None
        self._yielded = [0, 0]
        """The lines of the slice being drained, and how many lines and bytes of them went on."""

    def parts(self, stream: Stream, data: bytes) -> Iterator[Part]:
        """``data`` (raw bytes as they arrived) processed, a slice at a time."""
        data = self._stream_maskers[stream].feed(data) if data else data
        if len(data) <= self._slice:
            yield from self._split(stream, data)
            return
        for position in range(0, len(data), self._slice):
            self.unread = (stream, data, position + self._slice)
            yield from self._split(stream, data[position : position + self._slice])
        self.unread = None

    def note(self, text: str) -> Iterator[Part]:
        block = self._masker.mask(markers.note(text).replace(b"\n", b" "))
        yield from self._emit(None, block, 1)

    def finish(self, *, severed: bool) -> Iterator[Part]:
        """Unfinished lines; a line cut off by a severed stream ends with the cut marker."""
        for stream in self._splitters:
            masked = self._stream_maskers[stream].finish()
            if masked:
                yield from self._split(stream, masked)
            yield from self._process(stream, self._splitters[stream].finish(cut=severed))
        self._outcome_vars.finish()
        yield from self._warnings()

    def unfinished(self) -> dict[Stream, tuple[int, int]]:
        """Per stream, lines and bytes of input not yet drained: the lines of the slice being
        drained not yet handed on, its unfinished line and the rest of the chunk."""
        left: dict[Stream, tuple[int, int]] = {}
        for stream in Stream:
            partial = self._splitters[stream].partial
            rest = b""
            if self.unread is not None and self.unread[0] is stream:
                rest = self.unread[1][self.unread[2] :]
            lines = size = 0
            if self._draining is not None and self._draining[0] is stream:
                segments = self._draining[1]
                lines = sum(block.count(b"\n") + 1 for block, _ in segments) - self._yielded[0]
                size = sum(len(block) + 1 for block, _ in segments) - self._yielded[1]
            text = partial + rest
            lines += text.count(b"\n") + (0 if not text or text.endswith(b"\n") else 1)
            if lines:
                left[stream] = (lines, size + len(text))
        return left

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
        """The last lines processed (masked, without prefix, each cut to
        :data:`TAIL_LINE_BYTES`), for failure messages."""
        return [line.decode("utf-8", "ignore") for line in self._tail]

    def line_prefix(self) -> bytes:
        now = int(self._wallclock())
        if now != self._prefix_second:
            self._prefix_second = now
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
            self._prefix = f"{stamp} [{self._worker}] ".encode()
        return self._prefix

    # --- internals ---

    def _split(self, stream: Stream, data: bytes) -> Iterator[Part]:
        splitter = self._splitters[stream]
        cuts = splitter.cuts
        segments = splitter.feed(data)
        if splitter.cuts != cuts and self._metrics is not None:
            self._metrics.lines_cut.inc(splitter.cuts - cuts)
        self._draining = (stream, segments)
        self._yielded = [0, 0]
        yield from self._process(stream, segments)
        self._draining = None

    def _process(self, stream: Stream, segments: list[Segment]) -> Iterator[Part]:
        for block, _continues in segments:
            if stream is Stream.STDOUT:
                filtered = self._outcome_vars.filter(block)
                if self._outcome_vars.warnings:
                    yield from self._warnings()
                if filtered is None:
                    continue
                block = filtered
            yield from self._emit(stream, block, block.count(b"\n") + 1)

    def _emit(self, stream: Source, block: bytes, lines: int) -> Iterator[Part]:
        """Prefix ``block`` in parts that grow to at most the slice budget."""
        prefix = self.line_prefix()
        if len(block) + lines * len(prefix) <= self._slice:
            self._keep_tail(block)
            self._yielded[0] += lines
            self._yielded[1] += len(block) + 1
            yield stream, prefix + block.replace(b"\n", b"\n" + prefix), lines
            return
        position, end_of_block = 0, len(block)
        step = max(1, self._slice * end_of_block // (end_of_block + lines * len(prefix)))
        while position < end_of_block:
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
            self._keep_tail(part)
            self._yielded[0] += count
            self._yielded[1] += len(part) + 1
            yield stream, prefix + part.replace(b"\n", b"\n" + prefix), count
            position = end + 1

    def _keep_tail(self, block: bytes) -> None:
        lines = block.rsplit(b"\n", TAIL_LINES)[-TAIL_LINES:]
        if len(block) > TAIL_LINE_BYTES and max(map(len, lines)) > TAIL_LINE_BYTES:
            lines = [line[:TAIL_LINE_BYTES] for line in lines]
        self._tail.extend(lines)

    def _warnings(self) -> Iterator[Part]:
        warnings, self._outcome_vars.warnings = self._outcome_vars.warnings, []
        for warning in warnings:
            yield from self.note(warning)
