from __future__ import annotations

import sys

import httpx
import pytest
import trio
import trio.testing
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.parser import text_string_to_metric_families

from trunner.config import ConfigError, SettingsSource
from trunner.observability.health import (
    HEAD_TIMEOUT,
    MAX_CONNECTIONS,
    REQUEST_TIMEOUT,
    MetricsServerSettings,
    serve_http,
)


class Readiness:
    def __init__(self) -> None:
        self.ready = False

    def __call__(self) -> bool:
        return self.ready


@pytest.fixture
def readiness() -> Readiness:
    return Readiness()


@pytest.fixture
async def server(nursery: trio.Nursery, registry: CollectorRegistry, readiness: Readiness) -> str:
    port = await nursery.start(
        lambda task_status: serve_http(
            registry, port=0, ready=readiness, host="127.0.0.1", task_status=task_status
        )
    )
    return f"http://127.0.0.1:{port}"


async def get(url: str, method: str = "GET") -> httpx.Response:
    async with httpx.AsyncClient(timeout=5) as client:
        return await client.request(method, url)


async def test_metrics_serves_the_registry(server: str, registry: CollectorRegistry) -> None:
    Counter("trunner_demo", "A demo counter.", ["runner"], registry=registry).labels("r1").inc(3)
    response = await get(server + "/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    sample = next(s for s in families["trunner_demo"].samples if s.name == "trunner_demo_total")
    assert sample.labels == {"runner": "r1"}
    assert sample.value == 3


async def test_healthz_is_always_ok(server: str) -> None:
    response = await get(server + "/healthz")
    assert (response.status_code, response.text) == (200, "ok\n")


async def test_readyz_follows_readiness(server: str, readiness: Readiness) -> None:
    assert (await get(server + "/readyz")).status_code == 503
    readiness.ready = True
    response = await get(server + "/readyz?verbose=1")
    assert (response.status_code, response.text) == (200, "ready\n")


async def test_unknown_paths_and_methods(server: str) -> None:
    assert (await get(server + "/nope")).status_code == 404
    response = await get(server + "/metrics", method="POST")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD"


async def test_head_has_no_body(server: str) -> None:
    response = await get(server + "/healthz", method="HEAD")
    assert response.status_code == 200
    assert response.headers["content-length"] == "3"
    assert response.content == b""


async def test_a_malformed_request_gets_400(server: str) -> None:
    host, port = server.removeprefix("http://").split(":")
    stream = await trio.open_tcp_stream(host, int(port))
    await stream.send_all(b"NOT HTTP AT ALL\r\n\r\n")
    reply = b""
    while chunk := await stream.receive_some(4096):
        reply += chunk
    assert reply.startswith(b"HTTP/1.1 400 ")


async def test_a_connection_that_sends_no_whole_request_head_is_dropped_after_the_head_timeout(
    server: str, autojump_clock: trio.testing.MockClock
) -> None:
    host, port = server.removeprefix("http://").split(":")
    stream = await trio.open_tcp_stream(host, int(port))
    started = trio.current_time()
    await stream.send_all(b"GET /metr")
    assert await stream.receive_some(4096) == b""
    assert trio.current_time() - started == pytest.approx(HEAD_TIMEOUT, abs=0.01)
    assert HEAD_TIMEOUT < REQUEST_TIMEOUT


async def probe(host: str, port: int) -> bytes:
    """What a kubelet probe does: connect, send the request at once, read the answer."""
    stream = await trio.open_tcp_stream(host, port)
    await stream.send_all(b"GET /healthz HTTP/1.1\r\nHost: runner\r\n\r\n")
    reply = b""
    while chunk := await stream.receive_some(4096):
        reply += chunk
    await stream.aclose()
    return reply


async def test_probes_are_answered_while_idle_clients_hold_more_connections_than_the_limit(
    server: str, autojump_clock: trio.testing.MockClock
) -> None:
    host, port_text = server.removeprefix("http://").split(":")
    port = int(port_text)
    idle = []
    for round_ in range(3):
        # Idle half-open connections, more than the limit, renewed before the head timeout.
        idle += [await trio.open_tcp_stream(host, port) for _ in range(MAX_CONNECTIONS + 8)]
        await trio.testing.wait_all_tasks_blocked()
        for _ in range(4):
            started = trio.current_time()
            reply = await probe(host, port)
            assert reply.startswith(b"HTTP/1.1 200 ") and reply.endswith(b"\r\n\r\nok\n"), round_
            assert trio.current_time() - started < 0.1
        await trio.sleep(HEAD_TIMEOUT / 2)
    for stream in idle:
        await stream.aclose()


async def test_the_oldest_waiting_connection_makes_room_and_answering_ones_are_kept(
    server: str, autojump_clock: trio.testing.MockClock
) -> None:
    host, port_text = server.removeprefix("http://").split(":")
    port = int(port_text)
    idle = [await trio.open_tcp_stream(host, port) for _ in range(MAX_CONNECTIONS)]
    await trio.testing.wait_all_tasks_blocked()
    extra = await trio.open_tcp_stream(host, port)
    await trio.testing.wait_all_tasks_blocked()
    started = trio.current_time()
    assert await idle[0].receive_some(4096) == b""  # closed at once to make room
    assert trio.current_time() - started < 0.1
    await extra.send_all(b"GET /healthz HTTP/1.1\r\nHost: runner\r\n\r\n")
    assert (await extra.receive_some(4096)).startswith(b"HTTP/1.1 200 ")
    for stream in idle[1:]:
        await stream.aclose()


def test_the_bind_address_is_a_setting_checked_as_an_ip_address() -> None:
    def settings(env: dict[str, str]) -> MetricsServerSettings:
        return SettingsSource(args=None, environ=env, file={}, source_name="x").get(MetricsServerSettings)

    assert settings({}).metrics_bind_address == ""
    assert settings({"OPSLEVEL_METRICS_BIND_ADDRESS": "127.0.0.1"}).metrics_bind_address == "127.0.0.1"
    assert settings({"OPSLEVEL_METRICS_BIND_ADDRESS": "::1"}).metrics_bind_address == "::1"
    with pytest.raises(ConfigError) as caught:
        settings({"OPSLEVEL_METRICS_BIND_ADDRESS": "example.com"})
    assert "must be an IP address such as 127.0.0.1 or ::1" in str(caught.value)


@pytest.mark.skipif(sys.platform != "linux", reason="127.0.0.2 is a loopback address only on Linux")
async def test_the_server_listens_on_the_bind_address_only(registry: CollectorRegistry) -> None:
    async with trio.open_nursery() as nursery:
        port = await nursery.start(
            lambda task_status: serve_http(
                registry, port=0, ready=lambda: True, host="127.0.0.1", task_status=task_status
            )
        )
        assert (await probe("127.0.0.1", port)).startswith(b"HTTP/1.1 200 ")
        with pytest.raises(OSError):
            await trio.open_tcp_stream("127.0.0.2", port)
        nursery.cancel_scope.cancel()


async def test_a_taken_port_fails_before_serving(registry: CollectorRegistry) -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    taken = listeners[0].socket.getsockname()[1]
    with pytest.raises(OSError):
        await serve_http(registry, port=taken, ready=lambda: True, host="127.0.0.1")
    await listeners[0].aclose()
