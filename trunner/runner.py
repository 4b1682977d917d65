"""The run loop shared by every job source: claim a job only when a worker slot is free, run it
in the jobs nursery, and shut down gracefully.

Shutdown (:meth:`Runner.begin_shutdown`): claiming stops at once; running jobs get
``shutdown_grace`` seconds; then they are cancelled, and each reports ``canceled`` within its own
flush and outcome deadlines. :meth:`Runner.shutdown_now` skips the rest of the grace. Signals are
mapped onto these two by :mod:`trunner.service`, never here.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

import attrs
import trio

from trunner.config import at_most, non_negative, one_of, positive, setting
from trunner.executors.base import Executor
from trunner.job import run_job
from trunner.logs.batch import Batch
from trunner.logs.job_log import clear_spool_dir, describe_exception
from trunner.logs.mask import MaskedLog, masker_for
from trunner.logs.settings import LogSettings
from trunner.logs.sinks import Sink
from trunner.models import JobOutcome, Outcome, RunnerJob
from trunner.observability import errorreport
from trunner.observability.metrics import RunnerMetrics
from trunner.observability.runlog import TRACE, bind_job

logger = logging.getLogger("trunner.runner")


@attrs.frozen
class RunSettings:
    """Runner"""

    job_concurrency: int = setting(3, help="Jobs run at the same time.", checks=[positive, at_most(1000)])
    shutdown_grace: float = setting(
        20.0,
        help="Seconds running jobs may keep going after SIGTERM before they are canceled. Keep "
        "grace + log-flush-timeout + job-outcome-timeout below the pod's terminationGracePeriodSeconds.",
        checks=[non_negative],
    )
    executor: str = setting(
        "auto",
        help="Where jobs run: kubernetes, local, or auto (local for --mode local, kubernetes otherwise).",
        checks=[one_of("auto", "local", "kubernetes")],
    )


@attrs.frozen
class ClaimedJob:
    job: RunnerJob
    sink: Sink
    finished: Callable[[JobOutcome], Awaitable[None]] | None = None
    redelivered: Callable[[JobOutcome], Awaitable[None]] | None = None
    """Set when the source delivers a job again that was never acknowledged (Faktory): a job the
    runner's shutdown cancels then has its outcome neither reported nor acknowledged; this is
    called instead of ``finished``. A job that ends ``canceled`` for its own reasons is not
    affected."""


class JobSource(Protocol):
    async def claim(self) -> ClaimedJob | None:
        """Wait for a job and claim it; called only while a worker slot is free. None: exhausted."""
        ...


@attrs.frozen
class JobRecord:
    job: RunnerJob
    outcome: JobOutcome
    duration: float


class _TraceSink:
    """Copies each shipped line into the runner log at TRACE level, as the Go runner does."""

    def __init__(self, inner: Sink, log: logging.LoggerAdapter[logging.Logger]) -> None:
        self._inner = inner
        self._log = log

    async def ship(self, batch: Batch) -> None:
        for line in batch.text_lines():
            self._log.log(TRACE, "%s", line)
        await self._inner.ship(batch)

    async def report(self, outcome: JobOutcome) -> None:
        await self._inner.report(outcome)


class _UnlessInterrupted:
    """Passes a ``canceled`` outcome on only when the runner's shutdown did not cause it."""

    def __init__(self, inner: Sink, interrupted: Callable[[], bool]) -> None:
        self._inner = inner
        self._interrupted = interrupted

    async def ship(self, batch: Batch) -> None:
        await self._inner.ship(batch)

    async def report(self, outcome: JobOutcome) -> None:
        if outcome.outcome is Outcome.CANCELED and self._interrupted():
            return
        await self._inner.report(outcome)


