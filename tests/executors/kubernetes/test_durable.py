"""A detached stage read by byte offset, against the Kubernetes double: the commands run once in
the pod whatever happens to the exec streams, every byte reaches the feed exactly once and in
order across cut sessions, and the exit code comes from the exit record.

The double runs each exec as a real local subprocess, so these tests run on the real clock; the
resume backoff is shortened to hundredths of a second and every wait is bounded."""

from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.doubles import kube_exec as steps
from tests.doubles.kube import KubeApiDouble, serve_kube_api
from tests.executors.kubernetes.test_executor import kube_settings
from tests.kube.transport_support import NS, RecordingFeed, StartedFeed, client_for, running_pod
from trunner.executors.base import ExitKind, ExitResult
from trunner.executors.kubernetes import KubernetesExecutor, open_executor
from trunner.executors.kubernetes.durable import ResumePolicy, StageTarget, run_stage
from trunner.executors.kubernetes.exec import ExecTiming, exec_stream
from trunner.executors.kubernetes.offsets import ExitRecord, ExitRecordError, StreamOffsets, parse_exit_record
from trunner.executors.kubernetes.podspec import main_command
from trunner.executors.kubernetes.settings import JobPodConfig
from trunner.executors.kubernetes.stage import LAUNCH, READ, Stage, job_stage
from trunner.kube.client import KubeClient
from trunner.models import RunnerJob
from trunner.observability.metrics import RunnerMetrics

SH = shutil.which("dash") or "sh"
FAST = ResumePolicy(base=0.01, cap=0.05)
LINES = 30_000


def lines_job(count: int, code: int, marker: Path) -> list[str]:
    """Writes ``count`` numbered lines to stdout and every tenth one to stderr, then exits."""
    script = (
        f"echo run >>{marker}; i=0; while [ $i -lt {count} ]; do echo out-$i; "
        f"[ $((i % 10)) -eq 0 ] && echo err-$i >&2; i=$((i+1)); done; exit {code}"
    )
    return [SH, "-c", script]


def expected(count: int) -> tuple[bytes, bytes]:
    out = "".join(f"out-{i}\n" for i in range(count)).encode()
    err = "".join(f"err-{i}\n" for i in range(0, count, 10)).encode()
    return out, err


def target(client: KubeClient, pod: str) -> StageTarget:
    return StageTarget(client, NS, pod, "job", ExecTiming())


def reads(api: KubeApiDouble) -> list[steps.ExecSession]:
    return [s for s in api.exec_sessions if s.request.command[3:4] == ("trunner-read",)]


# --- the shell programs alone -------------------------------------------------------------------


async def test_launch_runs_the_commands_once_and_writes_the_exit_record_last(tmp_path: Path) -> None:
    stage = Stage(SH, str(tmp_path / "stage"))
    marker = tmp_path / "runs"
    argv = lines_job(50, 9, marker)
    for _ in range(3):
        launched = await trio.run_process(stage.launch(argv), capture_stdout=True, capture_stderr=True)
        assert launched.returncode == 0 and launched.stdout == launched.stderr == b""
    with trio.fail_after(10):
        read = await trio.run_process(stage.read(0, 0, 1), capture_stdout=True, capture_stderr=True)
    out, err = expected(50)
    assert (read.returncode, read.stdout, read.stderr) == (0, out, err)
    assert (tmp_path / "stage" / "stdout").read_bytes() == out
    assert (tmp_path / "stage" / "stderr").read_bytes() == err
    assert parse_exit_record((tmp_path / "stage" / "exit").read_bytes()) == ExitRecord(9, len(out), len(err))
    assert marker.read_text() == "run\n"
    assert sorted(p.name for p in (tmp_path / "stage").iterdir()) == ["exit", "started", "stderr", "stdout"]


@pytest.mark.parametrize(("stdout_offset", "stderr_offset"), [(0, 0), (1, 0), (65537, 3), (70000, 700)])
async def test_the_reader_sends_each_file_from_its_offset_on_its_own_channel(
    tmp_path: Path, stdout_offset: int, stderr_offset: int
) -> None:
    directory = tmp_path / "stage"
    (directory / "started").mkdir(parents=True)
    out = bytes(range(256)) * 300  # every byte value, 76,800 bytes: not a multiple of 512
    err = b"e" * 701
    (directory / "stdout").write_bytes(out)
    (directory / "stderr").write_bytes(err)
    (directory / "exit").write_text(f"0 {len(out)} {len(err)}\n")
    read = await trio.run_process(
        Stage(SH, str(directory)).read(stdout_offset, stderr_offset, 1),
        capture_stdout=True,
        capture_stderr=True,
    )
    assert read.returncode == 0
    assert read.stdout == out[stdout_offset:]
    assert read.stderr == err[stderr_offset:]


