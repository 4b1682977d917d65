"""The OpsLevel sink: runnerAppendJobLog and runnerReportJobOutcome payloads, and failures as ShipError."""

from __future__ import annotations

import base64
import json

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.doubles.opslevel import HttpStatus, OpsLevelDouble, PayloadErrors, Reset, Runner, Stall
from trunner.logs.batch import Batch
from trunner.models import JobOutcome, Outcome, OutcomeVariable
from trunner.net.retry import ShipError
from trunner.opslevel.client import OpsLevelClient, encode_body
from trunner.opslevel.operations import RUNNER_APPEND_JOB_LOG, AppendJobLogVariables, RunnerAppendJobLogInput
from trunner.opslevel.sink import PART_SIZE, OpsLevelSink, append_body, parts_of

SENT_NS = 1_656_637_200_123_456_789


def batch_of(lines: list[bytes], *, per_block: int = 3) -> Batch:
    batch = Batch(seq=0)
    for start in range(0, len(lines), per_block):
        block = lines[start : start + per_block]
        batch.add_block(b"\n".join(block), len(block))
    return batch


@pytest.fixture
def sink(client: OpsLevelClient, opslevel: OpsLevelDouble) -> OpsLevelSink:
    opslevel.runners["runner-9"] = Runner("runner-9", "")
    opslevel.assigned["job-1"] = "runner-9"
    return OpsLevelSink(client, runner_id="runner-9", job_id="job-1", clock_ns=lambda: SENT_NS)


line_bytes = st.binary(max_size=300).map(lambda b: b.replace(b"\n", b" "))


@settings(max_examples=200, deadline=None)
@given(st.lists(line_bytes, min_size=1, max_size=40), st.integers(min_value=1, max_value=5))
def test_streamed_append_body_equals_the_plain_encoding(lines: list[bytes], per_block: int) -> None:
    batch = batch_of(lines, per_block=per_block)
    chunk = tuple(base64.b64encode(line).decode() for line in batch.lines())
    expected = encode_body(
        RUNNER_APPEND_JOB_LOG,
        AppendJobLogVariables(RunnerAppendJobLogInput("r", "j", "2022-07-01T01:00:00Z", chunk)),
    )
    body = append_body("r", "j", "2022-07-01T01:00:00Z", batch)
    assert b"".join(body.pieces()) == expected
    assert body.length == len(expected)


def test_a_large_batch_is_produced_block_by_block() -> None:
    lines = [(b"%06d " % i) + b"x" * 200 for i in range(2000)]
    body = append_body("r", "j", "2022-07-01T01:00:00Z", batch_of(lines, per_block=100))
    pieces = list(body.pieces())
    assert max(len(p) for p in pieces) < PART_SIZE * 4 // 3 + 300
    assert sum(len(p) for p in pieces) == body.length
    decoded = json.loads(b"".join(pieces))["variables"]["input"]["logChunk"]
    assert [base64.b64decode(x) for x in decoded] == lines


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), min_size=1, max_size=2000))
def test_parts_keep_every_line(lines: list[bytes]) -> None:
    block = b"\n".join(lines)
    assert [line for part in parts_of(block) for line in part.split(b"\n")] == lines


def test_a_line_longer_than_a_part_stays_whole() -> None:
    lines = [b"a" * 10, b"b" * (PART_SIZE * 2), b"", b"c"]
    assert [line for part in parts_of(b"\n".join(lines)) for line in part.split(b"\n")] == lines


def test_an_empty_batch_sends_an_empty_chunk() -> None:
    body = append_body("r", "j", "2022-07-01T01:00:00Z", Batch(seq=3))
    assert b"".join(body.pieces()) == encode_body(
        RUNNER_APPEND_JOB_LOG,
        AppendJobLogVariables(RunnerAppendJobLogInput("r", "j", "2022-07-01T01:00:00Z", ())),
    )


