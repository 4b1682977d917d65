"""The pending-job source on its own: tokens, poll interval, immediate re-poll, error backoff,
cancellation."""

from __future__ import annotations

import itertools
import random
import threading
from typing import Any

import pytest
import trio
import trio.testing

from tests.doubles.opslevel import HttpStatus, OpsLevelDouble, PayloadErrors, Runner, job_payload
from trunner.opslevel import client as opslevel_client
from trunner.opslevel.client import OpsLevelClient
from trunner.opslevel.metrics import ApiMetrics
from trunner.opslevel.settings import PollSettings
from trunner.opslevel.sink import OpsLevelSink
from trunner.opslevel.source import PendingJobSource


@pytest.fixture
def source(client: OpsLevelClient, opslevel: OpsLevelDouble, api_metrics: ApiMetrics) -> PendingJobSource:
    opslevel.runners["runner-1"] = Runner("runner-1", "")
    return PendingJobSource(
        client,
        runner_id="runner-1",
        settings=PollSettings(poll_interval=10.0, poll_error_backoff_max=120.0),
        metrics=api_metrics,
        report_timeout=30.0,
        rng=random.Random(3),
    )


def poll_times(opslevel: OpsLevelDouble) -> list[float]:
    return [c.at for c in opslevel.calls_to("RunnerGetPendingJob")]


async def test_tokens_start_null_and_follow_the_api(
    source: PendingJobSource, opslevel: OpsLevelDouble, autojump_clock: trio.testing.MockClock
) -> None:
    for k in range(3):
        opslevel.add_job(job_payload(f"job-{k}", ["true"]))
    for _ in range(3):
        await source.claim()
    tokens = [c.variables["token"] for c in opslevel.calls_to("RunnerGetPendingJob")]
    assert tokens == [None, "1", "2"]
    assert all(c.variables["id"] == "runner-1" for c in opslevel.calls_to("RunnerGetPendingJob"))


async def test_jobs_waiting_are_claimed_back_to_back(
    source: PendingJobSource, opslevel: OpsLevelDouble, autojump_clock: trio.testing.MockClock
) -> None:
    opslevel.add_job(
        job_payload(
            "job-1", ["true"], variables=[{"key": "S", "value": "v", "sensitive": True, "scope": "main"}]
        )
    )
    opslevel.add_job(job_payload("job-2", ["true"]))
    first = await source.claim()
    second = await source.claim()
    assert first is not None and second is not None
    assert (first.job.id, second.job.id) == ("job-1", "job-2")
    assert first.job.secrets() == ("v",)
    assert isinstance(first.sink, OpsLevelSink)
    assert trio.current_time() < 0.1


async def test_an_empty_poll_waits_the_poll_interval(
    source: PendingJobSource, opslevel: OpsLevelDouble, autojump_clock: trio.testing.MockClock
) -> None:
    claimed = []

    async def claim_one() -> None:
        claimed.append(await source.claim())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(claim_one)
        await trio.sleep(25)
        opslevel.add_job(job_payload("job-late", ["true"]))
    assert poll_times(opslevel) == pytest.approx([0.0, 10.0, 20.0, 30.0], abs=0.05)
    assert claimed[0].job.id == "job-late"


async def test_no_job_means_null_or_an_empty_id(
    source: PendingJobSource, opslevel: OpsLevelDouble, autojump_clock: trio.testing.MockClock
) -> None:
    opslevel.add_job({**job_payload("", ["true"]), "id": ""})
    opslevel.add_job(job_payload("job-real", ["true"]))
    claimed = await source.claim()
    assert claimed is not None and claimed.job.id == "job-real"
    assert poll_times(opslevel) == pytest.approx([0.0, 10.0], abs=0.05)


async def test_error_waits_double_from_the_interval_with_jitter_up_to_the_cap(
    source: PendingJobSource,
) -> None:
    for failures, ceiling in [(1, 10), (2, 20), (3, 40), (4, 80), (5, 120), (6, 120), (60, 120)]:
        waits = [source.error_wait(failures, None) for _ in range(200)]
        assert ceiling / 2 <= min(waits) and max(waits) <= ceiling
        assert max(waits) - min(waits) > ceiling / 4


async def test_error_waits_honour_retry_after_up_to_the_cap(source: PendingJobSource) -> None:
    assert source.error_wait(1, 90.0) == 90.0
    assert source.error_wait(1, 500.0) == 120.0
    assert 5.0 <= source.error_wait(1, 1.0) <= 10.0


