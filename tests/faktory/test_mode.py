"""Faktory mode end to end: the server double, the shared runner and pipeline, a fake (or the
local) executor. Logs and outcomes arrive on ``app``, every job is ACKed after its outcome,
and quiet / terminate / SIGTERM shut down gracefully."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest
import trio

from tests.doubles.executors import CountingExecutor
from tests.doubles.faktory import FaktoryDouble, faktory_double
from trunner.config import SettingsSource
from trunner.executors import registry
from trunner.executors.base import Executor, JobNaming
from trunner.faktory import mode
from trunner.faktory.mode import FaktoryMode
from trunner.observability.metrics import RunnerMetrics


def source_for(server: FaktoryDouble, password: str | None = None, **settings: str) -> SettingsSource:
    environ = {"FAKTORY_URL": server.url(password), "OPSLEVEL_METRICS_PORT": "0"}
    environ.update({f"OPSLEVEL_{k.upper()}": v for k, v in settings.items()})
    return SettingsSource(environ=environ)


def fixed_executor(executor: Any) -> mode.OpenExecutor:
    @asynccontextmanager
    async def opening(runner_id: str) -> AsyncIterator[Executor]:
        yield executor

    return opening


class Handle:
    def __init__(self, faktory: FaktoryMode) -> None:
        self.mode = faktory

    @property
    def worker(self) -> Any:
        return self.mode.worker

    @property
    def runner(self) -> Any:
        return self.mode.runner


@asynccontextmanager
async def running_mode(
    server: FaktoryDouble, executor: Any, *, handle_signals: bool = False, **settings: str
) -> AsyncIterator[tuple[Handle, list[int]]]:
    codes: list[int] = []
    faktory = FaktoryMode(
        source_for(server, **settings),
        open_executor=fixed_executor(executor),
        http_host="127.0.0.1",
        handle_signals=handle_signals,
    )
    async with trio.open_nursery() as nursery:

        async def run(task_status: trio.TaskStatus[None]) -> None:
            codes.append(await faktory.serve(task_status=task_status))

        await nursery.start(run)
        with trio.fail_after(60):
            await faktory.running.wait()
        yield Handle(faktory), codes


def pushes(server: FaktoryDouble, jobtype: str) -> list[dict[str, Any]]:
    return [j["args"][0] for j in server.pushed if j["jobtype"] == f"Runners::Faktory::{jobtype}"]


def log_lines(server: FaktoryDouble, runner_job_id: str) -> list[str]:
    return [
        base64.b64decode(chunk).decode()
        for args in pushes(server, "AppendJobLog")
        if args["runnerJobId"] == runner_job_id
        for chunk in args["logChunk"]
    ]


def command_index(server: FaktoryDouble, predicate: Any) -> int:
    return next(i for i, c in enumerate(server.commands) if predicate(c))


def job_args(n: int) -> list[dict[str, Any]]:
    return [{"id": f"job-{n}", "image": "alpine", "commands": ["echo hi"]}]


async def test_jobs_run_at_the_configured_concurrency_and_are_acked_after_their_outcome(
    server: FaktoryDouble, autojump_clock: trio.testing.MockClock
) -> None:
    jids = {server.enqueue("legacy", job_args(n)): f"job-{n}" for n in range(5)}
    executor = CountingExecutor(duration=10)
    async with running_mode(server, executor, job_concurrency="2") as (handle, codes):
        await server.wait_for(lambda: len(server.acks) == 5)
        assert executor.peak == 2
        server.signal(handle.worker.wid, "terminate")
    assert codes == [0]
    assert sorted(server.acks) == sorted(jids) and server.fails == [] and server.working == {}

    for jid, job_id in jids.items():
        lines = log_lines(server, job_id)
        bodies = [line.split("] ", 1)[1] for line in lines]
        assert f"hello from {job_id}" in bodies and "halfway" in bodies
        assert not any("set-outcome-var" in body for body in bodies)
        [report] = [a for a in pushes(server, "ReportJobOutcome") if a["runnerJobId"] == job_id]
        assert report == {
            "runnerId": "faktory",
            "runnerJobId": job_id,
            "outcome": "success",
            "outcomeVariables": [{"key": "who", "value": job_id}],
        }
        reported = command_index(
            server,
            lambda c, job_id=job_id: (
                c.verb == "PUSH"
                and "ReportJobOutcome" in c.argument
                and f'"runnerJobId":"{job_id}"' in c.argument
            ),
        )
        last_log = max(
            i
            for i, c in enumerate(server.commands)
            if c.verb == "PUSH" and "AppendJobLog" in c.argument and f'"runnerJobId":"{job_id}"' in c.argument
        )
        acked = command_index(server, lambda c, jid=jid: c.verb == "ACK" and jid in c.argument)
        assert last_log < reported < acked
    assert all(j["queue"] == "app" for j in server.pushed)
    # RUNNER_JOB_ID and FAKTORY_URL reached the job
    assert executor.jobs[0].variables[-1].key == "RUNNER_JOB_ID"
    assert any(v.key == "FAKTORY_URL" for v in executor.jobs[0].variables)
    assert "END" in server.verbs()  # connections were closed politely


async def test_claims_only_when_a_slot_is_free(
    server: FaktoryDouble, autojump_clock: trio.testing.MockClock
) -> None:
    for n in range(3):
        server.enqueue("legacy", job_args(n))
    executor = CountingExecutor(duration=100)
    async with running_mode(server, executor, job_concurrency="1") as (handle, _):
        await trio.sleep(50)
        assert len(server.fetched) == 1 and len(server.queues["default"]) == 2
        await server.wait_for(lambda: len(server.acks) == 3)
        handle.runner.begin_shutdown()


async def test_bad_payload_is_failed_and_the_rest_runs(
    server: FaktoryDouble, autojump_clock: trio.testing.MockClock
) -> None:
    bad = server.enqueue("legacy", ["not a job"])
    good = server.enqueue("legacy", job_args(1))
    async with running_mode(server, CountingExecutor(duration=2)) as (handle, _):
        await server.wait_for(lambda: len(server.acks) == 1)
        handle.runner.begin_shutdown()
    assert server.acks == [good]
    assert [(f["jid"], f["errtype"]) for f in server.fails] == [(bad, "InvalidRunnerJob")]
    assert "args[0]: expected a JSON object (a RunnerJob), got a string" in server.fails[0]["message"]


async def test_quiet_stops_fetching_and_terminate_shuts_down(
    server: FaktoryDouble, autojump_clock: trio.testing.MockClock
) -> None:
    server.enqueue("legacy", job_args(1))
    executor = CountingExecutor(duration=40)
    async with running_mode(server, executor, job_concurrency="3") as (handle, codes):
        await server.wait_for(lambda: len(server.fetched) == 1)
        server.signal(handle.worker.wid, "quiet")
        await server.wait_for(lambda: handle.worker.state == "quiet")
        fetches = server.verbs().count("FETCH")
        server.enqueue("legacy", job_args(2))
        await server.wait_for(lambda: len(server.acks) == 1)
        await trio.sleep(60)
        assert server.verbs().count("FETCH") == fetches and len(server.queues["default"]) == 1
        assert not codes  # quiet is not an exit
        beats = len(server.beats)
        await trio.sleep(31)
        assert len(server.beats) >= beats + 2  # still beating while quiet
        server.signal(handle.worker.wid, "terminate")
    assert codes == [0] and executor.started == ["job-1"]


async def test_terminate_gives_running_jobs_the_grace_then_leaves_them_for_redelivery(
    server: FaktoryDouble, autojump_clock: trio.testing.MockClock
) -> None:
    """As with the Go runner, a job the shutdown interrupts is neither reported nor ACKed (nor
    FAILed, which would count a retry): Faktory delivers it again once its reservation expires."""
    jid = server.enqueue("legacy", job_args(1))
    executor = CountingExecutor(hang=True)
    async with running_mode(server, executor, shutdown_grace="20") as (handle, codes):
        await server.wait_for(lambda: len(server.fetched) == 1)
        server.signal(handle.worker.wid, "terminate")
        await server.wait_for(lambda: len(server.beats) == 1)  # the reply to this BEAT says terminate
        stopping = trio.current_time()
    assert codes == [0]
    assert 20 <= trio.current_time() - stopping < 25
    assert executor.cancelled == ["job-1"]
    assert pushes(server, "ReportJobOutcome") == []
    assert server.acks == [] and server.fails == [] and list(server.working) == [jid]
    assert (
        handle.worker._metrics.registry.get_sample_value(
            "trunner_faktory_jobs_left_for_redelivery_total", {"runner": handle.worker._metrics._runner_id}
        )
        == 1
    )

    assert server.expire_reservations() == [jid]
    again = CountingExecutor(duration=1)
    async with running_mode(server, again) as (handle, codes):
        await server.wait_for(lambda: len(server.acks) == 1)
        handle.runner.begin_shutdown()
    assert server.acks == [jid] and again.started == ["job-1"]
    [report] = pushes(server, "ReportJobOutcome")
    assert report["outcome"] == "success"


async def test_sigterm_lets_the_running_job_finish(
    server: FaktoryDouble, autojump_clock: trio.testing.MockClock
) -> None:
    jid = server.enqueue("legacy", job_args(1))
    executor = CountingExecutor(duration=10)
    async with running_mode(server, executor, handle_signals=True) as (handle, codes):
        await server.wait_for(lambda: len(server.fetched) == 1)
        os.kill(os.getpid(), signal.SIGTERM)
        await server.wait_for(lambda: handle.runner.shutting_down)
        fetches = server.verbs().count("FETCH")
        server.enqueue("legacy", job_args(2))
    assert codes == [0]
    assert server.acks == [jid] and executor.started == ["job-1"] and executor.cancelled == []
    assert server.verbs().count("FETCH") == fetches
    [report] = pushes(server, "ReportJobOutcome")
    assert report["outcome"] == "success"


async def test_server_restart_mid_job(server: FaktoryDouble, autojump_clock: trio.testing.MockClock) -> None:
    jid = server.enqueue("legacy", job_args(1))
    executor = CountingExecutor(duration=20)
    async with running_mode(server, executor) as (handle, _):
        await server.wait_for(lambda: len(server.fetched) == 1)
        await trio.sleep(3)
        await server.restart()
        await server.wait_for(lambda: len(server.acks) == 1)
        handle.runner.begin_shutdown()
    assert server.acks == [jid]
    bodies = [line.split("] ", 1)[1] for line in log_lines(server, "job-1")]
    assert "hello from job-1" in bodies and "halfway" in bodies
    assert pushes(server, "ReportJobOutcome")[0]["outcome"] == "success"
    assert server.connections_opened >= 3


async def test_server_down_at_start_exits_1_before_any_executor_opens(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    async with faktory_double() as server:
        await server.stop()
        executor = CountingExecutor()
        opened: list[str] = []

        def open_executor(runner_id: str) -> Any:
            opened.append(runner_id)
            return fixed_executor(executor)(runner_id)

        faktory = FaktoryMode(
            source_for(server), open_executor=open_executor, handle_signals=False, http_host="127.0.0.1"
        )
        assert await faktory.serve() == 1
        assert opened == [] and executor.started == []
        assert "cannot be reached" in caplog.text and "check FAKTORY_URL" in caplog.text


async def test_wrong_password_exits_1() -> None:
    # The real clock: the password hash runs in a worker thread, and a virtual clock would jump
    # past the handshake's deadline while the thread works.
    async with faktory_double(password="right") as server:
        executor = CountingExecutor()
        faktory = FaktoryMode(
            source_for(server, "wrong"),
            open_executor=fixed_executor(executor),
            handle_signals=False,
            http_host="127.0.0.1",
        )
        assert await faktory.serve() == 1
        assert executor.started == [] and server.rejected_hellos == 1


async def test_metrics_and_readiness(server: FaktoryDouble, autojump_clock: trio.testing.MockClock) -> None:
    server.enqueue("legacy", ["bad payload"])
    async with running_mode(server, CountingExecutor(duration=2)) as (handle, _):
        port = handle.mode.http_port
        assert port
        await server.wait_for(lambda: len(server.fails) == 1)
        assert (await http_get(port, "/readyz")).startswith("HTTP/1.1 200")
        metrics = await http_get(port, "/metrics")
        assert 'trunner_faktory_jobs_rejected_total{reason="bad_payload",runner="faktory"} 1.0' in metrics
        server.signal(handle.worker.wid, "quiet")
        await server.wait_for(lambda: handle.worker.state == "quiet")
        assert (await http_get(port, "/readyz")).startswith("HTTP/1.1 503")
        handle.runner.begin_shutdown()


async def http_get(port: int, path: str) -> str:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := await stream.receive_some():
            data += chunk
    return data.decode()


async def test_stop_during_start_up_exits_cleanly(autojump_clock: trio.testing.MockClock) -> None:
    async with faktory_double() as server:
        server.inject("HELLO", "delay", seconds=30)
        faktory = FaktoryMode(
            source_for(server, faktory_timeout="60"),
            open_executor=fixed_executor(CountingExecutor()),
            http_host="127.0.0.1",
            handle_signals=False,
        )
        async with trio.open_nursery() as nursery:
            codes: list[int] = []

            async def run() -> None:
                codes.append(await faktory.serve())

            nursery.start_soon(run)
            await server.wait_for(lambda: len(server.hellos) == 1)
            faktory.stop()
        assert codes == [0] and faktory.runner is None
        assert trio.current_time() < 30


async def test_batch_job_reports_into_its_batch(
    server: FaktoryDouble, autojump_clock: trio.testing.MockClock
) -> None:
    server.batches.add("bid-9")
    jid = server.enqueue("legacy", job_args(1), custom={"bid": "bid-9"})
    executor = CountingExecutor(duration=2)
    async with running_mode(server, executor) as (handle, _):
        await server.wait_for(lambda: len(server.acks) == 1)
        handle.runner.begin_shutdown()
    assert server.acks == [jid]
    assert server.pushed and all(j["custom"] == {"bid": "bid-9"} for j in server.pushed)
    assert len(server.batch_opens) == len(server.pushed)
    job = executor.jobs[0]
    assert ("FAKTORY_BATCH_ID", "bid-9") in [(v.key, v.value) for v in job.variables]


async def test_serve_with_the_local_executor(server: FaktoryDouble) -> None:
    jid = server.enqueue(
        "legacy",
        [
            {
                "id": "local-1",
                "commands": ["echo hello from the shell", 'echo "::set-outcome-var x=$RUNNER_JOB_ID"'],
            }
        ],
    )
    source = source_for(server, executor="local", shutdown_grace="5")
    codes: list[int] = []
    async with trio.open_nursery() as nursery:

        async def serve() -> None:
            codes.append(await mode.serve(source, None))  # type: ignore[arg-type]

        nursery.start_soon(serve)
        with trio.fail_after(30):
            await server.wait_for(lambda: len(server.acks) == 1)
        os.kill(os.getpid(), signal.SIGTERM)
    assert codes == [0] and server.acks == [jid]
    [report] = pushes(server, "ReportJobOutcome")
    assert report == {
        "runnerId": "faktory",
        "runnerJobId": "local-1",
        "outcome": "success",
        "outcomeVariables": [{"key": "x", "value": "local-1"}],
    }
    assert any(line.endswith("hello from the shell") for line in log_lines(server, "local-1"))


async def test_the_cli_process_runs_a_job_and_exits_0_on_sigterm(server: FaktoryDouble) -> None:
    """``trunner run --mode faktory`` as a real process: a job, its report and ACK, then SIGTERM."""
    jid = server.enqueue("legacy", [{"id": "cli-1", "commands": ["echo from the cli"]}])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPSLEVEL_", "FAKTORY_"))}
    env.update(FAKTORY_URL=server.url(), OPSLEVEL_METRICS_PORT="0", OPSLEVEL_LOG_FORMAT="JSON")
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "trunner", "run", "--mode", "faktory", "--executor", "local"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert process.stderr is not None
    stderr = b""

    async def collect() -> None:
        nonlocal stderr
        assert process.stderr is not None
        while chunk := await process.stderr.receive_some():
            stderr += chunk

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(collect)
            with trio.fail_after(60):
                await server.wait_for(lambda: len(server.acks) == 1)
                process.send_signal(signal.SIGTERM)
                assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert server.acks == [jid]
    assert any(line.endswith("from the cli") for line in log_lines(server, "cli-1"))
    messages = [json.loads(line)["message"] for line in stderr.decode().splitlines() if line.startswith("{")]
    assert any(m.startswith("Faktory worker") and "fetching from default" in m for m in messages)
    assert "received SIGTERM" in messages


async def test_faktory_mode_opens_its_executor_naming_objects_by_job_id(
    server: FaktoryDouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[JobNaming] = []

    @asynccontextmanager
    async def open_executor(
        settings: registry.ExecutorSettings,
        *,
        runner_id: str,
        naming: JobNaming,
        metrics: RunnerMetrics | None = None,
    ) -> AsyncIterator[Executor]:
        seen.append(naming)
        yield CountingExecutor()

    monkeypatch.setattr(registry, "open_executor", open_executor)
    faktory = FaktoryMode(source_for(server, executor="local"))
    async with AsyncExitStack() as stack:
        assert await faktory._service.open_executor(stack, "faktory", faktory.metrics) is not None
    assert seen == [JobNaming.ID]


async def test_faktory_lost_longer_than_the_reconnect_max_time_exits_1(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    async with faktory_double() as server:
        settings = {"faktory_reconnect_max_time": "120"}
        async with running_mode(server, CountingExecutor(), **settings) as (_, codes):
            await trio.sleep(3)
            await server.stop()
            for _second in range(200):
                if codes:
                    break
                await trio.sleep(1)
            assert codes and trio.current_time() < 200
        assert codes == [1]
    assert caplog.text.count("lost the connection to Faktory") == 1
    assert "unreachable for 120s" in caplog.text and "giving up" in caplog.text
    assert "heartbeat failed" not in caplog.text
