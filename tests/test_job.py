"""run_job: the per-job nursery, bounded final flush and outcome report."""

from __future__ import annotations

import math
import re

import pytest
import trio
import trio.testing

from tests.doubles.executors import Chunk, RecordingSink, ScriptedExecutor
from trunner.config import ConfigError, load
from trunner.contracts import Stream
from trunner.executors.base import ExitKind, ExitResult
from trunner.job import run_job
from trunner.logs.settings import LogSettings
from trunner.models import JobVariable, Outcome, RunnerJob
from trunner.net.retry import ShipError
from trunner.observability.metrics import RunnerMetrics

SETTINGS = LogSettings(
    job_pod_log_max_size=4096,
    job_pod_log_max_interval=30.0,
    job_pod_log_max_line_length=1024,
    log_flush_timeout=30.0,
    job_outcome_timeout=10.0,
    log_ship_retry_timeout=60.0,
)
JOB = RunnerJob(id="42", commands=("true",))


def all_tasks() -> set[trio.lowlevel.Task]:
    found, todo = set(), [trio.lowlevel.current_root_task()]
    while todo:
        task = todo.pop()
        found.add(task)
        for nursery in task.child_nurseries:
            todo.extend(nursery.child_tasks)
    return found


def tasks_started_since(before: set[trio.lowlevel.Task]) -> set[trio.lowlevel.Task]:
    return all_tasks() - before


async def test_job_lines_outcome_and_outcome_variables(autojump_clock):
    sink = RecordingSink()
    executor = ScriptedExecutor(
        [b"hello\n::set-outcome-var answer=42\n", Chunk(b"warn\n", Stream.STDERR), b"tail without newline"],
        ExitResult.exited(0),
    )
    outcome = await run_job(JOB, executor=executor, sink=sink, settings=SETTINGS)
    assert outcome.outcome is Outcome.SUCCESS
    assert sink.bodies() == ["hello", "warn", "tail without newline"]
    assert [(v.key, v.value) for v in sink.outcomes[0].outcome_variables] == [("answer", "42")]
    assert sink.lines[0].endswith("[1] hello")


async def test_stderr_is_not_parsed_for_outcome_variables(autojump_clock):
    sink = RecordingSink()
    executor = ScriptedExecutor([Chunk(b"::set-outcome-var x=1\n", Stream.STDERR)])
    outcome = await run_job(JOB, executor=executor, sink=sink, settings=SETTINGS)
    assert outcome.outcome_variables == ()
    assert sink.bodies() == ["::set-outcome-var x=1"]


async def test_hung_sink_cannot_hang_the_final_flush(autojump_clock):
    """The final flush is bounded: a slow API cannot hold the job forever."""
    sink = RecordingSink(stall=True, stall_report=True)
    executor = ScriptedExecutor([b"line %d\n" % i for i in range(5000)])
    start = trio.current_time()
    outcome = await run_job(JOB, executor=executor, sink=sink, settings=SETTINGS)
    elapsed = trio.current_time() - start
    bound = SETTINGS.log_stall_timeout + SETTINGS.log_flush_timeout + SETTINGS.job_outcome_timeout
    assert elapsed <= bound + 1
    assert "could not be delivered" in outcome.message


async def test_interval_ships_while_the_job_is_silent(autojump_clock):
    sink = RecordingSink()
    executor = ScriptedExecutor([b"first\n", Chunk(b"second\n", delay=1), Chunk(b"third\n", delay=1000)])
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: run_job(JOB, executor=executor, sink=sink, settings=SETTINGS))
        await trio.sleep(1 + SETTINGS.job_pod_log_max_interval + 0.5)
        assert sink.bodies() == ["first", "second"]
    assert sink.bodies() == ["first", "second", "third"]


async def test_exception_in_executor_reports_failed_and_leaves_no_task(autojump_clock):
    """No shipper task outlives a job whose executor raises."""
    before = all_tasks()
    sink = RecordingSink()
    executor = ScriptedExecutor([b"before the crash\n"], raise_after=RuntimeError("boom"))
    outcome = await run_job(JOB, executor=executor, sink=sink, settings=SETTINGS)
    assert outcome.outcome is Outcome.FAILED
    assert "boom" in outcome.message
    assert executor.cleaned_up
    assert sink.bodies()[0] == "before the crash"
    assert sink.outcomes == [outcome]
    assert tasks_started_since(before) == set()


