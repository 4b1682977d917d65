"""The Go runner's metric names, types, labels and buckets, next to trunner's own, as /metrics
serves them."""

from __future__ import annotations

import httpx
import pytest
import trio
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from tests.doubles.command_executor import CommandExecutor
from tests.doubles.faktory import faktory_double
from tests.doubles.opslevel import job_payload
from tests.faktory.conftest import worker_client
from tests.faktory.test_sink import batch_of
from tests.opslevel.harness import start_mode
from tests.opslevel.test_opslevel_mode import FAST
from trunner.faktory.metrics import FaktoryMetrics
from trunner.faktory.sink import FaktorySink
from trunner.models import Outcome
from trunner.net.retry import ShipError
from trunner.observability.gometrics import exposition
from trunner.observability.health import route
from trunner.observability.metrics import RunnerMetrics

GO_BUCKETS = ["5", "30", "60", "120", "300", "600", "900", "1200", "+Inf"]


def go_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if "opslevel_runner_" in line]


def test_the_go_families_are_exposed_as_the_go_client_writes_them() -> None:
    metrics = RunnerMetrics(runner_id="runner-7")
    for outcome, seconds in ((Outcome.SUCCESS, 3.0), (Outcome.SUCCESS, 900.0), (Outcome.FAILED, 4000.0)):
        metrics.job_started()
        metrics.job_finished(outcome, seconds)
    metrics.job_started()
    text = route(b"GET", b"/metrics", metrics.registry, lambda: True).body.decode()
    lines = go_lines(text)
    for name, kind in (
        ("jobs_started", "counter"),
        ("jobs_finished", "counter"),
        ("jobs_processing", "gauge"),
        ("jobs_duration", "histogram"),
        ("jobs_enqueue_failed", "counter"),
        ("jobs_enqueue_batch_failed", "counter"),
    ):
        assert f"# TYPE opslevel_runner_{name} {kind}" in lines
    assert 'opslevel_runner_jobs_started{runner="runner-7"} 4.0' in lines
    assert 'opslevel_runner_jobs_processing{runner="runner-7"} 1.0' in lines
    assert 'opslevel_runner_jobs_finished{outcome="success",runner="runner-7"} 2.0' in lines
    assert 'opslevel_runner_jobs_finished{outcome="failed",runner="runner-7"} 1.0' in lines
    buckets = [line for line in lines if line.startswith("opslevel_runner_jobs_duration_bucket")]
    assert [line.split('le="')[1].split('"')[0] for line in buckets] == GO_BUCKETS
    assert [float(line.rsplit(" ", 1)[1]) for line in buckets] == [1, 1, 1, 1, 1, 1, 2, 2, 3]
    assert 'opslevel_runner_jobs_duration_sum{runner="runner-7"} 4903.0' in lines
    assert 'opslevel_runner_jobs_duration_count{runner="runner-7"} 3.0' in lines
    assert not [line for line in lines if "_total" in line or "_created" in line]
    # trunner's own families stay as they were.
    assert 'trunner_jobs_started_total{runner="runner-7"} 4.0' in text
    # Prometheus's own parser reads the families with their types.
    families = {f.name: f.type for f in text_string_to_metric_families(text) if f.name.startswith("opslevel")}
    assert families["opslevel_runner_jobs_duration"] == "histogram"
    assert families["opslevel_runner_jobs_processing"] == "gauge"


def test_a_registry_without_go_families_is_unchanged() -> None:
    registry = CollectorRegistry()
    assert exposition(registry) == b""


async def test_api_mode_serves_the_go_names_with_the_runner_id(nursery, opslevel, autojump_clock) -> None:
    opslevel.add_job(job_payload("job-1", ["say hello", "exit 3"]))
    running = await start_mode(nursery, opslevel, CommandExecutor(), **FAST)
    with trio.fail_after(60):
        await opslevel.wait_until(lambda: "job-1" in opslevel.outcomes)

    async with httpx.AsyncClient() as client:
        text = (await client.get(running.metrics_url + "/metrics")).text
    lines = go_lines(text)
    assert 'opslevel_runner_jobs_started{runner="runner-1"} 1.0' in lines
    assert 'opslevel_runner_jobs_finished{outcome="failed",runner="runner-1"} 1.0' in lines
    assert 'opslevel_runner_jobs_processing{runner="runner-1"} 0.0' in lines
    assert await running.stop() == 0


@pytest.mark.parametrize(("bid", "counter"), [("", "enqueue_failed"), ("bid-1", "enqueue_batch_failed")])
async def test_failed_faktory_pushes_count_as_the_go_runner_counts_them(autojump_clock, bid, counter) -> None:
    metrics = RunnerMetrics(runner_id="faktory")
    async with faktory_double() as server:
        server.batches.add("bid-1")
        server.inject("PUSH", "reject", message="payload rejected")
        async with worker_client(server, timeout=1) as client:
            sink = FaktorySink(
                client,
                runner_job_id="j",
                bid=bid,
                metrics=FaktoryMetrics(metrics.registry, "faktory", go=metrics.go),
            )
            with pytest.raises(ShipError):
                await sink.ship(batch_of("x"))
    lines = go_lines(exposition(metrics.registry).decode())
    other = {"enqueue_failed": "enqueue_batch_failed", "enqueue_batch_failed": "enqueue_failed"}[counter]
    assert f'opslevel_runner_jobs_{counter}{{runner="faktory"}} 1.0' in lines
    assert f'opslevel_runner_jobs_{other}{{runner="faktory"}} 0.0' in lines
