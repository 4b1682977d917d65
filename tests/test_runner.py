from __future__ import annotations

import os
import signal
from functools import partial

import trio

from tests.doubles.executors import Chunk, RecordingSink, ScriptedExecutor, SleepyExecutor
from trunner.logs.settings import LogSettings
from trunner.models import JobOutcome, Outcome, RunnerJob
from trunner.observability.metrics import RunnerMetrics
from trunner.runner import ClaimedJob, Runner, RunSettings
from trunner.service import serve_until_signalled

LOGS = LogSettings(log_flush_timeout=5.0, job_outcome_timeout=5.0)


class ListSource:
    def __init__(self, jobs: list[RunnerJob], executor: SleepyExecutor | None = None, endless: bool = False):
        self.jobs = list(jobs)
        self.sinks: dict[str, RecordingSink] = {}
        self.acked: list[tuple[str, Outcome]] = []
        self.claims_while_full = 0
        self.executor = executor
        self.endless = endless
        self.concurrency = 0

    async def claim(self):
        if self.executor is not None and self.executor.running >= self.concurrency:
            self.claims_while_full += 1
        if not self.jobs:
            if self.endless:
                await trio.sleep_forever()
            return None
        job = self.jobs.pop(0)
        sink = self.sinks[job.id] = RecordingSink()

        async def finished(outcome: JobOutcome, job_id=job.id):
            self.acked.append((job_id, outcome.outcome))

        return ClaimedJob(job, sink, finished)


def make_runner(source, executor, concurrency=2, grace=20.0):
    source.concurrency = concurrency
    return Runner(
        source=source,
        executor=executor,
        settings=RunSettings(job_concurrency=concurrency, shutdown_grace=grace),
        log_settings=LOGS,
        metrics=RunnerMetrics(runner_id="r1"),
        runner_id="r1",
        keep_records=True,
    )


def jobs(*durations: float) -> list[RunnerJob]:
    return [RunnerJob(id=str(i), commands=(str(d),)) for i, d in enumerate(durations)]


async def test_runs_every_job_with_bounded_concurrency_and_claims_only_when_free(autojump_clock):
    executor = SleepyExecutor()
    source = ListSource(jobs(5, 1, 3, 2, 4, 1), executor)
    runner = make_runner(source, executor, concurrency=2)
    records = await runner.serve()
    assert len(records) == 6 and all(r.outcome.outcome is Outcome.SUCCESS for r in records)
    assert executor.peak == 2
    assert source.claims_while_full == 0
    assert sorted(source.acked) == sorted((str(i), Outcome.SUCCESS) for i in range(6))
    assert source.sinks["3"].bodies() == ["job 3 running"]
    metrics = runner._metrics.registry
    assert (
        metrics.get_sample_value("trunner_jobs_finished_total", {"runner": "r1", "outcome": "success"}) == 6
    )
    assert metrics.get_sample_value("trunner_jobs_in_progress", {"runner": "r1"}) == 0


async def test_graceful_shutdown_lets_short_jobs_finish_and_cancels_long_ones(autojump_clock):
    executor = SleepyExecutor()
    source = ListSource(jobs(10, 1000), executor, endless=True)
    runner = make_runner(source, executor, concurrency=2, grace=20)
    async with trio.open_nursery() as nursery:
        records = []

        async def serve():
            records.extend(await runner.serve())

        nursery.start_soon(serve)
        await trio.sleep(1)
        assert runner.ready and runner.busy == 2
        runner.begin_shutdown()
        assert not runner.ready or runner.shutting_down
        started = trio.current_time()
    outcomes = {r.job.id: r.outcome.outcome for r in records}
    assert outcomes == {"0": Outcome.SUCCESS, "1": Outcome.CANCELED}
    assert trio.current_time() - started <= 20 + LOGS.log_flush_timeout + LOGS.job_outcome_timeout
    assert source.sinks["1"].outcomes[0].outcome is Outcome.CANCELED
    assert ("1", Outcome.CANCELED) in source.acked


async def test_shutdown_now_skips_the_grace(autojump_clock):
    executor = SleepyExecutor()
    source = ListSource(jobs(1000), executor, endless=True)
    runner = make_runner(source, executor, grace=600)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(runner.serve)
        await trio.sleep(1)
        runner.begin_shutdown()
        await trio.sleep(1)
        runner.shutdown_now()
        started = trio.current_time()
    assert trio.current_time() - started <= LOGS.log_flush_timeout + LOGS.job_outcome_timeout
    assert runner.records[0].outcome.outcome is Outcome.CANCELED