class Runner:
    def __init__(
        self,
        *,
        source: JobSource,
        executor: Executor,
        settings: RunSettings,
        log_settings: LogSettings,
        metrics: RunnerMetrics,
        runner_id: str,
        keep_records: bool = False,
    ) -> None:
        """``keep_records``: remember every finished job (for a summary at the end); off for
        long-running modes, where it would grow without bound."""
        self._source = source
        self._executor = executor
        self._settings = settings
        self._log_settings = log_settings
        self._metrics = metrics
        self.runner_id = runner_id
        self._claim_scope = trio.CancelScope()
        self._jobs_scope: trio.CancelScope | None = None
        self._shutting_down = False
        self._claiming = False
        self._busy = 0
        self._keep_records = keep_records
        self.records: list[JobRecord] = []
        self.finished_jobs = 0

    @property
    def ready(self) -> bool:
        return self._claiming

    @property
    def busy(self) -> int:
        return self._busy

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    def begin_shutdown(self) -> None:
        if self._shutting_down:
            return
        self._shutting_down = True
        logger.info(
            "shutting down: no new jobs; %d running job(s) get %gs to finish",
            self._busy,
            self._settings.shutdown_grace,
        )
        self._claim_scope.cancel()
        if self._jobs_scope is not None:
            self._jobs_scope.deadline = min(
                self._jobs_scope.deadline, trio.current_time() + self._settings.shutdown_grace
            )

    def _interrupting(self) -> bool:
        """Whether the shutdown is cancelling the running jobs (the grace has run out or was skipped)."""
        return self._shutting_down and self._jobs_scope is not None and self._jobs_scope.cancel_called

    def shutdown_now(self) -> None:
        self.begin_shutdown()
        logger.warning("shutting down now: canceling %d running job(s)", self._busy)
        if self._jobs_scope is not None:
            self._jobs_scope.cancel()

    async def serve(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> list[JobRecord]:
        errorreport.set_runner(self.runner_id)
        async with trio.open_nursery() as jobs:
            self._jobs_scope = jobs.cancel_scope
            if self._shutting_down:
                self.begin_shutdown()
            await clear_spool_dir(self._log_settings)
            task_status.started()
            with self._claim_scope:
                await self._claim_loop(jobs)
            self._claiming = False
            if self._shutting_down:
                self._jobs_scope.deadline = min(
                    self._jobs_scope.deadline, trio.current_time() + self._settings.shutdown_grace
                )
        return self.records

    async def _claim_loop(self, jobs: trio.Nursery) -> None:
        slots = trio.Semaphore(self._settings.job_concurrency)
        free_workers = list(range(self._settings.job_concurrency, 0, -1))
        while True:
            self._claiming = True
            await slots.acquire()
            try:
                claimed = await self._source.claim()
            except BaseException:
                slots.release()
                raise
            if claimed is None:
                slots.release()
                logger.info("job source exhausted; waiting for %d running job(s)", self._busy)
                return
            worker = free_workers.pop()
            self._busy += 1
            jobs.start_soon(self._run_one, claimed, worker, slots, free_workers)

    async def _run_one(
        self, claimed: ClaimedJob, worker: int, slots: trio.Semaphore, free_workers: list[int]
    ) -> None:
        job = claimed.job
        log = logging.LoggerAdapter(logger, {"job": job.number(), "worker": worker})
        bind_job(job.number(), worker)
        sink = _TraceSink(claimed.sink, log) if logger.isEnabledFor(TRACE) else claimed.sink
        if claimed.redelivered is not None:
            sink = _UnlessInterrupted(sink, self._interrupting)
        started = trio.current_time()
        self._metrics.job_started()
        log.info("starting job %s", job.number())
        outcome = JobOutcome(Outcome.CANCELED, "canceled: the runner shut down before the job finished")
        try:
            outcome = await run_job(
                job,
                executor=self._executor,
                sink=sink,
                settings=self._log_settings,
                metrics=self._metrics.logs,
                worker=str(worker),
            )
        except Exception as exc:
            # One job's bug must not take the other jobs and the runner down with it.
            masker = masker_for(job)
            MaskedLog(log, masker).exception("job %s crashed the job pipeline", job.number())
            outcome = JobOutcome(
                Outcome.FAILED, masker.mask_text(f"internal error: {describe_exception(exc)}")
            )
        finally:
            duration = trio.current_time() - started
            self._metrics.job_finished(outcome.outcome, duration)
            self.finished_jobs += 1
            if self._keep_records:
                self.records.append(JobRecord(job, outcome, duration))
            log.info("finished job %s in %.1fs: %s", job.number(), duration, outcome.outcome.value)
            if (
                claimed.redelivered is not None
                and outcome.outcome is Outcome.CANCELED
                and self._interrupting()
            ):
                log.info(
                    "job %s was interrupted by the shutdown: left to its source to deliver again",
                    job.number(),
                )
                await self._acknowledge(claimed.redelivered, outcome, log)
            elif claimed.finished is not None:
                await self._acknowledge(claimed.finished, outcome, log)
            self._busy -= 1
            free_workers.append(worker)
            slots.release()

    async def _acknowledge(
        self,
        finished: Callable[[JobOutcome], Awaitable[None]],
        outcome: JobOutcome,
        log: logging.LoggerAdapter[logging.Logger],
    ) -> None:
        with trio.CancelScope(
            shield=True, deadline=trio.current_time() + self._log_settings.job_outcome_timeout
        ):
            try:
                await finished(outcome)
            except Exception:
                log.exception("could not acknowledge the finished job to its source")
