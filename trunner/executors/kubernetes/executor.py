"""Runs each job in its own Kubernetes pod, as the Go runner does: the job's files, a
PodDisruptionBudget so a drain cannot evict the running job, and a pod whose ``job`` container
sleeps while the commands are exec'd into it over the exec WebSocket.

The files and the sensitive variables' values are in an immutable Secret of the job (the Go runner
uses a ConfigMap and plain ``env`` values). It is created before the pod, so the kubelet finds it
at once, and then made the pod's dependent (``ownerReferences``), so the garbage collector deletes
it with the pod even if this runner never comes back; until then it carries the job's labels like
the other objects, which the deletion after the job and the leftover deletion at startup find.

Beyond the Go runner: the commands run by default as a durable stage
(:mod:`~trunner.executors.kubernetes.durable`), detached in the pod and read by byte offset, so a
dropped exec stream is resumed instead of ending the job; the pod wait watches instead of polling
and says why a pod is not running;
an exec that outlives the job's lifetime ends as ``execution_timeout`` (not ``failed``); the exit
code is reported; when the exec ends badly the pod is read once more to name an OOM kill or an
eviction; the job's objects are deleted on every exit path, cancellation included, in a shielded
scope with its own deadline; and objects left behind by a crashed predecessor of this runner
process are deleted at startup.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio

from trunner.contracts import OutputFeed
from trunner.executors.base import ExecutorUnavailable, ExitKind, ExitResult, JobNaming
from trunner.executors.kubernetes import names, podspec
from trunner.executors.kubernetes.durable import ResumePolicy, StageTarget, run_stage
from trunner.executors.kubernetes.exec import ExecTiming, exec_stream
from trunner.executors.kubernetes.names import JobIdentity
from trunner.executors.kubernetes.podstate import explain_stop
from trunner.executors.kubernetes.settings import JobPodConfig, KubeJobSettings, KubernetesSettings
from trunner.executors.kubernetes.stage import job_stage
from trunner.executors.kubernetes.wait import pod_path, wait_until_running
from trunner.executors.settings import JobRunSettings
from trunner.kube.client import KubeApiSettings, KubeClient
from trunner.kube.config import KubeConfig
from trunner.kube.errors import AlreadyExists, KubeError, NotFound, StatusError, TransportError
from trunner.kube.objects import (
    ObjectError,
    OwnerReference,
    PodObservation,
    from_wire,
    lenient,
    to_wire,
)
from trunner.models import RunnerJob
from trunner.net.retry import RetryPolicy
from trunner.observability.metrics import RunnerMetrics

logger = logging.getLogger("trunner.executors.kubernetes")

SETTINGS: tuple[type[Any], ...] = (JobRunSettings, KubeJobSettings, KubeApiSettings)

CLEANUP_TIMEOUT = 30.0
"""Seconds the deletion of one job's objects may take, even after cancellation."""
LEFTOVER_TIMEOUT = 120.0
"""Seconds the startup deletion of a previous run's objects may take."""


@attrs.frozen
class ObjectKind:
    """A resource type the executor creates: its kind and collection path in a namespace."""

    kind: str
    prefix: str
    plural: str

    def collection(self, namespace: str) -> str:
        return f"{self.prefix}/namespaces/{namespace}/{self.plural}"

    def item(self, namespace: str, name: str) -> str:
        return f"{self.collection(namespace)}/{name}"


SECRETS = ObjectKind("Secret", "/api/v1", "secrets")
CONFIG_MAPS = ObjectKind("ConfigMap", "/api/v1", "configmaps")
DISRUPTION_BUDGETS = ObjectKind("PodDisruptionBudget", "/apis/policy/v1", "poddisruptionbudgets")
PODS = ObjectKind("Pod", "/api/v1", "pods")
JOB_KINDS = (PODS, DISRUPTION_BUDGETS, SECRETS)
"""What a job creates."""
LEFTOVER_KINDS = (*JOB_KINDS, CONFIG_MAPS)
"""What a crashed runner may have left: trunner versions before the job Secret put the files in a
ConfigMap."""


