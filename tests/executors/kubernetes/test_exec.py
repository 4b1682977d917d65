"""Exec over WebSocket against the double: the handshake on the wire, channel demux, each way a
session can end and the ExitResult it maps to.

Scripted sessions run under ``autojump_clock``. Tests that run a real subprocess in the double
(marked ``subprocess`` in their names) use the real clock; each command ends in well under a
second.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import trio

from tests.doubles import kube_exec as steps
from tests.doubles.kube import PodBehaviour, serve_kube_api
from tests.kube.transport_support import NS, POD, RecordingFeed, StartedFeed, client_for, running_pod
from trunner.contracts import Stream
from trunner.executors.base import ExitKind, ExitResult
from trunner.executors.kubernetes.exec import ExecTiming, exec_stream, status_result
from trunner.kube.auth import TokenFileAuth

MiB = 1024 * 1024


async def run(
    api: object, client: object, pod: str, *script: steps.ExecStep, **kwargs: object
) -> tuple[ExitResult, RecordingFeed]:
    if script:
        api.script_exec(*script)  # type: ignore[attr-defined]
    feed = RecordingFeed()
    result = await exec_stream(client, NS, pod, "job", ["sh", "-c", "echo hi"], feed, **kwargs)  # type: ignore[arg-type]
    return result, feed


async def test_handshake_and_output_demux(autojump_clock: trio.testing.MockClock) -> None:
    async with serve_kube_api() as api, client_for(api) as client, running_pod(api, client) as pod:
        result, feed = await run(
            api,
            client,
            pod,
            steps.Stdout(b"one\n"),
            steps.Stderr(b"warn\n"),
            steps.Stdout(b"two\n"),
            steps.Exit(0),
        )
        assert result == ExitResult.exited(0)
        assert feed.chunks == [
            (Stream.STDOUT, b"one\n"),
            (Stream.STDERR, b"warn\n"),
            (Stream.STDOUT, b"two\n"),
        ]
        request = api.requests[-1]
        assert request.method == "GET"
        assert request.path == f"/api/v1/namespaces/{NS}/pods/{pod}/exec"
        assert request.query == (
            ("command", "sh"),
            ("command", "-c"),
            ("command", "echo hi"),
            ("container", "job"),
            ("stdout", "true"),
            ("stderr", "true"),
        )
        assert request.header_lines("sec-websocket-protocol") == ["v5.channel.k8s.io, v4.channel.k8s.io"]
        assert request.header("upgrade") == "websocket"
        assert request.header("sec-websocket-version") == "13"
        assert request.header("authorization") == "Bearer double-token"
        session = api.exec_sessions[-1]
        assert session.subprotocol == "v5.channel.k8s.io"
        assert session.offered == ("v5.channel.k8s.io", "v4.channel.k8s.io")
        assert session.status_sent == b'{"metadata":{},"status":"Success"}'


async def test_non_zero_exit_code(autojump_clock: trio.testing.MockClock) -> None:
    async with serve_kube_api() as api, client_for(api) as client, running_pod(api, client) as pod:
        result, _ = await run(api, client, pod, steps.Exit(3))
        assert result == ExitResult(ExitKind.EXITED, 3, "command exited with code 3")
        assert result.outcome().value == "failed"


async def test_internal_error_status(autojump_clock: trio.testing.MockClock) -> None:
    async with serve_kube_api() as api, client_for(api) as client, running_pod(api, client) as pod:
        result, _ = await run(
            api, client, pod, steps.Fail('unable to upgrade connection: container not found ("job")')
        )
        assert result.kind is ExitKind.INFRASTRUCTURE
        assert (
            result.message
            == 'Internal error occurred: unable to upgrade connection: container not found ("job")'
        )
        assert result.exit_code is None


@pytest.mark.parametrize("code", [1000, 1001, 1011])
async def test_close_without_status_is_severed(autojump_clock: trio.testing.MockClock, code: int) -> None:
    async with serve_kube_api() as api, client_for(api) as client, running_pod(api, client) as pod:
        result, feed = await run(api, client, pod, steps.Stdout(b"partial output\n"), steps.Sever(code))
        assert result.kind is ExitKind.SEVERED
        assert result.outcome().value == "execution_timeout"
        assert f"closed with code {code}" in result.message
        assert "severed" in result.message and "unknown" in result.message
        assert feed.stdout == b"partial output\n"


async def test_tcp_abort_is_severed_1006(autojump_clock: trio.testing.MockClock) -> None:
    async with serve_kube_api() as api, client_for(api) as client, running_pod(api, client) as pod:
        result, feed = await run(api, client, pod, steps.Stdout(b"x" * 100_000), steps.Abort())
        assert result.kind is ExitKind.SEVERED
        assert "code 1006" in result.message
        assert feed.stdout == b"x" * 100_000


async def test_status_split_across_two_messages(autojump_clock: trio.testing.MockClock) -> None:
    async with serve_kube_api() as api, client_for(api) as client, running_pod(api, client) as pod:
        status = steps.exit_code_status(7)
        result, _ = await run(api, client, pod, steps.StatusBytes(status, split_at=25))
        assert result == ExitResult.exited(7)


async def test_unknown_channels_and_empty_messages_are_ignored(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with serve_kube_api() as api, client_for(api) as client, running_pod(api, client) as pod:
        result, feed = await run(
            api,
            client,
            pod,
            steps.RawMessage(b"\x05junk"),
            steps.RawMessage(b"\x01"),
            steps.Stdout(b"ok"),
            steps.Exit(0),
        )
        assert result == ExitResult.exited(0)
        assert feed.chunks == [(Stream.STDOUT, b"ok")]


async def test_v4_fallback(autojump_clock: trio.testing.MockClock) -> None:
    async with serve_kube_api() as api, client_for(api) as client, running_pod(api, client) as pod:
        api.translator = False
        result, feed = await run(api, client, pod, steps.Stdout(b"legacy\n"), steps.Exit(2))
        assert result == ExitResult.exited(2)
        assert feed.stdout == b"legacy\n"
        assert api.exec_sessions[-1].subprotocol == "v4.channel.k8s.io"


async def test_no_common_subprotocol_is_a_403_with_an_empty_body(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with serve_kube_api() as api, client_for(api) as client, running_pod(api, client) as pod:
        api.translator = False
        api.legacy_protocols = ("channel.k8s.io",)
        started = trio.current_time()
        result, _ = await run(api, client, pod)
        assert result.kind is ExitKind.INFRASTRUCTURE
        assert result.message.startswith(f"exec in pod {pod} was rejected: 403 Forbidden with an empty body")
        assert "v5.channel.k8s.io, v4.channel.k8s.io" in result.message
        assert trio.current_time() == started
        assert api.exec_sessions == []


@pytest.mark.parametrize(
    ("forced", "expected"), [("v9.channel.k8s.io", "not accepted"), ("", "server chose subprotocol None")]
)
async def test_an_answer_outside_the_offer_is_refused(
    autojump_clock: trio.testing.MockClock, forced: str, expected: str
) -> None:
    async with serve_kube_api() as api, client_for(api) as client, running_pod(api, client) as pod:
        api.force_subprotocol = forced
        started = trio.current_time()
        result, _ = await run(api, client, pod, steps.Exit(0))
        assert result.kind is ExitKind.INFRASTRUCTURE
        assert expected in result.message
        assert trio.current_time() - started < 5


async def test_rejections_before_the_upgrade(autojump_clock: trio.testing.MockClock) -> None:
    async with serve_kube_api() as api, client_for(api) as client:
        result, _ = await run(api, client, "missing")
        assert result == ExitResult(
            ExitKind.INFRASTRUCTURE,
            message='exec in pod missing was rejected: 404 NotFound: pods "missing" not found',
        )
        api.pod_behaviour = PodBehaviour(unschedulable="0/3 nodes are available: 3 Insufficient cpu.")
        await client.request("POST", f"/api/v1/namespaces/{NS}/pods", json=POD)
        result, _ = await run(api, client, "job-1")
        assert (
            result.message
            == "exec in pod job-1 was rejected: 400 BadRequest: pod job-1 does not have a host assigned"
        )
        feed = RecordingFeed()
        result = await exec_stream(client, NS, "job-1", "sidecar", ["true"], feed)
        assert (
            result.message
            == "exec in pod job-1 was rejected: 400 BadRequest: container sidecar is not valid for pod job-1"
        )
        api.fail(403, "Forbidden", 'pods "job-1" is forbidden: cannot create resource "pods/exec"')
        result, _ = await run(api, client, "job-1")
        assert result.message == (
            'exec in pod job-1 was rejected: 403 Forbidden: pods "job-1" is forbidden: cannot create resource "pods/exec"'
        )
        api.tokens = {"other"}
        result, _ = await run(api, client, "job-1")
        assert result.message == "exec in pod job-1 was rejected: 401 Unauthorized: Unauthorized"


async def test_container_not_running_is_an_internal_error(autojump_clock: trio.testing.MockClock) -> None:
    async with serve_kube_api() as api, client_for(api) as client:
        api.pod_behaviour = PodBehaviour(waiting=("ImagePullBackOff", 'Back-off pulling image "alpine:3.20"'))
        await client.request("POST", f"/api/v1/namespaces/{NS}/pods", json=POD)
        await trio.sleep(1)
        result, _ = await run(api, client, "job-1")
        assert result.kind is ExitKind.INFRASTRUCTURE
        assert 'container not found ("job")' in result.message


async def test_rotated_token_after_a_401_on_the_upgrade(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    token = tmp_path / "token"
    token.write_text("old")
    async with serve_kube_api() as api, client_for(api, auth=TokenFileAuth(token)) as client:
        async with running_pod(api, client) as pod:
            token.write_text("new")
            api.tokens = {"new"}
            result, _ = await run(api, client, pod, steps.Exit(0))
        assert result == ExitResult.exited(0)
        upgrades = [r.header("authorization") for r in api.requests if r.path.endswith("/exec")]
        assert upgrades == ["Bearer old", "Bearer new"]


async def test_large_frames(autojump_clock: trio.testing.MockClock) -> None:
    # Moving 53 MiB over loopback can leave every task waiting on the socket for longer than the
    # autojump threshold; with no deadline on the session a jump has nothing to fire, so what
    # crosses does not depend on how loaded the machine is.
    untimed = ExecTiming(ping_timeout=math.inf, connect_timeout=math.inf, close_timeout=math.inf)
    async with serve_kube_api() as api, client_for(api) as client, running_pod(api, client) as pod:
        big = b"y" * (20 * MiB)
        result, feed = await run(
            api, client, pod, steps.RawMessage(b"\x01" + big), steps.Exit(0), timing=untimed
        )
        assert result == ExitResult.exited(0)
        assert feed.stdout == big
        result, _ = await run(
            api, client, pod, steps.RawMessage(b"\x01" + b"z" * (33 * MiB)), steps.Exit(0), timing=untimed
        )
        assert result.kind is ExitKind.SEVERED
        assert "code 1009" in result.message


async def test_dead_peer_is_noticed_by_ping_timeout(autojump_clock: trio.testing.MockClock) -> None:
    timing = ExecTiming(ping_interval=5, ping_timeout=20, close_timeout=3)
    async with serve_kube_api() as api, client_for(api) as client, running_pod(api, client) as pod:
        started = trio.current_time()
        result, feed = await run(api, client, pod, steps.Stdout(b"before\n"), steps.Hang(), timing=timing)
        assert result.kind is ExitKind.SEVERED
        assert result.message == (
            "the exec stream was severed: the API server did not answer a ping within 20 s; "
            "the command's result is unknown"
        )
        assert feed.stdout == b"before\n"
        assert trio.current_time() - started == pytest.approx(5 + 20 + 3)


async def test_stalled_output_keeps_the_session_alive(autojump_clock: trio.testing.MockClock) -> None:
    timing = ExecTiming(ping_interval=5, ping_timeout=10)
    async with serve_kube_api() as api, client_for(api) as client, running_pod(api, client) as pod:
        result, feed = await run(
            api,
            client,
            pod,
            steps.Stdout(b"a"),
            steps.Pause(300),
            steps.Stdout(b"b"),
            steps.Exit(0),
            timing=timing,
        )
        assert result == ExitResult.exited(0)
        assert feed.stdout == b"ab"
        assert api.exec_sessions[-1].pings_answered == 60


async def test_cancellation_closes_the_socket(autojump_clock: trio.testing.MockClock) -> None:
    async with serve_kube_api() as api, client_for(api) as client, running_pod(api, client) as pod:
        api.script_exec(steps.Stdout(b"working\n"), steps.Pause(1000), steps.Exit(0))
        feed = RecordingFeed()
        with trio.move_on_after(30) as scope:
            await exec_stream(client, NS, pod, "job", ["sleep", "1000"], feed)
        assert scope.cancelled_caught
        session = api.exec_sessions[-1]
        with trio.fail_after(1):
            await session.finished.wait()
        assert session.client_close_code == 1000
        assert session.status_sent is None


def test_exec_timing_bounds() -> None:
    with pytest.raises(ValueError, match="between 5 and 30"):
        ExecTiming(ping_interval=1)
    with pytest.raises(ValueError, match="positive"):
        ExecTiming(ping_timeout=0)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (b'{"metadata":{},"status":"Success"}', ExitResult.exited(0)),
        (steps.exit_code_status(255), ExitResult.exited(255)),
        (b"{", ExitResult(ExitKind.INFRASTRUCTURE, message="exec error stream protocol error: not JSON: ")),
        (
            b'{"status":"Failure","reason":"NonZeroExitCode"}',
            ExitResult(
                ExitKind.INFRASTRUCTURE, message="exec error stream protocol error: details must be set"
            ),
        ),
        (
            b'{"status":"Failure","reason":"NonZeroExitCode","details":{"causes":[{"reason":"Other","message":"1"}]}}',
            ExitResult(
                ExitKind.INFRASTRUCTURE, message="exec error stream protocol error: no ExitCode cause given"
            ),
        ),
        (
            b'{"status":"Failure","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"256"}]}}',
            ExitResult(
                ExitKind.INFRASTRUCTURE,
                message="exec error stream protocol error: invalid exit code value '256'",
            ),
        ),
        (
            b'{"status":"Failure","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"-1"}]}}',
            ExitResult(
                ExitKind.INFRASTRUCTURE,
                message="exec error stream protocol error: invalid exit code value '-1'",
            ),
        ),
        (
            b'{"status":"Maybe"}',
            ExitResult(
                ExitKind.INFRASTRUCTURE, message="exec error stream protocol error: unknown status 'Maybe'"
            ),
        ),
        (b'{"status":"Failure","reason":"Timeout"}', ExitResult(ExitKind.INFRASTRUCTURE, message="Timeout")),
    ],
)
def test_status_decoding(status: bytes, expected: ExitResult) -> None:
    result = status_result(status)
    assert result.kind is expected.kind
    assert result.exit_code == expected.exit_code
    assert result.message.startswith(expected.message)


# --- real subprocesses in the double (real clock) --------------------------------------------------


async def test_subprocess_with_the_pods_env() -> None:
    async with serve_kube_api() as api, client_for(api) as client, running_pod(api, client) as pod:
        feed = RecordingFeed()
        command = ["sh", "-c", 'echo "$GREETING on $HOSTNAME"; echo to-stderr >&2; exit 4']
        with trio.fail_after(20):
            result = await exec_stream(client, NS, pod, "job", command, feed)
        assert result == ExitResult.exited(4)
        assert feed.stdout == b"hello from the pod on job-1\n"
        assert feed.stderr == b"to-stderr\n"
        assert api.exec_sessions[-1].request.env == {"GREETING": "hello from the pod"}


async def test_subprocess_missing_executable() -> None:
    async with serve_kube_api() as api, client_for(api) as client, running_pod(api, client) as pod:
        with trio.fail_after(20):
            result = await exec_stream(client, NS, pod, "job", ["no-such-binary-here"], RecordingFeed())
        assert result.kind is ExitKind.INFRASTRUCTURE
        assert 'exec: "no-such-binary-here": executable file not found in $PATH' in result.message


async def test_subprocess_killed_when_the_pod_is_deleted() -> None:
    async with serve_kube_api() as api, client_for(api) as client, running_pod(api, client) as pod:
        feed = StartedFeed()
        async with trio.open_nursery() as nursery:

            async def delete_when_started() -> None:
                await feed.started.wait()
                await client.request("DELETE", f"/api/v1/namespaces/{NS}/pods/{pod}")

            nursery.start_soon(delete_when_started)
            with trio.fail_after(20):
                result = await exec_stream(
                    client, NS, pod, "job", ["sh", "-c", "echo started; exec sleep 60"], feed
                )
        assert result == ExitResult.exited(137)
        assert api.exec_sessions[-1].killed


async def test_the_reader_stops_reading_while_the_log_has_no_room(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Back-pressure: no message is read (so the WebSocket, then TCP, fills) until
    ``wait_for_room`` returns."""

    class HeldFeed(RecordingFeed):
        def __init__(self) -> None:
            super().__init__()
            self.room = trio.Event()
            self.waiting = False

        async def wait_for_room(self) -> None:
            self.waiting = True
            await self.room.wait()
            self.waiting = False

    async with serve_kube_api() as api, client_for(api) as client, running_pod(api, client) as pod:
        api.script_exec(steps.Stdout(b"one\n"), steps.Stdout(b"two\n"), steps.Exit(0))
        feed = HeldFeed()
        async with trio.open_nursery() as nursery:
            results: list[ExitResult] = []

            async def go() -> None:
                results.append(await exec_stream(client, NS, pod, "job", ["true"], feed))

            nursery.start_soon(go)
            await trio.sleep(5)
            assert feed.waiting and feed.chunks == [(Stream.STDOUT, b"one\n")]
            feed.room.set()
        assert results == [ExitResult.exited(0)]
        assert feed.stdout == b"one\ntwo\n"
