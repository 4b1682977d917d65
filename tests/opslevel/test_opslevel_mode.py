"""API mode end to end, in-process: the OpsLevel double on loopback, a scripted executor, the
shared runner and pipeline, and the mode's own start-up, HTTP server, signals and shutdown."""

from __future__ import annotations

import base64
import itertools
import json
import logging
import os
import signal

import httpx
import pytest
import trio
import trio.testing
from prometheus_client.parser import text_string_to_metric_families

from tests.doubles.command_executor import CommandExecutor
from tests.doubles.opslevel import HttpStatus, OpsLevelDouble, PayloadErrors, Stall, job_payload
from tests.opslevel.harness import body_lines, job_output, settings_source, start_mode
from trunner.opslevel.mode import ApiMode
from trunner.runner import RunSettings

FAST = {"OPSLEVEL_POLL_INTERVAL": "1", "OPSLEVEL_JOB_POD_LOG_MAX_INTERVAL": "1"}


async def metric(url: str, name: str, **labels: str) -> float:
    async with httpx.AsyncClient() as client:
        text = (await client.get(url + "/metrics")).text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


async def get_status(url: str) -> int:
    async with httpx.AsyncClient() as client:
        return (await client.get(url)).status_code


async def test_jobs_at_concurrency_deliver_every_line_in_order_exactly_once(
    nursery: trio.Nursery, opslevel: OpsLevelDouble, autojump_clock: trio.testing.MockClock
) -> None:
    jobs = 12
    for k in range(jobs):
        opslevel.add_job(
            job_payload(
                f"job-{k}",
                [
                    f"print 400 job-{k} line",
                    f"err job-{k} to stderr",
                    f"say ::set-outcome-var result=r{k}",
                    "sleep 3",
                    f"exit {k % 3}",
                ],
            )
        )
    executor = CommandExecutor()
    running = await start_mode(
        nursery,
        opslevel,
        executor,
        OPSLEVEL_JOB_CONCURRENCY="3",
        OPSLEVEL_JOB_POD_LOG_MAX_SIZE="4000",
        **FAST,
    )
    with trio.fail_after(600):
        await opslevel.wait_until(lambda: len(opslevel.outcomes) == jobs)
    assert await get_status(running.metrics_url + "/readyz") == 200
    assert await running.stop() == 0

    assert executor.peak == 3
    for k in range(jobs):
        expected = [f"job-{k} line {i}" for i in range(1, 401)] + [f"job-{k} to stderr"]
        assert job_output(opslevel, f"job-{k}") == expected
        [outcome] = opslevel.outcomes[f"job-{k}"]
        assert outcome.outcome == ("success" if k % 3 == 0 else "failed")
        assert outcome.variables == (("result", f"r{k}"),)
        assert outcome.after_lines == opslevel.line_counts[f"job-{k}"]
    assert len(opslevel.calls_to("RunnerAppendJobLog")) > jobs * 2
    [register] = opslevel.calls_to("RunnerRegister")
    assert register.variables == {"queue": None}
    [unregister] = opslevel.calls_to("RunnerUnregister")
    assert unregister.variables == {"runnerId": "runner-1"}
    assert not opslevel.runners["runner-1"].registered
    assert opslevel.calls[-1].operation == "RunnerUnregister"


async def test_metrics_and_readiness_over_http(
    nursery: trio.Nursery, opslevel: OpsLevelDouble, autojump_clock: trio.testing.MockClock
) -> None:
    opslevel.add_job(job_payload("job-1", ["say hello", "exit 0"]))
    running = await start_mode(nursery, opslevel, CommandExecutor(), **FAST)
    with trio.fail_after(60):
        await opslevel.wait_until(lambda: "job-1" in opslevel.outcomes)
    url = running.metrics_url
    assert await get_status(url + "/healthz") == 200
    assert await get_status(url + "/readyz") == 200
    labels = {"runner": "runner-1"}
    assert (
        await metric(
            url, "trunner_api_requests_total", operation="RunnerAppendJobLog", status="200", **labels
        )
        >= 1
    )
    assert (
        await metric(url, "trunner_api_requests_total", operation="RunnerReportJobOutcome", status="200") == 1
    )
    assert (
        await metric(url, "trunner_api_request_duration_seconds_count", operation="RunnerGetPendingJob") >= 1
    )
    assert await metric(url, "trunner_jobs_finished_total", outcome="success", **labels) == 1
    assert await metric(url, "trunner_log_lines_shipped_total", **labels) >= 1
    assert await running.stop() == 0


