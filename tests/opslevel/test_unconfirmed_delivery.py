"""An append the API carried out but never answered: the retry may deliver it twice, and if every
attempt fails its lines are announced as not confirmed, never as dropped, and counted apart."""

from __future__ import annotations

import re
import socket

import pytest
import trio
import trio.testing
from prometheus_client import CollectorRegistry

from tests.doubles.executors import Chunk, ScriptedExecutor
from tests.doubles.opslevel import (
    HttpStatus,
    OpsLevelDouble,
    Reset,
    ResetAfterCommit,
    Runner,
    StallAfterCommit,
)
from trunner.job import run_job
from trunner.logs.batch import Batch
from trunner.logs.metrics import LogMetrics
from trunner.logs.settings import LogSettings
from trunner.models import RunnerJob
from trunner.net.retry import RetryPolicy, ShipError
from trunner.opslevel.client import OpsLevelClient
from trunner.opslevel.sink import OpsLevelSink

APPEND = "RunnerAppendJobLog"
DROPPED = re.compile(r".*\[trunner: \d+ lines \(\d+ bytes\) of \w+ dropped: .*\]")
UNCONFIRMED = re.compile(
    r".*\[trunner: (\d+) lines \((\d+) bytes\) of stdout not confirmed, may have been delivered: (.*)\]"
)


def numbered(count: int, start: int = 0) -> list[str]:
    return [f"{i:08d} " + "z" * 90 for i in range(start, start + count)]


@pytest.fixture
def sink(client: OpsLevelClient, opslevel: OpsLevelDouble) -> OpsLevelSink:
    opslevel.runners["runner-9"] = Runner("runner-9", "")
    opslevel.assigned["job-1"] = "runner-9"
    return OpsLevelSink(client, runner_id="runner-9", job_id="job-1")


async def run(sink: OpsLevelSink, first: list[str], then: list[str]) -> tuple[str, LogMetrics]:
    settings = LogSettings(
        job_pod_log_max_size=1_000_000,
        job_log_buffer="memory",
        log_ship_retry_timeout=60.0,
        log_flush_max_time=1e6,
    )
    metrics = LogMetrics(CollectorRegistry())
    chunks = [
        Chunk("".join(line + "\n" for line in first).encode()),
        Chunk("".join(line + "\n" for line in then).encode(), delay=120.0),
    ]
    outcome = await run_job(
        RunnerJob(id="job-1"),
        executor=ScriptedExecutor(chunks),
        sink=sink,
        settings=settings,
        metrics=metrics,
    )
    return outcome.message, metrics


@pytest.mark.parametrize("fault", [StallAfterCommit(), ResetAfterCommit()])
async def test_an_append_committed_but_never_answered_is_not_announced_as_dropped(
    sink: OpsLevelSink, opslevel: OpsLevelDouble, autojump_clock: trio.testing.MockClock, fault: object
) -> None:
    first, then = numbered(2000), numbered(10, 2000)
    # Every attempt at the first batch within its 60 s is carried out and not answered.
    opslevel.inject(fault, operation=APPEND, times=None)  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:

        async def heal() -> None:
            await trio.sleep(61.0)
            opslevel.clear_faults()

        nursery.start_soon(heal)
        message, metrics = await run(sink, first, then)
    bodies = [line.split("] ", 1)[1] for line in opslevel.job_lines("job-1")]
    assert not [body for body in bodies if DROPPED.fullmatch(body)]
    # A batch that carried a marker may itself be committed twice: count each marker once.
    markers = [m for m in map(UNCONFIRMED.fullmatch, dict.fromkeys(bodies)) if m]
    unconfirmed = sum(int(m[1]) for m in markers)
    assert unconfirmed > 0
    assert sum(int(m[2]) for m in markers) == 100 * unconfirmed
    assert all(m[3].startswith("log delivery failed: ") for m in markers)
    # Every line is there, some twice (committed by each attempt), in the order printed.
    lines = [body for body in bodies if not UNCONFIRMED.fullmatch(body)]
    assert list(dict.fromkeys(lines)) == first + then
    assert len(lines) > len(first + then)
    assert (
        f"{unconfirmed} log lines were not confirmed (no answer to their batch): they may have been delivered"
        in message
    )
    assert "could not be delivered" not in message
    assert metrics.lines_unconfirmed._value.get() == unconfirmed
    assert metrics.lines_dropped._value.get() == 0
    assert metrics.batches_resent._value.get() >= 1


async def test_an_append_the_api_did_not_receive_whole_is_dropped_as_before(
    sink: OpsLevelSink, opslevel: OpsLevelDouble, autojump_clock: trio.testing.MockClock
) -> None:
    opslevel.inject(HttpStatus(503), operation=APPEND, times=None)
    async with trio.open_nursery() as nursery:

        async def heal() -> None:
            await trio.sleep(61.0)
            opslevel.clear_faults()

        nursery.start_soon(heal)
        message, metrics = await run(sink, numbered(2000), numbered(10, 2000))
    bodies = [line.split("] ", 1)[1] for line in opslevel.job_lines("job-1")]
    assert not [body for body in bodies if UNCONFIRMED.fullmatch(body)]
    assert [body for body in bodies if DROPPED.fullmatch(body)]
    assert re.fullmatch(r"\d+ log lines could not be delivered", message)
    assert metrics.lines_unconfirmed._value.get() == 0


@pytest.mark.parametrize(
    ("fault", "maybe"),
    [
        (StallAfterCommit(), True),
        (ResetAfterCommit(), True),
        (Reset(), True),
        (HttpStatus(503), False),
        (HttpStatus(502), True),
        (HttpStatus(504), True),
        (HttpStatus(429), False),
    ],
)
async def test_which_failures_may_have_delivered_the_batch(
    sink: OpsLevelSink,
    opslevel: OpsLevelDouble,
    autojump_clock: trio.testing.MockClock,
    fault: object,
    maybe: bool,
) -> None:
    opslevel.inject(fault, operation=APPEND)  # type: ignore[arg-type]
    batch = Batch(seq=0)
    batch.add_block(b"line", 1)
    with pytest.raises(ShipError) as caught:
        await sink.ship(batch)
    assert caught.value.maybe_delivered is maybe


async def test_an_append_that_never_went_out_was_not_delivered(
    api_metrics, autojump_clock: trio.testing.MockClock
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with OpsLevelClient(
        endpoint=f"http://127.0.0.1:{port}/graphql",
        token="t",
        timeout=30.0,
        metrics=api_metrics,
        retry=RetryPolicy(max_retries=0, total=0.0),
    ) as client:
        batch = Batch(seq=0)
        batch.add_block(b"line", 1)
        with pytest.raises(ShipError, match="connection failed") as caught:
            await OpsLevelSink(client, runner_id="r", job_id="j").ship(batch)
    assert caught.value.retryable
    assert not caught.value.maybe_delivered
