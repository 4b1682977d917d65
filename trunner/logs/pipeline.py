"""The drain: executor bytes -> lines -> outcome variables -> masking -> prefix -> batches.

Everything here is synchronous and does no I/O; the only hand-off to the network side is the
batcher's non-blocking send. Memory held (see README, "Sizing"): two unfinished lines
(<= ``max_line`` each), the batcher's 4 x ``log_max_size``, outcome variables (<= 1 MiB) and a
20-line tail.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable

import trio

from trunner.contracts import Stream
from trunner.logs import markers
from trunner.logs.batch import Batch
from trunner.logs.batcher import Batcher
from trunner.logs.lines import LineSplitter, Segment, to_utf8
from trunner.logs.mask import SHORT_SECRET, Masker
from trunner.logs.metrics import LogMetrics
from trunner.logs.outcome_vars import OutcomeVarParser
from trunner.logs.settings import LogSettings
from trunner.models import OutcomeVariable, RunnerJob

TAIL_LINES = 20

_PREFIX_SLACK = 256
"""Room in a batch beyond the longest line for its prefix and markers."""


def effective_max_line(settings: LogSettings) -> int:
    """A line (plus prefix and markers) must fit in one batch: cap it at half a batch."""
    return max(
        64, min(settings.job_pod_log_max_line_length, settings.job_pod_log_max_size // 2 - _PREFIX_SLACK)
    )


class Pipeline:
    def __init__(
        self,
        job: RunnerJob,
        send: trio.MemorySendChannel[Batch],
        *,
        settings: LogSettings,
        worker: str,
        metrics: LogMetrics | None = None,
        wallclock: Callable[[], float] = time.time,
        log: logging.Logger | logging.LoggerAdapter[logging.Logger] | None = None,
    ) -> None:
        self._log = log or logging.getLogger("trunner.pipeline")
        self._masker = Masker(job.secrets())
        if self._masker.short_secrets:
            self._log.warning(
                "%d sensitive variable(s) shorter than %d characters: they are masked, but so is any "
                "matching text in the log",
                self._masker.short_secrets,
                SHORT_SECRET,
            )
        max_line = effective_max_line(settings)
        self._splitters = {
            stream: LineSplitter(max_line, self._masker.guard_cut, holdback=self._masker.max_needle - 1)
            if self._masker
            else LineSplitter(max_line)
            for stream in Stream
        }
        self._outcome_vars = OutcomeVarParser()
        self._worker = worker
        self._wallclock = wallclock
        self._prefix_second = -1
        self._prefix = b""
        self._metrics = metrics
        self._tail: collections.deque[bytes] = collections.deque(maxlen=TAIL_LINES)
        self.batcher = Batcher(
            send,
            max_size=settings.job_pod_log_max_size,
            interval=settings.job_pod_log_max_interval,
            line_prefix=self.line_prefix,
            metrics=metrics,
        )

    # --- OutputFeed ---

    def feed(self, stream: Stream, data: bytes) -> None:
        if data:
            self._split(stream, data)

    def note(self, text: str) -> None:
        block = self._masker.mask(markers.note(text).replace(b"\n", b" "))
        self._emit(block, 1, False)

    # --- end of job ---

    def finish(self) -> Batch | None:
        """Flush unfinished lines and return the final batch."""
        for stream in self._splitters:
            self._split(stream, None)
        self._outcome_vars.finish()
        self._drain_warnings()
        return self.batcher.final_batch()

    def outcome_variables(self) -> tuple[OutcomeVariable, ...]:
        return tuple(
            OutcomeVariable(key, self._masker.mask_text(value))
            for key, value in self._outcome_vars.variables().items()
        )

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

    def _split(self, stream: Stream, data: bytes | None) -> None:
        """Feed ``data`` to the stream's splitter (None: the end of the stream) and process it."""
        splitter = self._splitters[stream]
        cuts = splitter.cuts
        self._process(stream, splitter.feed(data) if data is not None else splitter.finish())
        if splitter.cuts != cuts and self._metrics is not None:
            self._metrics.lines_cut.inc(splitter.cuts - cuts)

    def _process(self, stream: Stream, segments: list[Segment]) -> None:
        for block, continues in segments:
            block = to_utf8(block)
            if stream is Stream.STDOUT:
                filtered = self._outcome_vars.filter(block)
                if self._outcome_vars.warnings:
                    self._drain_warnings()
                if filtered is None:
                    continue
                block = filtered
            if self._masker:
                block = self._masker.mask(block)
            self._emit(block, block.count(b"\n") + 1, continues)

    def _emit(self, block: bytes, lines: int, continues: bool) -> None:
        self._tail.extend(block.rsplit(b"\n", TAIL_LINES)[-TAIL_LINES:])
        prefix = self.line_prefix()
        self.batcher.add(prefix + block.replace(b"\n", b"\n" + prefix), lines, continues)

    def _drain_warnings(self) -> None:
        warnings, self._outcome_vars.warnings = self._outcome_vars.warnings, []
        for warning in warnings:
            self.note(warning)
