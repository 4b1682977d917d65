"""Waiting for a job pod: the pure reading of a Pod's status (each reason) and, against the
Kubernetes API double, the watch loop with its notes, timeouts, re-lists and resumes."""

from __future__ import annotations

from typing import Any

import pytest

from trunner.kube.objects import PodObservation, from_wire, lenient
from trunner.kube.podstate import PodState, PodVerdict, evaluate, explain_stop


def pod(phase: str = "Pending", *, containers: list[dict[str, Any]] | None = None,
        init: list[dict[str, Any]] | None = None, conditions: list[dict[str, Any]] | None = None,
        deleting: bool = False, **status: Any) -> PodObservation:
    raw: dict[str, Any] = {
        "metadata": {"name": "opslevel-job-1-1", "resourceVersion": "7", "uid": "u-1"},
        "spec": {"containers": [{"name": "job", "image": "x"}]},
        "status": {"phase": phase, **status},
    }
    if deleting:
        raw["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    if containers is not None:
        raw["status"]["containerStatuses"] = containers
    if init is not None:
        raw["status"]["initContainerStatuses"] = init
    if conditions is not None:
        raw["status"]["conditions"] = conditions
    return from_wire(raw, PodObservation, where="pod", converter=lenient)


def waiting(name: str, reason: str, message: str = "") -> dict[str, Any]:
    state: dict[str, Any] = {"reason": reason}
    if message:
        state["message"] = message
    return {"name": name, "ready": False, "restartCount": 0, "image": "x", "imageID": "",
            "state": {"waiting": state}}


def terminated(name: str, code: int, reason: str = "Error", message: str = "") -> dict[str, Any]:
    state: dict[str, Any] = {"exitCode": code, "reason": reason, "startedAt": "2026-01-01T00:00:00Z"}
    if message:
        state["message"] = message
    return {"name": name, "ready": False, "restartCount": 0, "state": {"terminated": state}}


UNSCHEDULABLE = {
    "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
    "message": "0/3 nodes are available: 3 Insufficient cpu.", "lastTransitionTime": "2026-01-01T00:00:00Z",
}


def test_running_is_ready() -> None:
    assert evaluate(pod("Running")).state is PodState.READY


def test_a_new_pod_waits() -> None:
    assert evaluate(pod("Pending")) == PodVerdict(PodState.WAITING, "the pod is Pending")
    assert evaluate(PodObservation()) == PodVerdict(PodState.WAITING, "the pod has no status yet")


def test_unschedulable_reports_the_condition() -> None:
    assert evaluate(pod(conditions=[UNSCHEDULABLE])) == PodVerdict(
        PodState.WAITING, "PodScheduled=False Unschedulable: 0/3 nodes are available: 3 Insufficient cpu."
    )


@pytest.mark.parametrize("reason", ["ContainerCreating", "PodInitializing", "ImagePullBackOff", "ErrImagePull",
                                    "CreateContainerConfigError", "CreateContainerError", "CrashLoopBackOff",
                                    "RunContainerError", "RegistryUnavailable"])
def test_recoverable_reasons_keep_waiting_and_are_reported(reason: str) -> None:
    verdict = evaluate(pod(containers=[waiting("job", reason, "details here")]))
    assert verdict == PodVerdict(PodState.WAITING, f"container job: {reason}: details here")


@pytest.mark.parametrize("reason", ["InvalidImageName", "ErrImageNeverPull"])
def test_hopeless_image_reasons_fail_at_once(reason: str) -> None:
    verdict = evaluate(pod(containers=[waiting("job", reason, 'couldn\'t parse image name "Bad:Image"')]))
    assert verdict == PodVerdict(PodState.FAILED, f"container job: {reason}: couldn't parse image name \"Bad:Image\"")


def test_init_containers_are_reported_too() -> None:
    verdict = evaluate(pod(init=[waiting("helper", "ImagePullBackOff", 'Back-off pulling image "h"'),
                                 waiting("init", "PodInitializing")],
                           containers=[waiting("job", "PodInitializing")]))
    assert verdict.state is PodState.WAITING
    assert verdict.detail == (
        'init container helper: ImagePullBackOff: Back-off pulling image "h"; '
        "init container init: PodInitializing; container job: PodInitializing"
    )


def test_a_failed_init_container_fails_at_once_with_its_exit_code() -> None:
    verdict = evaluate(pod(init=[terminated("helper", 0, "Completed"), terminated("init", 128)]))
    assert verdict == PodVerdict(PodState.FAILED, "init container init exited with code 128 (Error)", 128)


@pytest.mark.parametrize("phase", ["Failed", "Succeeded"])
def test_ending_before_running_fails_with_the_reason(phase: str) -> None:
    verdict = evaluate(pod(phase, reason="Evicted", message="The node was low on resource: memory.",
                           init=[terminated("init", 2)]))
    assert verdict == PodVerdict(
        PodState.FAILED,
        f"the pod {phase.lower()} before it was running: Evicted: The node was low on resource: memory.; "
        "init container init exited with code 2 (Error)",
        2,
    )
    assert evaluate(pod(phase)) == PodVerdict(PodState.FAILED, f"the pod {phase.lower()} before it was running")


def test_a_deleted_pod_fails() -> None:
    assert evaluate(pod(deleting=True)).state is PodState.FAILED


def test_long_messages_are_clipped_to_one_line() -> None:
    verdict = evaluate(pod(containers=[waiting("job", "ErrImagePull", "line\n" * 400)]))
    assert "\n" not in verdict.detail and len(verdict.detail) < 600


def test_explain_stop_names_oom_eviction_and_disruption() -> None:
    oom = pod("Running", containers=[terminated("job", 137, "OOMKilled")])
    assert explain_stop(oom) == "container job ended: OOMKilled (exit code 137)"
    evicted = pod("Failed", reason="Evicted", message="low on ephemeral-storage",
                  conditions=[{"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI",
                               "message": "Eviction API: evicting"}], deleting=True)
    assert explain_stop(evicted) == (
        "the pod failed: Evicted: low on ephemeral-storage; "
        "the pod is marked for disruption: EvictionByEvictionAPI: Eviction API: evicting; the pod was being deleted"
    )
    assert explain_stop(pod("Running", containers=[{"name": "job", "state": {"running": {}}}])) is None
