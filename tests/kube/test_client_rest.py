"""The REST client against the double: requests on the wire, typed errors, retries honouring
Retry-After, the QPS/burst limit, per-call timeouts (all in virtual time)."""

from __future__ import annotations

import itertools
import json

import attrs
import pytest
import trio

from tests.doubles.kube import matching, serve_kube_api
from tests.kube.transport_support import NS, POD, client_for
from trunner.kube import client as client_module
from trunner.kube.client import DEFAULT_RETRY, KubeApiSettings
from trunner.kube.errors import (
    AlreadyExists,
    BadRequest,
    Conflict,
    Expired,
    Forbidden,
    InternalError,
    Invalid,
    NotFound,
    ResponseTooLarge,
    Status,
    StatusCause,
    StatusDetails,
    StatusError,
    TooManyRequests,
    TransportError,
    Unauthorized,
    error_from_response,
    parse_status,
)
from trunner.kube.ratelimit import TokenBucket

PODS = f"/api/v1/namespaces/{NS}/pods"
CONFIGMAPS = f"/api/v1/namespaces/{NS}/configmaps"


def configmap(name: str, **data: str) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}


async def test_requests_on_the_wire(autojump_clock: trio.testing.MockClock) -> None:
    async with serve_kube_api() as api, client_for(api) as client:
        created = await client.request("POST", CONFIGMAPS, json=configmap("a", k="v"))
        assert created["metadata"]["resourceVersion"]
        got = await client.request("GET", f"{CONFIGMAPS}/a")
        assert got["data"] == {"k": "v"}
        patched = await client.request("PATCH", f"{CONFIGMAPS}/a", json={"data": {"k": None, "n": "1"}})
        assert patched["data"] == {"n": "1"}
        listed = await client.request(
            "GET",
            CONFIGMAPS,
            params={"labelSelector": "x!=y", "limit": 10, "watch": False, "tag": ["a", "b"]},
        )
        assert [item["metadata"]["name"] for item in listed["items"]] == ["a"]
        deleted = await client.request(
            "DELETE", f"{CONFIGMAPS}/a", params={"propagationPolicy": "Background"}
        )
        assert deleted["status"] == "Success"
        post, get, patch, list_, delete = api.requests
        assert post.method == "POST" and post.header("content-type") == "application/json"
        assert post.header("authorization") == "Bearer double-token"
        assert post.header("accept") == "application/json"
        assert json.loads(post.body)["metadata"]["name"] == "a"
        assert get.body == b""
        assert patch.header("content-type") == "application/merge-patch+json"
        assert list_.query == (
            ("labelSelector", "x!=y"),
            ("limit", "10"),
            ("watch", "false"),
            ("tag", "a"),
            ("tag", "b"),
        )
        assert delete.query == (("propagationPolicy", "Background"),)


async def test_explicit_content_type(autojump_clock: trio.testing.MockClock) -> None:
    async with serve_kube_api() as api, client_for(api) as client:
        await client.request("POST", CONFIGMAPS, json=configmap("a"))
        await client.request(
            "PATCH",
            f"{CONFIGMAPS}/a",
            json={"data": {"x": "1"}},
            content_type="application/strategic-merge-patch+json",
        )
        assert api.requests[-1].header("content-type") == "application/strategic-merge-patch+json"


async def test_typed_errors_from_status_bodies(autojump_clock: trio.testing.MockClock) -> None:
    async with serve_kube_api() as api, client_for(api) as client:
        with pytest.raises(NotFound) as missing:
            await client.request("GET", f"{PODS}/job-1")
        assert missing.value.code == 404
        assert missing.value.message == 'pods "job-1" not found'
        assert missing.value.status.details == StatusDetails(name="job-1", kind="pods")
        await client.request("POST", PODS, json=POD)
        with pytest.raises(AlreadyExists, match='pods "job-1" already exists'):
            await client.request("POST", PODS, json=POD)
        current = await client.request("GET", f"{PODS}/job-1")
        stale = dict(current, metadata=dict(current["metadata"], resourceVersion="1"))
        with pytest.raises(Conflict, match="the object has been modified"):
            await client.request("PUT", f"{PODS}/job-1", json=stale)
        bad = dict(POD, metadata={"name": "Job_1"})
        with pytest.raises(Invalid) as invalid:
            await client.request("POST", PODS, json=bad)
        assert invalid.value.status.details is not None
        assert invalid.value.status.details.causes[0].field == "metadata.name"
        api.fail(403, "Forbidden", 'pods "job-1" is forbidden: User "x" cannot get resource "pods"')
        with pytest.raises(Forbidden, match="cannot get resource"):
            await client.request("GET", f"{PODS}/job-1")
        with pytest.raises(BadRequest, match="Upgrade request required"):
            await client.request("GET", f"{PODS}/job-1/exec")


