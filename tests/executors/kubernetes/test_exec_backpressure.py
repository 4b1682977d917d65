"""The exec reader held by a slow log sink, against the WebSocket double in virtual time: a held
reader is not a dead server, and a dead server is still noticed once the reader listens again."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest
import trio

from tests.doubles import kube_exec as steps
from tests.doubles.executors import RecordingSink
from tests.doubles.kube import serve_kube_api
from tests.kube.transport_support import NS, client_for, running_pod
from trunner.contracts import Stream
from trunner.executors.base import ExitKind, ExitResult
from trunner.executors.kubernetes.exec import ExecTiming, exec_stream
from trunner.logs.batch import Batch
from trunner.logs.job_log import JobLog
from trunner.logs.settings import LogSettings
from trunner.models import RunnerJob

JOB = RunnerJob(id="21", commands=("true",))


def log_settings(tmp_path: Path, buffer: str) -> LogSettings:
    return LogSettings(
        job_pod_log_max_size=16 * 1024,
        job_pod_log_max_interval=5.0,
        job_log_buffer=buffer,
        job_log_spool_dir=str(tmp_path / "spool"),
        job_log_spool_size=64 * 1024,
        log_stall_timeout=60.0,
        log_flush_max_time=3600.0,
    )


class Released:
    """Passes a job log through, noting when the reader was last let go after feeding it."""

    def __init__(self, job_log: JobLog) -> None:
        self.job_log = job_log
        self.at = 0.0

    def feed(self, stream: Stream, data: bytes) -> None:
        self.job_log.feed(stream, data)

    def note(self, text: str) -> None:
        self.job_log.note(text)

    async def wait_for_room(self) -> None:
        await self.job_log.wait_for_room()
        self.at = trio.current_time()


def numbered(count: int) -> list[str]:
    return [f"{i:08d} " + "x" * 31 for i in range(count)]


@pytest.mark.parametrize("buffer", ["memory", "spool"])
async def test_a_slow_steady_sink_holds_the_reader_for_minutes_without_killing_the_exec(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, buffer: str
) -> None:
    lines = numbered(20_000)
    sink = RecordingSink(ship_delay=15.0)
    async with serve_kube_api() as api, client_for(api) as client, running_pod(api, client) as pod:
        api.script_exec(steps.Stdout("".join(line + "\n" for line in lines).encode()), steps.Exit(3))
        started = trio.current_time()
        job_log = JobLog(JOB, sink, log_settings(tmp_path, buffer))

        async def read() -> tuple[ExitResult, float]:
            result = await exec_stream(client, NS, pod, "job", ["sh", "-c", "true"], job_log)
            return result, trio.current_time() - started

        ran = await job_log.run(read)
        assert ran is not None
        result, held_for = ran
        assert result == ExitResult(ExitKind.EXITED, 3, "command exited with code 3")
        assert held_for > 10 * 60
        assert sink.bodies() == lines
        assert job_log.lost_lines == 0


async def test_a_server_that_dies_while_the_reader_is_held_is_noticed_once_it_listens(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    timing = ExecTiming(ping_interval=5, ping_timeout=20, close_timeout=3)
    lines = numbered(8_000)
    sink = RecordingSink(ship_delay=15.0)
    async with serve_kube_api() as api, client_for(api) as client, running_pod(api, client) as pod:
        api.script_exec(steps.Stdout("".join(line + "\n" for line in lines).encode()), steps.Hang())
        job_log = JobLog(JOB, sink, log_settings(tmp_path, "memory"))
        feed = Released(job_log)

        async def read() -> tuple[ExitResult, float]:
            result = await exec_stream(client, NS, pod, "job", ["true"], feed, timing=timing)
            return result, trio.current_time()

        ran = await job_log.run(read)
        assert ran is not None
        result, ended = ran
        assert result.kind is ExitKind.SEVERED
        assert "did not answer a ping within 20 s" in result.message
        assert sink.bodies() == lines
        # Held for minutes, then silence: a ping unanswered for 20 s (sent at most one interval
        # after the reader listens again) and the 3 s close.
        assert feed.at > 4 * 60
        assert 20 + 3 <= ended - feed.at <= 5 + 20 + 3


class SlowRoom:
    """An OutputFeed that holds the reader ``hold`` seconds after each message."""

    def __init__(self, hold: float) -> None:
        self.hold = hold
        self.data = bytearray()

    def feed(self, stream: Stream, data: bytes) -> None:
        self.data += data

    def note(self, text: str) -> None:
        pass

    async def wait_for_room(self) -> None:
        await trio.sleep(self.hold)


async def test_no_ping_is_sent_while_the_reader_is_held(autojump_clock: trio.testing.MockClock) -> None:
    """The reader is held 15 s after each of about 50 messages: the server, which may have closed
    meanwhile, gets no ping during those 12 minutes, and the exit status arrives."""
    data = "".join(line + "\n" for line in numbered(40_000)).encode()
    feed = SlowRoom(hold=15.0)
    async with serve_kube_api() as api, client_for(api) as client, running_pod(api, client) as pod:
        api.script_exec(steps.Stdout(data), steps.Exit(4))
        result = await exec_stream(client, NS, pod, "job", ["true"], feed)
        session = api.exec_sessions[-1]
        assert session.status_sent is not None
    assert result == ExitResult(ExitKind.EXITED, 4, "command exited with code 4")
    assert bytes(feed.data) == data
    assert session.pings_answered == 0


class HungUntil(RecordingSink):
    """Appends hang until virtual time ``until``, then go through at once."""

    def __init__(self, until: float) -> None:
        super().__init__()
        self.until = until

    async def ship(self, batch: Batch) -> None:
        await trio.sleep_until(max(self.until, trio.current_time()))
        await super().ship(batch)


async def test_an_api_hung_for_less_than_the_stall_timeout_costs_nothing(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """--log-stall-timeout 120 (and retries for 150 s) with the API hung for 100 s: the reader is
    held 100 s, well past the keepalive's 60 s, and the job ends with its own status and every
    line."""
    lines = numbered(20_000)
    sink = HungUntil(100.0)
    settings = attrs.evolve(
        log_settings(tmp_path, "memory"), log_stall_timeout=120.0, log_ship_retry_timeout=150.0
    )
    async with serve_kube_api() as api, client_for(api) as client, running_pod(api, client) as pod:
        api.script_exec(steps.Stdout("".join(line + "\n" for line in lines).encode()), steps.Exit(0))
        job_log = JobLog(JOB, sink, settings)

        async def read() -> ExitResult:
            result = await exec_stream(client, NS, pod, "job", ["true"], job_log)
            assert trio.current_time() >= 100
            return result

        result = await job_log.run(read)
    assert result == ExitResult.exited(0)
    assert sink.bodies() == lines
    assert job_log.lost_lines == 0