def _api_problem(exc: KubeError) -> str:
    if isinstance(exc, StatusError):
        return f"{exc.code} {exc.reason or 'error'}: {exc.message or '(no message)'}"
    return str(exc)


class KubernetesExecutor:
    name = "kubernetes"

    def __init__(
        self,
        client: KubeClient,
        config: JobPodConfig,
        *,
        runner_id: str,
        naming: JobNaming = JobNaming.NUMBER,
        observe_pod_start: Callable[[float], None] | None = None,
        exec_timing: ExecTiming | None = None,
        wall_clock: Callable[[], float] = time.time,
        cleanup_timeout: float = CLEANUP_TIMEOUT,
        resume_policy: ResumePolicy | None = None,
        observe_resume: Callable[[float], None] | None = None,
    ) -> None:
        self.client = client
        self.config = config
        self.runner_id = runner_id
        self.naming = naming
        self._observe_pod_start = observe_pod_start
        self._exec_timing = exec_timing
        self._wall_clock = wall_clock
        self._cleanup_timeout = cleanup_timeout
        self._resume_policy = resume_policy
        self._observe_resume = observe_resume

    def check_job(self, job: RunnerJob) -> list[str]:
        return podspec.job_problems(job, self.config)

    def identity(self, job: RunnerJob) -> JobIdentity:
        return names.job_identity(
            job,
            runner_id=self.runner_id,
            owner=self.config.owner,
            naming=self.naming,
            unix_time=int(self._wall_clock()),
        )

    async def run(self, job: RunnerJob, output: OutputFeed) -> ExitResult:
        started = trio.current_time()
        try:
            objects = podspec.build_job_objects(job, self.identity(job), self.config)
        except podspec.PodSpecError as exc:
            return ExitResult(ExitKind.COULD_NOT_START, message="; ".join(exc.problems))
        name = objects.pod.metadata.name
        created: list[ObjectKind] = []
        try:
            return await self._run(job, objects, created, output, started)
        finally:
            await self._delete_all(name, created)

    async def _run(
        self,
        job: RunnerJob,
        objects: podspec.JobObjects,
        created: list[ObjectKind],
        output: OutputFeed,
        started: float,
    ) -> ExitResult:
        namespace = self.config.namespace
        name = objects.pod.metadata.name
        pod: Any = None
        for kind, obj in (
            (SECRETS, objects.secret),
            (DISRUPTION_BUDGETS, objects.pod_disruption_budget),
            (PODS, objects.pod),
        ):
            if obj is None:
                continue
            # Recorded before the call: a create that timed out may still have happened.
            created.append(kind)
            try:
                answer = await self.client.request("POST", kind.collection(namespace), json=to_wire(obj))
            except KubeError as exc:
                if isinstance(exc, AlreadyExists):
                    created.remove(kind)  # someone else's object: never delete it
                return ExitResult(
                    ExitKind.COULD_NOT_START,
                    message=f"could not create the {kind.kind} {namespace}/{name}: {_api_problem(exc)}",
                )
            if kind is PODS:
                pod = answer
        if objects.secret is not None:
            await self._own_secret(name, pod)
        pod_created = trio.current_time()
        not_running = await wait_until_running(
            self.client, namespace, name, max_wait=self.config.max_wait, output=output
        )
        if not_running is not None:
            return not_running
        if self._observe_pod_start is not None:
            self._observe_pod_start(trio.current_time() - pod_created)
        timing = self._exec_timing or ExecTiming(connect_timeout=self.config.exec_max_wait)
        with trio.move_on_at(started + self.config.lifetime) as lifetime:
            if self.config.durable:
                result = await run_stage(
                    StageTarget(self.client, namespace, name, podspec.JOB_CONTAINER, timing),
                    job_stage(self.config.shell, self.config.workdir, job.id),
                    podspec.main_command(self.config, job),
                    output,
                    policy=self._resume_policy,
                    observe_resume=self._observe_resume,
                )
            else:
                result = await exec_stream(
                    self.client,
                    namespace,
                    name,
                    podspec.JOB_CONTAINER,
                    podspec.main_command(self.config, job),
                    output,
                    timing=timing,
                )
        if lifetime.cancelled_caught:
            return ExitResult(
                ExitKind.LIFETIME_EXCEEDED,
                message=f"the job ran longer than its lifetime of {self.config.lifetime:g} s",
            )
        if result.kind is not ExitKind.EXITED or result.exit_code in (137, 143):
            return await self._explained(name, result)
        return result

    async def _own_secret(self, name: str, pod: Any) -> None:
        """Make the job's Secret a dependent of its pod. Not needed for the job to run (the
        Secret is deleted after it either way), so a failure is logged, not fatal."""
        uid = ((pod or {}).get("metadata") or {}).get("uid") if isinstance(pod, dict) else None
        if not isinstance(uid, str) or not uid:
            logger.warning("the API server returned pod %s without a uid; its Secret has no owner", name)
            return
        owner = OwnerReference(api_version="v1", kind="Pod", name=name, uid=uid)
        try:
            await self.client.request(
                "PATCH",
                SECRETS.item(self.config.namespace, name),
                json={"metadata": {"ownerReferences": [to_wire(owner)]}},
            )
        except KubeError as exc:
            logger.warning(
                "could not make pod %s/%s the owner of its Secret (it is deleted after the job all the "
                "same): %s",
                self.config.namespace,
                name,
                _api_problem(exc),
            )

    async def _explained(self, name: str, result: ExitResult) -> ExitResult:
        """``result`` with what happened to the pod appended, when the pod tells (OOM kill,
        eviction, deletion); the exec alone cannot tell these from a dropped connection."""
        try:
            with trio.move_on_after(10):
                raw = await self.client.request("GET", pod_path(self.config.namespace, name), timeout=5)
                reason = explain_stop(from_wire(raw, PodObservation, where=f"pod {name}", converter=lenient))
                if reason:
                    message = f"{result.message}; {reason}" if result.message else reason
                    return attrs.evolve(result, message=message)
        except (KubeError, ObjectError) as exc:
            logger.info("could not read pod %s after its exec ended: %s", name, exc)
        return result

    async def _delete_all(self, name: str, kinds: list[ObjectKind]) -> None:
        """Delete the job's objects concurrently; shielded so it also runs when cancelled."""
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + self._cleanup_timeout
            async with trio.open_nursery() as nursery:
                for kind in JOB_KINDS:
                    if kind in kinds:
                        nursery.start_soon(self._delete, kind, name)
        if scope.cancelled_caught:
            logger.error(
                "deleting the objects of %s/%s did not finish within %g s; they are deleted when this "
                "runner restarts",
                self.config.namespace,
                name,
                self._cleanup_timeout,
            )

    async def _delete(self, kind: ObjectKind, name: str) -> bool:
        try:
            await self.client.request(
                "DELETE", kind.item(self.config.namespace, name), params={"propagationPolicy": "Background"}
            )
        except NotFound:
            return True
        except KubeError as exc:
            logger.error("could not delete %s %s/%s: %s", kind.kind, self.config.namespace, name, exc)
            return False
        return True

    async def delete_leftovers(self) -> int:
        """Delete every object an earlier process of this runner (same owner) left behind, e.g.
        after a crash; returns how many were deleted. Problems are logged, not raised: the runner
        can work without this."""
        selector = names.leftover_selector(self.config.owner)
        deleted = await self._delete_leftover_secrets(selector)
        for kind in LEFTOVER_KINDS:
            if kind is SECRETS:
                continue
            try:
                listing = await self.client.request(
                    "GET", kind.collection(self.config.namespace), params={"labelSelector": selector}
                )
            except KubeError as exc:
                logger.warning("cannot list leftover %ss (%s): %s", kind.kind, selector, exc)
                continue
            for item in (listing or {}).get("items", []):
                name = (item.get("metadata") or {}).get("name")
                if isinstance(name, str) and name:
                    logger.info("deleting leftover %s %s/%s", kind.kind, self.config.namespace, name)
                    if await self._delete(kind, name):
                        deleted += 1
        return deleted

    async def _delete_leftover_secrets(self, selector: str) -> int:
        """One deletecollection by label: the Role then needs no ``list`` of Secrets, which would
        let the runner read every Secret of the namespace."""
        try:
            answer = await self.client.request(
                "DELETE",
                SECRETS.collection(self.config.namespace),
                params={"labelSelector": selector, "propagationPolicy": "Background"},
            )
        except KubeError as exc:
            logger.warning("cannot delete leftover Secrets (%s): %s", selector, exc)
            return 0
        names_deleted = [(item.get("metadata") or {}).get("name") for item in (answer or {}).get("items", [])]
        for name in names_deleted:
            logger.info("deleted leftover Secret %s/%s", self.config.namespace, name)
        return len(names_deleted)