async def test_masked_secrets_never_appear_in_any_request(
    nursery: trio.Nursery, opslevel: OpsLevelDouble, autojump_clock: trio.testing.MockClock
) -> None:
    secret = "hunter2-very-secret"
    opslevel.add_job(
        job_payload(
            "job-s",
            [
                f"say the token is {secret}!",
                f"err {secret}",
                f"say ::set-outcome-var leaked={secret}",
                "exit 0",
            ],
            variables=[
                {"key": "API_KEY", "value": secret, "sensitive": True, "scope": "main"},
                {"key": "PLAIN", "value": "visible", "sensitive": False, "scope": None},
            ],
        )
    )
    running = await start_mode(nursery, opslevel, CommandExecutor(), **FAST)
    with trio.fail_after(60):
        await opslevel.wait_until(lambda: "job-s" in opslevel.outcomes)
    assert await running.stop() == 0
    encoded = base64.b64encode(secret.encode())
    for call in opslevel.calls:
        assert secret.encode() not in call.body
        assert encoded not in call.body
    assert job_output(opslevel, "job-s") == ["the token is **********!", "**********"]
    assert all(secret not in line for line in opslevel.job_lines("job-s"))
    assert opslevel.outcomes["job-s"][0].variables == (("leaked", "**********"),)


async def test_a_stalled_api_does_not_stop_jobs_and_loss_is_counted_and_marked(
    nursery: trio.Nursery, opslevel: OpsLevelDouble, autojump_clock: trio.testing.MockClock
) -> None:
    opslevel.add_job(job_payload("job-1", ["print 50 early", "sleep 300", "print 50 late", "exit 0"]))
    opslevel.inject(Stall(), operation="RunnerAppendJobLog", times=None)
    running = await start_mode(
        nursery,
        opslevel,
        CommandExecutor(),
        OPSLEVEL_API_TIMEOUT="10",
        OPSLEVEL_LOG_SHIP_RETRY_TIMEOUT="40",
        **FAST,
    )
    with trio.fail_after(100):
        await opslevel.wait_until(lambda: len(opslevel.calls_to("RunnerAppendJobLog")) >= 2)
    await trio.sleep(100)
    opslevel.clear_faults()
    with trio.fail_after(600):
        await opslevel.wait_until(lambda: "job-1" in opslevel.outcomes)
    url = running.metrics_url
    # Each append was read in full and never answered: the API may have carried it out, so its
    # lines are not called dropped but not confirmed, and counted apart.
    assert await metric(url, "trunner_log_lines_dropped_total") == 0
    assert await metric(url, "trunner_log_lines_unconfirmed_total") == 50
    assert await metric(url, "trunner_log_batches_unconfirmed_total") >= 1
    assert (
        await metric(url, "trunner_api_requests_total", operation="RunnerAppendJobLog", status="timeout") >= 2
    )
    lines = body_lines(opslevel, "job-1")
    assert lines[0].startswith("[trunner: 50 lines (")
    assert "of stdout not confirmed, may have been delivered: log delivery failed" in lines[0]
    assert lines[1:] == [f"late {i}" for i in range(1, 51)]
    assert opslevel.outcomes["job-1"][0].outcome == "success"
    assert await running.stop() == 0