async def test_exception_in_a_processor_reports_failed(autojump_clock, monkeypatch):
    before = all_tasks()
    from trunner.logs import pipeline

    def broken(self, block):
        raise ValueError("processor bug")

    monkeypatch.setattr(pipeline.OutcomeVarParser, "filter", broken)
    sink = RecordingSink()
    outcome = await run_job(JOB, executor=ScriptedExecutor([b"x\n"]), sink=sink, settings=SETTINGS)
    assert outcome.outcome is Outcome.FAILED
    assert "processor bug" in outcome.message
    assert tasks_started_since(before) == set()


async def test_cancellation_reports_canceled_within_deadlines(autojump_clock):
    """Cancelling a job (SIGTERM) still flushes within its bound, and no task outlives it."""
    before = all_tasks()
    sink = RecordingSink(ship_delay=5)
    executor = ScriptedExecutor([b"working\n"], hang=True)
    with trio.move_on_after(100):
        await run_job(JOB, executor=executor, sink=sink, settings=SETTINGS)
    assert executor.cleaned_up
    assert sink.outcomes[0].outcome is Outcome.CANCELED
    assert sink.bodies() == ["working", "[trunner] job canceled: the runner is shutting down"]
    assert tasks_started_since(before) == set()


async def test_cancellation_with_a_hung_sink_is_still_bounded(autojump_clock):
    sink = RecordingSink(stall=True, stall_report=True)
    executor = ScriptedExecutor([b"working\n"], hang=True)
    with trio.move_on_after(10):
        await run_job(JOB, executor=executor, sink=sink, settings=SETTINGS)
    assert trio.current_time() <= 10 + SETTINGS.log_flush_timeout + SETTINGS.job_outcome_timeout + 1


async def test_secret_split_across_chunks_is_masked(autojump_clock):
    job = RunnerJob(id="1", variables=(JobVariable("TOKEN", "abcdef123456", sensitive=True),))
    sink = RecordingSink()
    executor = ScriptedExecutor([b"token=abc", b"def1", b"23456 end\n::set-outcome-var t=abcdef123456\n"])
    outcome = await run_job(job, executor=executor, sink=sink, settings=SETTINGS)
    assert sink.bodies() == ["token=********** end"]
    assert outcome.outcome_variables[0].value == "**********"


async def test_secret_across_a_long_line_cut_is_masked(autojump_clock):
    secret = "S3CR3T-VALUE-0123456789"
    job = RunnerJob(id="1", variables=(JobVariable("S", secret, sensitive=True),))
    sink = RecordingSink()
    line = b"a" * 1015 + secret.encode() + b"b" * 2000 + b"\n"
    executor = ScriptedExecutor([line[i : i + 7] for i in range(0, len(line), 7)])
    await run_job(job, executor=executor, sink=sink, settings=SETTINGS)
    assert secret not in "".join(sink.lines)
    assert any("**********" in line for line in sink.lines)


async def test_invalid_utf8_is_replaced_not_dropped(autojump_clock):
    sink = RecordingSink()
    await run_job(JOB, executor=ScriptedExecutor([b"bad \xff\xfe byte\n"]), sink=sink, settings=SETTINGS)
    assert sink.bodies() == ["bad \ufffd\ufffd byte"]


async def test_crlf_and_progress_output(autojump_clock):
    sink = RecordingSink()
    executor = ScriptedExecutor([b"win\r\n", b"10%\r", b"100%\r\n"])
    await run_job(JOB, executor=executor, sink=sink, settings=SETTINGS)
    assert sink.bodies() == ["win", "10%\r100%"]


async def test_fifty_megabyte_line_stays_within_the_memory_bound(autojump_clock):
    """A 50 MB line with no newline, against a sink that stalls: memory held stays within the
    pipeline's bound, no batch exceeds log_max_size, and the pieces are marked."""
    import tracemalloc

    sink = RecordingSink(ship_delay=3600)
    chunk = b"z" * (1 << 20)
    sizes: list[int] = []

    class Probe:
        async def ship(self, batch):
            sizes.append(batch.size)
            await sink.ship(batch)

        async def report(self, outcome):
            await sink.report(outcome)

    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        outcome = await run_job(JOB, executor=ScriptedExecutor([chunk] * 50), sink=Probe(), settings=SETTINGS)
        peak = tracemalloc.get_traced_memory()[1] - baseline
    finally:
        tracemalloc.stop()
    bound = 4 * SETTINGS.job_pod_log_max_size + 2 * len(chunk) + 256 * 1024
    assert peak <= bound, (peak, bound)
    assert max(sizes) <= SETTINGS.job_pod_log_max_size
    assert "could not be delivered" in outcome.message