REACHABILITY_TIMEOUT = 10.0


async def _unreachable(kube_config: KubeConfig, api_settings: KubeApiSettings, namespace: str) -> str | None:
    """Why one request to the API (listing a pod of the job namespace) got no HTTP answer within
    seconds, or None once it answered anything, even an error: that server is reachable."""
    timeout = min(REACHABILITY_TIMEOUT, api_settings.k8s_api_timeout)
    try:
        async with KubeClient.open(
            kube_config, api_settings, retry=RetryPolicy(max_retries=0, total=0)
        ) as probe:
            await probe.request(
                "GET", f"/api/v1/namespaces/{namespace}/pods", params={"limit": "1"}, timeout=timeout
            )
    except TransportError as exc:
        return str(exc)
    except KubeError:
        return None
    return None


@asynccontextmanager
async def open_executor(
    settings: KubernetesSettings,
    *,
    runner_id: str,
    naming: JobNaming = JobNaming.NUMBER,
    metrics: RunnerMetrics | None = None,
    observe_pod_start: Callable[[float], None] | None = None,
    resume_policy: ResumePolicy | None = None,
) -> AsyncIterator[KubernetesExecutor]:
    """The executor with its API client; leftovers of a previous run are deleted before it is
    handed out. Each pod's seconds from creation to running go to ``observe_pod_start``, or
    else to ``metrics.pod_start_latency``."""
    if observe_pod_start is None and metrics is not None:
        observe_pod_start = metrics.pod_start_latency.observe
    config, api_settings, kube_config = settings.pods, settings.api, settings.cluster
    problem = await _unreachable(kube_config, api_settings, config.namespace)
    if problem:
        raise ExecutorUnavailable(
            f"the Kubernetes API at {kube_config.server} cannot be reached: {problem}; check that the "
            "cluster is up and the kubeconfig (KUBECONFIG, ~/.kube/config, --k8s-context) points at it"
        )
    async with KubeClient.open(kube_config, api_settings) as client:
        executor = KubernetesExecutor(
            client,
            config,
            runner_id=runner_id,
            naming=naming,
            observe_pod_start=observe_pod_start,
            resume_policy=resume_policy,
            observe_resume=metrics.exec_resumed if metrics is not None else None,
        )
        with trio.move_on_after(LEFTOVER_TIMEOUT) as startup:
            deleted = await executor.delete_leftovers()
        if startup.cancelled_caught:
            logger.warning(
                "deleting leftover job objects took over %g s; continuing without", LEFTOVER_TIMEOUT
            )
        elif deleted:
            logger.info("deleted %d leftover job objects of owner %s", deleted, config.owner)
        yield executor