async def test_a_job_finishes_even_if_every_append_stalls_forever(
    nursery: trio.Nursery, opslevel: OpsLevelDouble, autojump_clock: trio.testing.MockClock
) -> None:
    opslevel.add_job(job_payload("job-1", ["print 20 x", "exit 0"]))
    opslevel.inject(Stall(), operation="RunnerAppendJobLog", times=None)
    running = await start_mode(
        nursery,
        opslevel,
        CommandExecutor(),
        OPSLEVEL_API_TIMEOUT="10",
        OPSLEVEL_LOG_SHIP_RETRY_TIMEOUT="30",
        OPSLEVEL_LOG_FLUSH_TIMEOUT="15",
        **FAST,
    )
    started = trio.current_time()
    with trio.fail_after(120):
        await opslevel.wait_until(lambda: "job-1" in opslevel.outcomes)
    assert trio.current_time() - started <= 1 + 15 + 1
    assert opslevel.outcomes["job-1"][0].outcome == "success"
    assert await metric(running.metrics_url, "trunner_log_lines_dropped_total") == 20
    assert await running.stop() == 0


async def test_503_bursts_lose_nothing(
    nursery: trio.Nursery, opslevel: OpsLevelDouble, autojump_clock: trio.testing.MockClock
) -> None:
    for k in range(4):
        opslevel.add_job(job_payload(f"job-{k}", [f"print 300 j{k}", "sleep 2", f"print 300 k{k}", "exit 0"]))
    running = await start_mode(
        nursery,
        opslevel,
        # A chunk of 100 lines (~5 KB) every 2 s: a burst of failures (a few seconds of retries)
        # fits in the pipeline's bound (channel of 2 batches plus the one being assembled).
        CommandExecutor(chunk_pause=2.0),
        OPSLEVEL_JOB_CONCURRENCY="2",
        OPSLEVEL_JOB_POD_LOG_MAX_SIZE="8000",
        **FAST,
    )

    async def bursts() -> None:
        while True:
            opslevel.clear_faults()
            opslevel.inject(HttpStatus(503, retry_after="1"), times=3)
            opslevel.inject(HttpStatus(502), operation="RunnerAppendJobLog", times=1)
            opslevel.inject(HttpStatus(429, retry_after="2"), operation="RunnerReportJobOutcome", times=1)
            await trio.sleep(10)

    with trio.fail_after(60):
        await opslevel.wait_until(lambda: bool(opslevel.assigned))
    nursery.start_soon(bursts)
    with trio.fail_after(600):
        await opslevel.wait_until(lambda: len(opslevel.outcomes) == 4)
    for k in range(4):
        expected = [f"j{k} {i}" for i in range(1, 301)] + [f"k{k} {i}" for i in range(1, 301)]
        assert job_output(opslevel, f"job-{k}") == expected
        assert [o.outcome for o in opslevel.outcomes[f"job-{k}"]] == ["success"]
    faults = [c for c in opslevel.calls if c.fault is not None]
    assert len(faults) >= 10
    assert await metric(running.metrics_url, "trunner_log_lines_dropped_total") == 0
    assert await running.stop() == 0


async def test_a_job_is_claimed_only_when_a_worker_slot_is_free(
    nursery: trio.Nursery, opslevel: OpsLevelDouble, autojump_clock: trio.testing.MockClock
) -> None:
    opslevel.add_job(job_payload("job-1", ["sleep 100", "exit 0"]))
    opslevel.add_job(job_payload("job-2", ["sleep 100", "exit 0"]))
    executor = CommandExecutor()
    running = await start_mode(nursery, opslevel, executor, OPSLEVEL_JOB_CONCURRENCY="1", **FAST)
    with trio.fail_after(600):
        await opslevel.wait_until(lambda: len(opslevel.outcomes) == 2)
    polls = [c.at for c in opslevel.calls_to("RunnerGetPendingJob")]
    first_report = opslevel.calls_to("RunnerReportJobOutcome")[0].at
    during_first_job = [t for t in polls if polls[0] < t < first_report]
    assert during_first_job == []
    assert len(opslevel.pending[""]) == 0
    assert await running.stop() == 0


async def test_polls_wait_the_interval_and_a_job_is_picked_up_at_the_next_poll(
    nursery: trio.Nursery, opslevel: OpsLevelDouble, autojump_clock: trio.testing.MockClock
) -> None:
    running = await start_mode(nursery, opslevel, CommandExecutor())
    await trio.sleep(35)
    polls = [c.at for c in opslevel.calls_to("RunnerGetPendingJob")]
    assert len(polls) == 4
    assert [round(b - a, 2) for a, b in itertools.pairwise(polls)] == [10.0, 10.0, 10.0]
    opslevel.add_job(job_payload("job-1", ["exit 0"]))
    with trio.fail_after(30):
        await opslevel.wait_until(lambda: "job-1" in opslevel.outcomes)
    assert await running.stop() == 0


