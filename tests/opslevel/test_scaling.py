"""Leader election and autoscaling (trunner.kube.leader, trunner.opslevel.scaling) against the Kubernetes API double and
the OpsLevel double, on trio's virtual clock."""

from __future__ import annotations

import functools
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
from prometheus_client import CollectorRegistry

from tests.doubles.kube import KubeApiDouble, RecordedRequest
from tests.doubles.kube_store import ResourcePath
from tests.doubles.opslevel import Delay, HttpStatus, OpsLevelDouble
from tests.kube.transport_support import NS, client_for
from tests.opslevel.scaling_support import (
    DEPLOYMENT,
    LEASE_PATH,
    SCALE_PATH,
    TIMINGS,
    lease,
    opslevel_client,
    replicas,
    requests_to,
    scaler_for,
    scaling_runner,
)
from trunner.config import ConfigError, SettingsSource, load
from trunner.kube.client import KubeApiSettings, KubeClient
from trunner.kube.leader import LeaderElector, LeaseTimings
from trunner.opslevel.scaling import (
    DELETION_COST_ANNOTATION,
    SCALE_ATTEMPTS,
    DeletionCost,
    ScalingMetrics,
    ScalingSettings,
    check_scaling,
    clamp_replicas,
    jobs_per_runner,
    run_scaling,
    serve_scaling,
)
from trunner.opslevel.settings import PollSettings
from trunner.runner import RunSettings


