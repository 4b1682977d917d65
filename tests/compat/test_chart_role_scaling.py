"""Autoscaling under the OpsLevel Helm chart's Role, enforced by the Kubernetes double as an
allow-list: scaling works through the Deployment itself, and the pod-deletion-cost protection
turns itself off with one clear message."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import trio
import yaml
from prometheus_client import CollectorRegistry

from tests.doubles.kube import KubeApiDouble
from tests.doubles.opslevel import OpsLevelDouble
from tests.kube.transport_support import NS, client_for
from tests.opslevel.scaling_support import (
    DEPLOYMENT,
    SCALE_PATH,
    opslevel_client,
    replicas,
    requests_to,
    scaler_for,
)
from trunner.opslevel.scaling import (
    DELETION_COST_ANNOTATION,
    DeletionCost,
    ScalingMetrics,
    ScalingSettings,
    serve_scaling,
)

CHART_ROLE = yaml.safe_load((Path(__file__).parent / "fixtures" / "opslevel_chart_role.yaml").read_text())
DEPLOYMENT_PATH = SCALE_PATH.removesuffix("/scale")
POD_PATH = f"/api/v1/namespaces/{NS}/pods/runner-a"
SCALE_RULE = {"apiGroups": ["apps"], "resources": ["deployments/scale"], "verbs": ["get", "update"]}


def messages(caplog, logger: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger]


async def test_the_double_enforces_the_chart_role(api: KubeApiDouble, autojump_clock) -> None:
    api.role_rules = CHART_ROLE
    async with client_for(api) as kube:
        await kube.request("GET", DEPLOYMENT_PATH)
        for method, path in (("GET", SCALE_PATH), ("PATCH", POD_PATH)):
            try:
                await kube.request(method, path, json={} if method == "PATCH" else None)
            except Exception as exc:
                assert type(exc).__name__ == "Forbidden"
                assert "cannot" in str(exc) and "system:serviceaccount" in str(exc)
            else:
                raise AssertionError(f"{method} {path} was allowed")


async def test_the_leader_scales_the_deployment_itself_under_the_chart_role(
    api: KubeApiDouble, opslevel: OpsLevelDouble, autojump_clock, caplog
) -> None:
    api.role_rules = CHART_ROLE
    opslevel.recommended_replicas = 5
    with caplog.at_level(logging.INFO, logger="trunner"):
        async with scaler_for(api, opslevel) as (scaler, _, registry):
            assert await scaler.scale_once() == 5
            opslevel.recommended_replicas = 3
            assert await scaler.scale_once() == 3
    assert replicas(api) == 3
    # The subresource was tried once; every other read and both writes went to the Deployment.
    assert len(requests_to(api, SCALE_PATH)) == 1
    assert len(requests_to(api, DEPLOYMENT_PATH, "GET")) == 2
    writes = requests_to(api, DEPLOYMENT_PATH, "PUT")
    assert [w.json()["spec"]["replicas"] for w in writes] == [5, 3]
    body = writes[0].json()
    assert body["kind"] == "Deployment" and body["metadata"]["resourceVersion"]
    assert body["spec"]["template"]["spec"]["containers"][0]["name"] == "trunner", "the update keeps the spec"
    assert (
        registry.get_sample_value(
            "trunner_scaling_errors_total", {"runner": "runner-1", "stage": "read_scale"}
        )
        == 0
    )
    fallbacks = [m for m in messages(caplog, "trunner.scaling") if "deployments/scale" in m]
    assert len(fallbacks) == 1 and "reading and updating the Deployment" in fallbacks[0]


async def test_the_scale_subresource_is_used_when_the_role_allows_it(
    api: KubeApiDouble, opslevel: OpsLevelDouble, autojump_clock
) -> None:
    api.role_rules = [*CHART_ROLE, SCALE_RULE]
    opslevel.recommended_replicas = 4
    async with scaler_for(api, opslevel) as (scaler, _, _):
        assert await scaler.scale_once() == 4
    assert replicas(api) == 4
    assert requests_to(api, DEPLOYMENT_PATH) == []
    assert len(requests_to(api, SCALE_PATH, "PUT")) == 1


async def test_a_role_that_reads_but_cannot_write_the_subresource_falls_back_on_the_write(
    api: KubeApiDouble, opslevel: OpsLevelDouble, autojump_clock
) -> None:
    api.role_rules = [*CHART_ROLE, {**SCALE_RULE, "verbs": ["get"]}]
    opslevel.recommended_replicas = 6
    async with scaler_for(api, opslevel) as (scaler, _, _):
        assert await scaler.scale_once() == 6
        assert await scaler.scale_once() == 6
    assert replicas(api) == 6
    assert len(requests_to(api, SCALE_PATH, "PUT")) == 1
    assert len(requests_to(api, DEPLOYMENT_PATH, "PUT")) == 1


async def test_a_forbidden_pod_patch_turns_scale_down_protection_off_with_one_message(
    api: KubeApiDouble, autojump_clock, caplog
) -> None:
    api.role_rules = CHART_ROLE
    registry = CollectorRegistry()
    busy = iter(range(100))
    with caplog.at_level(logging.WARNING, logger="trunner"):
        async with client_for(api) as client:
            keeper = DeletionCost(
                client,
                namespace=NS,
                pod_name="runner-a",
                busy=lambda: next(busy),
                metrics=ScalingMetrics(registry),
            )
            with trio.move_on_after(30):
                await keeper.run()
    assert len(requests_to(api, POD_PATH, "PATCH")) == 1
    [message] = messages(caplog, "trunner.scaling")
    assert message.startswith("scale-down protection is off: the Role does not allow patching")
    assert DELETION_COST_ANNOTATION in message and "grant 'patch' on pods" in message
    assert (
        registry.get_sample_value("trunner_scaling_errors_total", {"runner": "", "stage": "deletion_cost"})
        == 1
    )


async def test_serve_scaling_under_the_chart_role_scales_and_says_each_thing_once(
    api: KubeApiDouble, opslevel: OpsLevelDouble, autojump_clock, caplog
) -> None:
    api.role_rules = CHART_ROLE
    opslevel.recommended_replicas = 4
    settings = ScalingSettings(scaling_enabled=True, runner_deployment=DEPLOYMENT, runner_pod_namespace=NS)
    jobs = iter(range(1000))
    with caplog.at_level(logging.INFO, logger="trunner"):
        async with client_for(api) as kube, opslevel_client(opslevel) as client:
            with trio.move_on_after(200):
                await serve_scaling(
                    settings,
                    kube=kube,
                    opslevel=client,
                    pod_name="runner-a",
                    runner_id="id-runner-a",
                    job_concurrency=3,
                    busy=lambda: next(jobs) % 3,
                    registry=CollectorRegistry(),
                    rng=random.Random(1),
                )
    assert replicas(api) == 4
    assert len(opslevel.calls_to("RunnerScale")) == 4  # at 0, 60, 120 and 180 s
    logged = messages(caplog, "trunner.scaling")
    assert sum("scale-down protection is off" in m for m in logged) == 1
    assert sum("deployments/scale" in m for m in logged) == 1
    assert not [m for m in logged if m.startswith("scaling: cannot")]
    forbidden = [
        r for r in api.requests if r.path == SCALE_PATH or (r.path == POD_PATH and r.method == "PATCH")
    ]
    assert len(forbidden) == 2
