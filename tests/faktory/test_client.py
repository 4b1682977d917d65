"""Connections to a Faktory double over loopback: URL/env resolution, the handshake with
password hash, per-call timeouts, broken connections and the pool."""

from __future__ import annotations

import json
import ssl
import threading

import pytest
import trio
import trustme

from tests.doubles.faktory import FaktoryDouble, faktory_double, server_hash
from tests.faktory.conftest import location_of, worker_client
from trunner.config import ConfigError
from trunner.faktory import protocol
from trunner.faktory.client import (
    Backoff,
    ServerLocation,
    WorkerIdentity,
    connect,
    locate_server,
    parse_server_url,
    random_wid,
)
from trunner.faktory.protocol import ConnectionLost, HandshakeRejected, ProtocolViolation

IDENTITY = WorkerIdentity(hostname="host-1", wid="4qpc2443vpvai", pid=2676, labels=("trunner",))


# --- where the server is ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("tcp://localhost:7419", ServerLocation("localhost", 7419)),
        (
            "tcp://:s3cret@faktory.example.com:7419",
            ServerLocation("faktory.example.com", 7419, password="s3cret"),
        ),
        ("tcp+tls://:pw@faktory:17419", ServerLocation("faktory", 17419, tls=True, password="pw")),
        ("tcp://user:p%40ss%3Aword@h:1", ServerLocation("h", 1, username="user", password="p@ss:word")),
        ("tcp://faktory", ServerLocation("faktory", 7419)),
        ("tcp://:pw@:7420", ServerLocation("localhost", 7420, password="pw")),
        ("tcp://[::1]:7419", ServerLocation("::1", 7419)),
        ("tcp://h:7419/", ServerLocation("h", 7419)),
    ],
)
def test_parse_server_url(url: str, expected: ServerLocation) -> None:
    assert parse_server_url(url, origin="FAKTORY_URL") == expected


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("redis://localhost:6379", "unsupported scheme 'redis'"),
        ("localhost:7419", "unsupported scheme"),
        ("tcp://h:notaport", "cannot parse"),
        ("tcp://h:99999", "cannot parse"),
        ("tcp://h:7419/db", "has a path"),
    ],
)
def test_bad_urls_are_named(url: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem) as caught:
        parse_server_url(url, origin="FAKTORY_URL")
    assert "FAKTORY_URL" in str(caught.value)


def test_password_never_appears_in_errors_or_repr() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_server_url("tcp://:hunter2@h:7419/x", origin="FAKTORY_URL")
    assert "hunter2" not in str(caught.value)
    location = parse_server_url("tcp://:hunter2@h:7419", origin="FAKTORY_URL")
    assert "hunter2" not in repr(location) and "hunter2" not in location.describe()


def test_locate_server_from_environment() -> None:
    assert locate_server({}) == ServerLocation("localhost", 7419)
    assert locate_server({"FAKTORY_URL": "tcp://:pw@f:1"}) == ServerLocation("f", 1, password="pw")
    both = {"FAKTORY_PROVIDER": "MY_FAKTORY", "MY_FAKTORY": "tcp+tls://g:2", "FAKTORY_URL": "tcp://f:1"}
    assert locate_server(both) == ServerLocation("g", 2, tls=True)


def test_provider_must_name_a_variable() -> None:
    with pytest.raises(ConfigError, match="NAME of the environment variable"):
        locate_server({"FAKTORY_PROVIDER": "tcp://f:1"})
    with pytest.raises(ConfigError, match="names 'MISSING', which is not set"):
        locate_server({"FAKTORY_PROVIDER": "MISSING", "FAKTORY_URL": "tcp://f:1"})
    with pytest.raises(ConfigError, match="MY_URL: unsupported scheme"):
        locate_server({"FAKTORY_PROVIDER": "MY_URL", "MY_URL": "http://f"})


def test_random_wid_looks_like_faktory_worker_go() -> None:
    wids = {random_wid() for _ in range(50)}
    assert len(wids) == 50
    assert all(set(w) <= set("0123456789abcdefghijklmnopqrstuv") and 1 <= len(w) <= 13 for w in wids)


def test_backoff_is_bounded_jittered_and_resets() -> None:
    import random

    backoff = Backoff(initial=1.0, maximum=8.0, rng=random.Random(1))
    delays = [backoff.next_delay() for _ in range(6)]
    ceilings = [1, 2, 4, 8, 8, 8]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    backoff.reset()
    assert 0.5 <= backoff.next_delay() <= 1.0