READ_TIERS = st.tuples(st.integers(0, 2), st.integers(0, 127), st.integers(0, 511))
"""A length to read as (64 KiB blocks, 512-byte blocks, single bytes): the reader's three dd tiers."""


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    out_read=READ_TIERS,
    out_offset=st.integers(0, 70_000),
    err_read=READ_TIERS,
    err_offset=st.integers(0, 600),
)
def test_reading_from_any_offsets_continues_exactly_where_they_point(
    tmp_path: Path,
    out_read: tuple[int, int, int],
    out_offset: int,
    err_read: tuple[int, int, int],
    err_offset: int,
) -> None:
    def content(offset: int, tiers: tuple[int, int, int], seed: int) -> bytes:
        size = offset + tiers[0] * 65536 + tiers[1] * 512 + tiers[2]
        return random.Random(seed * size).randbytes(size)

    out, err = content(out_offset, out_read, 1), content(err_offset, err_read, 2)
    directory = tmp_path / "stage"
    shutil.rmtree(directory, ignore_errors=True)
    (directory / "started").mkdir(parents=True)
    (directory / "stdout").write_bytes(out)
    (directory / "stderr").write_bytes(err)
    (directory / "exit").write_text(f"0 {len(out)} {len(err)}\n")
    read = subprocess.run(
        Stage(SH, str(directory)).read(out_offset, err_offset, 1), capture_output=True, check=False
    )
    assert (read.returncode, read.stdout, read.stderr) == (0, out[out_offset:], err[err_offset:])


async def test_the_reader_of_a_stage_never_launched_exits_3(tmp_path: Path) -> None:
    read = await trio.run_process(
        Stage(SH, str(tmp_path / "none")).read(0, 0, 1), check=False, capture_stdout=True
    )
    assert read.returncode == 3 and read.stdout == b""


def test_the_programs_are_posix_sh_without_helpers() -> None:
    for program in (LAUNCH, READ):
        for word in ("setsid", "nohup", "head -c", "tail", "iflag", "stat "):
            assert word not in program
    assert job_stage("/bin/sh", "/jobs/", "../x").directory.startswith("/jobs/.trunner/x-")


@pytest.mark.parametrize(
    "text", [b"", b"1 2", b"1 2 3 4", b"-1 2 3", b"256 0 0", b"a 1 2", b"1 2 3" + b" " * 64]
)
def test_a_bad_exit_record_is_an_error(text: bytes) -> None:
    with pytest.raises(ExitRecordError):
        parse_exit_record(text)


def test_offsets_know_when_everything_was_read() -> None:
    record = ExitRecord(0, 10, 5)
    offsets = StreamOffsets(10, 4)
    assert offsets.behind(record) and not offsets.beyond(record)
    offsets.stderr = 5
    assert not offsets.behind(record) and not offsets.beyond(record)
    offsets.stdout = 11
    assert offsets.beyond(record)


# --- through the double -------------------------------------------------------------------------


async def test_the_double_keeps_a_command_running_when_its_exec_session_is_cut(tmp_path: Path) -> None:
    done = tmp_path / "done"
    async with serve_kube_api() as api, client_for(api) as client, running_pod(api, client) as pod:
        api.cut_exec(1, after_bytes=1)
        feed = RecordingFeed()
        with trio.fail_after(20):
            cut = await exec_stream(
                client, NS, pod, "job", [SH, "-c", f"echo started; sleep 1; : >{done}"], feed
            )
            assert cut.kind is ExitKind.SEVERED and feed.stdout == b"started\n"
            waited = await exec_stream(
                client,
                NS,
                pod,
                "job",
                [SH, "-c", f"while [ ! -e {done} ]; do sleep 0.1; done"],
                RecordingFeed(),
            )
        assert waited == ExitResult.exited(0)
        first = api.exec_sessions[0]
        assert first.cut and not first.killed


@pytest.mark.parametrize("abort", [True, False], ids=["tcp-reset", "close-without-status"])
async def test_cut_streams_resume_at_the_first_unread_byte(tmp_path: Path, abort: bool) -> None:
    async with serve_kube_api() as api, client_for(api) as client, running_pod(api, client) as pod:
        cuts = api.cut_exec(6, after_bytes=4000, abort=abort)
        resumes: list[float] = []
        feed = RecordingFeed()
        started = trio.current_time()
        with trio.fail_after(30):
            result = await run_stage(
                target(client, pod),
                Stage(SH, str(tmp_path / "stage")),
                lines_job(LINES, 5, tmp_path / "runs"),
                feed,
                policy=FAST,
                observe_resume=resumes.append,
            )
        elapsed = trio.current_time() - started
    out, err = expected(LINES)
    assert result == ExitResult.exited(5)
    assert feed.stdout == out
    assert feed.stderr == err
    assert cuts.times == 0
    assert sum(s.cut for s in api.exec_sessions) == 6
    # Each resume spans at least the first (jittered, 50-100 %) backoff wait; they never overlap.
    assert len(resumes) == 6 and all(r >= FAST.base / 2 for r in resumes)
    assert sum(resumes) <= elapsed
    assert (tmp_path / "runs").read_text() == "run\n"