async def test_poll_errors_back_off_keep_the_token_and_are_counted(
    source: PendingJobSource,
    opslevel: OpsLevelDouble,
    registry: object,
    autojump_clock: trio.testing.MockClock,
) -> None:
    opslevel.add_job(job_payload("job-0", ["true"]))
    await source.claim()
    opslevel.inject(HttpStatus(500), operation="RunnerGetPendingJob", times=2)
    opslevel.inject(PayloadErrors((("Runner is busy", ("base",)),)), operation="RunnerGetPendingJob", times=1)
    opslevel.add_job(job_payload("job-1", ["true"]))
    claimed = await source.claim()
    assert claimed is not None and claimed.job.id == "job-1"
    times = poll_times(opslevel)
    gaps = [b - a for a, b in itertools.pairwise(times[1:])]
    assert 5 <= gaps[0] <= 10 and 10 <= gaps[1] <= 20 and 20 <= gaps[2] <= 40
    tokens = [c.variables["token"] for c in opslevel.calls_to("RunnerGetPendingJob")]
    assert tokens == [None, "1", "1", "1", "1"]
    assert registry.get_sample_value("trunner_api_poll_errors_total", {"runner": "test-runner"}) == 3  # type: ignore[attr-defined]


async def test_claim_is_cancellable_while_waiting(
    source: PendingJobSource, opslevel: OpsLevelDouble, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.move_on_after(15):
        await source.claim()
    await trio.sleep(100)
    assert poll_times(opslevel) == pytest.approx([0.0, 10.0], abs=0.05)


async def test_claim_is_cancellable_while_backing_off(
    source: PendingJobSource, opslevel: OpsLevelDouble, autojump_clock: trio.testing.MockClock
) -> None:
    opslevel.inject(HttpStatus(503), operation="RunnerGetPendingJob", times=None)
    with trio.move_on_after(3):
        await source.claim()
    assert trio.current_time() == pytest.approx(3.0, abs=0.05)
    assert len(poll_times(opslevel)) == 1


async def test_a_job_answer_over_the_size_limit_names_the_job_and_reports_it_failed(
    source: PendingJobSource,
    opslevel: OpsLevelDouble,
    autojump_clock: trio.testing.MockClock,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The id comes after the commands in the answer (the query's selection order): it is found by
    scanning what streams by past the limit."""
    monkeypatch.setattr(opslevel_client, "MAX_RESPONSE_BYTES", 64 * 1024)
    opslevel.add_job(job_payload("job-huge", ["echo " + "x" * 1000] * 300))
    opslevel.add_job(job_payload("job-2", ["true"]))
    claimed = await source.claim()
    assert claimed is not None and claimed.job.id == "job-2"
    [outcome] = opslevel.outcomes["job-huge"]
    assert outcome.outcome == "failed"
    message = (
        "the job sent by the API cannot be run: its definition is larger than 65536 bytes (64 KiB), the most "
        "this runner reads"
    )
    assert opslevel.job_lines("job-huge")[-1].endswith(message)
    assert f"job job-huge rejected: {message}" in caplog.text


async def test_an_oversized_answer_naming_no_job_is_a_poll_error_that_says_so(
    source: PendingJobSource,
    opslevel: OpsLevelDouble,
    autojump_clock: trio.testing.MockClock,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(opslevel_client, "MAX_RESPONSE_BYTES", 64 * 1024)
    monkeypatch.setattr(opslevel_client, "MAX_SCANNED_BYTES", 128 * 1024)
    opslevel.add_job(job_payload("job-far", ["echo " + "x" * 1000] * 300))
    opslevel.add_job(job_payload("job-2", ["true"]))
    claimed = await source.claim()
    assert claimed is not None and claimed.job.id == "job-2"
    assert "job-far" not in opslevel.outcomes
    assert (
        "the API's answer to a poll is larger than 65536 bytes and names no single job (ids found: none)"
        in (caplog.text)
    )


async def test_a_large_job_answer_is_decoded_off_the_event_loop(
    source: PendingJobSource, opslevel: OpsLevelDouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[tuple[str, int]] = []
    decode = OpsLevelClient._payload

    def recording(operation: Any, status: int, headers: Any, body: bytes) -> Any:
        threads.append((threading.current_thread().name, len(body)))
        return decode(operation, status, headers, body)

    monkeypatch.setattr(OpsLevelClient, "_payload", staticmethod(recording))
    opslevel.add_job(
        job_payload("job-big", ["true"], files=[{"name": "f", "contents": "x" * (2 * 1024 * 1024)}])
    )
    opslevel.add_job(job_payload("job-small", ["true"]))
    big = await source.claim()
    small = await source.claim()
    assert big is not None and big.job.files[0].contents == "x" * (2 * 1024 * 1024)
    assert small is not None and small.job.id == "job-small"
    main = threading.main_thread().name
    assert [name != main for name, size in threads] == [
        size > opslevel_client.OFF_LOOP_BYTES for _, size in threads
    ]
    assert any(name != main for name, _ in threads)