async def test_unauthorized_static_token_is_not_retried(autojump_clock: trio.testing.MockClock) -> None:
    async with serve_kube_api() as api, client_for(api) as client:
        api.tokens = {"another"}
        with pytest.raises(Unauthorized, match="401 Unauthorized: Unauthorized"):
            await client.request("GET", PODS)
        assert len(api.requests) == 1


async def test_429_plain_text_honours_retry_after(autojump_clock: trio.testing.MockClock) -> None:
    async with serve_kube_api() as api, client_for(api) as client:
        api.throttle(times=2, retry_after=3)
        started = trio.current_time()
        result = await client.request("GET", PODS)
        assert result["kind"] == "PodList"
        assert len(api.requests) == 3
        assert 6.0 <= trio.current_time() - started < 6.0 + 2 * 0.4


async def test_429_retried_for_post_too(autojump_clock: trio.testing.MockClock) -> None:
    async with serve_kube_api() as api, client_for(api) as client:
        api.throttle(times=1, retry_after=1)
        created = await client.request("POST", CONFIGMAPS, json=configmap("c"))
        assert created["metadata"]["name"] == "c"
        assert [r.method for r in api.requests] == ["POST", "POST"]


async def test_5xx_with_retry_after_is_retried_even_for_post(autojump_clock: trio.testing.MockClock) -> None:
    async with serve_kube_api() as api, client_for(api) as client:
        api.fail(
            503, "ServiceUnavailable", "the server is currently unable to handle the request", retry_after=2
        )
        await client.request("POST", CONFIGMAPS, json=configmap("c"))
        assert len(api.requests) == 2


async def test_5xx_without_retry_after_post_is_not_retried(autojump_clock: trio.testing.MockClock) -> None:
    async with serve_kube_api() as api, client_for(api) as client:
        api.fail(500, "InternalError", "Internal error occurred: etcdserver: request timed out")
        with pytest.raises(InternalError, match="etcdserver"):
            await client.request("POST", CONFIGMAPS, json=configmap("c"))
        assert len(api.requests) == 1


