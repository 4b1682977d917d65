"""The Faktory worker as a job source against the server double: strict queue priority,
decoding, FAIL of what cannot run, ACK after the outcome, reconnects, and BEAT states."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from tests.doubles.faktory import FaktoryDouble, faktory_double
from tests.faktory.conftest import worker_client
from trunner.faktory.client import Backoff, FaktoryClient
from trunner.faktory.link import Link
from trunner.faktory.sink import FaktorySink
from trunner.faktory.worker import FaktoryWorker
from trunner.models import JobOutcome, Outcome
from trunner.runner import ClaimedJob

GOOD = {"id": "job-1", "image": "alpine", "commands": ["echo hi"]}


def make_worker(
    client: FaktoryClient, *, queues: tuple[str, ...] = ("default",), **kw: object
) -> FaktoryWorker:
    return FaktoryWorker(client, queues=queues, environ={}, **kw)  # type: ignore[arg-type]


@asynccontextmanager
async def supervised(worker: FaktoryWorker) -> AsyncIterator[trio.Nursery]:
    """The worker with its link reconnecting, as the mode runs it."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(worker.link.supervise)
        yield nursery
        nursery.cancel_scope.cancel()


async def claim(worker: FaktoryWorker) -> ClaimedJob:
    claimed = await worker.claim()
    assert claimed is not None
    return claimed


async def test_claim_decodes_a_legacy_job(server: FaktoryDouble) -> None:
    server.batches.add("b-1")
    jid = server.enqueue("legacy", [GOOD], custom={"bid": "b-1", "opslevel-runner-commands": ["echo 2"]})
    async with worker_client(server) as client:
        worker = make_worker(client)
        claimed = await claim(worker)
        assert claimed.job.id == "job-1" and claimed.job.commands == ("echo hi", "echo 2")
        assert isinstance(claimed.sink, FaktorySink)
        assert claimed.sink.runner_job_id == "job-1" and claimed.sink.bid == "b-1"
        assert worker.outstanding == {jid: "job-1"}
        assert claimed.finished is not None
        await claimed.finished(JobOutcome(Outcome.SUCCESS))
        assert server.acks == [jid] and worker.outstanding == {}


async def test_strict_queue_priority(server: FaktoryDouble) -> None:
    low = server.enqueue("legacy", [{**GOOD, "id": "low"}], queue="low")
    high = server.enqueue("legacy", [{**GOOD, "id": "high"}], queue="high")
    async with worker_client(server) as client:
        worker = make_worker(client, queues=("high", "low"))
        assert (await claim(worker)).job.id == "high"
        assert (await claim(worker)).job.id == "low"
    assert [c.argument for c in server.commands if c.verb == "FETCH"] == ["high low", "high low"]
    assert {j["jid"] for j in server.fetched} == {low, high}


async def test_bad_payload_is_failed_and_the_worker_keeps_going(server: FaktoryDouble) -> None:
    bad = server.enqueue("legacy", [{"id": 225, "commands": "echo"}], custom={"opslevel-runner-image": 5})
    good = server.enqueue("legacy", [GOOD])
    async with worker_client(server) as client:
        worker = make_worker(client)
        claimed = await claim(worker)
        assert claimed.job.id == "job-1"
        assert worker.outstanding == {good: "job-1"}
    [failure] = server.fails
    assert failure["jid"] == bad and failure["errtype"] == "InvalidRunnerJob"
    assert failure["message"].startswith("cannot decode the legacy job: args[0].id: expected a string")
    assert failure["backtrace"] == [
        "args[0].id: expected a string, got number",
        "args[0].commands: expected a list, got string",
        "custom.opslevel-runner-image: expected a string, got a number",
    ]
    assert server.retries[0]["jid"] == bad


async def test_unknown_job_type_is_failed(server: FaktoryDouble) -> None:
    other = server.enqueue("SomethingElse", [1, 2])
    server.enqueue("legacy", [GOOD])
    async with worker_client(server) as client:
        assert (await claim(make_worker(client))).job.id == "job-1"
    assert server.fails == [
        {
            "errtype": "UnknownJobType",
            "jid": other,
            "message": "No handler registered for job type SomethingElse",
        }
    ]


async def test_job_without_jid_is_logged_and_skipped(
    server: FaktoryDouble, caplog: pytest.LogCaptureFixture
) -> None:
    server.enqueue_raw("default", {"jobtype": "legacy", "args": [GOOD]})
    server.enqueue("legacy", [GOOD])
    async with worker_client(server) as client:
        assert (await claim(make_worker(client))).job.id == "job-1"
    assert server.fails == [] and "without a jid" in caplog.text