async def test_a_stream_closed_without_a_status_is_read_again_never_success(tmp_path: Path) -> None:
    async with serve_kube_api() as api, client_for(api) as client, running_pod(api, client) as pod:
        severed = 0

        def plan(request: steps.ExecRequest) -> steps.ExecPlan:
            nonlocal severed
            if request.command[3] == "trunner-read" and severed < 3:
                severed += 1
                return steps.Script((steps.Sever(1000),))
            return steps.Subprocess(request.command, {"PATH": "/usr/bin:/bin"})

        api.exec_plan = plan
        feed = RecordingFeed()
        with trio.fail_after(30):
            result = await run_stage(
                target(client, pod),
                Stage(SH, str(tmp_path / "stage")),
                lines_job(20, 0, tmp_path / "runs"),
                feed,
                policy=FAST,
            )
    assert result == ExitResult.exited(0)
    assert (feed.stdout, feed.stderr) == expected(20)
    assert severed == 3 and len(reads(api)) == 4


async def test_an_api_server_that_fails_the_reader_exec_for_a_while_is_retried(tmp_path: Path) -> None:
    def reader(request: Any) -> bool:
        return bool(request.path.endswith("/exec") and "trunner-read" in request.params("command"))

    async with serve_kube_api() as api, client_for(api) as client, running_pod(api, client) as pod:
        api.fail(503, "ServiceUnavailable", "the server is shutting down", times=2, match=reader)
        api.drop_connection(2, match=reader)
        feed = RecordingFeed()
        resumes: list[float] = []
        with trio.fail_after(30):
            result = await run_stage(
                target(client, pod),
                Stage(SH, str(tmp_path / "stage")),
                lines_job(100, 0, tmp_path / "runs"),
                feed,
                policy=FAST,
                observe_resume=resumes.append,
            )
    assert result == ExitResult.exited(0)
    assert (feed.stdout, feed.stderr) == expected(100)
    assert len(resumes) == 1
    assert len([r for r in api.requests if reader(r)]) == 5


async def test_a_scripted_durable_stage_runs_in_virtual_time(autojump_clock: trio.testing.MockClock) -> None:
    async with serve_kube_api() as api, client_for(api) as client, running_pod(api, client) as pod:
        api.exec_plan = steps.durable_stage_script(
            steps.Stdout(b"hello\n"),
            steps.Pause(3600),
            steps.Stderr(b"late\n"),
            stdout_size=6,
            stderr_size=5,
            code=2,
        )
        feed = RecordingFeed()
        result = await run_stage(target(client, pod), Stage("sh", "/nowhere"), ["true"], feed, policy=FAST)
    assert result == ExitResult.exited(2)
    assert (feed.stdout, feed.stderr) == (b"hello\n", b"late\n")
    assert [s.request.command[3] for s in api.exec_sessions] == [
        "trunner-launch",
        "trunner-read",
        "trunner-status",
    ]


async def test_an_exit_record_ahead_of_the_reader_means_read_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with serve_kube_api() as api, client_for(api) as client, running_pod(api, client) as pod:
        plan = steps.durable_stage_script(steps.Stdout(b"a\n"), stdout_size=4)

        def then_the_rest(request: steps.ExecRequest) -> steps.ExecPlan:
            if request.command[3:4] == ("trunner-read",) and len(reads(api)) > 1:
                assert request.command[5:7] == ("2", "0")
                return steps.Script((steps.Stdout(b"b\n"), steps.Exit(0)))
            return plan(request)

        api.exec_plan = then_the_rest
        feed = RecordingFeed()
        result = await run_stage(target(client, pod), Stage("sh", "/nowhere"), ["true"], feed, policy=FAST)
    assert result == ExitResult.exited(0)
    assert feed.stdout == b"a\nb\n"