async def test_5xx_get_is_retried_with_growing_jittered_backoff(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with serve_kube_api() as api, client_for(api) as client:
        api.fail(500, "InternalError", "boom", times=3)
        await client.request("GET", PODS)
        times = [r.at for r in api.requests]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert len(gaps) == 3
        for attempt, gap in enumerate(gaps, start=1):
            ceiling = 0.25 * 2 ** (attempt - 1)
            assert ceiling / 2 <= gap <= ceiling + 1e-6


async def test_retries_are_bounded_by_attempts(autojump_clock: trio.testing.MockClock) -> None:
    async with (
        serve_kube_api() as api,
        client_for(api, retry=attrs.evolve(DEFAULT_RETRY, max_retries=3)) as client,
    ):
        api.fail(503, "ServiceUnavailable", "down", times=100)
        with pytest.raises(InternalError):
            await client.request("GET", PODS)
        assert len(api.requests) == 4


async def test_retries_are_bounded_by_total_time(autojump_clock: trio.testing.MockClock) -> None:
    async with (
        serve_kube_api() as api,
        client_for(api, retry=attrs.evolve(DEFAULT_RETRY, total=10)) as client,
    ):
        api.throttle(times=100, retry_after=4)
        started = trio.current_time()
        with pytest.raises(TooManyRequests) as caught:
            await client.request("GET", PODS)
        assert caught.value.retry_after == 4.0
        assert caught.value.message == "Too many requests, please try again later."
        assert trio.current_time() - started <= 10
        assert len(api.requests) == 3


async def test_retry_after_longer_than_the_budget_fails_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with serve_kube_api() as api, client_for(api) as client:
        api.throttle(times=1, retry_after=600)
        started = trio.current_time()
        with pytest.raises(TooManyRequests):
            await client.request("GET", PODS)
        assert trio.current_time() == started


async def test_dropped_connection_is_retried_for_get(autojump_clock: trio.testing.MockClock) -> None:
    async with serve_kube_api() as api, client_for(api) as client:
        api.drop_connection(times=2, match=matching("GET"))
        assert (await client.request("GET", PODS))["kind"] == "PodList"
        assert len(api.requests) == 3


async def test_dropped_connection_post_is_not_retried(autojump_clock: trio.testing.MockClock) -> None:
    async with serve_kube_api() as api, client_for(api) as client:
        api.drop_connection(times=1)
        with pytest.raises(TransportError, match=f"POST {CONFIGMAPS}"):
            await client.request("POST", CONFIGMAPS, json=configmap("c"))
        assert len(api.requests) == 1


async def test_per_call_timeout(autojump_clock: trio.testing.MockClock) -> None:
    retry = attrs.evolve(DEFAULT_RETRY, max_retries=0)
    async with serve_kube_api() as api, client_for(api, retry=retry) as client:
        api.delay(100)
        started = trio.current_time()
        with pytest.raises(TransportError, match="no answer within 2 s"):
            await client.request("GET", PODS, timeout=2)
        assert trio.current_time() - started == pytest.approx(2)
        api.delay(100)
        settings = KubeApiSettings(k8s_api_timeout=5)
        async with client_for(api, settings=settings, retry=retry) as slow:
            with pytest.raises(TransportError, match="no answer within 5 s"):
                await slow.request("GET", PODS)


async def test_unreachable_server_is_a_transport_error(autojump_clock: trio.testing.MockClock) -> None:
    async with serve_kube_api() as api:
        port = api.port
    async with serve_kube_api() as api, client_for(api, server=f"http://127.0.0.1:{port}") as client:
        with pytest.raises(TransportError, match="ConnectError") as caught:
            await client.request("GET", PODS)
    # The reason the connection failed is named once, without the exception group's count.
    message = str(caught.value)
    assert message.count(f"all attempts to connect to 127.0.0.1:{port} failed") == 1, message
    assert "sub-exception" not in message and "Connection refused" in message, message


async def test_qps_and_burst(autojump_clock: trio.testing.MockClock) -> None:
    settings = KubeApiSettings(k8s_api_qps=10, k8s_api_burst=5)
    async with serve_kube_api() as api, client_for(api, settings=settings) as client:
        started = trio.current_time()
        async with trio.open_nursery() as nursery:
            for _ in range(25):
                nursery.start_soon(client.request, "GET", PODS)
        offsets = sorted(r.at - started for r in api.requests)
        assert offsets[:5] == [0.0] * 5
        assert offsets[-1] == pytest.approx(2.0)
        for earlier, later in itertools.pairwise(offsets[4:]):
            assert later - earlier == pytest.approx(0.1)


async def test_token_bucket_refills_up_to_burst(autojump_clock: trio.testing.MockClock) -> None:
    bucket = TokenBucket(qps=2, burst=3)
    start = trio.current_time()
    for _ in range(3):
        await bucket.acquire()
    assert trio.current_time() == start
    await bucket.acquire()
    assert trio.current_time() - start == pytest.approx(0.5)
    await trio.sleep(100)
    mark = trio.current_time()
    for _ in range(3):
        await bucket.acquire()
    assert trio.current_time() == mark
    with pytest.raises(ValueError):
        TokenBucket(qps=0, burst=1)


# --- parsing error bodies ------------------------------------------------------------------------


def test_status_body_parsed_into_typed_error() -> None:
    body = (
        b'{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Pod \\"Job_1\\" is invalid",'
        b'"reason":"Invalid","details":{"name":"Job_1","kind":"Pod","causes":[{"reason":"FieldValueInvalid",'
        b'"message":"Invalid value","field":"metadata.name"}]},"code":422}'
    )
    error = error_from_response(422, body)
    assert isinstance(error, Invalid)
    assert error.status == Status(
        status="Failure",
        message='Pod "Job_1" is invalid',
        reason="Invalid",
        details=StatusDetails(
            name="Job_1",
            kind="Pod",
            causes=(StatusCause(reason="FieldValueInvalid", message="Invalid value", field="metadata.name"),),
        ),
        code=422,
    )
    assert str(error) == '422 Invalid: Pod "Job_1" is invalid'


@pytest.mark.parametrize(
    ("code", "body", "cls", "message"),
    [
        (
            429,
            b"Too many requests, please try again later.\n",
            TooManyRequests,
            "Too many requests, please try again later.",
        ),
        (403, b"", Forbidden, "HTTP 403 with an empty body"),
        (
            502,
            b"<html><body>Bad Gateway</body></html>",
            InternalError,
            "<html><body>Bad Gateway</body></html>",
        ),
        (404, b'{"message": 5}', NotFound, '{"message": 5}'),
        (
            410,
            b'{"kind":"Status","status":"Failure","reason":"Expired","message":"too old","code":410}',
            Expired,
            "too old",
        ),
        (409, b'{"status":"Failure","reason":"Conflict","message":"modified"}', Conflict, "modified"),
        (418, b"teapot", StatusError, "teapot"),
    ],
)
def test_error_bodies_of_every_shape(code: int, body: bytes, cls: type[StatusError], message: str) -> None:
    error = error_from_response(code, body)
    assert type(error) is cls
    assert error.code == code
    assert error.message == message


def test_eviction_429_carries_retry_after_seconds() -> None:
    body = (
        b'{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Cannot evict pod",'
        b'"reason":"TooManyRequests","details":{"causes":[{"reason":"DisruptionBudget","message":"x"}],'
        b'"retryAfterSeconds":10},"code":429}'
    )
    error = error_from_response(429, body)
    assert isinstance(error, TooManyRequests)
    assert error.retry_after == 10.0


def test_parse_status_rejects_non_objects() -> None:
    assert parse_status(b'{"metadata":{},"status":"Success"}') == Status(status="Success")
    with pytest.raises(ValueError, match="not JSON"):
        parse_status(b"{")
    with pytest.raises(ValueError, match="expected a JSON object"):
        parse_status(b"[]")
    with pytest.raises(ValueError, match="not a Status"):
        parse_status(b'{"details": 3}')


# --- the double's garbage collection (ownerReferences) ----------------------------------------------


async def test_a_dependent_goes_with_its_owner_as_the_garbage_collector_deletes_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    secrets = f"/api/v1/namespaces/{NS}/secrets"
    async with serve_kube_api() as api, client_for(api) as client:
        pod = await client.request("POST", f"/api/v1/namespaces/{NS}/pods", json=POD)
        owner = {"apiVersion": "v1", "kind": "Pod", "name": "job-1", "uid": pod["metadata"]["uid"]}
        await client.request("POST", secrets, json={"metadata": {"name": "job-1"}, "immutable": True})
        await client.request("POST", secrets, json={"metadata": {"name": "other"}})
        patched = await client.request(
            "PATCH", f"{secrets}/job-1", json={"metadata": {"ownerReferences": [owner]}}
        )
        assert patched["metadata"]["ownerReferences"] == [owner]
        await client.request("DELETE", f"/api/v1/namespaces/{NS}/pods/job-1")
        assert [s["metadata"]["name"] for s in api.objects("secrets", namespace=NS)] == ["other"]

        # A reference to an owner that is gone (another uid under the same name) is collected at once.
        await client.request("POST", f"/api/v1/namespaces/{NS}/pods", json=POD)
        await client.request("POST", secrets, json={"metadata": {"name": "late", "ownerReferences": [owner]}})
        assert [s["metadata"]["name"] for s in api.objects("secrets", namespace=NS)] == ["other"]

        with pytest.raises(StatusError) as caught:
            await client.request(
                "PATCH", f"{secrets}/other", json={"metadata": {"ownerReferences": [{**owner, "uid": ""}]}}
            )
        assert caught.value.code == 422
        assert (
            'metadata.ownerReferences.uid: Invalid value: "": uid must not be empty' in caught.value.message
        )


async def test_an_answer_over_the_limit_is_an_error_and_not_retried(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client_module, "MAX_RESPONSE_BYTES", 16 * 1024)
    configmaps = f"/api/v1/namespaces/{NS}/configmaps"
    async with serve_kube_api() as api, client_for(api) as client:
        for i in range(4):
            await client.request(
                "POST", configmaps, json={"metadata": {"name": f"c{i}"}, "data": {"x": "y" * 5000}}
            )
        assert (await client.request("GET", f"{configmaps}/c0"))["data"]["x"] == "y" * 5000
        before = len(api.requests)
        with pytest.raises(
            ResponseTooLarge, match=r"GET /api/v1/namespaces/ci/configmaps: the answer is larger than 16384"
        ):
            await client.request("GET", configmaps)
        assert len(api.requests) == before + 1
