"""In-process executors and a recording sink, for tests of the pipeline, the runner and the modes."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import attrs
import trio

from trunner.contracts import OutputFeed, Stream
from trunner.executors.base import ExitResult
from trunner.logs.batch import Batch
from trunner.models import JobOutcome, RunnerJob
from trunner.net.retry import ShipError


@attrs.frozen
class Chunk:
    data: bytes
    stream: Stream = Stream.STDOUT
    delay: float = 0.0


class ScriptedExecutor:
    """Feeds chunks (with virtual-time delays) and returns a fixed result."""

    name = "scripted"

    def __init__(
        self,
        chunks: Sequence[Chunk | bytes] = (),
        result: ExitResult | None = None,
        *,
        raise_after: BaseException | None = None,
        hang: bool = False,
    ) -> None:
        self.chunks = [c if isinstance(c, Chunk) else Chunk(c) for c in chunks]
        self.result = result or ExitResult.exited(0)
        self.raise_after = raise_after
        self.hang = hang
        self.cleaned_up = False
        self.runs = 0

    def check_job(self, job: RunnerJob) -> list[str]:
        return []

    async def run(self, job: RunnerJob, output: OutputFeed) -> ExitResult:
        self.runs += 1
        try:
            for chunk in self.chunks:
                if chunk.delay:
                    await trio.sleep(chunk.delay)
                output.feed(chunk.stream, chunk.data)
                await output.wait_for_room()
            if self.raise_after is not None:
                raise self.raise_after
            if self.hang:
                await trio.sleep_forever()
            return self.result
        finally:
            self.cleaned_up = True


class RecordingSink:
    """Records shipped lines; ``behaviour(batch_seq, attempt)`` may delay, stall or raise."""

    def __init__(
        self,
        *,
        ship_delay: float = 0.0,
        stall: bool = False,
        stall_report: bool = False,
        fail: Callable[[Batch, int], ShipError | None] | None = None,
    ) -> None:
        self.ship_delay = ship_delay
        self.stall = stall
        self.stall_report = stall_report
        self.fail = fail
        self.batches: list[list[str]] = []
        self.attempts = 0
        self.outcomes: list[JobOutcome] = []
        self.max_in_flight_size = 0

    @property
    def lines(self) -> list[str]:
        return [line for batch in self.batches for line in batch]

    def bodies(self) -> list[str]:
        """Shipped lines without their ``<time> [<worker>] `` prefix."""
        return [line.split("] ", 1)[1] if "] " in line else line for line in self.lines]

    async def ship(self, batch: Batch) -> None:
        self.attempts += 1
        if self.stall:
            await trio.sleep(math.inf)
        if self.ship_delay:
            await trio.sleep(self.ship_delay)
        if self.fail is not None:
            error = self.fail(batch, self.attempts)
            if error is not None:
                raise error
        self.batches.append(batch.text_lines())

    async def report(self, outcome: JobOutcome) -> None:
        if self.stall_report:
            await trio.sleep(math.inf)
        self.outcomes.append(outcome)


class TracksRuns:
    """Bookkeeping a fake executor shares: how many jobs run at once (``running``) and at most
    (``peak``), and the ids of the jobs started and of those cancelled."""

    def __init__(self) -> None:
        self.running = 0
        self.peak = 0
        self.started: list[str] = []
        self.cancelled: list[str] = []

    def check_job(self, job: RunnerJob) -> list[str]:
        return []

    @contextmanager
    def tracking(self, job: RunnerJob) -> Iterator[None]:
        self.running += 1
        self.peak = max(self.peak, self.running)
        self.started.append(job.id)
        try:
            yield
        except trio.Cancelled:
            self.cancelled.append(job.id)
            raise
        finally:
            self.running -= 1


class SleepyExecutor(TracksRuns):
    """Each job prints its id, then runs for the number of seconds in its first command."""

    name = "sleepy"

    async def run(self, job: RunnerJob, output: OutputFeed) -> ExitResult:
        with self.tracking(job):
            output.feed(Stream.STDOUT, f"job {job.id} running\n".encode())
            await output.wait_for_room()
            await trio.sleep(float(job.commands[0]))
            return ExitResult.exited(0)


class CountingExecutor(TracksRuns):
    """Prints two lines and an outcome variable, takes ``duration`` virtual seconds, and counts
    how many jobs run at once."""

    name = "counting"

    def __init__(self, duration: float = 10.0, *, hang: bool = False) -> None:
        super().__init__()
        self.duration = duration
        self.hang = hang
        self.jobs: list[RunnerJob] = []

    async def run(self, job: RunnerJob, output: OutputFeed) -> ExitResult:
        self.jobs.append(job)
        with self.tracking(job):
            output.feed(Stream.STDOUT, f"hello from {job.id}\n".encode())
            await output.wait_for_room()
            await trio.sleep(self.duration / 2)
            output.feed(Stream.STDERR, b"halfway\n")
            await output.wait_for_room()
            output.feed(Stream.STDOUT, f"::set-outcome-var who={job.id}\n".encode())
            await output.wait_for_room()
            if self.hang:
                await trio.sleep_forever()
            await trio.sleep(self.duration / 2)
            return ExitResult.exited(0)
