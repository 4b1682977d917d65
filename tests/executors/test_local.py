"""The local executor runs real processes, so these tests use the real clock; every wait is on
the subprocess itself and bounded by a short lifetime or a fail_after."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import trio

from trunner.contracts import Stream
from trunner.executors import local
from trunner.executors.base import ExitKind, ExitResult
from trunner.executors.local import LocalExecutor
from trunner.executors.script import phase_script
from trunner.executors.settings import JobRunSettings
from trunner.models import JobFile, JobVariable, RunnerJob, VariableScope


class Collect:
    def __init__(self) -> None:
        self.data = {Stream.STDOUT: b"", Stream.STDERR: b""}
        self.notes: list[str] = []
        self.seen = trio.Event()

    def feed(self, stream: Stream, data: bytes) -> None:
        self.data[stream] += data
        if b"started" in self.data[Stream.STDOUT]:
            self.seen.set()

    def note(self, text: str) -> None:
        self.notes.append(text)

    async def wait_for_room(self) -> None:
        pass

    @property
    def out(self) -> str:
        """What the commands printed, without the shell's ``set -x`` trace (merged into stdout)."""
        lines = self.data[Stream.STDOUT].decode().splitlines(keepends=True)
        return "".join(line for line in lines if not line.startswith("+ "))