async def test_a_malformed_job_is_reported_failed_and_the_runner_goes_on(
    nursery: trio.Nursery, opslevel: OpsLevelDouble, autojump_clock: trio.testing.MockClock
) -> None:
    bad = job_payload("job-bad", ["exit 0"])
    bad["commands"] = "echo not a list"
    bad["variables"] = [{"key": "TOKEN", "value": "abc-secret-123", "sensitive": True, "scope": "everywhere"}]
    opslevel.add_job(bad)
    opslevel.add_job(job_payload("job-good", ["say fine", "exit 0"]))
    running = await start_mode(nursery, opslevel, CommandExecutor(), **FAST)
    with trio.fail_after(60):
        await opslevel.wait_until(lambda: len(opslevel.outcomes) == 2)
    assert opslevel.outcomes["job-bad"][0].outcome == "failed"
    [line] = body_lines(opslevel, "job-bad")
    assert line.startswith("[trunner] the job sent by the API cannot be run: runnerJob:")
    assert "commands: expected a list" in line
    assert "unknown scope 'everywhere'" in line
    assert "abc-secret-123" not in line
    assert opslevel.outcomes["job-good"][0].outcome == "success"
    assert await metric(running.metrics_url, "trunner_api_jobs_rejected_total") == 1
    assert await running.stop() == 0


async def test_nulls_in_a_job_take_their_defaults(
    nursery: trio.Nursery, opslevel: OpsLevelDouble, autojump_clock: trio.testing.MockClock
) -> None:
    job = job_payload("job-n", ["say ok", "exit 0"])
    job.update(files=None, initCommands=None, initImage=None, status="assigned-by-a-future-api")
    job["variables"] = [{"key": "A", "value": None, "sensitive": None, "scope": None}]
    opslevel.add_job(job)
    running = await start_mode(nursery, opslevel, CommandExecutor(), **FAST)
    with trio.fail_after(60):
        await opslevel.wait_until(lambda: "job-n" in opslevel.outcomes)
    assert opslevel.outcomes["job-n"][0].outcome == "success"
    assert await running.stop() == 0


async def test_poll_errors_back_off_and_recover(
    nursery: trio.Nursery, opslevel: OpsLevelDouble, autojump_clock: trio.testing.MockClock
) -> None:
    opslevel.inject(HttpStatus(502), operation="RunnerGetPendingJob", times=5)
    running = await start_mode(nursery, opslevel, CommandExecutor(), OPSLEVEL_POLL_ERROR_BACKOFF_MAX="60")
    with trio.fail_after(600):
        await opslevel.wait_until(lambda: len(opslevel.calls_to("RunnerGetPendingJob")) >= 7)
    polls = [c.at for c in opslevel.calls_to("RunnerGetPendingJob")]
    gaps = [b - a for a, b in itertools.pairwise(polls)]
    ceilings = [10, 20, 40, 60, 60]
    for gap, ceiling in zip(gaps[:5], ceilings, strict=True):
        assert ceiling / 2 - 0.01 <= gap <= ceiling + 0.01
    assert gaps[5] == pytest.approx(10.0, abs=0.01)
    assert await metric(running.metrics_url, "trunner_api_poll_errors_total") == 5
    tokens = [c.variables["token"] for c in opslevel.calls_to("RunnerGetPendingJob")]
    assert tokens[:6] == [None] * 6
    assert tokens[6] is not None
    assert await running.stop() == 0


async def test_poll_honours_retry_after(
    nursery: trio.Nursery, opslevel: OpsLevelDouble, autojump_clock: trio.testing.MockClock
) -> None:
    opslevel.inject(HttpStatus(503, retry_after="45"), operation="RunnerGetPendingJob", times=1)
    running = await start_mode(nursery, opslevel, CommandExecutor())
    with trio.fail_after(600):
        await opslevel.wait_until(lambda: len(opslevel.calls_to("RunnerGetPendingJob")) >= 2)
    polls = [c.at for c in opslevel.calls_to("RunnerGetPendingJob")]
    assert polls[1] - polls[0] == pytest.approx(45.0, abs=0.01)
    assert await running.stop() == 0


