"""The Kubernetes executor end to end against the Kubernetes API double (real HTTP, watch and
exec WebSocket on loopback): a job's objects, its output and exit code, every failure mode and
its outcome, and cleanup on every exit path (success, failure, cancellation, exception, crash)."""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from tests.doubles.kube import KubeApiDouble, PodBehaviour, matching, serve_kube_api
from tests.doubles.kube_exec import Abort, ExecRequest, Exit, Fail, Pause, Script, Sever, Stderr, Stdout
from tests.doubles.kube_store import ResourcePath
from tests.kube.transport_support import NS, RecordingFeed, client_for
from trunner.config import SettingsSource, add_arguments
from trunner.executors import kubernetes, registry
from trunner.executors.base import ExitKind, ExitResult, JobNaming
from trunner.executors.kubernetes import KubernetesExecutor, open_executor, podspec
from trunner.executors.kubernetes.podspec import main_command
from trunner.executors.kubernetes.settings import JobPodConfig, KubernetesSettings
from trunner.models import JobFile, JobVariable, Outcome, RunnerJob, VariableScope

NOW = 1734383310
JOB = RunnerJob(
    id="Z2lkOi8vb3BzbGV2ZWwvUnVubmVyczo6Sm9iUnVuLzIyNQ",
    image="alpine:3.20",
    commands=("echo hello", "echo oops >&2", 'echo "greeting=$GREETING secret=${CLONE_TOKEN:-unset}"'),
    variables=(
        JobVariable("GREETING", "hi there"),
        JobVariable("CLONE_TOKEN", "s3cr3t", sensitive=True, scope=VariableScope.INIT),
    ),
    files=(JobFile("script.sh", "#!/bin/sh\necho from file\n"),),
    init_commands=("true",),
)
NAME = "opslevel-job-225-1734383310"
CONFIG = JobPodConfig(namespace=NS, owner="runner-0", helper_image=None, durable=False)
"""The single-stream exec, whose scripted sessions these tests play; the durable stage is in
test_durable.py."""
PLURALS = (("pods", "v1"), ("poddisruptionbudgets", "policy/v1"), ("secrets", "v1"), ("configmaps", "v1"))


def job_objects(api: KubeApiDouble) -> dict[str, list[str]]:
    return {
        plural: [o["metadata"]["name"] for o in api.objects(plural, namespace=NS, api_version=version)]
        for plural, version in PLURALS
    }


NOTHING_LEFT = {"pods": [], "poddisruptionbudgets": [], "secrets": [], "configmaps": []}


@asynccontextmanager
async def executor_for(
    api: KubeApiDouble, config: JobPodConfig = CONFIG, **kwargs: Any
) -> AsyncIterator[KubernetesExecutor]:
    async with client_for(api) as client:
        yield KubernetesExecutor(client, config, runner_id="1234", wall_clock=lambda: NOW, **kwargs)


async def run_job(
    api: KubeApiDouble, job: RunnerJob = JOB, config: JobPodConfig = CONFIG, **kwargs: Any
) -> tuple[ExitResult, RecordingFeed]:
    feed = RecordingFeed()
    async with executor_for(api, config, **kwargs) as executor:
        result = await executor.run(job, feed)
    return result, feed


# --- success and exit codes -----------------------------------------------------------------------


async def test_a_job_runs_end_to_end_in_a_real_shell(tmp_path: Path) -> None:
    """Real clock: the double runs the exec'd argv as a local subprocess with the pod's env."""
    latencies: list[float] = []
    async with serve_kube_api() as api:
        config = attrs.evolve(CONFIG, workdir=str(tmp_path))
        with trio.fail_after(30):
            result, feed = await run_job(api, config=config, observe_pod_start=latencies.append)
        assert result == ExitResult.exited(0)
        assert result.outcome() is Outcome.SUCCESS
        assert b"hello\n" in feed.stdout
        assert b"greeting=hi there secret=unset\n" in feed.stdout
        assert b"oops\n" in feed.stdout and feed.stderr == b""
        assert b"+ echo hello\nhello\n" in feed.stdout  # the trace and the output in written order
        assert (tmp_path / JOB.id).is_dir()
        [session] = api.exec_sessions
        assert session.request.container == "job"
        assert session.request.command == main_command(config, JOB)
        assert session.subprotocol == "v5.channel.k8s.io"
        assert len(latencies) == 1 and latencies[0] >= 0
        assert job_objects(api) == NOTHING_LEFT