async def test_structurally_broken_job_with_jid_is_failed(server: FaktoryDouble) -> None:
    server.enqueue_raw("default", {"jid": "broken-0001", "jobtype": "legacy", "args": "nope"})
    server.enqueue("legacy", [GOOD])
    async with worker_client(server) as client:
        assert (await claim(make_worker(client))).job.id == "job-1"
    assert (
        server.fails[0]["errtype"] == "InvalidJob" and "args: expected an array" in server.fails[0]["message"]
    )


async def test_claim_waits_through_empty_fetches(
    server: FaktoryDouble, autojump_clock: trio.testing.MockClock
) -> None:
    async with worker_client(server) as client:
        worker = make_worker(client)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(worker.claim)
            await trio.sleep(7)
            assert server.verbs().count("FETCH") == 4  # each FETCH blocks 2 s on the server
            server.enqueue("legacy", [GOOD])
            await server.wait_for(lambda: len(server.fetched) == 1)
        assert server.connections_opened == 1


async def test_fetch_retries_with_backoff_until_the_server_is_back(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trunner.faktory")
    async with faktory_double() as server, worker_client(server, timeout=1) as client:
        await server.stop()
        link = Link(client, max_down=900)
        worker = make_worker(client, backoff=Backoff(initial=1.0, maximum=8.0), link=link)
        result: list[ClaimedJob | None] = []

        done = trio.Event()

        async def claimer() -> None:
            result.append(await worker.claim())
            done.set()

        async with supervised(worker) as nursery:
            nursery.start_soon(claimer)
            await trio.sleep(600)
            assert not result and not worker.link.up
            server.enqueue("legacy", [GOOD])
            await server.start()
            await done.wait()
        assert result[0] is not None and result[0].job.id == "job-1"
    records = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert len([r for r in records if "lost the connection" in r.getMessage()]) == 1
    assert 5 <= len([r for r in records if "still disconnected" in r.getMessage()]) <= 11
    assert len([r for r in records if "reconnected to Faktory" in r.getMessage()]) == 1
    assert len(records) <= 13  # bounded over 10 minutes down: no line per attempt


async def test_ack_survives_a_server_restart_mid_job(
    server: FaktoryDouble, autojump_clock: trio.testing.MockClock
) -> None:
    jid = server.enqueue("legacy", [GOOD])
    async with worker_client(server) as client:
        worker = make_worker(client)
        claimed = await claim(worker)
        await server.restart()  # the pooled connection is now dead; the reservation survives
        assert claimed.finished is not None
        async with supervised(worker):
            await claimed.finished(JobOutcome(Outcome.SUCCESS))
    assert server.acks == [jid] and server.working == {}
    assert server.connections_opened == 2


async def test_ack_retries_while_the_server_is_down(
    server: FaktoryDouble, autojump_clock: trio.testing.MockClock
) -> None:
    jid = server.enqueue("legacy", [GOOD])
    async with worker_client(server, timeout=1) as client:
        worker = make_worker(client)
        claimed = await claim(worker)
        await server.stop()
        assert claimed.finished is not None
        async with supervised(worker) as nursery:
            nursery.start_soon(claimed.finished, JobOutcome(Outcome.FAILED))
            await trio.sleep(10)
            assert server.acks == []
            await server.start()
            await server.wait_for(lambda: bool(server.acks))
        assert server.acks == [jid]


async def test_an_ack_not_delivered_by_the_deadline_is_logged_and_counted(
    server: FaktoryDouble, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    server.enqueue("legacy", [GOOD])
    async with worker_client(server, timeout=1) as client:
        worker = make_worker(client)
        claimed = await claim(worker)
        await server.stop()
        assert claimed.finished is not None
        async with supervised(worker):
            with trio.move_on_after(30):  # the runner's --job-outcome-timeout
                await claimed.finished(JobOutcome(Outcome.SUCCESS))
        assert worker.outstanding == {}
    assert "could not ACK job" in caplog.text
    assert "Faktory will retry it when its reservation expires" in caplog.text
    sample = worker._metrics.registry.get_sample_value(
        "trunner_faktory_answers_undelivered_total", {"runner": "", "command": "ACK"}
    )
    assert sample == 1


async def test_release_unfinished_fails_claimed_jobs(server: FaktoryDouble) -> None:
    jid = server.enqueue("legacy", [GOOD])
    async with worker_client(server) as client:
        worker = make_worker(client)
        await claim(worker)
        await worker.release_unfinished()
        assert worker.outstanding == {}
    assert server.fails == [
        {"errtype": "Shutdown", "jid": jid, "message": "the runner shut down before job job-1 ran"}
    ]


# --- heartbeat ----------------------------------------------------------------------------------


async def test_heartbeat_every_interval(
    server: FaktoryDouble, autojump_clock: trio.testing.MockClock
) -> None:
    async with worker_client(server) as client:
        worker = make_worker(client, heartbeat_interval=15.0)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(worker.heartbeat, lambda: None)
            await trio.sleep(46)
            nursery.cancel_scope.cancel()
    assert len(server.beats) == 3
    assert all(b["wid"] == "testwid1" and "current_state" not in b for b in server.beats)
    assert all(isinstance(b["rss_kb"], int) for b in server.beats)


async def test_quiet_stops_fetching_but_not_beating(
    server: FaktoryDouble, autojump_clock: trio.testing.MockClock
) -> None:
    terminated: list[bool] = []
    async with worker_client(server) as client:
        worker = make_worker(client)
        async with client.connection():
            pass  # registers the worker process
        server.signal("testwid1", "quiet")
        await worker.beat_once(lambda: terminated.append(True))
        assert worker.state == "quiet" and not terminated
        server.enqueue("legacy", [GOOD])
        fetches = server.verbs().count("FETCH")
        with trio.move_on_after(60):
            await worker.claim()
            pytest.fail("a quiet worker must not claim")
        assert server.verbs().count("FETCH") == fetches
        await worker.beat_once(lambda: terminated.append(True))
        assert server.beats[-1]["current_state"] == "quiet"
        server.signal("testwid1", "terminate")
        await worker.beat_once(lambda: terminated.append(True))
        await worker.beat_once(lambda: terminated.append(True))
        assert worker.state == "terminate" and terminated == [True]


async def test_local_shutdown_is_told_to_the_server(server: FaktoryDouble) -> None:
    async with worker_client(server) as client:
        worker = make_worker(client)
        terminated: list[bool] = []
        await worker.beat_once(lambda: terminated.append(True), lambda: True)
        assert server.beats[-1]["current_state"] == "terminate"
        # the server echoes the state back; asking the runner to shut down again is harmless
        assert terminated == [True] and server.workers["testwid1"].state == "terminate"


async def test_unknown_worker_registers_again(
    server: FaktoryDouble, caplog: pytest.LogCaptureFixture
) -> None:
    async with worker_client(server) as client:
        worker = make_worker(client)
        await worker.beat_once(lambda: None)
        server.workers.clear()  # the server reaped us after a minute without BEAT
        await worker.beat_once(lambda: None)
        assert server.workers["testwid1"].beats == 1
        assert [b["wid"] for b in server.beats] == ["testwid1"] * 3
    assert "no longer knows worker testwid1" in caplog.text


async def test_heartbeat_survives_errors(
    server: FaktoryDouble, autojump_clock: trio.testing.MockClock
) -> None:
    async with worker_client(server, timeout=1) as client:
        worker = make_worker(client, heartbeat_interval=5.0)
        server.inject("BEAT", "reject", message="boom")
        server.inject("BEAT", "drop")
        async with supervised(worker) as nursery:
            nursery.start_soon(worker.heartbeat, lambda: None)
            await trio.sleep(16)
            nursery.cancel_scope.cancel()
        assert server.verbs().count("BEAT") == 3 and len(server.beats) == 1
        assert worker.state == ""


async def test_unknown_server_state_is_ignored(server: FaktoryDouble) -> None:
    async with worker_client(server) as client:
        worker = make_worker(client)
        worker.apply_server_state("sleepy", lambda: None)
        assert worker.state == ""


async def test_a_job_fetched_as_claiming_is_cancelled_is_handed_back(
    server: FaktoryDouble, autojump_clock: trio.testing.MockClock
) -> None:
    jid = server.enqueue("legacy", [GOOD])
    server.inject("FETCH", "delay", seconds=1)
    async with worker_client(server) as client:
        worker = make_worker(client)
        with trio.move_on_after(0.5) as scope:
            await worker.claim()
        assert scope.cancelled_caught
        assert worker.outstanding == {}
    assert [f["jid"] for f in server.fails] == [jid] and server.fails[0]["errtype"] == "Shutdown"
    assert server.working == {} and server.retries[0]["jid"] == jid