# --- shutdown -----------------------------------------------------------------------------------


async def test_sigterm_mid_job_cancels_after_the_grace_and_reports_canceled(
    nursery: trio.Nursery, opslevel: OpsLevelDouble, autojump_clock: trio.testing.MockClock
) -> None:
    opslevel.add_job(job_payload("job-1", ["say started", "hang"]))
    opslevel.add_job(job_payload("job-2", ["say never runs"]))
    executor = CommandExecutor()
    running = await start_mode(
        nursery, opslevel, executor, OPSLEVEL_JOB_CONCURRENCY="1", OPSLEVEL_SHUTDOWN_GRACE="20", **FAST
    )
    with trio.fail_after(60):
        await opslevel.wait_until(lambda: "started" in job_output(opslevel, "job-1"))
    polls_before = len(opslevel.calls_to("RunnerGetPendingJob"))
    signalled = trio.current_time()
    os.kill(os.getpid(), signal.SIGTERM)
    await trio.sleep(1)
    assert await get_status(running.metrics_url + "/readyz") == 503
    assert await running.wait() == 0
    assert running.ended_at is not None
    assert 20.0 <= running.ended_at - signalled <= 21.0
    assert executor.cancelled == ["job-1"]
    assert [o.outcome for o in opslevel.outcomes["job-1"]] == ["canceled"]
    assert "job-2" not in opslevel.outcomes and "job-2" not in opslevel.assigned
    assert len(opslevel.calls_to("RunnerGetPendingJob")) == polls_before
    assert opslevel.calls[-1].operation == "RunnerUnregister"


async def test_a_job_that_ends_within_the_grace_reports_its_own_outcome(
    nursery: trio.Nursery, opslevel: OpsLevelDouble, autojump_clock: trio.testing.MockClock
) -> None:
    opslevel.add_job(job_payload("job-1", ["say started", "sleep 10", "say done", "exit 0"]))
    running = await start_mode(nursery, opslevel, CommandExecutor(), OPSLEVEL_SHUTDOWN_GRACE="20", **FAST)
    with trio.fail_after(60):
        await opslevel.wait_until(lambda: "started" in job_output(opslevel, "job-1"))
    os.kill(os.getpid(), signal.SIGTERM)
    assert await running.wait() == 0
    assert [o.outcome for o in opslevel.outcomes["job-1"]] == ["success"]
    assert job_output(opslevel, "job-1") == ["started", "done"]


async def test_a_second_signal_skips_the_grace(
    nursery: trio.Nursery, opslevel: OpsLevelDouble, autojump_clock: trio.testing.MockClock
) -> None:
    opslevel.add_job(job_payload("job-1", ["say started", "hang"]))
    running = await start_mode(nursery, opslevel, CommandExecutor(), OPSLEVEL_SHUTDOWN_GRACE="600", **FAST)
    with trio.fail_after(60):
        await opslevel.wait_until(lambda: "started" in job_output(opslevel, "job-1"))
    signalled = trio.current_time()
    os.kill(os.getpid(), signal.SIGTERM)
    await trio.sleep(2)
    os.kill(os.getpid(), signal.SIGINT)
    assert await running.wait() == 0
    assert running.ended_at is not None and running.ended_at - signalled < 5
    assert [o.outcome for o in opslevel.outcomes["job-1"]] == ["canceled"]