async def test_failed_batch_is_retried_then_announced(autojump_clock):
    def fail(batch, attempt):
        return ShipError("503 Service Unavailable", retryable=True, retry_after=1) if attempt <= 3 else None

    sink = RecordingSink(fail=fail)
    outcome = await run_job(JOB, executor=ScriptedExecutor([b"a\n", b"b\n"]), sink=sink, settings=SETTINGS)
    assert sink.bodies() == ["a", "b"]
    assert outcome.message == ""


async def test_batch_lost_after_retry_budget_is_marked_in_next_batch(autojump_clock):
    def fail(batch, attempt):
        return ShipError("rejected", retryable=False) if batch.seq == 0 else None

    sink = RecordingSink()
    sink.fail = fail
    executor = ScriptedExecutor([b"first\n", Chunk(b"second\n", delay=1)])
    outcome = await run_job(JOB, executor=executor, sink=sink, settings=SETTINGS)
    assert sink.bodies()[0].startswith("[trunner: 1 lines")
    assert "rejected" in sink.bodies()[0]
    assert sink.bodies()[1:] == ["second"]
    assert "1 log lines could not be delivered" in outcome.message


async def test_a_long_rejection_is_quoted_cut_in_the_marker(autojump_clock):
    reason = "422 Unprocessable Entity: " + "the server explains at length, «in detail». " * 300

    def fail(batch, attempt):
        return ShipError(reason, retryable=False) if batch.seq == 0 else None

    sink = RecordingSink(fail=fail)
    executor = ScriptedExecutor([b"first\n", Chunk(b"second\n", delay=1)])
    await run_job(JOB, executor=executor, sink=sink, settings=SETTINGS)
    marker, *rest = sink.bodies()
    assert re.fullmatch(
        r"\[trunner: 1 lines \(\d+ bytes\) of stdout dropped: log delivery failed: 422 Unpro.*…\]", marker
    )
    assert marker.endswith("…]") and len(marker.encode()) < 300
    assert rest == ["second"]


async def test_a_sink_with_only_ship_and_report_gets_every_line_in_order_then_one_outcome(autojump_clock):
    events: list[tuple[str, object]] = []

    class MinimalSink:
        async def ship(self, batch):
            events.append(("ship", batch.text_lines()))

        async def report(self, outcome):
            events.append(("report", outcome))

    chunks = [Chunk(f"line {i}\n".encode(), delay=3 if i % 10 == 0 else 0) for i in range(50)]
    outcome = await run_job(JOB, executor=ScriptedExecutor(chunks), sink=MinimalSink(), settings=SETTINGS)
    kinds = [kind for kind, _ in events]
    assert kinds.count("ship") > 1 and kinds[-1] == "report" and kinds.count("report") == 1
    shipped = [line.split("] ", 1)[1] for kind, lines in events[:-1] for line in lines]
    assert shipped == [f"line {i}" for i in range(50)]
    assert events[-1][1] == outcome


@pytest.mark.parametrize("kind", list(ExitKind))
@pytest.mark.parametrize("exit_code", [None, 0, 1, 137])
async def test_only_commands_that_exited_0_are_reported_as_success(autojump_clock, kind, exit_code):
    result = ExitResult(kind, exit_code, message="" if kind is ExitKind.EXITED else f"{kind.value} happened")
    sink = RecordingSink()
    outcome = await run_job(JOB, executor=ScriptedExecutor([b"out\n"], result), sink=sink, settings=SETTINGS)
    succeeded = kind is ExitKind.EXITED and exit_code == 0
    assert (outcome.outcome is Outcome.SUCCESS) is succeeded
    assert outcome.exit_code == exit_code
    assert sink.outcomes == [outcome]
    if result.message:
        assert outcome.message == result.message
        assert sink.bodies()[-1].endswith(result.message)


async def test_metrics_count_shipped_and_dropped(autojump_clock):
    metrics = RunnerMetrics()
    sink = RecordingSink()
    await run_job(
        JOB, executor=ScriptedExecutor([b"a\nb\n"]), sink=sink, settings=SETTINGS, metrics=metrics.logs
    )
    assert metrics.registry.get_sample_value("trunner_log_lines_shipped_total", {"runner": ""}) == 2
    await run_job(
        JOB,
        executor=ScriptedExecutor([b"x" * 3000 + b"\n"]),
        sink=sink,
        settings=SETTINGS,
        metrics=metrics.logs,
    )
    assert metrics.registry.get_sample_value("trunner_log_lines_cut_total", {"runner": ""}) == 2


