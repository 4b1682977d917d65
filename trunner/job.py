"""Running one job: the executor feeding the job's log, then the outcome report.

Task layout (nothing outlives ``run_job``)::

    run_job ── the job log's nursery (trunner.logs.job_log) ─┬─ reader: executor.run, feeding the log
                                                              ├─ drain (and its interval timer)
                                                              ├─ spool stage (writer, forwarder)
                                                              └─ shipper
    within it the bounded final flush; then the outcome report (shielded, bounded)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import partial

import trio

from trunner.executors.base import Executor, ExitKind, ExitResult
from trunner.logs.job_log import JobLog, build_masker, describe_exception, is_cancellation
from trunner.logs.metrics import LogMetrics
from trunner.logs.settings import LogSettings
from trunner.logs.sinks import Sink
from trunner.models import JobOutcome, Outcome, RunnerJob
from trunner.net.retry import deliver
from trunner.observability import errorreport
from trunner.observability.runlog import bind_job

logger = logging.getLogger("trunner.job")


async def run_job(
    job: RunnerJob,
    *,
    executor: Executor,
    sink: Sink,
    settings: LogSettings,
    metrics: LogMetrics | None = None,
    worker: str = "1",
    wallclock: Callable[[], float] = time.time,
) -> JobOutcome:
    """Run ``job`` to an outcome and report it. Job and sink failures become the outcome;
    cancellation reports ``canceled`` (shielded, bounded) and then propagates."""
    worker_field: int | str = int(worker) if worker.isdigit() else worker
    log = logging.LoggerAdapter(logger, {"job": job.number(), "worker": worker_field})
    bind_job(job.number(), worker_field)
    result: JobOutcome | None = None
    job_log: JobLog | None = None
    try:
        masker = await build_masker(job)
        job_log = JobLog(
            job, sink, settings, metrics=metrics, worker=worker, wallclock=wallclock, log=log, masker=masker
        )
        result = await job_log.run(partial(_read, job, executor, job_log))
    finally:
        outcome = _complete(result, job_log)
        await _report(sink, outcome, settings.job_outcome_timeout, log)
    if outcome.outcome is not Outcome.SUCCESS:
        tail = job_log.pipeline.tail() if job_log is not None else []
        (job_log.pipeline.log if job_log is not None else log).warning(
            "job ended %s: %s; last lines:\n%s", outcome.outcome.value, outcome.message, "\n".join(tail)
        )
        if outcome.outcome is not Outcome.CANCELED and job_log is not None:
            errorreport.report_failed_job(
                job_id=job.id,
                number=job.number(),
                outcome=outcome.outcome.value,
                message=outcome.message,
                tail=tail,
                mask=job_log.pipeline.mask_text,
            )
    return outcome


async def _read(job: RunnerJob, executor: Executor, job_log: JobLog) -> JobOutcome:
    try:
        with errorreport.masking(job_log.pipeline.mask_text):
            return await _execute(job, executor, job_log, job_log.pipeline.log)
    except BaseException as exc:
        if is_cancellation(exc):
            job_log.end_of_output(severed=True)
            job_log.note("job canceled: the runner is shutting down")
        raise


async def _execute(
    job: RunnerJob, executor: Executor, job_log: JobLog, log: logging.LoggerAdapter[logging.Logger]
) -> JobOutcome:
    if job_log.pipeline.refusals:
        message = "job refused: " + "; ".join(job_log.pipeline.refusals)
        job_log.note(message)
        return JobOutcome(Outcome.FAILED, message)
    problems = executor.check_job(job)
    if problems:
        message = f"job cannot run on the {executor.name} executor: " + "; ".join(problems)
        job_log.note(message)
        return JobOutcome(Outcome.FAILED, message)
    try:
        exit_result: ExitResult = await executor.run(job, job_log)
    except Exception as exc:
        log.exception("job failed with an internal error")
        message = f"internal error: {describe_exception(exc)}"
        job_log.end_of_output(severed=True)
        job_log.note(message)
        return JobOutcome(Outcome.FAILED, message)
    job_log.end_of_output(severed=exit_result.kind is not ExitKind.EXITED)
    if exit_result.message:
        job_log.note(exit_result.message)
    return JobOutcome(exit_result.outcome(), exit_result.message, exit_result.exit_code)


def _complete(result: JobOutcome | None, job_log: JobLog | None) -> JobOutcome:
    if job_log is not None and job_log.failure is not None:
        result = JobOutcome(
            Outcome.FAILED, f"internal error: the job log failed: {describe_exception(job_log.failure)}"
        )
    if result is None:
        result = JobOutcome(Outcome.CANCELED, "canceled: the runner shut down before the job finished")
    if job_log is None:
        return result
    message = result.message
    if job_log.lost_lines:
        lost = f"{job_log.lost_lines} log lines could not be delivered"
        if job_log.unflushed_lines:
            lost += f" ({job_log.unflushed_lines} left when the final flush ended: {job_log.flush_end})"
        message = (message + "; " if message else "") + lost
    if job_log.unconfirmed_lines:
        unconfirmed = (
            f"{job_log.unconfirmed_lines} log lines were not confirmed (no answer to their batch): "
            "they may have been delivered"
        )
        message = (message + "; " if message else "") + unconfirmed
    return JobOutcome(
        result.outcome,
        job_log.pipeline.mask_text(message),
        result.exit_code,
        job_log.pipeline.outcome_variables(),
    )


async def _report(
    sink: Sink, outcome: JobOutcome, timeout: float, log: logging.LoggerAdapter[logging.Logger]
) -> None:
    with trio.CancelScope(shield=True):
        failure = await deliver(
            partial(sink.report, outcome),
            timeout=timeout,
            what=f"reporting outcome {outcome.outcome.value}",
            log=log,
        )
    if failure is not None:
        log.error("could not report outcome %s: %s", outcome.outcome.value, failure)