async def test_a_second_run_of_the_same_stage_reads_it_without_running_it_again(tmp_path: Path) -> None:
    async with serve_kube_api() as api, client_for(api) as client, running_pod(api, client) as pod:
        stage = Stage(SH, str(tmp_path / "stage"))
        argv = lines_job(100, 4, tmp_path / "runs")
        results = []
        feeds = []
        for _ in range(2):
            feed = RecordingFeed()
            with trio.fail_after(30):
                results.append(await run_stage(target(client, pod), stage, argv, feed, policy=FAST))
            feeds.append(feed)
    assert results == [ExitResult.exited(4)] * 2
    assert [(f.stdout, f.stderr) for f in feeds] == [expected(100)] * 2
    assert (tmp_path / "runs").read_text() == "run\n"


async def test_deleting_the_pod_ends_the_stage_and_kills_its_commands(tmp_path: Path) -> None:
    async with serve_kube_api() as api, client_for(api) as client, running_pod(api, client) as pod:
        feed = StartedFeed()
        stage = Stage(SH, str(tmp_path / "stage"))

        async def delete_when_started() -> None:
            await feed.started.wait()
            await client.request("DELETE", f"/api/v1/namespaces/{NS}/pods/{pod}")

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(delete_when_started)
                result = await run_stage(
                    target(client, pod),
                    stage,
                    [SH, "-c", "echo started; sleep 30; echo never"],
                    feed,
                    policy=FAST,
                )
    assert result.kind is ExitKind.EXITED and result.exit_code == 137
    assert not (tmp_path / "stage" / "exit").exists()


async def test_a_launch_rejected_before_the_stage_started_is_returned_at_once(tmp_path: Path) -> None:
    async with serve_kube_api() as api, client_for(api) as client, running_pod(api, client) as pod:
        api.script_exec(steps.Fail("container not found"))
        with trio.fail_after(10):
            result = await run_stage(
                target(client, pod),
                Stage(SH, str(tmp_path / "s")),
                [SH, "-c", "true"],
                RecordingFeed(),
                policy=FAST,
            )
    assert result.kind is ExitKind.INFRASTRUCTURE
    assert "container not found" in (result.message or "")
    assert not (tmp_path / "s").exists()


async def test_the_executor_runs_a_job_as_a_durable_stage_by_default(tmp_path: Path) -> None:
    job = RunnerJob(id="job-7", image="alpine", commands=("echo hello", "echo oops >&2", "exit 6"))
    config = JobPodConfig(namespace=NS, owner="runner-0", helper_image=None, workdir=str(tmp_path), shell=SH)
    assert JobPodConfig().durable
    resumes: list[float] = []
    async with serve_kube_api() as api, client_for(api) as client:
        api.cut_exec(1, after_bytes=1)
        executor = KubernetesExecutor(
            client, config, runner_id="1", resume_policy=FAST, observe_resume=resumes.append
        )
        feed = RecordingFeed()
        with trio.fail_after(30):
            result = await executor.run(job, feed)
    assert result == ExitResult.exited(6)
    assert feed.stdout == b"hello\n"
    assert feed.stderr.endswith(b"+ echo hello\n+ echo oops\noops\n+ exit 6\n")
    assert [s.request.command[3] for s in api.exec_sessions] == [
        "trunner-launch",
        "trunner-read",
        "trunner-read",
        "trunner-status",
    ]
    assert api.exec_sessions[0].request.command[5:] == main_command(config, job)
    assert len(resumes) == 1
    assert (tmp_path / ".trunner" / "job-7" / "main" / "exit").read_text().startswith("6 ")


async def test_resumes_are_counted_and_timed_in_the_runner_metrics(tmp_path: Path) -> None:
    metrics = RunnerMetrics(runner_id="r1")
    job = RunnerJob(
        id="job-m", image="alpine", commands=("awk 'BEGIN { for (i = 0; i < 20000; i++) print i }'",)
    )
    async with serve_kube_api() as api:
        settings = kube_settings(api, tmp_path, ["--job-pod-owner", "runner-0"])
        settings = attrs.evolve(settings, pods=attrs.evolve(settings.pods, shell=SH, helper_image=None))
        api.cut_exec(2, after_bytes=1)
        async with open_executor(settings, runner_id="r1", metrics=metrics, resume_policy=FAST) as executor:
            started = trio.current_time()
            with trio.fail_after(30):
                result = await executor.run(job, RecordingFeed())
            elapsed = trio.current_time() - started
    assert result == ExitResult.exited(0)
    assert metrics.registry.get_sample_value("trunner_exec_resumes_total", {"runner": "r1"}) == 2
    assert (
        metrics.registry.get_sample_value("trunner_exec_resume_latency_seconds_count", {"runner": "r1"}) == 2
    )
    latency = metrics.registry.get_sample_value("trunner_exec_resume_latency_seconds_sum", {"runner": "r1"})
    assert latency is not None and FAST.base <= latency <= elapsed