def test_zero_log_size_is_rejected_not_unbounded():
    """A size of 0 is an error, never "unbounded"."""
    with pytest.raises(ConfigError, match=r"job-pod-log-max-size.*greater than 0"):
        load(LogSettings, environ={"OPSLEVEL_JOB_POD_LOG_MAX_SIZE": "0"})
    with pytest.raises(ConfigError, match="at least 1024"):
        load(LogSettings, environ={"OPSLEVEL_JOB_POD_LOG_MAX_SIZE": "10"})
    with pytest.raises(ConfigError):
        load(LogSettings, environ={"OPSLEVEL_JOB_POD_LOG_MAX_INTERVAL": "-1"})
    assert math.isfinite(load(LogSettings, environ={}).job_pod_log_max_interval)


async def test_a_failure_while_flushing_the_last_lines_still_reports(autojump_clock, monkeypatch):
    from trunner.logs import pipeline

    def broken_finish(self):
        raise ValueError("finish bug")

    monkeypatch.setattr(pipeline.OutcomeVarParser, "finish", broken_finish)
    sink = RecordingSink()
    outcome = await run_job(
        JOB, executor=ScriptedExecutor([b"kept\n", b"partial"]), sink=sink, settings=SETTINGS
    )
    assert sink.outcomes == [outcome]
    assert "kept" in sink.bodies()


async def test_a_70_kb_single_line_outcome_value_is_set_not_shipped(autojump_clock):
    settings = LogSettings(job_pod_log_max_line_length=65_536)
    value = "v" * 70_000
    line = f"::set-outcome-var big={value}\n".encode()
    executor = ScriptedExecutor(
        [b"before\n", *(line[i : i + 5000] for i in range(0, len(line), 5000)), b"after\n"]
    )
    sink = RecordingSink()
    outcome = await run_job(JOB, executor=executor, sink=sink, settings=settings)
    assert sink.bodies() == ["before", "after"]
    assert [(v.key, v.value) for v in outcome.outcome_variables] == [("big", value)]


async def test_a_multiline_value_with_a_long_line_has_no_markers(autojump_clock):
    body = "x" * 3000
    executor = ScriptedExecutor(
        [
            f"::start-multiline-outcome-var m\nshort\n{body}\nend\n::end-multiline-outcome-var\nafter\n".encode()
        ]
    )
    sink = RecordingSink()
    outcome = await run_job(JOB, executor=executor, sink=sink, settings=SETTINGS)
    assert outcome.outcome_variables[0].value == f"short\n{body}\nend"
    assert sink.bodies() == ["after"]


async def test_outcome_variable_keys_and_values_stay_within_one_mebibyte(autojump_clock):
    import tracemalloc

    key = "k" * 49_000
    lines = [f"::set-outcome-var {key}{i}=x\n".encode() for i in range(2000)]
    settings = LogSettings(job_pod_log_max_line_length=65_536)
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        outcome = await run_job(
            JOB, executor=ScriptedExecutor(lines), sink=RecordingSink(), settings=settings
        )
        peak = tracemalloc.get_traced_memory()[1] - baseline
    finally:
        tracemalloc.stop()
    assert sum(len(v.key) + len(v.value) for v in outcome.outcome_variables) <= 1024 * 1024
    assert peak < 4 * settings.job_pod_log_max_size + 2 * 1024 * 1024, peak


@pytest.mark.parametrize("buffer", ["memory", "spool"])
async def test_one_byte_lines_stay_within_the_memory_bound(autojump_clock, tmp_path, buffer):
    """Per-line and per-block overhead: 1-byte lines grow 13x with their prefix; memory held
    still stays within 4 x log_max_size plus a slice, against a stalled sink."""
    import tracemalloc

    settings = LogSettings(
        job_pod_log_max_size=256_000,
        job_log_buffer=buffer,
        job_log_spool_dir=str(tmp_path),
        job_log_spool_size=1 << 20,
        log_flush_timeout=5.0,
        job_outcome_timeout=1.0,
    )
    chunks = [b"x\n" * 32768] * 40
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        outcome = await run_job(
            JOB, executor=ScriptedExecutor(chunks), sink=RecordingSink(stall=True), settings=settings
        )
        peak = tracemalloc.get_traced_memory()[1] - baseline
    finally:
        tracemalloc.stop()
    size = settings.job_pod_log_max_size
    assert peak <= 4 * size + size // 16 + 2 * 65_536 + 256 * 1024, peak / size
    assert "could not be delivered" in outcome.message
