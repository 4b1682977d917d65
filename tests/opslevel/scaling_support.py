"""A runner Deployment and its pods in the Kubernetes API double, a client of the OpsLevel double,
and a scaler between them: what the scaling tests (tests/opslevel, tests/compat) share."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from prometheus_client import CollectorRegistry

from tests.doubles.kube import KubeApiDouble, RecordedRequest, serve_kube_api
from tests.doubles.kube_store import Obj
from tests.doubles.opslevel import OpsLevelDouble
from tests.kube.transport_support import NS, client_for
from trunner.kube.leader import LeaseTimings
from trunner.net.retry import RetryPolicy
from trunner.opslevel.client import OpsLevelClient, graphql_endpoint
from trunner.opslevel.metrics import ApiMetrics
from trunner.opslevel.scaling import Scaler, ScalingMetrics, ScalingSettings, serve_scaling

DEPLOYMENT = "runner"
LEASE_PATH = f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases/{DEPLOYMENT}"
SCALE_PATH = f"/apis/apps/v1/namespaces/{NS}/deployments/{DEPLOYMENT}/scale"
TIMINGS = LeaseTimings()


def add_runner_objects(api: KubeApiDouble) -> None:
    """The runner Deployment (2 replicas) and two of its pods, as the cluster would have them."""
    api.put_object(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": DEPLOYMENT, "namespace": NS},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "runner"}},
                "template": {
                    "metadata": {"labels": {"app": "runner"}},
                    "spec": {"containers": [{"name": "trunner", "image": "trunner:0.1.0"}]},
                },
            },
        }
    )
    for pod in ("runner-a", "runner-b"):
        api.put_object(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": pod, "namespace": NS, "labels": {"app": "runner"}},
                "spec": {"containers": [{"name": "trunner", "image": "trunner:0.1.0"}]},
            }
        )


@pytest.fixture
async def api() -> AsyncIterator[KubeApiDouble]:
    async with serve_kube_api() as served:
        add_runner_objects(served)
        yield served


@asynccontextmanager
async def opslevel_client(double: OpsLevelDouble) -> AsyncIterator[OpsLevelClient]:
    async with OpsLevelClient(
        endpoint=graphql_endpoint(double.url),
        token=double.token,
        timeout=30.0,
        metrics=ApiMetrics(CollectorRegistry(), runner="runner-1"),
        retry=RetryPolicy(max_retries=0, total=30.0),
        rng=random.Random(3),
    ) as client:
        yield client


def replicas(api: KubeApiDouble) -> int:
    deployment = api.get("deployments", DEPLOYMENT, namespace=NS, api_version="apps/v1")
    assert deployment is not None
    value: int = deployment["spec"]["replicas"]
    return value


def lease(api: KubeApiDouble) -> Obj:
    found = api.get("leases", DEPLOYMENT, namespace=NS, api_version="coordination.k8s.io/v1")
    assert found is not None
    return found


def requests_to(api: KubeApiDouble, path: str, method: str | None = None) -> list[RecordedRequest]:
    return [r for r in api.requests if r.path == path and (method is None or r.method == method)]


@asynccontextmanager
async def scaler_for(
    api: KubeApiDouble, opslevel: OpsLevelDouble, **settings: Any
) -> AsyncIterator[tuple[Scaler, ScalingMetrics, CollectorRegistry]]:
    registry = CollectorRegistry()
    metrics = ScalingMetrics(registry, "runner-1")
    async with client_for(api) as kube, opslevel_client(opslevel) as client:
        yield (
            Scaler(
                kube,
                client,
                settings=ScalingSettings(scaling_enabled=True, **settings),
                namespace=NS,
                runner_id="runner-1",
                job_concurrency=3,
                metrics=metrics,
            ),
            metrics,
            registry,
        )


async def scaling_runner(
    api: KubeApiDouble,
    opslevel: OpsLevelDouble,
    settings: ScalingSettings,
    pod: str,
    scope: trio.CancelScope,
    *,
    busy: Callable[[], int] = lambda: 0,
    registry: CollectorRegistry | None = None,
) -> None:
    """One runner pod's ``serve_scaling`` (runner id ``id-<pod>``, three workers) with its own
    clients of both doubles, until ``scope`` is cancelled."""
    with scope:
        async with client_for(api) as kube, opslevel_client(opslevel) as client:
            await serve_scaling(
                settings,
                kube=kube,
                opslevel=client,
                pod_name=pod,
                runner_id=f"id-{pod}",
                job_concurrency=3,
                busy=busy,
                registry=CollectorRegistry() if registry is None else registry,
                rng=random.Random(len(pod)),
            )