async def test_ship_sends_each_line_as_padded_standard_base64(
    sink: OpsLevelSink, opslevel: OpsLevelDouble
) -> None:
    lines = ["2026-01-01T00:00:00Z [1] hello", "", "ünïcode ✓", "a+b/c?>>>"]
    await sink.ship(batch_of([line.encode() for line in lines]))
    [call] = opslevel.calls
    data = call.variables["input"]
    assert data["runnerId"] == "runner-9"
    assert data["runnerJobId"] == "job-1"
    assert data["sentAt"] == "2022-07-01T01:00:00.123456789Z"
    assert data["logChunk"] == [base64.standard_b64encode(line.encode()).decode() for line in lines]
    assert opslevel.job_lines("job-1") == lines
    assert int(call.headers["content-length"]) == len(call.body)


async def test_report_sends_the_outcome_and_its_variables(
    sink: OpsLevelSink, opslevel: OpsLevelDouble
) -> None:
    await sink.report(
        JobOutcome(Outcome.FAILED, "exit 2", 2, (OutcomeVariable("k", "v"), OutcomeVariable("multi", "a\nb")))
    )
    [call] = opslevel.calls
    assert call.variables == {
        "input": {
            "runnerId": "runner-9",
            "runnerJobId": "job-1",
            "outcome": "failed",
            "outcomeVariables": [{"key": "k", "value": "v"}, {"key": "multi", "value": "a\nb"}],
        }
    }
    assert opslevel.outcomes["job-1"][0].variables == (("k", "v"), ("multi", "a\nb"))


async def test_report_without_variables_leaves_the_key_out(
    sink: OpsLevelSink, opslevel: OpsLevelDouble
) -> None:
    await sink.report(JobOutcome(Outcome.SUCCESS))
    assert b"outcomeVariables" not in opslevel.calls[0].body
    assert opslevel.outcomes["job-1"][0].outcome == "success"


async def test_retryable_failures_carry_retry_after_and_are_not_retried_here(
    sink: OpsLevelSink, opslevel: OpsLevelDouble
) -> None:
    opslevel.inject(HttpStatus(503, retry_after="12"))
    with pytest.raises(ShipError) as caught:
        await sink.ship(batch_of([b"line"]))
    assert caught.value.retryable
    assert caught.value.retry_after == 12.0
    assert "HTTP 503" in str(caught.value)
    assert len(opslevel.calls) == 1


async def test_payload_errors_are_final_with_the_apis_words(
    sink: OpsLevelSink, opslevel: OpsLevelDouble
) -> None:
    opslevel.inject(PayloadErrors((("Job is already complete", ("input", "runnerJobId")),)))
    with pytest.raises(ShipError) as caught:
        await sink.report(JobOutcome(Outcome.SUCCESS))
    assert not caught.value.retryable
    assert "'input.runnerJobId' Job is already complete" in str(caught.value)


async def test_a_job_the_api_does_not_know_is_a_final_error(
    client: OpsLevelClient, opslevel: OpsLevelDouble
) -> None:
    opslevel.runners["runner-9"] = Runner("runner-9", "")
    stranger = OpsLevelSink(client, runner_id="runner-9", job_id="job-unknown")
    with pytest.raises(ShipError, match="Job not found") as caught:
        await stranger.ship(batch_of([b"x"]))
    assert not caught.value.retryable


async def test_a_reset_connection_is_retryable(sink: OpsLevelSink, opslevel: OpsLevelDouble) -> None:
    opslevel.inject(Reset())
    with pytest.raises(ShipError) as caught:
        await sink.ship(batch_of([b"line"]))
    assert caught.value.retryable
    assert caught.value.retry_after is None


async def test_a_stalled_append_fails_after_the_api_timeout(
    sink: OpsLevelSink, opslevel: OpsLevelDouble, autojump_clock: trio.testing.MockClock
) -> None:
    opslevel.inject(Stall())
    started = trio.current_time()
    with pytest.raises(ShipError, match="no response within 30 s") as caught:
        await sink.ship(batch_of([b"line"]))
    assert caught.value.retryable
    assert trio.current_time() - started == pytest.approx(30.0, abs=0.1)
    assert len(opslevel.calls) == 1