# --- handshake ----------------------------------------------------------------------------------


async def test_handshake_without_password(server: FaktoryDouble) -> None:
    conn = await connect(location_of(server), IDENTITY, timeout=5)
    await conn.aclose()
    assert server.greetings == [b'+HI {"v":2}\r\n']
    assert server.hellos == [
        {
            "hostname": "host-1",
            "wid": "4qpc2443vpvai",
            "username": "",
            "pwdhash": "",
            "labels": ["trunner"],
            "pid": 2676,
            "v": 2,
        }
    ]
    await server.wait_for(lambda: server.verbs() == ["END"])


async def test_handshake_with_password_hash() -> None:
    async with faktory_double(password="s3cret pass") as server:
        conn = await connect(location_of(server), IDENTITY, timeout=5)
        await conn.push(protocol.Job(jid="abcdefgh1", jobtype="t", args=()))
        await conn.aclose()
        greeting = server.greetings[0]
        hi = json.loads(greeting[4:-2])
        assert greeting.startswith(b'+HI {"v":2,"i":') and set(hi) == {"v", "i", "s"}
        assert server.hellos[0]["pwdhash"] == server_hash("s3cret pass", hi["s"], hi["i"])
        assert len(server.pushed) == 1


async def test_wrong_or_missing_password_is_rejected_with_a_hint() -> None:
    async with faktory_double(password="right") as server:
        with pytest.raises(HandshakeRejected, match="Invalid password.*check the password"):
            await connect(location_of(server, "wrong"), IDENTITY, timeout=5)
        with pytest.raises(HandshakeRejected, match="has no password"):
            await connect(location_of(server, ""), IDENTITY, timeout=5)
        assert server.rejected_hellos == 2


async def test_tls() -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    async with faktory_double(password="pw", ssl_context=server_context) as server:
        location = parse_server_url(server.url(tls=True), origin="test")
        assert location.tls
        conn = await connect(location, IDENTITY, timeout=5, ssl_context=client_context)
        await conn.ack("abcdefgh")
        await conn.aclose()
        assert server.acks == ["abcdefgh"]
        untrusted = ssl.create_default_context()
        with pytest.raises(ConnectionLost, match="TLS"):
            await connect(location, IDENTITY, timeout=5, ssl_context=untrusted)


async def test_plain_client_to_tls_server_fails_cleanly(autojump_clock: trio.testing.MockClock) -> None:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert("127.0.0.1").configure_cert(server_context)
    async with faktory_double(ssl_context=server_context) as server:
        with pytest.raises((ConnectionLost, ProtocolViolation)):
            await connect(location_of(server), IDENTITY, timeout=2)


async def serve_raw(nursery: trio.Nursery, greeting: bytes | None) -> int:
    async def handler(stream: trio.SocketStream) -> None:
        if greeting is not None:
            await stream.send_all(greeting)
        await trio.sleep_forever()

    listeners = await nursery.start(trio.serve_tcp, handler, 0)
    return int(listeners[0].socket.getsockname()[1])


async def serve_then_hang(nursery: trio.Nursery, version: int) -> int:
    """A server that greets with protocol ``version``, answers the HELLO with +OK and then never
    answers again; returns its port."""

    async def handler(stream: trio.SocketStream) -> None:
        await stream.send_all(b'+HI {"v":%d}\r\n' % version)
        await stream.receive_some()
        await stream.send_all(b"+OK\r\n")
        await trio.sleep_forever()

    listeners = await nursery.start(trio.serve_tcp, handler, 0)
    return int(listeners[0].socket.getsockname()[1])


@pytest.mark.parametrize(
    ("greeting", "error", "problem"),
    [
        (b"+HELLO\r\n", ProtocolViolation, "expected the server's HI"),
        (b'+HI {"v":\r\n', ProtocolViolation, "HI greeting: not valid JSON"),
        (b"-ERR too many connections\r\n", HandshakeRejected, "too many connections"),
        (b"*2\r\n", ProtocolViolation, "unexpected reply type"),
        (None, ConnectionLost, "no greeting within 3s"),
    ],
)
async def test_bad_greetings(
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
    greeting: bytes | None,
    error: type[Exception],
    problem: str,
) -> None:
    port = await serve_raw(nursery, greeting)
    with pytest.raises(error, match=problem):
        await connect(ServerLocation("127.0.0.1", port), IDENTITY, timeout=3)


