"""Running one job: the per-job nursery that owns the executor, the drain's interval timer and
the shipper, and the bounded final flush and outcome report.

Task layout (nothing outlives ``run_job``)::

    run_job ─┬─ shipper            (own shielded scope; deadline set when the flush starts)
             └─ execution nursery ─┬─ executor.run  (feeds the pipeline synchronously)
                                   └─ interval timer
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from functools import partial

import trio

from trunner.executors.base import Executor, ExitResult
from trunner.logs.batch import Batch
from trunner.logs.metrics import LogMetrics
from trunner.logs.pipeline import Pipeline
from trunner.logs.settings import LogSettings
from trunner.logs.shipper import Shipper, deliver
from trunner.logs.sinks import Sink
from trunner.models import JobOutcome, Outcome, RunnerJob

CHANNEL_CAPACITY = 2
"""Batches queued between the drain and the shipper: part of the 4 x log_max_size bound."""

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
    log = logging.LoggerAdapter(logger, {"job": job.number(), "worker": worker})
    send, receive = trio.open_memory_channel[Batch](CHANNEL_CAPACITY)
    pipeline = Pipeline(
        job, send, settings=settings, worker=worker, metrics=metrics, wallclock=wallclock, log=log
    )
    shipper = Shipper(
        sink,
        receive,
        retry_timeout=settings.log_ship_retry_timeout,
        line_prefix=pipeline.line_prefix,
        on_slot_free=pipeline.batcher.ship_if_ready,
        metrics=metrics,
        log=log,
    )
    # Shielded so a canceled job still delivers its last batches; bounded by the deadline the
    # final flush sets on it, which always runs.
    ship_scope = trio.CancelScope(shield=True)
    result: JobOutcome | None = None
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_run_in_scope, ship_scope, shipper.run)
            try:
                result = await _execute(job, executor, pipeline, log)
            except BaseException as exc:
                if _is_cancellation(exc):
                    pipeline.note("job canceled: the runner is shutting down")
                raise
            finally:
                await _final_flush(pipeline, send, ship_scope, settings.log_flush_timeout, log)
    finally:
        outcome = _complete(result, pipeline, shipper)
        await _report(sink, outcome, settings.job_outcome_timeout, log)
    if outcome.outcome is not Outcome.SUCCESS:
        log.warning(
            "job ended %s: %s; last lines:\n%s",
            outcome.outcome.value,
            outcome.message,
            "\n".join(pipeline.tail()),
        )
    return outcome


async def _run_in_scope(scope: trio.CancelScope, fn: Callable[[], Awaitable[object]]) -> None:
    with scope:
        await fn()


async def _execute(
    job: RunnerJob, executor: Executor, pipeline: Pipeline, log: logging.LoggerAdapter[logging.Logger]
) -> JobOutcome:
    problems = executor.check_job(job)
    if problems:
        message = f"job cannot run on the {executor.name} executor: " + "; ".join(problems)
        pipeline.note(message)
        return JobOutcome(Outcome.FAILED, message)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pipeline.batcher.run_interval_timer)
            exit_result: ExitResult = await executor.run(job, pipeline)
            nursery.cancel_scope.cancel()
    except Exception as exc:
        log.exception("job failed with an internal error")
        message = f"internal error: {describe_exception(exc)}"
        pipeline.note(message)
        return JobOutcome(Outcome.FAILED, message)
    if exit_result.message:
        pipeline.note(exit_result.message)
    return JobOutcome(exit_result.outcome(), exit_result.message, exit_result.exit_code)


def _is_cancellation(exc: BaseException) -> bool:
    """Cancellation reaches here bare or wrapped in the groups of the nurseries it crossed."""
    if isinstance(exc, BaseExceptionGroup):
        return exc.subgroup(trio.Cancelled) is not None
    return isinstance(exc, trio.Cancelled)


def describe_exception(exc: BaseException) -> str:
    """``Type: message`` of each leaf of an exception group, for outcome messages."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(describe_exception(inner) for inner in exc.exceptions)
    return f"{type(exc).__name__}: {exc}"


async def _final_flush(
    pipeline: Pipeline,
    send: trio.MemorySendChannel[Batch],
    ship_scope: trio.CancelScope,
    timeout: float,
    log: logging.LoggerAdapter[logging.Logger],
) -> None:
    """Queue the last batch and let the shipper drain, all within ``timeout``, even if cancelled."""
    deadline = trio.current_time() + timeout
    ship_scope.deadline = deadline
    with trio.CancelScope(shield=True, deadline=deadline) as scope:
        try:
            try:
                final = pipeline.finish()
            except Exception:
                log.exception("flushing the job's last lines failed; shipping what was batched")
                final = pipeline.batcher.final_batch()
            if final is not None:
                await send.send(final)
        finally:
            send.close()
    if scope.cancelled_caught:
        log.error("log flush deadline (%gs) passed before the last batch could be queued", timeout)


def _complete(result: JobOutcome | None, pipeline: Pipeline, shipper: Shipper) -> JobOutcome:
    if result is None:
        result = JobOutcome(Outcome.CANCELED, "canceled: the runner shut down before the job finished")
    message = result.message
    if shipper.lost_lines or pipeline.batcher.dropped_lines:
        lost = shipper.lost_lines + pipeline.batcher.dropped_lines
        message = (message + "; " if message else "") + f"{lost} log lines could not be delivered"
    return JobOutcome(result.outcome, message, result.exit_code, pipeline.outcome_variables())


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
