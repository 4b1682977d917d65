"""Waiting for a job pod: the pure reading of a Pod's status (each reason) and, against the
Kubernetes API double, the watch loop with its notes, timeouts, re-lists and resumes."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from tests.doubles.kube import KubeApiDouble, PodBehaviour, matching, serve_kube_api
from tests.kube.transport_support import NS, POD, RecordingFeed, client_for
from trunner.executors.base import ExitKind, ExitResult
from trunner.executors.kubernetes.podstate import PodState, PodVerdict, evaluate, explain_stop
from trunner.executors.kubernetes.wait import wait_until_running
from trunner.kube.client import KubeClient
from trunner.kube.objects import PodObservation, from_wire, lenient


def pod(
    phase: str = "Pending",
    *,
    containers: list[dict[str, Any]] | None = None,
    init: list[dict[str, Any]] | None = None,
    conditions: list[dict[str, Any]] | None = None,
    deleting: bool = False,
    **status: Any,
) -> PodObservation:
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
    return {
        "name": name,
        "ready": False,
        "restartCount": 0,
        "image": "x",
        "imageID": "",
        "state": {"waiting": state},
    }


def terminated(name: str, code: int, reason: str = "Error", message: str = "") -> dict[str, Any]:
    state: dict[str, Any] = {"exitCode": code, "reason": reason, "startedAt": "2026-01-01T00:00:00Z"}
    if message:
        state["message"] = message
    return {"name": name, "ready": False, "restartCount": 0, "state": {"terminated": state}}


UNSCHEDULABLE = {
    "type": "PodScheduled",
    "status": "False",
    "reason": "Unschedulable",
    "message": "0/3 nodes are available: 3 Insufficient cpu.",
    "lastTransitionTime": "2026-01-01T00:00:00Z",
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


@pytest.mark.parametrize(
    "reason",
    [
        "ContainerCreating",
        "PodInitializing",
        "ImagePullBackOff",
        "ErrImagePull",
        "CreateContainerConfigError",
        "CreateContainerError",
        "CrashLoopBackOff",
        "RunContainerError",
        "RegistryUnavailable",
    ],
)
def test_recoverable_reasons_keep_waiting_and_are_reported(reason: str) -> None:
    verdict = evaluate(pod(containers=[waiting("job", reason, "details here")]))
    assert verdict == PodVerdict(PodState.WAITING, f"container job: {reason}: details here")


@pytest.mark.parametrize("reason", ["InvalidImageName", "ErrImageNeverPull"])
def test_hopeless_image_reasons_fail_at_once(reason: str) -> None:
    verdict = evaluate(pod(containers=[waiting("job", reason, 'couldn\'t parse image name "Bad:Image"')]))
    assert verdict == PodVerdict(
        PodState.FAILED, f'container job: {reason}: couldn\'t parse image name "Bad:Image"'
    )


def test_init_containers_are_reported_too() -> None:
    starting = evaluate(
        pod(init=[waiting("init", "PodInitializing")], containers=[waiting("job", "PodInitializing")])
    )
    assert starting == PodVerdict(
        PodState.WAITING, "init container init: PodInitializing; container job: PodInitializing"
    )


def test_a_problem_is_not_drowned_in_normal_start_reasons() -> None:
    verdict = evaluate(
        pod(
            init=[
                waiting("helper", "ImagePullBackOff", 'Back-off pulling image "h"'),
                waiting("init", "PodInitializing"),
            ],
            containers=[
                waiting("job", "ContainerCreating"),
                waiting("sidecar", "CreateContainerConfigError", 'secret "s" not found'),
            ],
        )
    )
    assert verdict == PodVerdict(
        PodState.WAITING,
        'init container helper: ImagePullBackOff: Back-off pulling image "h"; '
        'container sidecar: CreateContainerConfigError: secret "s" not found',
    )


def test_a_failed_init_container_fails_at_once_with_its_exit_code() -> None:
    verdict = evaluate(pod(init=[terminated("helper", 0, "Completed"), terminated("init", 128)]))
    assert verdict == PodVerdict(PodState.FAILED, "init container init exited with code 128 (Error)", 128)


@pytest.mark.parametrize("phase", ["Failed", "Succeeded"])
def test_ending_before_running_fails_with_the_reason(phase: str) -> None:
    verdict = evaluate(
        pod(
            phase,
            reason="Evicted",
            message="The node was low on resource: memory.",
            init=[terminated("init", 2)],
        )
    )
    assert verdict == PodVerdict(
        PodState.FAILED,
        f"the pod {phase.lower()} before it was running: Evicted: The node was low on resource: memory.; "
        "init container init exited with code 2 (Error)",
        2,
    )
    assert evaluate(pod(phase)) == PodVerdict(
        PodState.FAILED, f"the pod {phase.lower()} before it was running"
    )


def test_a_deleted_pod_fails() -> None:
    assert evaluate(pod(deleting=True)).state is PodState.FAILED


def test_long_messages_are_clipped_to_one_line() -> None:
    verdict = evaluate(pod(containers=[waiting("job", "ErrImagePull", "line\n" * 400)]))
    assert "\n" not in verdict.detail and len(verdict.detail) < 600


def test_explain_stop_names_oom_eviction_and_disruption() -> None:
    oom = pod("Running", containers=[terminated("job", 137, "OOMKilled")])
    assert explain_stop(oom) == "container job ended: OOMKilled (exit code 137)"
    evicted = pod(
        "Failed",
        reason="Evicted",
        message="low on ephemeral-storage",
        conditions=[
            {
                "type": "DisruptionTarget",
                "status": "True",
                "reason": "EvictionByEvictionAPI",
                "message": "Eviction API: evicting",
            }
        ],
        deleting=True,
    )
    assert explain_stop(evicted) == (
        "the pod failed: Evicted: low on ephemeral-storage; "
        "the pod is marked for disruption: EvictionByEvictionAPI: Eviction API: evicting; the pod was being deleted"
    )
    assert explain_stop(pod("Running", containers=[{"name": "job", "state": {"running": {}}}])) is None


# --- the watch loop against the API double --------------------------------------------------------

PODS = f"/api/v1/namespaces/{NS}/pods"


def run(pod_obj: dict[str, Any]) -> None:
    pod_obj["status"]["phase"] = "Running"
    pod_obj["status"]["containerStatuses"] = [
        {
            "name": "job",
            "ready": True,
            "restartCount": 0,
            "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}},
        }
    ]


def waiting_for(reason: str, message: str) -> Any:
    def change(pod_obj: dict[str, Any]) -> None:
        pod_obj["status"]["containerStatuses"] = [waiting("job", reason, message)]

    return change


class Waiter:
    """Runs wait_until_running in the background and keeps its result."""

    def __init__(self, client: KubeClient, max_wait: float = 600) -> None:
        self.client = client
        self.max_wait = max_wait
        self.feed = RecordingFeed()
        self.result: ExitResult | str | None = "pending"

    async def __call__(self) -> None:
        self.result = await wait_until_running(
            self.client, NS, "job-1", max_wait=self.max_wait, output=self.feed
        )


def watches(api: KubeApiDouble) -> list[str | None]:
    return [r.param("resourceVersion") for r in api.requests if r.path == PODS and r.param("watch") == "1"]


def lists(api: KubeApiDouble) -> int:
    return sum(1 for r in api.requests if r.path == PODS and r.method == "GET" and r.param("watch") is None)


async def stuck_pod(api: KubeApiDouble, client: KubeClient) -> None:
    api.pod_behaviour = PodBehaviour(waiting=("ImagePullBackOff", 'Back-off pulling image "x"'))
    await client.request("POST", PODS, json=POD)


async def test_running_is_seen_through_the_watch_not_by_polling(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with serve_kube_api() as api, client_for(api) as client:
        api.pod_behaviour = PodBehaviour(schedule_delay=20, start_delay=25)
        await client.request("POST", PODS, json=POD)
        waiter = Waiter(client)
        await waiter()
        assert waiter.result is None
        assert trio.current_time() == pytest.approx(45, abs=0.5)
        assert lists(api) == 1 and len(watches(api)) == 1
        [listing] = [r for r in api.requests if r.method == "GET" and r.param("watch") is None]
        assert listing.param("fieldSelector") == "metadata.name=job-1"
        [watch] = [r for r in api.requests if r.param("watch") == "1"]
        assert watch.param("fieldSelector") == "metadata.name=job-1"
        assert watch.param("allowWatchBookmarks") == "true"
        assert watch.param("timeoutSeconds") == "300"


async def test_the_watch_resumes_and_lists_again_after_410(autojump_clock: trio.testing.MockClock) -> None:
    async with serve_kube_api() as api, client_for(api) as client:
        await stuck_pod(api, client)
        waiter = Waiter(client)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            await trio.sleep(1)
            api.bookmark()
            await trio.sleep(1)
            bookmarked = str(api.store.revision)
            api.end_watches()  # the server ends the stream: resume from the bookmark
            await trio.sleep(1)
            api.put_object(
                {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "other", "namespace": NS}}
            )
            api.compact()
            api.end_watches()  # resuming from the bookmark is now 410 Expired: list again
            await trio.sleep(1)
            api.update_pod("job-1", run, namespace=NS)
        assert waiter.result is None
        versions = watches(api)
        assert len(versions) == 4 and lists(api) == 2
        assert versions[1] == versions[2] == bookmarked
        assert int(versions[3] or 0) >= api.store.compacted


async def test_waiting_reasons_are_noted_once_per_change(autojump_clock: trio.testing.MockClock) -> None:
    async with serve_kube_api() as api, client_for(api) as client:
        await stuck_pod(api, client)
        waiter = Waiter(client)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            await trio.sleep(5)
            api.update_pod(
                "job-1", lambda p: p["metadata"].setdefault("annotations", {}).update(x="1"), namespace=NS
            )
            await trio.sleep(5)
            api.update_pod("job-1", waiting_for("ErrImagePull", "rpc error: not found"), namespace=NS)
            await trio.sleep(5)
            api.update_pod(
                "job-1", waiting_for("ImagePullBackOff", 'Back-off pulling image "x"'), namespace=NS
            )
            await trio.sleep(5)
            api.update_pod("job-1", run, namespace=NS)
        prefix = f"Waiting for pod {NS}/job-1 to be running: "
        assert waiter.feed.notes == [
            prefix + 'container job: ImagePullBackOff: Back-off pulling image "x"',
            prefix + "container job: ErrImagePull: rpc error: not found",
            prefix + 'container job: ImagePullBackOff: Back-off pulling image "x"',
        ]


async def test_a_pod_deleted_while_waiting_fails(autojump_clock: trio.testing.MockClock) -> None:
    async with serve_kube_api() as api, client_for(api) as client:
        await stuck_pod(api, client)
        waiter = Waiter(client)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            await trio.sleep(3)
            await client.request("DELETE", f"{PODS}/job-1")
        assert waiter.result == ExitResult(
            ExitKind.COULD_NOT_START,
            message="pod job-1 could not start: the pod was deleted before it was running",
        )


async def test_a_missing_pod_fails_at_once(autojump_clock: trio.testing.MockClock) -> None:
    async with serve_kube_api() as api, client_for(api) as client:
        waiter = Waiter(client)
        await waiter()
        assert waiter.result == ExitResult(
            ExitKind.COULD_NOT_START,
            message="pod job-1 could not start: the pod disappeared before it was running",
        )


async def test_api_trouble_is_retried_and_named_on_timeout(autojump_clock: trio.testing.MockClock) -> None:
    async with serve_kube_api() as api, client_for(api) as client:
        await stuck_pod(api, client)
        api.fail(
            403,
            "Forbidden",
            'pods is forbidden: cannot watch resource "pods"',
            times=1000,
            match=lambda r: r.param("watch") == "1",
        )
        waiter = Waiter(client, max_wait=60)
        await waiter()
        assert waiter.result == ExitResult(
            ExitKind.POD_TIMEOUT,
            message="pod job-1 was not running within 60 s: container job: ImagePullBackOff: Back-off pulling "
            'image "x" (and the pod watch failed: 403 Forbidden: pods is forbidden: cannot watch resource "pods")',
        )
        assert 10 < lists(api) < 30  # backed off between attempts, not a hot loop


async def test_a_dropped_watch_connection_is_survived(autojump_clock: trio.testing.MockClock) -> None:
    async with serve_kube_api() as api, client_for(api) as client:
        api.pod_behaviour = PodBehaviour(schedule_delay=10, start_delay=10)
        await client.request("POST", PODS, json=POD)
        api.drop_connection(times=2, match=matching("GET"))
        waiter = Waiter(client)
        await waiter()
        assert waiter.result is None
