"""The double's generic resource store and pod lifecycle, as other parts reuse them (leases,
deployments, pods/status, configmaps, disruption budgets)."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from tests.doubles.kube import PodBehaviour, serve_kube_api
from tests.doubles.kube_store import ApiFailure, label_matcher, merge_patch, selector_string
from tests.kube.transport_support import NS, POD, client_for
from trunner.kube.client import KubeClient
from trunner.kube.errors import BadRequest, Conflict, Invalid, NotFound, StatusError
from trunner.kube.watch import WatchEventType

LEASES = f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases"
DEPLOYMENTS = f"/apis/apps/v1/namespaces/{NS}/deployments"
PODS = f"/api/v1/namespaces/{NS}/pods"
CONFIGMAPS = f"/api/v1/namespaces/{NS}/configmaps"


def lease(name: str, holder: str) -> dict[str, Any]:
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15},
    }


async def test_grouped_resources_with_optimistic_concurrency(autojump_clock: trio.testing.MockClock) -> None:
    async with serve_kube_api() as api, client_for(api) as client:
        created = await client.request("POST", LEASES, json=lease("leader", "a"))
        assert created["metadata"]["generation"] == 1
        update = dict(created, spec=dict(created["spec"], holderIdentity="b"))
        updated = await client.request("PUT", f"{LEASES}/leader", json=update)
        assert updated["spec"]["holderIdentity"] == "b"
        assert updated["metadata"]["generation"] == 2
        assert int(updated["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])
        with pytest.raises(Conflict) as stale:
            await client.request("PUT", f"{LEASES}/leader", json=update)
        assert stale.value.message.startswith(
            'Operation cannot be fulfilled on leases.coordination.k8s.io "leader"'
        )
        assert stale.value.status.details is not None
        assert stale.value.status.details.group == "coordination.k8s.io"
        with pytest.raises(NotFound, match='leases.coordination.k8s.io "other" not found'):
            await client.request("PUT", f"{LEASES}/other", json=lease("other", "a"))
        assert api.get("leases", "leader", namespace=NS, api_version="coordination.k8s.io/v1") is not None


async def test_merge_patch_and_its_resource_version_precondition(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with serve_kube_api() as api, client_for(api) as client:
        deployment = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "runner", "annotations": {"a": "1", "b": "2"}},
            "spec": {"replicas": 2},
        }
        await client.request("POST", DEPLOYMENTS, json=deployment)
        patched = await client.request(
            "PATCH",
            f"{DEPLOYMENTS}/runner",
            json={"metadata": {"annotations": {"a": None, "c": "3"}}, "spec": {"replicas": 5}},
        )
        assert patched["metadata"]["annotations"] == {"b": "2", "c": "3"}
        assert patched["spec"] == {"replicas": 5}
        with pytest.raises(Conflict):
            await client.request(
                "PATCH", f"{DEPLOYMENTS}/runner", json={"metadata": {"resourceVersion": "1"}}
            )
        with pytest.raises(StatusError, match="415 UnsupportedMediaType"):
            await client.request(
                "PATCH",
                f"{DEPLOYMENTS}/runner",
                json=[{"op": "remove", "path": "/spec"}],
                content_type="application/json-patch+json",
            )


async def test_status_subresource(autojump_clock: trio.testing.MockClock) -> None:
    async with serve_kube_api() as api, client_for(api) as client:
        api.pod_behaviour = PodBehaviour(schedule_delay=1000)
        await client.request("POST", PODS, json=dict(POD, status={"phase": "Running"}))
        pod = await client.request("GET", f"{PODS}/job-1")
        assert pod["status"]["phase"] == "Pending"
        patched = await client.request(
            "PATCH",
            f"{PODS}/job-1/status",
            json={"status": {"phase": "Failed"}, "spec": {"restartPolicy": "Always"}},
        )
        assert patched["status"]["phase"] == "Failed"
        assert patched["spec"]["restartPolicy"] == "Never"
        relabelled = await client.request(
            "PATCH",
            f"{PODS}/job-1",
            json={"metadata": {"labels": {"x": "y"}}, "status": {"phase": "Running"}},
        )
        assert relabelled["metadata"]["labels"]["x"] == "y"
        assert relabelled["status"]["phase"] == "Failed"


async def test_delete_answers(autojump_clock: trio.testing.MockClock) -> None:
    async with serve_kube_api() as api, client_for(api) as client:
        created = await client.request("POST", CONFIGMAPS, json={"metadata": {"name": "files"}, "data": {}})
        deleted = await client.request("DELETE", f"{CONFIGMAPS}/files")
        assert deleted == {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": {"name": "files", "kind": "configmaps", "uid": created["metadata"]["uid"]},
        }
        with pytest.raises(NotFound):
            await client.request("DELETE", f"{CONFIGMAPS}/files")
        await client.request("POST", PODS, json=POD)
        await trio.sleep(1)
        pod = await client.request("DELETE", f"{PODS}/job-1", params={"gracePeriodSeconds": 5})
        assert pod["kind"] == "Pod"
        assert pod["metadata"]["deletionTimestamp"]
        assert pod["metadata"]["deletionGracePeriodSeconds"] == 5
        assert api.get("pods", "job-1", namespace=NS) is None


async def test_graceful_pod_deletion_takes_time(autojump_clock: trio.testing.MockClock) -> None:
    async with serve_kube_api() as api, client_for(api) as client:
        api.pod_termination_delay = 3
        created = await client.request(
            "POST", PODS, json=dict(POD, spec=dict(POD["spec"], terminationGracePeriodSeconds=5))
        )
        await trio.sleep(1)
        async with client.watch(
            PODS, params={"resourceVersion": created["metadata"]["resourceVersion"]}
        ) as events:
            await client.request("DELETE", f"{PODS}/job-1")
            started = trio.current_time()
            seen = []
            async for event in events:
                seen.append((event.type, bool(event.object["metadata"].get("deletionTimestamp"))))
                if event.type is WatchEventType.DELETED:
                    break
        assert seen[-2:] == [(WatchEventType.MODIFIED, True), (WatchEventType.DELETED, True)]
        assert trio.current_time() - started == pytest.approx(3)


async def test_delete_collection_by_label(autojump_clock: trio.testing.MockClock) -> None:
    async with serve_kube_api() as api, client_for(api) as client:
        for name, owner in (("a", "runner-1"), ("b", "runner-2"), ("c", "runner-1")):
            body = {"metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": owner}}}
            await client.request("POST", CONFIGMAPS, json=body)
        deleted = await client.request(
            "DELETE", CONFIGMAPS, params={"labelSelector": "app.kubernetes.io/managed-by=runner-1"}
        )
        assert deleted["kind"] == "ConfigMapList"
        assert [i["metadata"]["name"] for i in api.objects("configmaps", namespace=NS)] == ["b"]


async def test_list_selectors_and_paging(autojump_clock: trio.testing.MockClock) -> None:
    async with serve_kube_api() as api, client_for(api) as client:
        for index in range(5):
            await client.request(
                "POST", CONFIGMAPS, json={"metadata": {"name": f"cm-{index}", "labels": {"n": str(index)}}}
            )
        names = await list_names(client, {"labelSelector": "n in (1,3),n!=3"})
        assert names == ["cm-1"]
        assert await list_names(client, {"fieldSelector": "metadata.name=cm-4"}) == ["cm-4"]
        first = await client.request("GET", CONFIGMAPS, params={"limit": 2})
        assert [i["metadata"]["name"] for i in first["items"]] == ["cm-0", "cm-1"]
        second = await client.request(
            "GET", CONFIGMAPS, params={"limit": 2, "continue": first["metadata"]["continue"]}
        )
        assert [i["metadata"]["name"] for i in second["items"]] == ["cm-2", "cm-3"]
        with pytest.raises(BadRequest, match="not a known field selector"):
            await client.request("GET", CONFIGMAPS, params={"fieldSelector": "spec.nodeName=x"})


async def list_names(client: KubeClient, params: dict[str, Any]) -> list[str]:
    listed = await client.request("GET", CONFIGMAPS, params=params)
    return [item["metadata"]["name"] for item in listed["items"]]


async def test_validation_the_double_performs(autojump_clock: trio.testing.MockClock) -> None:
    async with serve_kube_api() as api, client_for(api) as client:
        with pytest.raises(Invalid, match="a lowercase RFC 1123 subdomain"):
            await client.request("POST", CONFIGMAPS, json={"metadata": {"name": "Bad_Name"}})
        await client.request(
            "POST", CONFIGMAPS, json={"metadata": {"name": "frozen"}, "immutable": True, "data": {"a": "1"}}
        )
        with pytest.raises(Invalid, match="field is immutable"):
            await client.request("PATCH", f"{CONFIGMAPS}/frozen", json={"data": {"a": "2"}})
        generated = await client.request("POST", CONFIGMAPS, json={"metadata": {"generateName": "job-"}})
        assert generated["metadata"]["name"].startswith("job-")
        with pytest.raises(BadRequest, match="namespace of the provided object does not match"):
            await client.request("POST", CONFIGMAPS, json={"metadata": {"name": "x", "namespace": "other"}})
        assert api.requests[0].json()["metadata"]["name"] == "Bad_Name"


async def test_pod_lifecycles(autojump_clock: trio.testing.MockClock) -> None:
    behaviours = {
        "stuck": PodBehaviour(waiting=("ImagePullBackOff", 'Back-off pulling image "nope:1"')),
        "unschedulable": PodBehaviour(unschedulable="0/3 nodes are available: 3 Insufficient memory."),
        "failed": PodBehaviour(
            start_delay=2, final_phase="Failed", final_reason="Evicted", final_message="low on disk"
        ),
        "with-init": PodBehaviour(start_delay=4),
    }
    async with serve_kube_api() as api, client_for(api) as client:
        api.pod_behaviour = lambda pod: behaviours[pod["metadata"]["name"]]
        for name in behaviours:
            spec = dict(POD["spec"])
            if name == "with-init":
                spec["initContainers"] = [{"name": "helper", "image": "busybox"}]
            await client.request("POST", PODS, json=dict(POD, metadata={"name": name}, spec=spec))
        await trio.sleep(1)
        stuck = await client.request("GET", f"{PODS}/stuck")
        assert stuck["status"]["phase"] == "Pending"
        assert stuck["status"]["containerStatuses"][0]["state"] == {
            "waiting": {"reason": "ImagePullBackOff", "message": 'Back-off pulling image "nope:1"'}
        }
        unschedulable = await client.request("GET", f"{PODS}/unschedulable")
        (condition,) = unschedulable["status"]["conditions"]
        assert (condition["type"], condition["status"], condition["reason"]) == (
            "PodScheduled",
            "False",
            "Unschedulable",
        )
        assert "nodeName" not in unschedulable["spec"]
        init = await client.request("GET", f"{PODS}/with-init")
        assert init["status"]["initContainerStatuses"][0]["state"] == {
            "waiting": {"reason": "PodInitializing"}
        }
        assert init["status"]["containerStatuses"][0]["state"] == {"waiting": {"reason": "PodInitializing"}}
        await trio.sleep(5)
        failed = await client.request("GET", f"{PODS}/failed")
        assert (failed["status"]["phase"], failed["status"]["reason"]) == ("Failed", "Evicted")
        assert failed["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 1
        running = await client.request("GET", f"{PODS}/with-init")
        assert running["status"]["phase"] == "Running"
        assert running["status"]["initContainerStatuses"][0]["state"]["terminated"]["reason"] == "Completed"


def test_label_selector_grammar() -> None:
    labels = {"app": "runner", "tier": "ci"}
    assert label_matcher("app=runner")(labels)
    assert label_matcher("app==runner,tier")(labels)
    assert not label_matcher("!tier")(labels)
    assert label_matcher("missing!=x")(labels)
    assert label_matcher("tier notin (prod, staging)")(labels)
    assert not label_matcher("tier in (prod)")(labels)
    with pytest.raises(ApiFailure, match="unable to parse requirement"):
        label_matcher("app=(x")


def test_a_label_selector_is_written_as_the_apiserver_writes_it() -> None:
    selector = {
        "matchLabels": {"tier": "ci"},
        "matchExpressions": [
            {"key": "zone", "operator": "NotIn", "values": ["b", "a"]},
            {"key": "app", "operator": "Exists"},
            {"key": "legacy", "operator": "DoesNotExist"},
        ],
    }
    assert selector_string(selector) == "app,!legacy,tier=ci,zone notin (a,b)"
    assert label_matcher(selector_string(selector))({"app": "x", "tier": "ci", "zone": "c"})
    assert selector_string(None) == selector_string({}) == ""


def test_merge_patch_rfc7386() -> None:
    assert merge_patch({"a": {"b": 1, "c": 2}, "d": [1]}, {"a": {"b": None, "e": 3}, "d": [2]}) == {
        "a": {"c": 2, "e": 3},
        "d": [2],
    }
    assert merge_patch({"a": 1}, "text") == "text"


async def test_scale_subresource_validation_and_preconditions(autojump_clock: trio.testing.MockClock) -> None:
    async with serve_kube_api() as api, client_for(api) as client:
        await client.request(
            "POST",
            DEPLOYMENTS,
            json={
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "runner"},
                "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "runner"}}},
            },
        )
        scale_path = f"{DEPLOYMENTS}/runner/scale"
        scale = await client.request("GET", scale_path)
        assert scale["status"] == {"replicas": 0, "selector": "app=runner"}
        with pytest.raises(Invalid) as negative:
            await client.request("PUT", scale_path, json=dict(scale, spec={"replicas": -1}))
        assert negative.value.message == (
            'Scale.autoscaling "runner" is invalid: spec.replicas: Invalid value: -1: '
            "must be greater than or equal to 0"
        )
        assert negative.value.status.details is not None
        assert negative.value.status.details.group == "autoscaling"
        assert negative.value.status.details.kind == "Scale"
        with pytest.raises(BadRequest, match="cannot unmarshal string into Go struct field ScaleSpec"):
            await client.request("PUT", scale_path, json=dict(scale, spec={"replicas": "3"}))
        with pytest.raises(Conflict, match=r'deployments/scale\.apps "runner": Precondition failed: UID'):
            await client.request(
                "PUT", scale_path, json=dict(scale, metadata=dict(scale["metadata"], uid="other"))
            )
        unconditional = {"metadata": {"name": "runner"}, "spec": {"replicas": 4}}
        assert (await client.request("PUT", scale_path, json=unconditional))["spec"] == {"replicas": 4}
        patched = await client.request("PATCH", scale_path, json={"spec": {"replicas": 6}})
        assert patched["spec"] == {"replicas": 6}
        with pytest.raises(Conflict):
            await client.request(
                "PATCH", scale_path, json={"metadata": {"resourceVersion": "1"}, "spec": {"replicas": 1}}
            )
        deployment = api.get("deployments", "runner", namespace=NS, api_version="apps/v1")
        assert deployment is not None
        assert deployment["spec"] == {"replicas": 6, "selector": {"matchLabels": {"app": "runner"}}}
        with pytest.raises(StatusError, match="405 MethodNotAllowed"):
            await client.request("DELETE", scale_path)
        with pytest.raises(NotFound, match='deployments.apps "other" not found'):
            await client.request("GET", f"{DEPLOYMENTS}/other/scale")
        with pytest.raises(NotFound, match="the server could not find the requested resource"):
            await client.request("GET", f"{CONFIGMAPS}/runner/scale")
