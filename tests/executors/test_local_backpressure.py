"""The local executor's reader held by a slow log sink (virtual time for the sink; the job is a
real process whose output is all written before the shell exits)."""

from __future__ import annotations

import math
import os
import re
import shlex
import sys
from pathlib import Path

import pytest
import trio

from tests.doubles.executors import RecordingSink
from trunner.contracts import Stream
from trunner.executors.base import ExitResult
from trunner.executors.local import LocalExecutor, PipeReader
from trunner.executors.settings import JobRunSettings
from trunner.logs.job_log import JobLog
from trunner.logs.settings import LogSettings
from trunner.models import RunnerJob

NUMBERED = re.compile(r"\d{8} x+")


def log_settings(tmp_path: Path, buffer: str) -> LogSettings:
    return LogSettings(
        job_pod_log_max_size=16 * 1024,
        job_log_buffer=buffer,
        job_log_spool_dir=str(tmp_path / "spool"),
        job_log_spool_size=64 * 1024,
        log_stall_timeout=60.0,
        log_flush_max_time=3600.0,
    )


def printing(count: int) -> str:
    """A command printing ``count`` numbered lines of 100 bytes into a 1 MiB pipe (F_SETPIPE_SZ,
    the unprivileged maximum), so that the shell exits with up to 1 MiB still unread."""
    program = (
        "import fcntl, sys; fcntl.fcntl(1, 1031, 1 << 20); "
        f"sys.stdout.write(''.join(f'{{i:08d}} ' + 'x' * 91 + '\\n' for i in range({count})))"
    )
    return f"{shlex.quote(sys.executable)} -c {shlex.quote(program)}"


@pytest.mark.parametrize("buffer", ["memory", "spool"])
async def test_the_tail_in_the_pipe_is_read_to_the_end_however_long_the_sink_holds_the_reader(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, buffer: str
) -> None:
    count = 20_000
    settings = JobRunSettings(
        job_pod_shell="/bin/sh", job_pod_workdir=str(tmp_path), job_pod_max_lifetime=math.inf
    )
    executor = LocalExecutor(settings, base_env={"PATH": os.environ["PATH"]})
    sink = RecordingSink(ship_delay=5.0)
    job = RunnerJob(id="21", commands=(printing(count),))
    job_log = JobLog(job, sink, log_settings(tmp_path, buffer))
    result = await job_log.run(lambda: executor.run(job, job_log))
    assert result == ExitResult.exited(0)
    shipped = [body for body in sink.bodies() if NUMBERED.fullmatch(body)]
    assert shipped == [f"{i:08d} " + "x" * 91 for i in range(count)]
    assert job_log.lost_lines == 0


class SlowRoom:
    """An OutputFeed that holds the reader ``hold`` seconds after each chunk."""

    def __init__(self, hold: float) -> None:
        self.hold = hold
        self.data = b""
        self.notes: list[str] = []
        self.let_go_at = 0.0

    def feed(self, stream: Stream, data: bytes) -> None:
        self.data += data

    def note(self, text: str) -> None:
        self.notes.append(text)

    async def wait_for_room(self) -> None:
        await trio.sleep(self.hold)
        self.let_go_at = trio.current_time()


async def test_after_the_writer_exits_only_waiting_for_the_pipe_is_bounded(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A pipe still held open (a background process) with 360 KB in it when the shell exits: all
    of it is read although the log holds the reader 10 s after each chunk, then 2 s of silence
    end it."""
    send, receive = trio.testing.memory_stream_pair()
    output = SlowRoom(hold=10.0)
    reader = PipeReader(output)
    tail = b"".join(f"{i:08d}\n".encode() for i in range(40 * 1000))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader.pump, receive, Stream.STDOUT)
        for start in range(0, len(tail), 9000):
            await send.send_all(tail[start : start + 9000])
        exited = trio.current_time()
        reader.writer_exited(2.0)
    assert output.data == tail
    assert reader.abandoned
    assert output.let_go_at - exited >= 5 * 10
    assert trio.current_time() == output.let_go_at + 2