async def test_a_failing_command_reports_its_exit_code(tmp_path: Path) -> None:
    async with serve_kube_api() as api:
        job = attrs.evolve(JOB, commands=("echo before", "exit 3", "echo never"))
        with trio.fail_after(30):
            result, feed = await run_job(api, job, attrs.evolve(CONFIG, workdir=str(tmp_path)))
        assert result == ExitResult.exited(3)
        assert result.outcome() is Outcome.FAILED
        assert feed.stdout.endswith(b"+ echo before\nbefore\n+ exit 3\n")
        assert b"never" not in feed.stdout.replace(b"echo never", b"")
        assert job_objects(api) == NOTHING_LEFT


async def test_objects_are_created_in_order_with_the_job_labels(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with serve_kube_api() as api:
        api.script_exec(Stdout(b"line 1\nline 2\n"), Stderr(b"warn\n"), Exit(0))
        result, feed = await run_job(api)
        assert result == ExitResult.exited(0)
        assert feed.stdout == b"line 1\nline 2\n" and feed.stderr == b"warn\n"
        creates = [r for r in api.requests if r.method == "POST"]
        assert [r.path for r in creates] == [
            f"/api/v1/namespaces/{NS}/secrets",
            f"/apis/policy/v1/namespaces/{NS}/poddisruptionbudgets",
            f"/api/v1/namespaces/{NS}/pods",
        ]
        [patch] = [r for r in api.requests if r.method == "PATCH"]
        assert patch.path == f"/api/v1/namespaces/{NS}/secrets/{NAME}"
        assert patch.header("content-type") == "application/merge-patch+json"
        [owner] = patch.json()["metadata"]["ownerReferences"]
        assert (
            owner == {"apiVersion": "v1", "kind": "Pod", "name": NAME, "uid": owner["uid"]} and owner["uid"]
        )
        assert api.requests.index(patch) > api.requests.index(creates[2])
        for request in creates:
            body = request.json()
            assert body["metadata"]["name"] == NAME
            assert body["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "runner-1234"
        pod = creates[2].json()
        env = {
            c["name"]: {e["name"] for e in c.get("env", [])}
            for c in pod["spec"]["initContainers"] + pod["spec"]["containers"]
        }
        assert env == {"init": {"GREETING", "CLONE_TOKEN"}, "job": {"GREETING"}}
        assert "s3cr3t" not in json.dumps(pod)
        deletes = sorted(r.path for r in api.requests if r.method == "DELETE")
        assert deletes == sorted(
            [
                f"/api/v1/namespaces/{NS}/pods/{NAME}",
                f"/apis/policy/v1/namespaces/{NS}/poddisruptionbudgets/{NAME}",
                f"/api/v1/namespaces/{NS}/secrets/{NAME}",
            ]
        )
        assert job_objects(api) == NOTHING_LEFT


async def test_the_job_secret_belongs_to_the_pod_and_goes_with_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Deleted by someone else mid-job, the pod takes its Secret with it (the garbage collector
    follows ownerReferences): no Secret outlives its pod even if this runner never deletes it."""
    async with serve_kube_api() as api:
        seen: dict[str, Any] = {}

        def take_pod(request: Any) -> Any:
            secret = api.store.find("v1", NS, "secrets", NAME)
            pod = api.store.find("v1", NS, "pods", NAME)
            assert secret is not None and pod is not None
            seen["owner"] = secret["metadata"]["ownerReferences"][0]["uid"]
            seen["pod"] = pod["metadata"]["uid"]
            api.store.remove(ResourcePath("", "v1", NS, "pods", NAME))
            assert api.store.find("v1", NS, "secrets", NAME) is None
            return Script((Exit(0),))

        api.exec_plan = take_pod
        await run_job(api)
        assert seen["owner"] == seen["pod"]
        assert job_objects(api) == NOTHING_LEFT


async def test_a_refused_owner_patch_is_logged_and_the_secret_still_deleted(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    async with serve_kube_api() as api:
        api.fail(403, "Forbidden", "secrets is forbidden", match=matching("PATCH", r"/secrets/"))
        api.script_exec(Exit(0))
        result, _ = await run_job(api)
        assert result == ExitResult.exited(0)
        assert f"could not make pod {NS}/{NAME} the owner of its Secret" in caplog.text
        assert job_objects(api) == NOTHING_LEFT


@pytest.mark.parametrize("failing", ["poddisruptionbudgets", "pods"])
async def test_no_secret_is_left_when_a_later_object_cannot_be_created(
    autojump_clock: trio.testing.MockClock, failing: str
) -> None:
    async with serve_kube_api() as api:
        api.fail(403, "Forbidden", f"{failing} is forbidden", match=matching("POST", rf"/{failing}$"))
        result, _ = await run_job(api)
        assert result.kind is ExitKind.COULD_NOT_START
        assert job_objects(api) == NOTHING_LEFT
        assert f"/api/v1/namespaces/{NS}/secrets/{NAME}" in [
            r.path for r in api.requests if r.method == "DELETE"
        ]


async def test_faktory_naming_uses_the_job_id(autojump_clock: trio.testing.MockClock) -> None:
    async with serve_kube_api() as api:
        api.script_exec(Exit(0))
        job = attrs.evolve(JOB, id="1234567890")
        await run_job(api, job, naming=JobNaming.ID)
        [create] = [r for r in api.requests if r.method == "POST" and r.path.endswith("/pods")]
        assert create.json()["metadata"]["name"] == "opslevel-job-1234567890-1734383310"


async def test_pod_start_latency_is_observed(autojump_clock: trio.testing.MockClock) -> None:
    async with serve_kube_api() as api:
        api.pod_behaviour = PodBehaviour(schedule_delay=2.0, start_delay=3.0)
        api.script_exec(Exit(0))
        latencies: list[float] = []
        result, feed = await run_job(api, observe_pod_start=latencies.append)
        assert result == ExitResult.exited(0)
        assert latencies == [pytest.approx(5.0, abs=0.1)]
        assert feed.notes == [
            f"Waiting for pod {NS}/{NAME} to be running: the pod is Pending",
            f"Waiting for pod {NS}/{NAME} to be running: init container init: PodInitializing; "
            "container job: PodInitializing",
        ]


# --- pod start failures ---------------------------------------------------------------------------


async def test_image_pull_backoff_times_out_with_the_reason(autojump_clock: trio.testing.MockClock) -> None:
    async with serve_kube_api() as api:
        api.pod_behaviour = PodBehaviour(waiting=("ImagePullBackOff", 'Back-off pulling image "alpine:nope"'))
        start = trio.current_time()
        result, feed = await run_job(api)
        assert trio.current_time() - start == pytest.approx(60, abs=1)
        assert result == ExitResult(
            ExitKind.POD_TIMEOUT,
            message=f"pod {NAME} was not running within 60 s: container job: ImagePullBackOff: "
            'Back-off pulling image "alpine:nope"',
        )
        assert result.outcome() is Outcome.POD_TIMEOUT
        assert feed.notes[-1] == (
            f"Waiting for pod {NS}/{NAME} to be running: container job: ImagePullBackOff: "
            'Back-off pulling image "alpine:nope"'
        )
        assert api.exec_sessions == []
        assert job_objects(api) == NOTHING_LEFT


async def test_invalid_image_name_fails_at_once(autojump_clock: trio.testing.MockClock) -> None:
    async with serve_kube_api() as api:
        api.pod_behaviour = PodBehaviour(
            waiting=("InvalidImageName", 'couldn\'t parse image name "Alpine:Bad"')
        )
        start = trio.current_time()
        result, _ = await run_job(api)
        assert trio.current_time() - start < 1
        assert result == ExitResult(
            ExitKind.COULD_NOT_START,
            message=f"pod {NAME} could not start: container job: InvalidImageName: "
            'couldn\'t parse image name "Alpine:Bad"',
        )
        assert result.outcome() is Outcome.FAILED
        assert job_objects(api) == NOTHING_LEFT


async def test_unschedulable_pod_times_out_with_the_scheduler_reason(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with serve_kube_api() as api:
        api.pod_behaviour = PodBehaviour(unschedulable="0/3 nodes are available: 3 Insufficient cpu.")
        result, _ = await run_job(api, config=attrs.evolve(CONFIG, max_wait=300))
        assert result == ExitResult(
            ExitKind.POD_TIMEOUT,
            message=f"pod {NAME} was not running within 300 s: "
            "PodScheduled=False Unschedulable: 0/3 nodes are available: 3 Insufficient cpu.",
        )


async def test_a_pod_that_fails_before_running_fails_the_job(autojump_clock: trio.testing.MockClock) -> None:
    async with serve_kube_api() as api:
        api.pod_behaviour = PodBehaviour(
            final_phase="Failed",
            final_reason="Evicted",
            final_message="The node was low on resource: memory.",
            exit_code=137,
        )
        result, _ = await run_job(api)
        assert result.kind is ExitKind.COULD_NOT_START and result.outcome() is Outcome.FAILED
        assert result.message == (
            f"pod {NAME} could not start: the pod failed before it was running: "
            "Evicted: The node was low on resource: memory.; container job exited with code 137 (Error)"
        )
        assert job_objects(api) == NOTHING_LEFT


async def test_a_rejected_create_fails_and_cleans_up_what_was_made(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with serve_kube_api() as api:
        api.fail(
            403,
            "Forbidden",
            f'pods is forbidden: User "system:serviceaccount:ci:runner" cannot create '
            f'resource "pods" in API group "" in the namespace "{NS}"',
            match=matching("POST", r"/pods$"),
        )
        result, _ = await run_job(api)
        assert result.kind is ExitKind.COULD_NOT_START
        assert result.message == (
            f"could not create the Pod {NS}/{NAME}: 403 Forbidden: pods is forbidden: User "
            f'"system:serviceaccount:ci:runner" cannot create resource "pods" in API group "" in the namespace "{NS}"'
        )
        assert job_objects(api) == NOTHING_LEFT


async def test_an_existing_object_of_the_same_name_is_never_deleted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with serve_kube_api() as api:
        api.put_object(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": NAME, "namespace": NS},
                "data": {"theirs": "MQ=="},
            },
            plural="secrets",
        )
        result, _ = await run_job(api)
        assert result.kind is ExitKind.COULD_NOT_START
        assert "AlreadyExists" in result.message
        assert job_objects(api)["secrets"] == [NAME]
        assert not any(r.method == "DELETE" and "/secrets/" in r.path for r in api.requests)


async def test_a_job_that_cannot_run_in_a_pod_creates_nothing(autojump_clock: trio.testing.MockClock) -> None:
    async with serve_kube_api() as api:
        job = RunnerJob(id="1", image="", files=(JobFile("big", "x" * (1024 * 1024 + 1)),))
        async with executor_for(api) as executor:
            assert executor.check_job(job) == [
                "image: a Kubernetes job needs an image",
                "files: the job's files and sensitive variables hold 1048577 bytes, more than the 1048576 "
                "bytes (1 MiB) a Kubernetes Secret can hold",
            ]
            result = await executor.run(job, RecordingFeed())
        assert result.kind is ExitKind.COULD_NOT_START and "1 MiB" in result.message
        assert api.requests == []


async def test_commands_too_long_for_one_exec_argument_fail_before_any_request(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """With the executor's own shell and job directory: the check sees the argv it would exec."""
    async with serve_kube_api() as api:
        config = attrs.evolve(CONFIG, workdir="/" + "w" * 200)
        job = RunnerJob(id="1", image="alpine", commands=("x" * (128 * 1024 - 150),))
        assert podspec.job_problems(job) == []  # fits with the default job directory
        async with executor_for(api, config) as executor:
            [problem] = executor.check_job(job)
            assert problem.startswith("commands: the script of the job's commands is ")
            result = await executor.run(job, RecordingFeed())
        assert result.kind is ExitKind.COULD_NOT_START and "MAX_ARG_STRLEN" in result.message
        assert api.requests == []


# --- exec failures --------------------------------------------------------------------------------


async def test_a_severed_exec_is_an_execution_timeout(autojump_clock: trio.testing.MockClock) -> None:
    async with serve_kube_api() as api:
        api.script_exec(Stdout(b"partial\n"), Sever(1000))
        result, feed = await run_job(api)
        assert result.kind is ExitKind.SEVERED and result.outcome() is Outcome.EXECUTION_TIMEOUT
        assert "severed" in result.message and "closed with code 1000" in result.message
        assert feed.stdout == b"partial\n"
        assert job_objects(api) == NOTHING_LEFT


async def test_a_tcp_abort_is_an_execution_timeout(autojump_clock: trio.testing.MockClock) -> None:
    async with serve_kube_api() as api:
        api.script_exec(Stdout(b"x\n"), Abort())
        result, _ = await run_job(api)
        assert result.outcome() is Outcome.EXECUTION_TIMEOUT
        assert job_objects(api) == NOTHING_LEFT


async def test_an_internal_error_status_fails_with_its_message(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with serve_kube_api() as api:
        api.script_exec(Fail("error dialing backend: dial tcp 10.0.0.2:10250: i/o timeout"))
        result, _ = await run_job(api)
        assert result == ExitResult(
            ExitKind.INFRASTRUCTURE,
            message="Internal error occurred: error dialing backend: dial tcp 10.0.0.2:10250: i/o timeout",
        )
        assert result.outcome() is Outcome.FAILED


async def test_a_non_zero_exit_status_fails_with_the_exit_code(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with serve_kube_api() as api:
        api.script_exec(Stdout(b"building\n"), Exit(2))
        result, _ = await run_job(api)
        assert result == ExitResult.exited(2)
        assert result.outcome() is Outcome.FAILED and result.exit_code == 2


async def test_an_oom_kill_is_named_in_the_outcome(autojump_clock: trio.testing.MockClock) -> None:
    async with serve_kube_api() as api:

        def oom_killed(pod: dict[str, Any]) -> None:
            pod["status"]["containerStatuses"][0]["state"] = {
                "terminated": {
                    "exitCode": 137,
                    "reason": "OOMKilled",
                    "startedAt": "2026-01-01T00:00:00Z",
                    "finishedAt": "2026-01-01T00:00:05Z",
                }
            }

        def plan(request: ExecRequest) -> Script:
            # The kubelet kills the container while the exec runs; the stream then breaks.
            api.update_pod(request.pod_name, oom_killed, namespace=NS)
            return Script((Stdout(b"allocating\n"), Pause(5), Sever(1000)))

        api.exec_plan = plan
        result, _ = await run_job(api)
        assert result.kind is ExitKind.SEVERED
        assert result.message.endswith("; container job ended: OOMKilled (exit code 137)")


async def test_the_lifetime_limit_ends_the_job_as_execution_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with serve_kube_api() as api:
        api.script_exec(Stdout(b"working\n"), Pause(10_000), Exit(0))
        start = trio.current_time()
        result, feed = await run_job(api, config=attrs.evolve(CONFIG, lifetime=120))
        # The lifetime; the exec socket's close handshake is answered at once.
        assert trio.current_time() - start == pytest.approx(120, abs=1)
        assert result == ExitResult(
            ExitKind.LIFETIME_EXCEEDED, message="the job ran longer than its lifetime of 120 s"
        )
        assert result.outcome() is Outcome.EXECUTION_TIMEOUT
        assert feed.stdout == b"working\n"
        assert job_objects(api) == NOTHING_LEFT


# --- cleanup on every exit path -------------------------------------------------------------------


@pytest.mark.parametrize("phase", ["waiting for the pod", "during the exec"])
async def test_cancellation_deletes_everything(autojump_clock: trio.testing.MockClock, phase: str) -> None:
    async with serve_kube_api() as api:
        if phase == "waiting for the pod":
            api.pod_behaviour = PodBehaviour(waiting=("ErrImagePull", "pull access denied"))
        else:
            api.script_exec(Stdout(b"started\n"), Pause(10_000), Exit(0))
        feed = RecordingFeed()
        async with executor_for(api) as executor:
            with trio.move_on_after(30) as scope:
                await executor.run(JOB, feed)
            assert scope.cancelled_caught
            assert job_objects(api) == NOTHING_LEFT


async def test_an_exception_deletes_everything(autojump_clock: trio.testing.MockClock) -> None:
    class Broken(RecordingFeed):
        def feed(self, stream: Any, data: bytes) -> None:
            raise RuntimeError("pipeline broke")

    async with serve_kube_api() as api:
        api.script_exec(Stdout(b"boom\n"), Pause(10_000), Exit(0))
        async with executor_for(api) as executor:
            with pytest.raises(RuntimeError, match="pipeline broke"):
                await executor.run(JOB, Broken())
        assert job_objects(api) == NOTHING_LEFT


async def test_cleanup_is_bounded_by_its_own_deadline(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    async with serve_kube_api() as api:
        api.script_exec(Pause(10_000), Exit(0))
        api.delay(1_000, times=3, match=matching("DELETE"))
        async with executor_for(api, cleanup_timeout=7) as executor:
            with trio.move_on_after(30) as scope:
                await executor.run(JOB, RecordingFeed())
            assert scope.cancelled_caught
            # Cancelled at 30 s; the exec socket closes at once, the stalled deletes take their 7 s.
            assert trio.current_time() == pytest.approx(30 + 7, abs=1)
        assert "did not finish within 7 s" in caplog.text


async def test_a_deleted_pod_during_cleanup_counts_as_done(autojump_clock: trio.testing.MockClock) -> None:
    async with serve_kube_api() as api:
        api.script_exec(Exit(0))
        api.fail(404, "NotFound", f'pods "{NAME}" not found', match=matching("DELETE", "/pods/"))
        result, _ = await run_job(api)
        assert result == ExitResult.exited(0)


# --- leftovers of a crashed runner ----------------------------------------------------------------


def leftover(kind: str, api_version: str, name: str, owner: str) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {
            "name": name,
            "namespace": NS,
            "labels": {
                "app.kubernetes.io/instance": name,
                "app.kubernetes.io/managed-by": "runner-old",
                "runner.opslevel.com/owner": owner,
            },
        },
    }
    if kind == "Pod":
        obj["spec"] = {"containers": [{"name": "job", "image": "alpine", "command": ["sleep", "3600"]}]}
    elif kind == "PodDisruptionBudget":
        obj["spec"] = {"maxUnavailable": 0, "selector": {"matchLabels": {"app.kubernetes.io/instance": name}}}
    else:
        obj["data"] = {}
    return obj


def plant_leftovers(api: KubeApiDouble) -> None:
    for owner, name in (
        ("runner-0", "opslevel-job-1-1"),
        ("runner-0", "opslevel-job-2-2"),
        ("runner-1", "opslevel-job-3-3"),
    ):
        api.put_object(leftover("Pod", "v1", name, owner))
        api.put_object(
            leftover("PodDisruptionBudget", "policy/v1", name, owner), plural="poddisruptionbudgets"
        )
        api.put_object(leftover("Secret", "v1", name, owner), plural="secrets")
        api.put_object(leftover("ConfigMap", "v1", name, owner))


async def test_leftovers_of_this_runner_are_deleted(autojump_clock: trio.testing.MockClock) -> None:
    async with serve_kube_api() as api:
        plant_leftovers(api)
        async with executor_for(api) as executor:
            assert await executor.delete_leftovers() == 8
        # Another runner's objects (a live job, perhaps) are left alone.
        assert job_objects(api) == {k: ["opslevel-job-3-3"] for k in NOTHING_LEFT}


def kube_settings(api: KubeApiDouble, tmp_path: Path, argv: list[str]) -> KubernetesSettings:
    """The executor's settings as the service resolves them from flags, environment and file."""
    parser = argparse.ArgumentParser()
    for cls in kubernetes.SETTINGS:
        add_arguments(parser, cls)
    kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig", namespace=NS)
    file = {"kubernetes": {"namespace": NS, "workingDir": str(tmp_path / "jobs")}}
    args = parser.parse_args(argv)
    source = SettingsSource(
        args=args, environ={"KUBECONFIG": str(kubeconfig)}, file=file, source_name="opslevel.yaml"
    )
    settings = registry.load_settings("kubernetes", source)
    assert isinstance(settings, KubernetesSettings)
    return settings


async def test_open_executor_deletes_leftovers_at_startup_then_runs_jobs(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trunner.executors.kubernetes")
    async with serve_kube_api() as api:
        plant_leftovers(api)
        api.script_exec(Stdout(b"ok\n"), Exit(0))
        settings = kube_settings(
            api, tmp_path, ["--job-pod-owner", "runner-0", "--job-pod-durable-exec", "false"]
        )
        latencies: list[float] = []
        async with open_executor(
            settings, runner_id="faktory", naming=JobNaming.ID, observe_pod_start=latencies.append
        ) as executor:
            assert executor.name == "kubernetes"
            assert executor.naming is JobNaming.ID
            assert job_objects(api) == {k: ["opslevel-job-3-3"] for k in NOTHING_LEFT}
            feed = RecordingFeed()
            result = await executor.run(RunnerJob(id="42", image="alpine", commands=("echo ok",)), feed)
        assert result == ExitResult.exited(0) and feed.stdout == b"ok\n"
        assert len(latencies) == 1
        assert "deleted 8 leftover job objects of owner runner-0" in caplog.text
        [session] = api.exec_sessions
        assert session.request.command[3].startswith(f"exec 2>&1;\nmkdir -p {tmp_path}/jobs/42;")


async def test_startup_survives_a_forbidden_leftover_listing(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with serve_kube_api() as api:
        api.fail(403, "Forbidden", "configmaps is forbidden", match=matching("GET", r"/configmaps$"))
        async with open_executor(kube_settings(api, tmp_path, []), runner_id="1") as executor:
            assert executor.naming is JobNaming.NUMBER
        assert "cannot list leftover ConfigMaps" in caplog.text


def test_the_durable_stage_is_the_default_and_a_setting_turns_it_off(tmp_path: Path) -> None:
    async def settings(argv: list[str]) -> KubernetesSettings:
        async with serve_kube_api() as api:
            return kube_settings(api, tmp_path, argv)

    assert trio.run(settings, []).pods.durable is True
    assert trio.run(settings, ["--job-pod-durable-exec", "false"]).pods.durable is False


def test_settings_groups_are_registered() -> None:
    names = {cls.__name__ for cls in kubernetes.SETTINGS}
    assert names == {"JobRunSettings", "KubeJobSettings", "KubeApiSettings"}


@pytest.mark.parametrize(("exec_max_wait", "answer_after", "started"), [(90, 70, True), (60, 70, False)])
async def test_job_pod_exec_max_wait_bounds_the_start_of_the_exec(
    autojump_clock: trio.testing.MockClock,
    tmp_path: Path,
    exec_max_wait: int,
    answer_after: int,
    started: bool,
) -> None:
    async with serve_kube_api() as api:
        api.delay(answer_after, match=lambda r: r.path.endswith("/exec"))
        api.script_exec(Stdout(b"ok\n"), Exit(0))
        argv = ["--job-pod-owner", "runner-0", "--job-pod-exec-max-wait", str(exec_max_wait)]
        argv += ["--job-pod-durable-exec", "false"]
        async with open_executor(kube_settings(api, tmp_path, argv), runner_id="1") as executor:
            feed = RecordingFeed()
            before = trio.current_time()
            result = await executor.run(RunnerJob(id="42", image="alpine", commands=("echo ok",)), feed)
    if started:
        assert result == ExitResult.exited(0) and feed.stdout == b"ok\n"
    else:
        assert result.kind is ExitKind.INFRASTRUCTURE and result.outcome() is Outcome.FAILED, result
        assert trio.current_time() - before < answer_after
