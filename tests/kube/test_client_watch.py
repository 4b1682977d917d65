"""Watches: chunked JSON lines from a resourceVersion, bookmarks, ERROR 410 Expired, the end of
the stream, the read timeout, and retries of the watch request itself."""

from __future__ import annotations

import pytest
import trio

from tests.doubles.kube import PodBehaviour, serve_kube_api
from tests.kube.transport_support import NS, POD, client_for
from trunner.kube import watch as watch_module
from trunner.kube.errors import Expired, NotFound, ResponseTooLarge, TransportError
from trunner.kube.watch import WatchEvent, WatchEventType

PODS = f"/api/v1/namespaces/{NS}/pods"
CONFIGMAPS = f"/api/v1/namespaces/{NS}/configmaps"


def configmap(name: str, labels: dict[str, str] | None = None) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels or {}}}


async def collect(events: object, count: int) -> list[WatchEvent]:
    found: list[WatchEvent] = []
    async for event in events:  # type: ignore[attr-defined]
        found.append(event)
        if len(found) == count:
            break
    return found


async def test_watch_from_a_resource_version(autojump_clock: trio.testing.MockClock) -> None:
    async with serve_kube_api() as api, client_for(api) as client:
        await client.request("POST", CONFIGMAPS, json=configmap("before"))
        listed = await client.request("GET", CONFIGMAPS)
        rv = listed["metadata"]["resourceVersion"]
        await client.request("POST", CONFIGMAPS, json=configmap("a"))
        await client.request("PATCH", f"{CONFIGMAPS}/a", json={"data": {"x": "1"}})
        async with client.watch(CONFIGMAPS, params={"resourceVersion": rv}) as events:
            first = await collect(events, 2)
            await client.request("DELETE", f"{CONFIGMAPS}/a")
            last = await collect(events, 1)
        kinds = [(e.type, e.object["metadata"]["name"]) for e in first + last]
        assert kinds == [
            (WatchEventType.ADDED, "a"),
            (WatchEventType.MODIFIED, "a"),
            (WatchEventType.DELETED, "a"),
        ]
        versions = [int(e.resource_version) for e in first + last]
        assert versions == sorted(versions) and versions[0] > int(rv)
        request = api.requests[-2]
        assert request.param("watch") == "1"
        assert request.param("resourceVersion") == rv


async def test_watch_without_a_version_starts_with_the_current_objects(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with serve_kube_api() as api, client_for(api) as client:
        await client.request("POST", CONFIGMAPS, json=configmap("x", {"team": "a"}))
        await client.request("POST", CONFIGMAPS, json=configmap("y", {"team": "b"}))
        async with client.watch(CONFIGMAPS, params={"labelSelector": "team=b"}) as events:
            (event,) = await collect(events, 1)
        assert event.type is WatchEventType.ADDED
        assert event.object["metadata"]["name"] == "y"


async def test_pod_lifecycle_is_watched_by_field_selector(autojump_clock: trio.testing.MockClock) -> None:
    async with serve_kube_api() as api, client_for(api) as client:
        api.pod_behaviour = PodBehaviour(schedule_delay=2, start_delay=5)
        created = await client.request("POST", PODS, json=POD)
        assert created["status"]["phase"] == "Pending"
        started = trio.current_time()
        phases = []
        async with client.watch(
            PODS,
            params={
                "fieldSelector": "metadata.name=job-1",
                "resourceVersion": created["metadata"]["resourceVersion"],
                "allowWatchBookmarks": True,
                "timeoutSeconds": 300,
            },
        ) as events:
            async for event in events:
                phases.append((event.object["status"]["phase"], trio.current_time() - started))
                if event.object["status"]["phase"] == "Running":
                    break
        assert phases == [("Pending", 2.0), ("Running", 7.0)]


async def test_bookmarks(autojump_clock: trio.testing.MockClock) -> None:
    async with serve_kube_api() as api, client_for(api) as client:
        async with client.watch(
            CONFIGMAPS, params={"allowWatchBookmarks": True, "resourceVersion": "1000"}
        ) as events:
            api.bookmark()
            (event,) = await collect(events, 1)
        assert event.type is WatchEventType.BOOKMARK
        assert event.object == {
            "kind": "ConfigMap",
            "apiVersion": "v1",
            "metadata": {"resourceVersion": "999"},
        }
        assert event.resource_version == "999"


async def test_too_old_resource_version_raises_expired(autojump_clock: trio.testing.MockClock) -> None:
    async with serve_kube_api() as api, client_for(api) as client:
        await client.request("POST", CONFIGMAPS, json=configmap("a"))
        old = (await client.request("GET", CONFIGMAPS))["metadata"]["resourceVersion"]
        await client.request("POST", CONFIGMAPS, json=configmap("b"))
        api.compact()
        async with client.watch(CONFIGMAPS, params={"resourceVersion": old}) as events:
            with pytest.raises(Expired) as caught:
                await collect(events, 1)
        assert caught.value.code == 410
        assert caught.value.message.startswith(f"too old resource version: {old} (")


async def test_server_ending_the_stream_ends_the_iteration(autojump_clock: trio.testing.MockClock) -> None:
    async with serve_kube_api() as api, client_for(api) as client:
        async with client.watch(
            CONFIGMAPS, params={"timeoutSeconds": 30, "resourceVersion": "999"}
        ) as events:
            started = trio.current_time()
            assert await collect(events, 1) == []
        assert trio.current_time() - started == pytest.approx(30)
        async with client.watch(CONFIGMAPS, params={"resourceVersion": "999"}) as events:
            api.end_watches()
            assert await collect(events, 1) == []


async def test_read_timeout_on_a_silent_watch(autojump_clock: trio.testing.MockClock) -> None:
    async with serve_kube_api() as api, client_for(api) as client:
        async with client.watch(CONFIGMAPS, params={"resourceVersion": "999"}, read_timeout=45) as events:
            started = trio.current_time()
            with pytest.raises(TransportError, match="no data for 45 s"):
                await collect(events, 1)
        assert trio.current_time() - started == pytest.approx(45)


async def test_watch_request_is_retried_and_errors_are_typed(autojump_clock: trio.testing.MockClock) -> None:
    async with serve_kube_api() as api, client_for(api) as client:
        api.throttle(times=1, retry_after=2)
        async with client.watch(CONFIGMAPS, params={"resourceVersion": "999"}) as events:
            await client.request("POST", CONFIGMAPS, json=configmap("late"))
            (event,) = await collect(events, 1)
        assert event.object["metadata"]["name"] == "late"
        with pytest.raises(NotFound):
            async with client.watch(f"/api/v1/namespaces/{NS}/nothing/here/at/all"):
                pass


async def test_a_watch_event_over_the_limit_is_an_error_not_unbounded_memory(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(watch_module, "MAX_EVENT_BYTES", 4096)
    async with serve_kube_api() as api, client_for(api) as client:
        await client.request("POST", CONFIGMAPS, json=configmap("small"))
        big = {**configmap("big"), "data": {"x": "y" * 8192}}
        await client.request("POST", CONFIGMAPS, json=big)
        async with client.watch(CONFIGMAPS, params={"resourceVersion": "1"}) as events:
            [first] = await collect(events, 1)
            assert first.object["metadata"]["name"] == "small"
            with pytest.raises(ResponseTooLarge, match="an event is larger than 4096 bytes"):
                await collect(events, 1)
