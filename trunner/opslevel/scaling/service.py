"""Autoscaling wired up: campaign for the Lease, scale while leading, keep the deletion cost."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping

import trio
from prometheus_client import CollectorRegistry

from trunner.config import ConfigError, SettingsSource
from trunner.kube.client import KubeApiSettings, KubeClient
from trunner.kube.config import load_config
from trunner.kube.leader import LeaderElector, LeaseTimings
from trunner.opslevel.client import OpsLevelClient
from trunner.opslevel.scaling.cluster import DeletionCost, Scaler
from trunner.opslevel.scaling.metrics import ScalingMetrics
from trunner.opslevel.scaling.settings import ScalingSettings
from trunner.opslevel.settings import PollSettings
from trunner.runner import RunSettings

log = logging.getLogger("trunner.scaling")


async def serve_scaling(
    settings: ScalingSettings,
    *,
    kube: KubeClient,
    opslevel: OpsLevelClient,
    pod_name: str,
    runner_id: str,
    job_concurrency: int,
    busy: Callable[[], int],
    registry: CollectorRegistry,
    timings: LeaseTimings | None = None,
    rng: random.Random | None = None,
) -> None:
    """Campaign for the Lease and scale while leading; keep the pod-deletion-cost current. Runs
    until cancelled (then the Lease is released). Raises ConfigError for unusable settings."""
    problems = settings.problems(pod_name)
    if problems:
        raise ConfigError(problems)
    namespace = settings.runner_pod_namespace or kube.namespace
    metrics = ScalingMetrics(registry, runner_id)
    scaler = Scaler(
        kube,
        opslevel,
        settings=settings,
        namespace=namespace,
        runner_id=runner_id,
        job_concurrency=job_concurrency,
        metrics=metrics,
    )
    elector = LeaderElector(
        kube,
        namespace=namespace,
        name=settings.runner_deployment,
        identity=pod_name,
        timings=timings,
        rng=rng,
    )
    cost = DeletionCost(kube, namespace=namespace, pod_name=pod_name, busy=busy, metrics=metrics)
    log.info(
        "scaling enabled: deployment %s/%s, %d..%d replicas, identity %s",
        namespace,
        settings.runner_deployment,
        settings.runner_min_replicas,
        settings.runner_max_replicas,
        pod_name,
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(cost.run)
        nursery.start_soon(elector.campaign, scaler.run)


async def run_scaling(
    settings: ScalingSettings,
    *,
    kube_api: KubeApiSettings,
    environ: Mapping[str, str],
    pod_name: str,
    job_concurrency: int,
    opslevel: OpsLevelClient,
    runner_id: str,
    busy: Callable[[], int],
    registry: CollectorRegistry,
) -> None:
    """API mode's entry point: returns at once unless ``--scaling-enabled``; otherwise opens a
    Kubernetes client (kubeconfig from ``environ``) and runs :func:`serve_scaling` until
    cancelled. Check the settings first with :func:`check_scaling` so that mistakes are reported
    before the runner registers."""
    if not settings.scaling_enabled:
        return
    kube_config = load_config(environ, context=kube_api.k8s_context or None)
    async with KubeClient.open(kube_config, kube_api) as kube:
        await serve_scaling(
            settings,
            kube=kube,
            opslevel=opslevel,
            pod_name=pod_name,
            runner_id=runner_id,
            job_concurrency=job_concurrency,
            busy=busy,
            registry=registry,
        )


def check_scaling(source: SettingsSource) -> None:
    """Raise one ConfigError with every problem of the scaling settings (none when disabled)."""
    source.check(ScalingSettings, PollSettings, RunSettings, KubeApiSettings)
    problems = source.get(ScalingSettings).problems(source.get(PollSettings).runner_pod_name)
    if problems:
        raise ConfigError(problems)