async def test_sigterm_then_second_sigterm(autojump_clock):
    executor = SleepyExecutor()
    source = ListSource(jobs(1000), executor, endless=True)
    runner = make_runner(source, executor, grace=600)
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(serve_until_signalled, runner))
        await trio.sleep(1)
        os.kill(os.getpid(), signal.SIGTERM)
        await trio.sleep(1)
        assert runner.shutting_down and runner.busy == 1
        os.kill(os.getpid(), signal.SIGTERM)
    assert runner.records[0].outcome.outcome is Outcome.CANCELED
    assert trio.current_time() < 600


async def test_job_failure_does_not_stop_the_runner(autojump_clock):
    class Crashy(SleepyExecutor):
        async def run(self, job, output):
            if job.id == "0":
                raise RuntimeError("executor bug")
            return await super().run(job, output)

    executor = Crashy()
    source = ListSource(jobs(1, 1), executor)
    records = await make_runner(source, executor).serve()
    assert sorted(r.outcome.outcome.value for r in records) == ["failed", "success"]


async def test_chunked_output_reaches_the_claimed_jobs_sink(autojump_clock):
    executor = ScriptedExecutor([b"a\n", Chunk(b"b\n", delay=2)])
    source = ListSource(jobs(0))
    await make_runner(source, executor).serve()
    assert source.sinks["0"].bodies() == ["a", "b"]


async def test_a_crash_in_one_jobs_pipeline_does_not_stop_the_others(autojump_clock, monkeypatch):
    from trunner import runner as runner_module

    real_run_job = runner_module.run_job

    async def flaky_run_job(job, **kwargs):
        if job.id == "0":
            raise RuntimeError("pipeline bug")
        return await real_run_job(job, **kwargs)

    monkeypatch.setattr(runner_module, "run_job", flaky_run_job)
    executor = SleepyExecutor()
    source = ListSource(jobs(1, 1, 1), executor)
    records = await make_runner(source, executor).serve()
    outcomes = {r.job.id: r.outcome for r in records}
    assert outcomes["0"].outcome is Outcome.FAILED and "pipeline bug" in outcomes["0"].message
    assert outcomes["1"].outcome is outcomes["2"].outcome is Outcome.SUCCESS
    assert ("0", Outcome.FAILED) in source.acked


async def test_the_worker_slot_stays_taken_until_the_final_flush_ends(autojump_clock, tmp_path):
    """A job whose log is still being delivered keeps its slot: the next job is claimed only
    once the flush (here 5 appends of 10 s each) is over."""
    claimed_at: list[float] = []
    reported_at: list[float] = []

    class SlowSink(RecordingSink):
        async def ship(self, batch):
            await trio.sleep(10)
            await super().ship(batch)

        async def report(self, outcome):
            reported_at.append(trio.current_time())
            await super().report(outcome)

    class Source:
        def __init__(self) -> None:
            self.left = 2

        async def claim(self):
            await trio.lowlevel.checkpoint()
            if not self.left:
                return None
            self.left -= 1
            claimed_at.append(trio.current_time())
            return ClaimedJob(RunnerJob(id=str(self.left)), SlowSink(), None)

    logs = LogSettings(
        job_pod_log_max_size=4096,
        job_log_spool_dir=str(tmp_path),
        log_flush_timeout=30.0,
        job_outcome_timeout=5.0,
    )
    runner = Runner(
        source=Source(),
        executor=ScriptedExecutor([b"x" * 900 + b"\n"] * 20),
        settings=RunSettings(job_concurrency=1),
        log_settings=logs,
        metrics=RunnerMetrics(runner_id="r1"),
        runner_id="r1",
    )
    await runner.serve()
    assert len(claimed_at) == 2 and len(reported_at) == 2
    assert reported_at[0] - claimed_at[0] >= 40
    assert claimed_at[1] >= reported_at[0]


class RedeliveringSource(ListSource):
    """A source that delivers unacknowledged jobs again (Faktory)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.left: list[str] = []

    async def claim(self):
        claimed = await super().claim()
        if claimed is None:
            return None

        async def leave(outcome: JobOutcome, job_id=claimed.job.id):
            self.left.append(job_id)

        return ClaimedJob(claimed.job, claimed.sink, claimed.finished, redelivered=leave)


async def test_a_job_the_shutdown_interrupts_is_left_to_a_redelivering_source(autojump_clock):
    executor = SleepyExecutor()
    source = RedeliveringSource(jobs(10, 1000), executor, endless=True)
    runner = make_runner(source, executor, concurrency=2, grace=20)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(runner.serve)
        await trio.sleep(1)
        runner.begin_shutdown()
    assert source.acked == [("0", Outcome.SUCCESS)] and source.left == ["1"]
    assert [o.outcome for o in source.sinks["0"].outcomes] == [Outcome.SUCCESS]
    assert source.sinks["1"].outcomes == [], "no canceled outcome is reported for a job delivered again"
    finished = runner._metrics.registry.get_sample_value
    assert finished("trunner_jobs_finished_total", {"runner": "r1", "outcome": "canceled"}) == 1