@attrs.define
class Leadership:
    """What a candidate's ``lead`` callback saw: when leading started and how it ended."""

    name: str
    started: list[float] = attrs.Factory(list)
    stopped: list[float] = attrs.Factory(list)
    changed: trio.Event = attrs.Factory(trio.Event)

    async def lead(self) -> None:
        self.started.append(trio.current_time())
        self._notify()
        try:
            await trio.sleep_forever()
        finally:
            self.stopped.append(trio.current_time())
            self._notify()

    def _notify(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    @property
    def leading(self) -> bool:
        return len(self.started) > len(self.stopped)

    async def wait_leading(self, value: bool = True) -> None:
        while self.leading != value:
            await self.changed.wait()


def elector(client: KubeClient, identity: str, seed: int) -> LeaderElector:
    return LeaderElector(
        client, namespace=NS, name=DEPLOYMENT, identity=identity, timings=TIMINGS, rng=random.Random(seed)
    )


@asynccontextmanager
async def leading_alone(api: KubeApiDouble) -> AsyncIterator[Leadership]:
    """runner-a campaigning with no rival, from the moment it leads; the campaign ends with the block."""
    a = Leadership("runner-a")
    async with client_for(api) as client, trio.open_nursery() as nursery:
        nursery.start_soon(elector(client, "runner-a", 1).campaign, a.lead)
        await a.wait_leading()
        yield a
        nursery.cancel_scope.cancel()


# --- pure decisions and settings -------------------------------------------------------------------------


def test_jobs_per_runner_and_clamping() -> None:
    assert jobs_per_runner(3, 100) == 300
    assert jobs_per_runner(0, 0) == 1
    assert [clamp_replicas(n, 1, 10) for n in (-3, 0, 1, 6, 10, 11, 500)] == [1, 1, 1, 6, 10, 10, 10]


def test_settings_defaults_and_the_go_runner_environment_names() -> None:
    assert load(ScalingSettings, environ={}) == ScalingSettings(
        scaling_enabled=False,
        runner_deployment="runner",
        runner_pod_namespace="",
        runner_min_replicas=1,
        runner_max_replicas=10,
        job_concurrency_factor=100,
        scaling_interval=60.0,
    )
    environ = {
        "SCALING_ENABLED": "true",
        "RUNNER_DEPLOYMENT": "opslevel-runner",
        "RUNNER_POD_NAMESPACE": "ops",
        "RUNNER_MIN_REPLICAS": "2",
        "RUNNER_MAX_REPLICAS": "6",
        "OPSLEVEL_JOB_CONCURRENCY_FACTOR": "10",
    }
    assert load(ScalingSettings, environ=environ) == ScalingSettings(
        True, "opslevel-runner", "ops", 2, 6, 10, 60.0
    )


def test_settings_problems_are_reported_together() -> None:
    source = SettingsSource(
        environ={"SCALING_ENABLED": "1", "RUNNER_MIN_REPLICAS": "5", "RUNNER_MAX_REPLICAS": "3"}
    )
    with pytest.raises(ConfigError) as caught:
        check_scaling(source)
    text = str(caught.value)
    assert "--runner-max-replicas (3) must be at least --runner-min-replicas (5)" in text
    assert "RUNNER_POD_NAME" in text
    with pytest.raises(ConfigError, match="runner-min-replicas"):
        load(ScalingSettings, environ={"RUNNER_MIN_REPLICAS": "0"})
    with pytest.raises(ConfigError, match="DNS-1123"):
        load(ScalingSettings, environ={"RUNNER_DEPLOYMENT": "Runner_1"})
    check_scaling(SettingsSource(environ={"RUNNER_MIN_REPLICAS": "5", "RUNNER_MAX_REPLICAS": "3"}))


def test_lease_timings_must_nest() -> None:
    with pytest.raises(ValueError, match="lease_duration > renew_deadline > retry_period"):
        LeaseTimings(lease_duration=10, renew_deadline=10, retry_period=2)


# --- leader election ------------------------------------------------------------------------------------


async def test_two_runners_elect_exactly_one_leader(
    api: KubeApiDouble, autojump_clock: trio.abc.Clock
) -> None:
    a, b = Leadership("runner-a"), Leadership("runner-b")
    async with client_for(api) as client_a, client_for(api) as client_b, trio.open_nursery() as nursery:
        nursery.start_soon(elector(client_a, "runner-a", 1).campaign, a.lead)
        nursery.start_soon(elector(client_b, "runner-b", 2).campaign, b.lead)
        await trio.sleep(120)
        assert [a.leading, b.leading].count(True) == 1
        winner = "runner-a" if a.leading else "runner-b"
        spec = lease(api)["spec"]
        assert spec["holderIdentity"] == winner
        assert spec["leaseDurationSeconds"] == 15
        assert spec["leaseTransitions"] == 0
        assert a.stopped == [] and b.stopped == []
        renewals = requests_to(api, LEASE_PATH, "PUT")
        # The leader renews every retry period; the other reads every 2-4.4 s and never writes.
        assert 120 / 2.0 - 2 <= len(renewals) <= 120 / 2.0 + 1
        assert all(r.json()["spec"]["holderIdentity"] == winner for r in renewals)
        nursery.cancel_scope.cancel()


async def test_a_leader_that_stops_releases_the_lease_to_the_other(
    api: KubeApiDouble, autojump_clock: trio.abc.Clock
) -> None:
    a, b = Leadership("runner-a"), Leadership("runner-b")
    a_scope, a_ended = trio.CancelScope(), trio.Event()
    async with client_for(api) as client_a, client_for(api) as client_b, trio.open_nursery() as nursery:
        nursery.start_soon(_campaign_in, a_scope, elector(client_a, "runner-a", 1), a, a_ended)
        await a.wait_leading()
        nursery.start_soon(elector(client_b, "runner-b", 2).campaign, b.lead)
        await trio.sleep(30)
        assert a.leading and not b.leading
        a_scope.cancel()
        await a_ended.wait()
        stopped = trio.current_time()
        assert lease(api)["spec"]["holderIdentity"] == ""
        await b.wait_leading()
        # Released: the other runner takes over at its next try (2-4.4 s), not after the 15 s lease.
        assert b.started[0] - stopped <= TIMINGS.retry_period * 2.2 + 0.1
        spec = lease(api)["spec"]
        assert spec["holderIdentity"] == "runner-b" and spec["leaseTransitions"] == 1
        nursery.cancel_scope.cancel()


async def _campaign_in(
    scope: trio.CancelScope, candidate: LeaderElector, leadership: Leadership, ended: trio.Event | None = None
) -> None:
    with scope:
        await candidate.campaign(leadership.lead)
    if ended is not None:
        ended.set()


async def test_a_vanished_leader_is_replaced_after_the_lease_duration(
    api: KubeApiDouble, autojump_clock: trio.abc.Clock
) -> None:
    a, b = Leadership("runner-a"), Leadership("runner-b")
    # The leader's process dies: its renewals and its release never reach the server.
    a_scope = trio.CancelScope()
    async with client_for(api) as client_a, client_for(api) as client_b, trio.open_nursery() as nursery:
        nursery.start_soon(_campaign_in, a_scope, elector(client_a, "runner-a", 1), a)
        await a.wait_leading()
        nursery.start_soon(elector(client_b, "runner-b", 2).campaign, b.lead)
        await trio.sleep(10)
        api.fail(503, "ServiceUnavailable", "gone", times=10**6, match=_from_leader("runner-a"))
        a_scope.cancel()
        # The last renewal happened within one retry period before this moment.
        died = trio.current_time()
        await b.wait_leading()
        waited = b.started[0] - died
        # b takes over only a full lease duration after it saw the last renewal, and soon after that.
        assert TIMINGS.lease_duration - TIMINGS.retry_period <= waited
        assert waited <= TIMINGS.lease_duration + 2 * TIMINGS.retry_period * 2.2 + 0.1
        assert lease(api)["spec"]["holderIdentity"] == "runner-b"
        nursery.cancel_scope.cancel()


def _from_leader(identity: str) -> Any:
    def match(request: RecordedRequest) -> bool:
        return (
            request.path == LEASE_PATH
            and request.method == "PUT"
            and (request.json()["spec"].get("holderIdentity") in (identity, ""))
        )

    return match


async def test_losing_the_lease_stops_the_leading_work_at_once(
    api: KubeApiDouble, autojump_clock: trio.abc.Clock
) -> None:
    async with leading_alone(api) as a:
        await trio.sleep(5)
        # Someone else takes the lease (e.g. after this runner was paused): the next renewal sees it.
        current = lease(api)
        current["spec"].update(
            holderIdentity="intruder", leaseTransitions=current["spec"]["leaseTransitions"] + 1
        )
        api.store.mutate(
            ResourcePath("coordination.k8s.io", "v1", NS, "leases", DEPLOYMENT), lambda o: o.update(current)
        )
        taken = trio.current_time()
        await a.wait_leading(False)
        assert a.stopped[0] - taken <= TIMINGS.retry_period + 0.1
        # The intruder never renews: its lease expires a lease duration after runner-a first saw it.
        await a.wait_leading()
        assert (
            TIMINGS.lease_duration
            <= a.started[1] - taken
            <= TIMINGS.lease_duration + TIMINGS.retry_period * 2.2 + 0.1
        )
        assert lease(api)["spec"]["leaseTransitions"] == 2


async def test_a_leader_that_cannot_renew_stops_before_anyone_else_may_lead(
    api: KubeApiDouble, autojump_clock: trio.abc.Clock
) -> None:
    async with leading_alone(api) as a:
        await trio.sleep(7)
        api.fail(500, "InternalError", "etcd is down", times=10**6, match=lambda r: r.path == LEASE_PATH)
        last_success = trio.current_time()
        await a.wait_leading(False)
        lost_after = a.stopped[0] - last_success
        assert lost_after <= TIMINGS.renew_deadline, "never leads past its renew deadline"
        assert lost_after < TIMINGS.lease_duration


# --- scaling decisions -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("recommended", "expected"), [(5, 5), (2, 2), (50, 10), (0, 1), (-4, 1)])
async def test_the_leader_sets_the_clamped_recommendation(
    api: KubeApiDouble,
    opslevel: OpsLevelDouble,
    autojump_clock: trio.abc.Clock,
    recommended: int,
    expected: int,
) -> None:
    opslevel.recommended_replicas = recommended
    async with scaler_for(api, opslevel) as (scaler, _, registry):
        assert await scaler.scale_once() == expected
    assert replicas(api) == expected
    [call] = opslevel.calls_to("RunnerScale")
    assert call.variables == {"currentReplicaCount": 2, "jobConcurrency": 300, "runnerId": "runner-1"}
    writes = requests_to(api, SCALE_PATH, "PUT")
    assert len(writes) == (0 if expected == 2 else 1)
    for write in writes:
        body = write.json()
        assert body["apiVersion"] == "autoscaling/v1" and body["kind"] == "Scale"
        assert body["spec"] == {"replicas": expected}
        assert body["metadata"]["resourceVersion"], "writes are conditional on the version read"
    assert registry.get_sample_value("trunner_scaling_desired_replicas", {"runner": "runner-1"}) == expected


async def test_minimum_and_maximum_come_from_the_settings(
    api: KubeApiDouble, opslevel: OpsLevelDouble, autojump_clock: trio.abc.Clock
) -> None:
    opslevel.recommended_replicas = 1
    async with scaler_for(
        api, opslevel, runner_min_replicas=3, runner_max_replicas=4, job_concurrency_factor=7
    ) as (
        scaler,
        _,
        _,
    ):
        assert await scaler.scale_once() == 3
        opslevel.recommended_replicas = 9
        assert await scaler.scale_once() == 4
    assert [c.variables["jobConcurrency"] for c in opslevel.calls_to("RunnerScale")] == [21, 21]
    assert [c.variables["currentReplicaCount"] for c in opslevel.calls_to("RunnerScale")] == [2, 3]


async def test_a_conflicting_write_is_read_again_and_retried(
    api: KubeApiDouble, opslevel: OpsLevelDouble, autojump_clock: trio.abc.Clock
) -> None:
    opslevel.recommended_replicas = 6
    # Someone changes the Deployment while OpsLevel is thinking: the leader's write is then stale.
    opslevel.inject(Delay(3), operation="RunnerScale")
    async with scaler_for(api, opslevel) as (scaler, _, _), trio.open_nursery() as nursery:
        result: list[int | None] = []

        async def scale() -> None:
            result.append(await scaler.scale_once())

        nursery.start_soon(scale)
        await opslevel.wait_until(lambda: bool(opslevel.calls_to("RunnerScale")))
        deployment = ResourcePath("apps", "v1", NS, "deployments", DEPLOYMENT)
        api.store.patch(deployment, {"metadata": {"annotations": {"changed-by": "kubectl"}}})
    assert result == [6]
    assert replicas(api) == 6
    methods = [r.method for r in requests_to(api, SCALE_PATH)]
    assert methods == ["GET", "PUT", "GET", "PUT"]
    deployment_obj = api.get("deployments", DEPLOYMENT, namespace=NS, api_version="apps/v1")
    assert deployment_obj is not None and deployment_obj["metadata"]["annotations"] == {
        "changed-by": "kubectl"
    }


async def test_conflicts_are_retried_a_bounded_number_of_times(
    api: KubeApiDouble, opslevel: OpsLevelDouble, autojump_clock: trio.abc.Clock
) -> None:
    opslevel.recommended_replicas = 4
    api.fail(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on deployments.apps "{DEPLOYMENT}": the object has been modified; '
        "please apply your changes to the latest version and try again",
        times=SCALE_ATTEMPTS,
        match=lambda r: r.path == SCALE_PATH and r.method == "PUT",
    )
    async with scaler_for(api, opslevel) as (scaler, _, registry):
        assert await scaler.scale_once() is None
        assert replicas(api) == 2
        assert len(requests_to(api, SCALE_PATH, "PUT")) == SCALE_ATTEMPTS
        assert (
            registry.get_sample_value(
                "trunner_scaling_errors_total", {"runner": "runner-1", "stage": "write_scale"}
            )
            == 1
        )
        assert await scaler.scale_once() == 4
    assert replicas(api) == 4


async def test_a_failed_recommendation_skips_the_round(
    api: KubeApiDouble, opslevel: OpsLevelDouble, autojump_clock: trio.abc.Clock
) -> None:
    opslevel.recommended_replicas = 8
    opslevel.inject(HttpStatus(500), operation="RunnerScale")
    async with scaler_for(api, opslevel) as (scaler, _, registry):
        assert await scaler.scale_once() is None
        assert requests_to(api, SCALE_PATH, "PUT") == []
        assert (
            registry.get_sample_value(
                "trunner_scaling_errors_total", {"runner": "runner-1", "stage": "recommend"}
            )
            == 1
        )
        assert await scaler.scale_once() == 8


async def test_a_missing_deployment_is_reported_not_raised(
    api: KubeApiDouble, opslevel: OpsLevelDouble, autojump_clock: trio.abc.Clock
) -> None:
    async with scaler_for(api, opslevel, runner_deployment="nope") as (scaler, _, registry):
        assert await scaler.scale_once() is None
    assert opslevel.calls_to("RunnerScale") == []
    assert (
        registry.get_sample_value(
            "trunner_scaling_errors_total", {"runner": "runner-1", "stage": "read_scale"}
        )
        == 1
    )


# --- pod-deletion-cost ----------------------------------------------------------------------------------


async def test_deletion_cost_follows_the_busy_count(
    api: KubeApiDouble, autojump_clock: trio.abc.Clock
) -> None:
    busy = [0]
    pod_path = f"/api/v1/namespaces/{NS}/pods/runner-a"

    def cost() -> str | None:
        pod = api.get("pods", "runner-a", namespace=NS)
        assert pod is not None
        value: str | None = (pod["metadata"].get("annotations") or {}).get(DELETION_COST_ANNOTATION)
        return value

    async with client_for(api) as client, trio.open_nursery() as nursery:
        keeper = DeletionCost(
            client,
            namespace=NS,
            pod_name="runner-a",
            busy=lambda: busy[0],
            metrics=ScalingMetrics(CollectorRegistry()),
        )
        nursery.start_soon(keeper.run)
        await trio.sleep(5)
        assert cost() == "0"
        busy[0] = 3
        await trio.sleep(1.5)
        assert cost() == "3"
        busy[0] = 1
        await trio.sleep(10)
        assert cost() == "1"
        patches = requests_to(api, pod_path, "PATCH")
        assert len(patches) == 3, "patched on changes only"
        assert all(p.header("content-type") == "application/merge-patch+json" for p in patches)
        assert patches[-1].json() == {"metadata": {"annotations": {DELETION_COST_ANNOTATION: "1"}}}
        nursery.cancel_scope.cancel()


async def test_deletion_cost_is_retried_after_a_failure(
    api: KubeApiDouble, autojump_clock: trio.abc.Clock
) -> None:
    registry = CollectorRegistry()
    api.fail(404, "NotFound", 'pods "runner-a" not found', times=2, match=lambda r: r.method == "PATCH")
    async with client_for(api) as client, trio.open_nursery() as nursery:
        keeper = DeletionCost(
            client, namespace=NS, pod_name="runner-a", busy=lambda: 2, metrics=ScalingMetrics(registry)
        )
        nursery.start_soon(keeper.run)
        await trio.sleep(5)
        assert keeper.applied == 2
        nursery.cancel_scope.cancel()
    assert (
        registry.get_sample_value("trunner_scaling_errors_total", {"runner": "", "stage": "deletion_cost"})
        == 2
    )


# --- everything together ------------------------------------------------------------------------------------


async def test_only_the_leader_scales_every_interval_and_a_successor_takes_over(
    api: KubeApiDouble, opslevel: OpsLevelDouble, autojump_clock: trio.abc.Clock
) -> None:
    opslevel.recommended_replicas = 4
    settings = ScalingSettings(scaling_enabled=True, runner_deployment=DEPLOYMENT, runner_pod_namespace=NS)
    registries = {"runner-a": CollectorRegistry(), "runner-b": CollectorRegistry()}

    async def runner(name: str, scope: trio.CancelScope) -> None:
        await scaling_runner(
            api,
            opslevel,
            settings,
            name,
            scope,
            busy=lambda: 1 if name == "runner-a" else 0,
            registry=registries[name],
        )

    def leading(name: str) -> bool:
        return registries[name].get_sample_value("trunner_scaling_leader", {"runner": f"id-{name}"}) == 1

    scopes = {"runner-a": trio.CancelScope(), "runner-b": trio.CancelScope()}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(runner, "runner-a", scopes["runner-a"])
        await trio.sleep(1)
        nursery.start_soon(runner, "runner-b", scopes["runner-b"])
        await trio.sleep(150)
        assert leading("runner-a") and not leading("runner-b")
        calls = opslevel.calls_to("RunnerScale")
        assert {c.variables["runnerId"] for c in calls} == {"id-runner-a"}
        assert [round(c.at - calls[0].at) for c in calls] == [0, 60, 120]
        assert replicas(api) == 4
        for pod, expected in (("runner-a", "1"), ("runner-b", "0")):
            found = api.get("pods", pod, namespace=NS)
            assert (
                found is not None and found["metadata"]["annotations"][DELETION_COST_ANNOTATION] == expected
            )
        scopes["runner-a"].cancel()
        opslevel.recommended_replicas = 6
        await trio.sleep(10)
        assert leading("runner-b") and not leading("runner-a")
        assert replicas(api) == 6
        assert opslevel.calls_to("RunnerScale")[-1].variables["runnerId"] == "id-runner-b"
        nursery.cancel_scope.cancel()


async def test_serve_scaling_refuses_unusable_settings(api: KubeApiDouble, opslevel: OpsLevelDouble) -> None:
    async with client_for(api) as kube, opslevel_client(opslevel) as client:
        with pytest.raises(ConfigError, match="RUNNER_POD_NAME"):
            await serve_scaling(
                ScalingSettings(scaling_enabled=True),
                kube=kube,
                opslevel=client,
                pod_name="",
                runner_id="r",
                job_concurrency=3,
                busy=lambda: 0,
                registry=CollectorRegistry(),
            )
    assert api.requests == []


async def test_run_scaling_opens_a_client_from_the_kubeconfig_and_scales(
    api: KubeApiDouble, opslevel: OpsLevelDouble, autojump_clock: trio.abc.Clock, tmp_path: Path
) -> None:
    kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig", namespace=NS)
    opslevel.recommended_replicas = 3
    environ = {
        "KUBECONFIG": str(kubeconfig),
        "SCALING_ENABLED": "true",
        "RUNNER_DEPLOYMENT": DEPLOYMENT,
        "RUNNER_POD_NAME": "runner-b",
        "OPSLEVEL_JOB_CONCURRENCY": "2",
    }
    async with opslevel_client(opslevel) as client, trio.open_nursery() as nursery:
        source = SettingsSource(environ=environ)
        nursery.start_soon(
            functools.partial(
                run_scaling,
                source.get(ScalingSettings),
                kube_api=source.get(KubeApiSettings),
                environ=source.environ,
                pod_name=source.get(PollSettings).runner_pod_name,
                job_concurrency=source.get(RunSettings).job_concurrency,
                opslevel=client,
                runner_id="id-b",
                busy=lambda: 2,
                registry=CollectorRegistry(),
            )
        )
        await trio.sleep(5)
        assert replicas(api) == 3
        [call] = opslevel.calls_to("RunnerScale")
        assert call.variables["jobConcurrency"] == 200
        pod = api.get("pods", "runner-b", namespace=NS)
        assert pod is not None and pod["metadata"]["annotations"][DELETION_COST_ANNOTATION] == "2"
        nursery.cancel_scope.cancel()
    assert lease(api)["spec"]["holderIdentity"] == "", "released on the way out"
    with trio.fail_after(1):
        await run_scaling(
            ScalingSettings(),
            kube_api=KubeApiSettings(),
            environ={},
            pod_name="",
            job_concurrency=1,
            opslevel=client,
            runner_id="x",
            busy=lambda: 0,
            registry=CollectorRegistry(),
        )
