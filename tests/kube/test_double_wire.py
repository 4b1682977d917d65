"""The double on the wire, byte for byte against k8s_exec.md: Status bodies, 201s, chunked
watches, the WebSocket handshake, the first empty frame, the status and close frames, x/net's
bare 403, stdin and the v5 CLOSE signal."""

from __future__ import annotations

import base64
import contextlib
import json

import trio
import trio.testing
import trio_websocket
from wsproto.connection import Connection, ConnectionType

from tests.doubles import kube_exec as steps
from tests.doubles.kube import serve_kube_api
from tests.kube.transport_support import NS, POD, client_for, running_pod

KEY = "dGhlIHNhbXBsZSBub25jZQ=="


async def exchange(port: int, request: bytes, *, until_close: bool = True) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(request)
    received = bytearray()
    with trio.move_on_after(5):
        while chunk := await stream.receive_some(65536):
            received += chunk
            if not until_close and b"\r\n\r\n" in received:
                break
    await stream.aclose()
    return bytes(received)


def http(method: str, path: str, body: bytes = b"", headers: str = "") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: kube\r\nConnection: close\r\n{headers}"
    if body:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


def split(response: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    status, *lines = head.decode().split("\r\n")
    return status, {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}, body


async def test_status_bodies_are_the_apiservers(autojump_clock: trio.testing.MockClock) -> None:
    async with serve_kube_api() as api:
        status, headers, body = split(
            await exchange(api.port, http("GET", f"/api/v1/namespaces/{NS}/pods/job-1"))
        )
        assert status == "HTTP/1.1 404 Not Found"
        assert headers["content-type"] == "application/json"
        assert body == (
            b'{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"pods \\"job-1\\" not found",'
            b'"reason":"NotFound","details":{"name":"job-1","kind":"pods"},"code":404}\n'
        )
        create = http("POST", f"/api/v1/namespaces/{NS}/pods", json.dumps(POD).encode())
        status, _, body = split(await exchange(api.port, create))
        assert status == "HTTP/1.1 201 Created"
        assert json.loads(body)["metadata"]["namespace"] == NS
        status, _, body = split(await exchange(api.port, create))
        assert status == "HTTP/1.1 409 Conflict"
        assert body == (
            b'{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"pods \\"job-1\\" already exists",'
            b'"reason":"AlreadyExists","details":{"name":"job-1","kind":"pods"},"code":409}\n'
        )


async def test_plain_text_429(autojump_clock: trio.testing.MockClock) -> None:
    async with serve_kube_api() as api:
        api.throttle(retry_after=5)
        status, headers, body = split(await exchange(api.port, http("GET", f"/api/v1/namespaces/{NS}/pods")))
        assert status == "HTTP/1.1 429 Too Many Requests"
        assert headers["retry-after"] == "5"
        assert headers["content-type"] == "text/plain; charset=utf-8"
        assert body == b"Too many requests, please try again later.\n"


async def test_watch_is_chunked_json_lines(autojump_clock: trio.testing.MockClock) -> None:
    async with serve_kube_api() as api:
        async with client_for(api) as client:
            await client.request(
                "POST", f"/api/v1/namespaces/{NS}/configmaps", json={"metadata": {"name": "a"}}
            )
        request = http("GET", f"/api/v1/namespaces/{NS}/configmaps?watch=true&timeoutSeconds=1")
        status, headers, body = split(await exchange(api.port, request))
        assert status == "HTTP/1.1 200 OK"
        assert headers["transfer-encoding"] == "chunked"
        size, _, rest = body.partition(b"\r\n")
        chunk = rest[: int(size, 16)]
        event = json.loads(chunk)
        assert chunk.endswith(b"}\n")
        assert event["type"] == "ADDED" and event["object"]["metadata"]["name"] == "a"
        assert body.endswith(b"0\r\n\r\n")


def upgrade(path: str, protocols: list[str] | None, *, extra: str = "") -> bytes:
    lines = [
        f"GET {path} HTTP/1.1",
        "Host: 10.0.0.1:6443",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {KEY}",
        "Sec-WebSocket-Version: 13",
    ]
    lines += [f"Sec-WebSocket-Protocol: {p}" for p in protocols or []]
    return ("\r\n".join(lines) + "\r\n" + extra + "\r\n").encode()


def frames(data: bytes) -> list[tuple[int, bytes]]:
    """Unmasked server frames (opcode, payload)."""
    found = []
    while data:
        opcode, length = data[0] & 0x0F, data[1] & 0x7F
        offset = 2
        if length == 126:
            length, offset = int.from_bytes(data[2:4], "big"), 4
        elif length == 127:
            length, offset = int.from_bytes(data[2:10], "big"), 10
        found.append((opcode, data[offset : offset + length]))
        data = data[offset + length :]
    return found


async def test_exec_handshake_first_frame_status_and_close(autojump_clock: trio.testing.MockClock) -> None:
    async with serve_kube_api() as api, client_for(api) as client, running_pod(api, client) as pod:
        api.script_exec()
        path = f"/api/v1/namespaces/{NS}/pods/{pod}/exec?command=sh&command=-c&command=echo+hi&container=job&stdout=true"
        response = await exchange(api.port, upgrade(path, ["v5.channel.k8s.io, v4.channel.k8s.io"]))
        head, _, rest = response.partition(b"\r\n\r\n")
        assert head.decode().split("\r\n") == [
            "HTTP/1.1 101 Switching Protocols",
            "Upgrade: websocket",
            "Connection: Upgrade",
            "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=",
            "Sec-WebSocket-Protocol: v5.channel.k8s.io",
        ]
        assert frames(rest) == [
            (0x2, b"\x01"),
            (0x2, b'\x03{"metadata":{},"status":"Success"}'),
            (0x8, b"\x03\xe8"),
        ]
        assert api.exec_sessions[-1].request.command == ("sh", "-c", "echo hi")


async def test_only_the_first_protocol_header_line_counts(autojump_clock: trio.testing.MockClock) -> None:
    async with serve_kube_api() as api, client_for(api) as client, running_pod(api, client) as pod:
        api.script_exec()
        path = f"/api/v1/namespaces/{NS}/pods/{pod}/exec?command=true&stderr=1"
        response = await exchange(api.port, upgrade(path, ["v4.channel.k8s.io", "v5.channel.k8s.io"]))
        assert b"Sec-WebSocket-Protocol: v4.channel.k8s.io\r\n" in response
        _, _, rest = response.partition(b"\r\n\r\n")
        assert frames(rest)[0] == (0x2, b"\x02")


async def test_no_common_protocol_is_a_bare_403(autojump_clock: trio.testing.MockClock) -> None:
    async with serve_kube_api() as api, client_for(api) as client, running_pod(api, client) as pod:
        api.translator = False
        path = f"/api/v1/namespaces/{NS}/pods/{pod}/exec?command=true&stdout=true"
        assert (
            await exchange(api.port, upgrade(path, ["v5.channel.k8s.io"]))
            == b"HTTP/1.1 403 Forbidden\r\n\r\n"
        )


async def test_exec_without_upgrade_or_streams(autojump_clock: trio.testing.MockClock) -> None:
    async with serve_kube_api() as api, client_for(api) as client, running_pod(api, client) as pod:
        path = f"/api/v1/namespaces/{NS}/pods/{pod}/exec?command=true&stdout=true"
        status, _, body = split(await exchange(api.port, http("GET", path)))
        assert status == "HTTP/1.1 400 Bad Request"
        assert json.loads(body)["message"] == "Upgrade request required"
        bare = f"/api/v1/namespaces/{NS}/pods/{pod}/exec?command=true&stdout=false&stderr=0"
        status, _, body = split(await exchange(api.port, upgrade(bare, ["v5.channel.k8s.io"])))
        assert status == "HTTP/1.1 400 Bad Request"
        assert json.loads(body)["message"] == "you must specify at least 1 of stdin, stdout, stderr"


async def test_stdin_and_the_v5_close_signal() -> None:
    async with serve_kube_api() as api, client_for(api) as client, running_pod(api, client) as pod:
        url = f"ws://127.0.0.1:{api.port}/api/v1/namespaces/{NS}/pods/{pod}/exec?command=cat&stdin=true&stdout=true"
        received = bytearray()
        status = b""
        async with trio_websocket.open_websocket_url(url, subprotocols=["v5.channel.k8s.io"]) as ws:
            await ws.send_message(b"\x00hello ")
            await ws.send_message(b"\x00world")
            await ws.send_message(b"\xff\x00")
            with trio.fail_after(10):
                try:
                    while True:
                        message = await ws.get_message()
                        if message[:1] == b"\x01":
                            received += message[1:]
                        elif message[:1] == b"\x03":
                            status += message[1:]
                except trio_websocket.ConnectionClosed as closed:
                    assert closed.reason.code == 1000
        session = api.exec_sessions[-1]
        assert bytes(received) == b"hello world"
        assert json.loads(status) == {"metadata": {}, "status": "Success"}
        assert session.stdin == b"hello world"
        assert session.stdin_closed


async def test_malformed_close_signal_ends_the_session_without_status(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with serve_kube_api() as api, client_for(api) as client, running_pod(api, client) as pod:
        api.script_exec(steps.Pause(100))
        url = f"ws://127.0.0.1:{api.port}/api/v1/namespaces/{NS}/pods/{pod}/exec?command=cat&stdin=true&stdout=true"
        messages = []
        async with trio_websocket.open_websocket_url(url, subprotocols=["v5.channel.k8s.io"]) as ws:
            await ws.send_message(b"\xff\x00\x00")
            try:
                while True:
                    messages.append(await ws.get_message())
            except trio_websocket.ConnectionClosed as closed:
                assert closed.reason.code == 1000
        assert messages == [b"\x01"]
        assert api.exec_sessions[-1].status_sent is None


async def test_token_as_a_websocket_subprotocol_is_not_confused_with_channels(
    autojump_clock: trio.testing.MockClock,
) -> None:
    token = base64.urlsafe_b64encode(b"t").decode().rstrip("=")
    async with serve_kube_api() as api, client_for(api) as client, running_pod(api, client) as pod:
        api.script_exec()
        path = f"/api/v1/namespaces/{NS}/pods/{pod}/exec?command=true&stdout=true"
        offered = f"base64url.bearer.authorization.k8s.io.{token}, v5.channel.k8s.io"
        response = await exchange(api.port, upgrade(path, [offered]))
        assert b"Sec-WebSocket-Protocol: v5.channel.k8s.io\r\n" in response


async def test_scale_subresource_bodies_are_the_apiservers(autojump_clock: trio.testing.MockClock) -> None:
    """GET and PUT of ``deployments/{name}/scale`` as the apps registry's ScaleREST answers: the
    autoscaling/v1 Scale (``spec.replicas`` omitted at 0, the selector as a string), a stale
    resourceVersion a 409 with a full Status, and a successful PUT a MODIFIED Deployment on a watch."""
    deployments = f"/apis/apps/v1/namespaces/{NS}/deployments"
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "runner"},
        "spec": {
            "replicas": 2,
            "selector": {
                "matchLabels": {"app": "runner", "tier": "jobs"},
                "matchExpressions": [{"key": "env", "operator": "In", "values": ["prod", "dev"]}],
            },
        },
        "status": {"replicas": 2},
    }
    async with serve_kube_api() as api:
        async with client_for(api) as client:
            created = await client.request("POST", deployments, json=deployment)
        meta = created["metadata"]
        status, headers, body = split(await exchange(api.port, http("GET", f"{deployments}/runner/scale")))
        assert status == "HTTP/1.1 200 OK"
        assert headers["content-type"] == "application/json"
        assert body == (
            b'{"kind":"Scale","apiVersion":"autoscaling/v1","metadata":{"name":"runner","namespace":"'
            + NS.encode()
            + b'","uid":"'
            + meta["uid"].encode()
            + b'","resourceVersion":"'
            + meta["resourceVersion"].encode()
            + b'","creationTimestamp":"'
            + meta["creationTimestamp"].encode()
            + b'"},"spec":{"replicas":2},"status":{"replicas":2,"selector":"app=runner,env in (dev,prod),tier=jobs"}}\n'
        )
        scale = json.loads(body)

        stale = dict(scale, metadata=dict(scale["metadata"], resourceVersion="1"), spec={"replicas": 5})
        put = http("PUT", f"{deployments}/runner/scale", json.dumps(stale).encode())
        status, _, body = split(await exchange(api.port, put))
        assert status == "HTTP/1.1 409 Conflict"
        assert body == (
            b'{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Operation cannot be '
            b'fulfilled on deployments.apps \\"runner\\": the object has been modified; please apply your changes '
            b'to the latest version and try again","reason":"Conflict","details":{"name":"runner","group":"apps",'
            b'"kind":"deployments"},"code":409}\n'
        )

        to_zero = dict(scale, spec={"replicas": 0})
        status, _, body = split(
            await exchange(api.port, http("PUT", f"{deployments}/runner/scale", json.dumps(to_zero).encode()))
        )
        assert status == "HTTP/1.1 200 OK"
        written = json.loads(body)
        assert written["spec"] == {}
        assert int(written["metadata"]["resourceVersion"]) > int(meta["resourceVersion"])
        stored = api.get("deployments", "runner", namespace=NS, api_version="apps/v1")
        assert stored is not None
        assert stored["spec"]["replicas"] == 0
        assert stored["status"] == {"replicas": 2}
        assert stored["metadata"]["resourceVersion"] == written["metadata"]["resourceVersion"]
        assert stored["metadata"]["generation"] == 2

        watch = f"{deployments}?watch=true&resourceVersion={meta['resourceVersion']}&timeoutSeconds=1"
        status, _, body = split(await exchange(api.port, http("GET", watch)))
        size, _, rest = body.partition(b"\r\n")
        event = json.loads(rest[: int(size, 16)])
        assert event["type"] == "MODIFIED"
        assert event["object"]["spec"]["replicas"] == 0
        assert event["object"]["metadata"]["resourceVersion"] == written["metadata"]["resourceVersion"]


async def test_a_cut_session_spends_one_cut_when_both_streams_pass_the_threshold(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server, client = trio.testing.lockstep_stream_pair()
    request = steps.ExecRequest(NS, POD, "job", ("sh",), False, True, True, False, {}, {})
    session = steps.ExecSession(request=request, subprotocol="v5.channel.k8s.io", offered=())
    peer = steps.WsPeer(server, Connection(ConnectionType.SERVER), session)
    budget = steps.CutBudget(2, after_bytes=1, abort=False)
    peer.cuts = budget
    received = bytearray()

    async def output(channel: int) -> None:
        with contextlib.suppress(steps.SessionEnded):
            await peer.command_output(channel, b"x")

    async def drain() -> None:
        while chunk := await client.receive_some(65536):
            received.extend(chunk)

    async with trio.open_nursery() as nursery:
        # stderr is mid-send (holding the peer's lock) when stdout queues behind it; both reach
        # the threshold, one after the other, in the same session.
        nursery.start_soon(output, steps.STDERR)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(output, steps.STDOUT)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(drain)
    assert session.cut
    assert budget.times == 1
    assert received.endswith(b"cut by the test")