async def test_a_hung_api_at_shutdown_still_exits_within_its_deadlines(
    nursery: trio.Nursery, opslevel: OpsLevelDouble, autojump_clock: trio.testing.MockClock
) -> None:
    opslevel.add_job(job_payload("job-1", ["say started", "hang"]))
    running = await start_mode(
        nursery,
        opslevel,
        CommandExecutor(),
        OPSLEVEL_SHUTDOWN_GRACE="5",
        OPSLEVEL_LOG_FLUSH_TIMEOUT="8",
        OPSLEVEL_JOB_OUTCOME_TIMEOUT="8",
        OPSLEVEL_API_TIMEOUT="4",
        **FAST,
    )
    with trio.fail_after(60):
        await opslevel.wait_until(lambda: "started" in job_output(opslevel, "job-1"))
    opslevel.inject(Stall(), times=None)
    signalled = trio.current_time()
    assert await running.stop() == 0
    assert running.ended_at is not None
    assert running.ended_at - signalled <= 5 + 8 + 8 + 4 + 0.5
    assert opslevel.calls[-1].operation == "RunnerUnregister"


async def test_shutdown_during_a_poll_hands_back_a_job_it_brings(
    nursery: trio.Nursery, opslevel: OpsLevelDouble, autojump_clock: trio.testing.MockClock
) -> None:
    from tests.doubles.opslevel import Delay

    running = await start_mode(nursery, opslevel, CommandExecutor())
    with trio.fail_after(60):
        await opslevel.wait_until(lambda: len(opslevel.calls_to("RunnerGetPendingJob")) >= 1)
    opslevel.add_job(job_payload("job-late", ["say never runs"]))
    opslevel.inject(Delay(3.0), operation="RunnerGetPendingJob")
    await trio.sleep(10.5)
    assert len(opslevel.calls_to("RunnerGetPendingJob")) == 2
    assert await running.stop() == 0
    assert [o.outcome for o in opslevel.outcomes["job-late"]] == ["canceled"]
    assert job_output(opslevel, "job-late") == []
    assert "shut down before the job started" in opslevel.job_lines("job-late")[0]


# --- start-up -----------------------------------------------------------------------------------


async def test_a_rejected_token_exits_1_with_one_clear_line(
    nursery: trio.Nursery, opslevel: OpsLevelDouble, caplog: pytest.LogCaptureFixture
) -> None:
    logging.getLogger("trunner").propagate = True
    try:
        with caplog.at_level(logging.INFO, logger="trunner"):
            running = await start_mode(
                nursery, opslevel, CommandExecutor(), OPSLEVEL_API_TOKEN="not-the-token"
            )
            assert await running.wait() == 1
    finally:
        logging.getLogger("trunner").propagate = False
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "export OPSLEVEL_API_TOKEN=<token>" in errors[0] and "\n" not in errors[0]
    assert "not-the-token" not in caplog.text
    assert [c.operation for c in opslevel.calls] == ["account"]


async def test_a_failed_registration_exits_1(nursery: trio.Nursery, opslevel: OpsLevelDouble) -> None:
    opslevel.inject(PayloadErrors((("Queue 'gpu' does not exist", ("queue",)),)), operation="RunnerRegister")
    running = await start_mode(nursery, opslevel, CommandExecutor(), OPSLEVEL_QUEUE="gpu")
    assert await running.wait() == 1
    [register] = opslevel.calls_to("RunnerRegister")
    assert register.variables == {"queue": "gpu"}
    assert json.loads(register.body)["variables"] == {"queue": "gpu"}


async def test_a_signal_during_start_up_exits_0_without_registering(
    nursery: trio.Nursery, opslevel: OpsLevelDouble, autojump_clock: trio.testing.MockClock
) -> None:
    opslevel.inject(Stall(), operation="account")
    running = await start_mode(nursery, opslevel, CommandExecutor())
    with trio.fail_after(5):
        await opslevel.wait_until(lambda: len(opslevel.calls) == 1)
    os.kill(os.getpid(), signal.SIGTERM)
    assert await running.wait() == 0
    assert opslevel.calls_to("RunnerRegister") == []


async def test_a_taken_metrics_port_exits_1(opslevel: OpsLevelDouble) -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    taken = listeners[0].socket.getsockname()[1]
    source = settings_source(opslevel, OPSLEVEL_METRICS_PORT=str(taken))
    mode = ApiMode(source, source.get(RunSettings), http_host="127.0.0.1")
    assert await mode.serve() == 1
    assert opslevel.calls == []
    await listeners[0].aclose()