async def wait_for_exit(pid: int) -> None:
    """Returns once ``pid`` has terminated (a pidfd turns readable; works for non-children)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        await trio.lowlevel.wait_readable(fd)
    finally:
        os.close(fd)


def executor(lifetime: float = 30.0, workdir: str = "") -> LocalExecutor:
    settings = JobRunSettings(job_pod_shell="/bin/sh", job_pod_workdir=workdir, job_pod_max_lifetime=lifetime)
    return LocalExecutor(settings, base_env={"PATH": os.environ["PATH"], "OPSLEVEL_API_TOKEN": "never-leak"})


def test_script_has_the_go_runner_form():
    assert (
        phase_script("/jobs", "42", ["echo a", "echo b"])
        == "exec 2>&1;\nmkdir -p /jobs/42;\ncd /jobs/42;\nset -xv;\necho a;\necho b"
    )


async def test_commands_run_in_the_job_directory_with_exit_code():
    output = Collect()
    job = RunnerJob(id="7", commands=("pwd", "echo hello", "exit 4"))
    result = await executor().run(job, output)
    assert result.kind is ExitKind.EXITED and result.exit_code == 4
    lines = output.out.splitlines()
    assert lines[0].endswith("/7") and lines[1] == "hello"
    assert "+ echo hello" in output.data[Stream.STDOUT].decode()


async def test_env_scoping_and_runner_secrets_do_not_leak():
    job = RunnerJob(
        id="1",
        init_commands=('echo "init:${INIT_ONLY:-}:${MAIN_ONLY:-}:${BOTH:-}"',),
        commands=('echo "main:${INIT_ONLY:-}:${MAIN_ONLY:-}:${BOTH:-}:${OPSLEVEL_API_TOKEN:-}"',),
        variables=(
            JobVariable("INIT_ONLY", "i", scope=VariableScope.INIT),
            JobVariable("MAIN_ONLY", "m", scope=VariableScope.MAIN),
            JobVariable("BOTH", "b"),
        ),
    )
    output = Collect()
    result = await executor().run(job, output)
    assert result.exit_code == 0
    assert output.out.splitlines() == ["init:i::b", "main::m:b:"]


async def test_init_failure_stops_the_job():
    output = Collect()
    job = RunnerJob(id="1", init_commands=("exit 9",), commands=("echo never",))
    result = await executor().run(job, output)
    assert (result.kind, result.exit_code) == (ExitKind.EXITED, 9)
    assert "init commands" in result.message
    assert "never" not in output.out


@pytest.mark.skipif(
    os.geteuid() != 0 or not os.path.isdir("/opslevel"), reason="mounts at an existing /opslevel as root"
)
async def test_files_appear_at_opslevel_for_each_job_separately():
    def job(n: int) -> RunnerJob:
        return RunnerJob(
            id=str(n),
            commands=("cat /opslevel/check.sh", "/opslevel/check.sh", "stat -c %a /opslevel/check.sh"),
            files=(JobFile("check.sh", f"#!/bin/sh\necho script {n}\n"),),
        )

    before = sorted(os.listdir("/opslevel"))
    outputs = [Collect(), Collect()]
    results = []
    async with trio.open_nursery() as nursery:
        for n, output in enumerate(outputs):

            async def one(n=n, output=output):
                results.append(await executor().run(job(n), output))

            nursery.start_soon(one)
    assert all(r.exit_code == 0 for r in results)
    for n, output in enumerate(outputs):
        assert output.out.splitlines()[-2:] == [f"script {n}", "777"]
    assert sorted(os.listdir("/opslevel")) == before, "the jobs' files showed through to the host"


async def test_files_without_a_mount_namespace_are_mapped_and_the_log_says_so(monkeypatch):
    from trunner.executors import local

    async def unavailable(wrapper):
        return "no private mount namespace: test"

    monkeypatch.setattr(local, "_probe_namespace", unavailable)
    job = RunnerJob(
        id="1",
        init_commands=("cat /opslevel/a.sh",),
        commands=("/opslevel/a.sh", "echo $0"),
        files=(JobFile("a.sh", "#!/bin/sh\necho from the file\n"),),
    )
    output = Collect()
    result = await executor().run(job, output)
    assert result == ExitResult.exited(0), output.out
    assert output.out.splitlines()[:3] == ["#!/bin/sh", "echo from the file", "from the file"]
    [note] = output.notes
    assert "/opslevel cannot be mounted here (no private mount namespace: test)" in note
    assert "/opslevel/ in its commands stands for that directory" in note


async def test_files_are_mapped_when_opslevel_does_not_exist(monkeypatch):
    from trunner.executors import local

    monkeypatch.setattr(local, "FILES_MOUNT", "/trunner-test-no-such-mount")
    job = RunnerJob(
        id="1",
        commands=("/trunner-test-no-such-mount/a.sh",),
        files=(JobFile("a.sh", "#!/bin/sh\necho mapped\n"),),
    )
    output = Collect()
    result = await executor().run(job, output)
    assert result == ExitResult.exited(0)
    assert "mapped" in output.out.splitlines()
    assert "/trunner-test-no-such-mount does not exist on this host" in output.notes[0]
    assert not os.path.exists("/trunner-test-no-such-mount")


async def test_an_ignored_image_is_said_once_in_the_log():
    output = Collect()
    job = RunnerJob(id="1", image="alpine:3.20", init_image="alpine/git", commands=("true",))
    await executor().run(job, output)
    assert output.notes == [
        "the local executor runs commands on this host: image alpine:3.20, alpine/git is not used"
    ]


async def test_lifetime_exceeded_kills_the_process_group(tmp_path):
    output = Collect()
    job = RunnerJob(id="1", commands=("sleep 30 & echo $! > child.pid", "echo started", "sleep 30"))
    with trio.fail_after(10):
        result = await executor(lifetime=1.0, workdir=str(tmp_path)).run(job, output)
    assert result.kind is ExitKind.LIFETIME_EXCEEDED
    with open(tmp_path / "1" / "child.pid") as f:
        child = int(f.read())
    with trio.fail_after(5):
        await wait_for_exit(child)


async def test_cancellation_kills_the_process_group(tmp_path):
    output = Collect()
    job = RunnerJob(id="2", commands=("sleep 30 & echo $! > child.pid", "echo started", "sleep 30"))
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(executor(workdir=str(tmp_path)).run, job, output)
            await output.seen.wait()
            nursery.cancel_scope.cancel()
    with open(tmp_path / "2" / "child.pid") as f:
        child = int(f.read())
    with trio.fail_after(5):
        await wait_for_exit(child)


async def test_missing_shell_could_not_start():
    settings = JobRunSettings(job_pod_shell="/nonexistent/sh", job_pod_workdir="", job_pod_max_lifetime=5)
    result = await LocalExecutor(settings).run(RunnerJob(id="1", commands=("true",)), Collect())
    assert result.kind is ExitKind.COULD_NOT_START
    assert "/nonexistent/sh" in result.message


async def test_temporary_workdir_is_removed(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    result = await executor().run(RunnerJob(id="1", commands=("touch here",)), Collect())
    assert result.exit_code == 0
    assert list(tmp_path.iterdir()) == []


def test_check_job_rejects_bad_files_and_empty_commands():
    job = RunnerJob(id="1", files=(JobFile("a/b", ""), JobFile("x", ""), JobFile("x", "")))
    problems = executor().check_job(job)
    assert any("not a plain file name" in p for p in problems)
    assert any("duplicate" in p for p in problems)
    assert any("no commands" in p for p in problems)


def test_files_are_written_executable(tmp_path):
    path = tmp_path / "f"
    path.write_text("x")
    path.chmod(0o777)
    assert stat.S_IMODE(path.stat().st_mode) == 0o777


async def test_a_held_log_holds_the_job_s_writes(tmp_path: Path) -> None:
    """Back-pressure through the pipes: while the log has no room the reader stops, the pipe
    fills and the job blocks in write(); once there is room everything arrives, in order."""
    from trunner.models import RunnerJob as Job

    class HeldCollect(Collect):
        def __init__(self) -> None:
            super().__init__()
            self.room = trio.Event()

        async def wait_for_room(self) -> None:
            await self.room.wait()

    executor = LocalExecutor(JobRunSettings(job_pod_workdir=str(tmp_path)))
    feed = HeldCollect()
    marker = tmp_path / "done"
    job = Job(id="bp", commands=(f"seq 1 200000; touch {marker}",))
    async with trio.open_nursery() as nursery:
        results = []

        async def go() -> None:
            results.append(await executor.run(job, feed))

        nursery.start_soon(go)
        await trio.sleep(1.0)
        assert not marker.exists()
        assert len(feed.data[Stream.STDOUT]) < 200_000
        feed.room.set()
    assert results[0].exit_code == 0
    assert feed.out.split() == [str(i) for i in range(1, 200001)]


async def test_a_background_process_holding_the_output_is_read_for_the_grace_then_said(tmp_path, monkeypatch):
    monkeypatch.setattr(local, "_OUTPUT_GRACE", 0.5)
    output = Collect()
    job = RunnerJob(
        id="3",
        commands=("(sleep 0.2; echo late) & sleep 60 & echo $! > holder.pid", "echo started"),
    )
    with trio.fail_after(10):
        result = await executor(workdir=str(tmp_path)).run(job, output)
    assert result == ExitResult.exited(0)
    assert output.out.splitlines()[-2:] == ["started", "late"]
    assert output.notes == [
        "stopped reading the job's output 0.5s after its shell exited: a background process still holds "
        "it open; what it writes from now on is not in this log"
    ]
    holder = int((tmp_path / "3" / "holder.pid").read_text())
    with trio.fail_after(5):
        await wait_for_exit(holder)