async def test_connection_refused() -> None:
    with trio.socket.socket() as probe:
        await probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ConnectionLost, match="cannot connect"):
        await connect(ServerLocation("127.0.0.1", port), IDENTITY, timeout=3)


async def test_server_version_mismatch_is_only_a_warning(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    port = await serve_then_hang(nursery, version=3)
    conn = await connect(ServerLocation("127.0.0.1", port), IDENTITY, timeout=3)
    await conn.aclose()
    assert "protocol version 3" in caplog.text


# --- commands -----------------------------------------------------------------------------------


async def test_each_command_on_the_wire(server: FaktoryDouble) -> None:
    server.batches.add("b-1")
    conn = await connect(location_of(server), IDENTITY, timeout=5)
    job = protocol.Job(jid="0123456789abcdef", jobtype="legacy", queue="q1", args=({"id": "1"},))
    await conn.push(job)
    raw = await conn.fetch(("q0", "q1"))
    assert raw is not None and json.loads(raw)["jid"] == "0123456789abcdef"
    await conn.ack("0123456789abcdef")
    await conn.fail(protocol.Fail(backtrace=("l1",), errtype="E", jid="x1234567", message="m"))
    assert await conn.beat(protocol.Beat(current_state="", rss_kb=1, wid=IDENTITY.wid)) == ""
    assert await conn.batch_open("b-1") == "b-1"
    await conn.aclose()
    await server.wait_for(lambda: "END" in server.verbs())
    lines = [f"{c.verb} {c.argument}".strip() for c in server.commands]
    assert lines == [
        'PUSH {"retry":25,"jid":"0123456789abcdef","queue":"q1","jobtype":"legacy","args":[{"id":"1"}]}',
        "FETCH q0 q1",
        'ACK {"jid":"0123456789abcdef"}',
        'FAIL {"backtrace":["l1"],"errtype":"E","jid":"x1234567","message":"m"}',
        'BEAT {"rss_kb":1,"wid":"4qpc2443vpvai"}',
        "BATCH OPEN b-1",
        "END",
    ]


async def test_fetch_returns_none_after_the_server_blocks(
    server: FaktoryDouble, autojump_clock: trio.testing.MockClock
) -> None:
    conn = await connect(location_of(server), IDENTITY, timeout=1)
    start = trio.current_time()
    assert await conn.fetch(("default",)) is None
    assert trio.current_time() - start == pytest.approx(2.0)
    assert not conn.broken
    await conn.aclose()


async def test_error_reply_keeps_the_connection_usable(server: FaktoryDouble) -> None:
    conn = await connect(location_of(server), IDENTITY, timeout=5)
    with pytest.raises(protocol.ServerError, match="jobs must have a reasonable jid"):
        await conn.push(protocol.Job(jid="short", jobtype="t"))
    assert not conn.broken
    with pytest.raises(protocol.ServerError, match="No such batch nope"):
        await conn.batch_open("nope")
    await conn.ack("still-fine")
    await conn.aclose()


async def test_beat_reports_the_state_the_server_asks_for(server: FaktoryDouble) -> None:
    conn = await connect(location_of(server), IDENTITY, timeout=5)
    server.signal(IDENTITY.wid, "quiet")
    assert await conn.beat(protocol.Beat(current_state="", rss_kb=0, wid=IDENTITY.wid)) == "quiet"
    server.signal(IDENTITY.wid, "terminate")
    assert await conn.beat(protocol.Beat(current_state="", rss_kb=0, wid=IDENTITY.wid)) == "terminate"
    with pytest.raises(protocol.ServerError, match="unknown worker nobody"):
        await conn.beat(protocol.Beat(current_state="", rss_kb=0, wid="nobody"))
    await conn.aclose()


async def test_slow_reply_times_out_and_breaks_the_connection(
    server: FaktoryDouble, autojump_clock: trio.testing.MockClock
) -> None:
    conn = await connect(location_of(server), IDENTITY, timeout=2)
    server.inject("ACK", "delay", seconds=10)
    with pytest.raises(ConnectionLost, match="no reply to ACK within 2s"):
        await conn.ack("abcdefgh")
    assert conn.broken
    with pytest.raises(ConnectionLost, match="already failed"):
        await conn.ack("abcdefgh")
    await conn.aclose()


async def test_dropped_connection_is_connection_lost(server: FaktoryDouble) -> None:
    conn = await connect(location_of(server), IDENTITY, timeout=5)
    server.inject("PUSH", "drop")
    with pytest.raises(ConnectionLost, match="PUSH failed: the server closed the connection"):
        await conn.push(protocol.Job(jid="abcdefgh1", jobtype="t"))
    assert conn.broken
    await conn.aclose()


async def test_cancelled_call_breaks_the_connection(
    server: FaktoryDouble, autojump_clock: trio.testing.MockClock
) -> None:
    conn = await connect(location_of(server), IDENTITY, timeout=30)
    server.inject("ACK", "delay", seconds=10)
    with trio.move_on_after(1):
        await conn.ack("abcdefgh")
    assert conn.broken  # the reply may still arrive: the stream is out of step
    await conn.aclose()


async def test_close_says_end_and_is_bounded_even_when_the_server_hangs(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    port = await serve_then_hang(nursery, version=2)
    conn = await connect(ServerLocation("127.0.0.1", port), IDENTITY, timeout=3)
    with trio.CancelScope() as scope:
        scope.cancel()
        await conn.aclose()  # shielded: still closes
    assert conn.closed


# --- pool ---------------------------------------------------------------------------------------


async def test_pool_reuses_connections_and_replaces_broken_ones(server: FaktoryDouble) -> None:
    async with worker_client(server) as client:
        for _ in range(3):
            async with client.connection() as conn:
                await conn.ack("abcdefgh")
        assert server.connections_opened == 1
        server.inject("ACK", "drop")
        with pytest.raises(ConnectionLost):
            async with client.connection() as conn:
                await conn.ack("abcdefgh")
        async with client.connection() as conn:
            await conn.ack("abcdefgh")
        assert server.connections_opened == 2
        async with client.connection(fresh=True) as conn:
            await conn.ack("abcdefgh")
        assert server.connections_opened == 3
    await server.wait_for(lambda: server.verbs().count("END") == 2)


async def test_pool_is_bounded(server: FaktoryDouble, autojump_clock: trio.testing.MockClock) -> None:
    async with worker_client(server, max_connections=2) as client:
        busy = 0
        peak = 0

        async def borrower() -> None:
            nonlocal busy, peak
            async with client.connection() as conn:
                busy += 1
                peak = max(peak, busy)
                await trio.sleep(1)
                await conn.ack("abcdefgh")
                busy -= 1

        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(borrower)
        assert peak == 2 and server.connections_opened == 2


async def test_closed_pool_refuses(server: FaktoryDouble) -> None:
    client = worker_client(server)
    await client.aclose()
    with pytest.raises(ConnectionLost, match="closed"):
        async with client.connection():
            pass


async def test_a_greeting_asking_for_too_many_hash_rounds_is_refused_without_hashing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hashed: list[int] = []
    monkeypatch.setattr(protocol, "password_hash", lambda password, salt, i: hashed.append(i) or "x")
    async with faktory_double(password="pw", iterations=10**12) as server:
        with pytest.raises(ProtocolViolation) as caught:
            await connect(location_of(server, "pw"), IDENTITY, timeout=5)
        assert str(caught.value) == (
            f"Faktory {location_of(server, 'pw').describe()} asks for 1000000000000 password hash iterations, "
            f"more than the {protocol.MAX_HASH_ITERATIONS} this client computes (a Faktory server asks for "
            "4000-8095)"
        )
        assert hashed == [] and server.hellos == []


async def test_the_password_is_hashed_off_the_event_loop_up_to_the_limit() -> None:
    threads: list[str] = []
    real = protocol.password_hash

    def recording(password: str, salt: str, iterations: int) -> str:
        threads.append(threading.current_thread().name)
        return real(password, salt, iterations)

    async with faktory_double(password="pw", iterations=protocol.MAX_HASH_ITERATIONS) as server:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(protocol, "password_hash", recording)
            conn = await connect(location_of(server, "pw"), IDENTITY, timeout=5)
        await conn.aclose()
        assert server.hellos[0]["pwdhash"] == server_hash(
            "pw", json.loads(server.greetings[0][4:-2])["s"], 100_000
        )
    assert len(threads) == 1 and threads[0] != threading.main_thread().name


async def test_a_connect_hashing_the_password_can_be_cancelled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """As on SIGTERM: the cancellation does not wait for the hash."""
    release = threading.Event()

    def stuck(password: str, salt: str, iterations: int) -> str:
        release.wait(30)
        return "x"

    async with faktory_double(password="pw") as server:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(protocol, "password_hash", stuck)
            with trio.move_on_after(1) as scope:
                await connect(location_of(server, "pw"), IDENTITY, timeout=5)
        release.set()
        assert scope.cancelled_caught
        assert server.hellos == []
