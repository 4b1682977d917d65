"""Leader-elected autoscaling of the runner Deployment (``--scaling-enabled``), as the Go runner does
it, plus what it lacks: a busy runner is the last one a scale-down removes.

Every runner pod campaigns for the Lease named after the Deployment (:mod:`trunner.leader`). The
leader, every ``--scaling-interval`` seconds, reads the Deployment's ``scale`` subresource, asks
OpsLevel's ``runnerScale`` for a replica count given ``job-concurrency x job-concurrency-factor``
jobs per runner, clamps it to ``--runner-min-replicas``..``--runner-max-replicas`` and writes it
back (retrying on a conflicting write). Losing the Lease cancels that loop at once.

Every runner, leader or not, keeps ``controller.kubernetes.io/pod-deletion-cost`` on its own pod
equal to its number of running jobs: a ReplicaSet that scales down removes the pods with the lowest
cost first, so idle runners go before busy ones (and a busy one that must go still finishes its
jobs within its shutdown grace).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Any, NoReturn

import attrs
import trio
from prometheus_client import CollectorRegistry, Counter, Gauge

from trunner.config import ConfigError, SettingsSource, positive, setting
from trunner.executors.kubernetes.names import is_dns_label
from trunner.kube.client import KubeApiSettings, KubeClient
from trunner.kube.config import load_config
from trunner.kube.errors import Conflict, Forbidden, KubeError
from trunner.kube.leader import LeaderElector, LeaseTimings
from trunner.kube.objects import ObjectError, from_wire, lenient
from trunner.opslevel.client import OpsLevelClient
from trunner.opslevel.errors import ApiError
from trunner.opslevel.operations import RUNNER_SCALE, RunnerScaleVariables
from trunner.opslevel.settings import PollSettings
from trunner.runner import RunSettings

log = logging.getLogger("trunner.scaling")

DELETION_COST_ANNOTATION = "controller.kubernetes.io/pod-deletion-cost"
SCALE_ATTEMPTS = 5
"""Writes of the replica count tried when each is refused as a conflict (client-go's DefaultRetry)."""
SCALE_RETRY_DELAY = 0.01
DELETION_COST_INTERVAL = 1.0
"""Seconds between looks at the runner's busy count (the pod is patched only when it changed)."""
DELETION_COST_TIMEOUT = 10.0
"""Seconds one update of the annotation may take, retries included."""


def _dns_label(value: str) -> str | None:
    return (
        None
        if not value or is_dns_label(value)
        else "must be a DNS-1123 label (lower-case letters, digits, '-')"
    )


@attrs.frozen
class ScalingSettings:
    """Autoscaling"""

    scaling_enabled: bool = setting(
        False,
        help="Leader-elected autoscaling: the runner holding the Lease named after --runner-deployment "
        "sets that Deployment's replicas from OpsLevel's recommendation.",
        env=("OPSLEVEL_SCALING_ENABLED", "SCALING_ENABLED"),
    )
    runner_deployment: str = setting(
        "runner",
        help="Deployment of the runner pods; also the name of the leader election Lease.",
        env=("OPSLEVEL_RUNNER_DEPLOYMENT", "RUNNER_DEPLOYMENT"),
        checks=[lambda v: _dns_label(v) or (None if v else "must not be empty")],
    )
    runner_pod_namespace: str = setting(
        "",
        help="Namespace of the runner's Deployment, Lease and pod (empty: the Kubernetes client's, "
        "which in a cluster is the service account's).",
        env=("OPSLEVEL_RUNNER_POD_NAMESPACE", "RUNNER_POD_NAMESPACE"),
        checks=[_dns_label],
    )
    runner_min_replicas: int = setting(
        1,
        help="Fewest runner pods the leader scales to.",
        env=("OPSLEVEL_RUNNER_MIN_REPLICAS", "RUNNER_MIN_REPLICAS"),
        checks=[positive],
    )
    runner_max_replicas: int = setting(
        10,
        help="Most runner pods the leader scales to.",
        env=("OPSLEVEL_RUNNER_MAX_REPLICAS", "RUNNER_MAX_REPLICAS"),
        checks=[positive],
    )
    job_concurrency_factor: int = setting(
        100,
        help="Multiplier of --job-concurrency in the jobs-per-runner figure sent to OpsLevel's runnerScale.",
        checks=[positive],
    )
    scaling_interval: float = setting(
        60.0, help="Seconds between the leader's scaling decisions.", checks=[positive]
    )

    def problems(self, pod_name: str) -> list[str]:
        """What keeps scaling from working, beyond the checks of single settings."""
        if not self.scaling_enabled:
            return []
        problems = []
        if self.runner_max_replicas < self.runner_min_replicas:
            problems.append(
                f"--runner-max-replicas ({self.runner_max_replicas}) must be at least "
                f"--runner-min-replicas ({self.runner_min_replicas})"
            )
        if not pod_name:
            problems.append(
                "--scaling-enabled needs the runner's pod name: set RUNNER_POD_NAME from the downward API "
                "(fieldRef metadata.name) or --runner-pod-name"
            )
        return problems


# --- decisions (pure) ------------------------------------------------------------------------------


def jobs_per_runner(job_concurrency: int, factor: int) -> int:
    """The ``jobConcurrency`` sent to runnerScale (the Go runner's max(c,1) x max(f,1))."""
    return max(job_concurrency, 1) * max(factor, 1)


def clamp_replicas(recommended: int, minimum: int, maximum: int) -> int:
    return max(minimum, min(maximum, recommended))


# --- wire models -----------------------------------------------------------------------------------


@attrs.frozen
class ScaleMeta:
    name: str
    namespace: str | None = None
    resource_version: str | None = None


@attrs.frozen
class ScaleSpec:
    replicas: int = 0


@attrs.frozen(kw_only=True)
class ScaledObject:
    """What the scaler reads of an ``autoscaling/v1`` Scale or an ``apps/v1`` Deployment: both
    carry the replica count in ``spec.replicas`` and a resourceVersion for the conditional write."""

    metadata: ScaleMeta
    spec: ScaleSpec = ScaleSpec()


# --- metrics ---------------------------------------------------------------------------------------


class ScalingMetrics:
    def __init__(self, registry: CollectorRegistry, runner: str = "") -> None:
        self.leading = Gauge(
            "trunner_scaling_leader",
            "1 while this runner holds the scaling Lease.",
            ["runner"],
            registry=registry,
        ).labels(runner)
        self.desired = Gauge(
            "trunner_scaling_desired_replicas",
            "Replica count the leader last decided on.",
            ["runner"],
            registry=registry,
        ).labels(runner)
        self._errors = Counter(
            "trunner_scaling_errors",
            "Scaling rounds or pod-deletion-cost updates that failed, by stage.",
            ["runner", "stage"],
            registry=registry,
        )
        self._runner = runner
        for stage in ("read_scale", "recommend", "write_scale", "deletion_cost"):
            self._errors.labels(runner, stage)

    def error(self, stage: str) -> None:
        self._errors.labels(self._runner, stage).inc()


# --- the leader's loop -----------------------------------------------------------------------------


class Scaler:
    """The leading work: one scaling decision every ``settings.scaling_interval`` seconds."""

    def __init__(
        self,
        kube: KubeClient,
        opslevel: OpsLevelClient,
        *,
        settings: ScalingSettings,
        namespace: str,
        runner_id: str,
        job_concurrency: int,
        metrics: ScalingMetrics,
    ) -> None:
        self.kube = kube
        self.opslevel = opslevel
        self.settings = settings
        self.runner_id = runner_id
        self.job_concurrency = job_concurrency
        self.metrics = metrics
        self.deployment_path = (
            f"/apis/apps/v1/namespaces/{namespace}/deployments/{settings.runner_deployment}"
        )
        self.scale_path = self.deployment_path + "/scale"
        self.use_subresource = True
        """False once the Role has refused the scale subresource: the Deployment is used instead."""

    @property
    def path(self) -> str:
        return self.scale_path if self.use_subresource else self.deployment_path

    async def run(self) -> NoReturn:
        self.metrics.leading.set(1)
        try:
            while True:
                # A round may not run into the next one; what it has not done by then is skipped.
                with trio.move_on_after(self.settings.scaling_interval):
                    await self.scale_once()
                await trio.sleep(self.settings.scaling_interval)
        finally:
            self.metrics.leading.set(0)

    async def scale_once(self) -> int | None:
        """One decision; returns the replica count the Deployment has afterwards, or None when a
        step failed (logged, counted, and tried again next round)."""
        try:
            raw, current = await self._read()
        except (KubeError, ObjectError) as exc:
            self.metrics.error("read_scale")
            log.warning("scaling: cannot read %s: %s", self.path, exc)
            return None
        try:
            recommendation = await self.opslevel.call(
                RUNNER_SCALE,
                RunnerScaleVariables(
                    current_replica_count=current,
                    job_concurrency=jobs_per_runner(
                        self.job_concurrency, self.settings.job_concurrency_factor
                    ),
                    runner_id=self.runner_id,
                ),
            )
        except ApiError as exc:
            self.metrics.error("recommend")
            log.warning("scaling: OpsLevel gave no recommendation: %s", exc)
            return None
        desired = clamp_replicas(
            recommendation.recommended_replica_count,
            self.settings.runner_min_replicas,
            self.settings.runner_max_replicas,
        )
        self.metrics.desired.set(desired)
        if desired == current:
            log.debug("scaling: keeping %d replicas", current)
            return current
        try:
            await self._write(raw, current, desired)
        except (KubeError, ObjectError) as exc:
            self.metrics.error("write_scale")
            log.warning("scaling: cannot set %d replicas: %s", desired, exc)
            return None
        log.info(
            "scaling: %d -> %d replicas (OpsLevel recommends %d)",
            current,
            desired,
            recommendation.recommended_replica_count,
        )
        return desired

    def _fall_back(self, verb: str, exc: Forbidden) -> None:
        self.use_subresource = False
        log.info(
            "scaling: the Role does not allow %s on deployments/scale (%s); reading and updating the "
            "Deployment %s itself instead, as the Go runner does",
            verb,
            exc.message,
            self.deployment_path,
        )

    async def _read(self) -> tuple[dict[str, Any], int]:
        """The object that holds the replica count (as read) and the count."""
        if self.use_subresource:
            try:
                raw = await self.kube.request("GET", self.scale_path)
            except Forbidden as exc:
                self._fall_back("get", exc)
                raw = await self.kube.request("GET", self.deployment_path)
        else:
            raw = await self.kube.request("GET", self.deployment_path)
        seen = from_wire(
            raw, ScaledObject, where="scale" if self.use_subresource else "deployment", converter=lenient
        )
        return raw, seen.spec.replicas

    async def _write(self, raw: dict[str, Any], current: int, replicas: int) -> None:
        """Write ``replicas`` over ``raw`` (the whole object as read, so that an update of the
        Deployment changes nothing else); a conflict (someone changed it since it was read) reads
        again and retries, up to SCALE_ATTEMPTS writes."""
        for attempt in range(1, SCALE_ATTEMPTS + 1):
            if current == replicas:
                return
            wanted = {**raw, "spec": {**raw.get("spec", {}), "replicas": replicas}}
            try:
                await self.kube.request("PUT", self.path, json=wanted)
                return
            except Forbidden as exc:
                if not self.use_subresource:
                    raise
                self._fall_back("update", exc)
            except Conflict:
                if attempt == SCALE_ATTEMPTS:
                    raise
                log.debug("scaling: conflicting write of %s, reading it again", self.path)
                await trio.sleep(SCALE_RETRY_DELAY)
            raw, current = await self._read()


# --- pod-deletion-cost ------------------------------------------------------------------------------


class DeletionCost:
    """Keeps this runner's pod annotated with its number of running jobs."""

    def __init__(
        self,
        kube: KubeClient,
        *,
        namespace: str,
        pod_name: str,
        busy: Callable[[], int],
        metrics: ScalingMetrics,
        interval: float = DELETION_COST_INTERVAL,
    ) -> None:
        self.kube = kube
        self.path = f"/api/v1/namespaces/{namespace}/pods/{pod_name}"
        self.busy = busy
        self.metrics = metrics
        self.interval = interval
        self.applied: int | None = None

    async def run(self) -> None:
        """Keep the annotation current; returns only when the Role forbids patching the pod."""
        failing = False
        while True:
            busy = self.busy()
            if busy != self.applied:
                try:
                    problem = await self.apply(busy)
                except Forbidden as exc:
                    self.metrics.error("deletion_cost")
                    log.warning(
                        "scale-down protection is off: the Role does not allow patching this runner's pod, "
                        "so %s cannot follow its running jobs and a scale-down may remove a busy runner "
                        "before an idle one (grant 'patch' on pods to turn it on): %s",
                        DELETION_COST_ANNOTATION,
                        exc.message,
                    )
                    return
                if problem is None:
                    failing = False
                else:
                    self.metrics.error("deletion_cost")
                    if not failing:
                        log.warning("cannot set %s on %s: %s", DELETION_COST_ANNOTATION, self.path, problem)
                    failing = True
            await trio.sleep(self.interval)

    async def apply(self, busy: int) -> str | None:
        """Patch the annotation to ``busy``; returns what went wrong, or None. Raises Forbidden."""
        patch = {"metadata": {"annotations": {DELETION_COST_ANNOTATION: str(busy)}}}
        with trio.move_on_after(DELETION_COST_TIMEOUT):
            try:
                await self.kube.request("PATCH", self.path, json=patch)
            except Forbidden:
                raise
            except KubeError as exc:
                return str(exc)
            self.applied = busy
            return None
        return f"no answer within {DELETION_COST_TIMEOUT:g} s"


# --- wiring ----------------------------------------------------------------------------------------


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
    source: SettingsSource,
    *,
    opslevel: OpsLevelClient,
    runner_id: str,
    busy: Callable[[], int],
    registry: CollectorRegistry,
) -> None:
    """API mode's entry point: returns at once unless ``--scaling-enabled``; otherwise opens a
    Kubernetes client and runs :func:`serve_scaling` until cancelled. Check the settings first
    with :func:`check_scaling` so that mistakes are reported before the runner registers."""
    settings = source.get(ScalingSettings)
    if not settings.scaling_enabled:
        return
    check_scaling(source)
    api_settings = source.get(KubeApiSettings)
    kube_config = load_config(source.environ, context=api_settings.k8s_context or None)
    async with KubeClient.open(kube_config, api_settings) as kube:
        await serve_scaling(
            settings,
            kube=kube,
            opslevel=opslevel,
            pod_name=source.get(PollSettings).runner_pod_name,
            runner_id=runner_id,
            job_concurrency=source.get(RunSettings).job_concurrency,
            busy=busy,
            registry=registry,
        )


def check_scaling(source: SettingsSource) -> None:
    """Raise one ConfigError with every problem of the scaling settings (none when disabled)."""
    source.check(ScalingSettings, PollSettings, RunSettings, KubeApiSettings)
    problems = source.get(ScalingSettings).problems(source.get(PollSettings).runner_pod_name)
    if problems:
        raise ConfigError(problems)
