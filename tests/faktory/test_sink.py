"""The Faktory sink's pushes to queue ``app``, byte for byte, and its error mapping."""

from __future__ import annotations

import base64
import datetime as dt
import json

import pytest
import trio

from tests.doubles.faktory import FaktoryDouble, faktory_double
from tests.faktory.conftest import worker_client
from trunner.faktory.sink import FaktorySink
from trunner.logs.batch import Batch
from trunner.models import JobOutcome, Outcome, OutcomeVariable
from trunner.net.retry import ShipError

SENT_AT = dt.datetime(2026, 7, 1, 12, 0, 0, 123456, tzinfo=dt.UTC)


def batch_of(*lines: str) -> Batch:
    batch = Batch(seq=0)
    batch.add_block("\n".join(lines).encode(), len(lines))
    return batch


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


async def test_append_job_log_wire_json(server: FaktoryDouble) -> None:
    async with worker_client(server) as client:
        sink = FaktorySink(client, runner_job_id="job-225", clock=lambda: SENT_AT)
        await sink.ship(batch_of("2026-07-01T12:00:00Z [1] hello", "ünïcode ✓", ""))
    [raw] = server.pushed_raw
    jid = json.loads(raw)["jid"]
    assert len(jid) == 16
    assert raw == (
        f'{{"retry":25,"jid":"{jid}","queue":"app","jobtype":"Runners::Faktory::AppendJobLog",'
        '"created_at":"2026-07-01T12:00:00.123456Z","args":[{"runnerId":"faktory","runnerJobId":"job-225",'
        '"sentAt":"2026-07-01T12:00:00.123456Z","logChunk":['
        f'"{b64("2026-07-01T12:00:00Z [1] hello")}","{b64("ünïcode ✓")}",""]}}]}}'
    )


async def test_report_job_outcome_wire_json(server: FaktoryDouble) -> None:
    async with worker_client(server) as client:
        sink = FaktorySink(client, runner_job_id="job-225", clock=lambda: SENT_AT)
        await sink.report(
            JobOutcome(
                Outcome.SUCCESS,
                "ignored on this wire",
                0,
                (OutcomeVariable("k", "v"), OutcomeVariable("multi", "a\nb")),
            )
        )
        await sink.report(JobOutcome(Outcome.EXECUTION_TIMEOUT))
    with_vars, without = server.pushed_raw
    jid1, jid2 = json.loads(with_vars)["jid"], json.loads(without)["jid"]
    assert with_vars == (
        f'{{"retry":25,"jid":"{jid1}","queue":"app","jobtype":"Runners::Faktory::ReportJobOutcome",'
        '"created_at":"2026-07-01T12:00:00.123456Z","args":[{"runnerId":"faktory","runnerJobId":"job-225",'
        '"outcome":"success","outcomeVariables":[{"key":"k","value":"v"},{"key":"multi","value":"a\\nb"}]}]}'
    )
    assert without == (
        f'{{"retry":25,"jid":"{jid2}","queue":"app","jobtype":"Runners::Faktory::ReportJobOutcome",'
        '"created_at":"2026-07-01T12:00:00.123456Z","args":[{"runnerId":"faktory","runnerJobId":"job-225",'
        '"outcome":"execution_timeout"}]}'
    )
    assert server.queues["app"][0]["jobtype"] == "Runners::Faktory::ReportJobOutcome"


async def test_empty_runner_job_id_is_an_empty_string(server: FaktoryDouble) -> None:
    async with worker_client(server) as client:
        await FaktorySink(client, runner_job_id="").report(JobOutcome(Outcome.FAILED))
    assert server.pushed[0]["args"][0]["runnerJobId"] == ""


async def test_inside_a_batch_each_push_reopens_it(server: FaktoryDouble) -> None:
    server.batches.add("bid-7")
    async with worker_client(server) as client:
        sink = FaktorySink(client, runner_job_id="j", bid="bid-7", clock=lambda: SENT_AT)
        await sink.ship(batch_of("a"))
        await sink.report(JobOutcome(Outcome.SUCCESS))
    pairs = [(c.conn, c.verb, c.argument.split(" ")[0]) for c in server.commands if c.verb != "END"]
    assert [(verb, arg) for _, verb, arg in pairs] == [
        ("BATCH", "OPEN"),
        ("PUSH", pairs[1][2]),
        ("BATCH", "OPEN"),
        ("PUSH", pairs[3][2]),
    ]
    assert pairs[0][0] == pairs[1][0]  # BATCH OPEN and its PUSH share one connection
    assert server.batch_opens == ["bid-7", "bid-7"]
    for raw in server.pushed_raw:
        assert raw.startswith('{"retry":25,"custom":{"bid":"bid-7"},"jid":"')
    assert not any(c.verb == "BATCH" and c.argument.startswith("COMMIT") for c in server.commands)


@pytest.mark.parametrize(
    ("setup", "retryable", "message", "maybe_delivered"),
    [
        ("no-such-batch", False, "No such batch", False),
        ("oss-server", False, "only available in Faktory Enterprise", False),
        ("reject-push", False, "Faktory refused: ERR payload rejected", False),
        ("shutting-down", True, "shutdown in progress", False),
        ("drop", True, "the server closed the connection", True),
        ("slow", True, "no reply to PUSH within 1s", True),
    ],
)
async def test_push_failures_map_to_ship_errors(
    autojump_clock: trio.testing.MockClock, setup: str, retryable: bool, message: str, maybe_delivered: bool
) -> None:
    async with faktory_double(enterprise=setup != "oss-server") as server:
        bid = "missing" if setup == "no-such-batch" else ("b" if setup == "oss-server" else "")
        if setup == "reject-push":
            server.inject("PUSH", "reject", message="payload rejected")
        if setup == "shutting-down":
            server.inject("PUSH", "reject", message="shutdown in progress")
        if setup == "drop":
            server.inject("PUSH", "drop")
        if setup == "slow":
            server.inject("PUSH", "delay", seconds=5)
        async with worker_client(server, timeout=1) as client:
            sink = FaktorySink(client, runner_job_id="j", bid=bid)
            with pytest.raises(ShipError, match=message) as caught:
                await sink.ship(batch_of("x"))
            assert caught.value.retryable is retryable
            assert caught.value.maybe_delivered is maybe_delivered
            assert "AppendJobLog (1 lines)" in str(caught.value)
            # the next attempt works once the fault is gone (a broken connection is replaced)
            if retryable:
                await sink.ship(batch_of("y"))
                assert server.pushed[-1]["args"][0]["logChunk"] == [b64("y")]


async def test_unreachable_server_is_retryable(autojump_clock: trio.testing.MockClock) -> None:
    async with faktory_double() as server:
        client = worker_client(server, timeout=1)
        await server.stop()
        with pytest.raises(ShipError, match="cannot connect") as caught:
            await FaktorySink(client, runner_job_id="j").report(JobOutcome(Outcome.SUCCESS))
        assert caught.value.retryable
        assert not caught.value.maybe_delivered
        await client.aclose()
