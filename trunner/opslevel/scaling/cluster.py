"""The Kubernetes side of autoscaling: the leader's loop that reads and writes the Deployment's replica
count, and every runner's pod-deletion-cost annotation."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, NoReturn

import attrs
import trio

from trunner.kube.client import KubeClient
from trunner.kube.errors import Conflict, Forbidden, KubeError
from trunner.kube.objects import ObjectError, from_wire, lenient
from trunner.opslevel.client import OpsLevelClient
from trunner.opslevel.errors import ApiError
from trunner.opslevel.operations import RUNNER_SCALE, RunnerScaleVariables
from trunner.opslevel.scaling.decision import clamp_replicas, jobs_per_runner
from trunner.opslevel.scaling.metrics import ScalingMetrics
from trunner.opslevel.scaling.settings import ScalingSettings

log = logging.getLogger("trunner.scaling")

DELETION_COST_ANNOTATION = "controller.kubernetes.io/pod-deletion-cost"
SCALE_ATTEMPTS = 5
"""Writes of the replica count tried when each is refused as a conflict (client-go's DefaultRetry)."""
SCALE_RETRY_DELAY = 0.01
DELETION_COST_INTERVAL = 1.0
"""Seconds between looks at the runner's busy count (the pod is patched only when it changed)."""
DELETION_COST_TIMEOUT = 10.0
"""Seconds one update of the annotation may take, retries included."""


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
