"""End to end with both doubles at once: ``trunner run`` in API mode (and Faktory mode) with the
real Kubernetes executor, configured through the kubeconfig the Kubernetes double writes, against
the OpsLevel GraphQL double (or the Faktory double). The Kubernetes double runs each exec'd argv as
a real local subprocess with the pod's environment, so these tests run on the real clock (except
the pod that never starts, which needs no subprocess); every wait is bounded by ``fail_after``."""

from __future__ import annotations

import argparse
import base64
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from tests.doubles.faktory import FaktoryDouble, faktory_double
from tests.doubles.kube import KubeApiDouble, PodBehaviour, serve_kube_api
from tests.doubles.kube_exec import Exit, Pause, Stdout
from tests.doubles.opslevel import OpsLevelDouble, job_payload
from tests.kube.transport_support import client_for
from tests.opslevel.harness import RunningMode, body_lines, start_mode
from trunner.config import SettingsSource
from trunner.executors.kubernetes import KubernetesExecutor
from trunner.executors.kubernetes.durable import ResumePolicy
from trunner.executors.kubernetes.settings import JobPodConfig
from trunner.faktory.mode import FaktoryMode

NS = "ci-jobs"
SECRET = "hunter2-e2e-secret"
"""18 bytes, so its base64 form has no padding and is masked whole."""
SECRET_B64 = base64.b64encode(SECRET.encode()).decode()
MASK = "**********"
DASH = shutil.which("dash")
"""The job shell is pinned to dash: the expected ``set -xv`` trace lines are in its format."""
PLURALS = (("pods", "v1"), ("poddisruptionbudgets", "policy/v1"), ("secrets", "v1"))
NOTHING_LEFT: dict[str, list[str]] = {plural: [] for plural, _ in PLURALS}
"""``ExecTiming.close_timeout``: how long closing a job's exec WebSocket may take."""
FAST = {"OPSLEVEL_POLL_INTERVAL": "0.2", "OPSLEVEL_JOB_POD_LOG_MAX_INTERVAL": "0.1"}


@pytest.fixture
async def kube() -> AsyncIterator[KubeApiDouble]:
    async with serve_kube_api() as api:
        yield api


def kube_environ(api: KubeApiDouble, tmp_path: Path) -> dict[str, str]:
    """What a runner in a cluster is given: a kubeconfig, the job namespace, a work directory the
    local subprocess can create."""
    kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig", namespace=NS)
    return {
        "KUBECONFIG": str(kubeconfig),
        "OPSLEVEL_EXECUTOR": "kubernetes",
        "OPSLEVEL_JOB_POD_NAMESPACE": NS,
        "OPSLEVEL_JOB_POD_WORKDIR": str(tmp_path / "jobs"),
        "OPSLEVEL_JOB_POD_OWNER": "runner-e2e",
        **({"OPSLEVEL_JOB_POD_SHELL": DASH} if DASH else {}),
    }


StartApiMode = Callable[..., Awaitable[RunningMode]]


@pytest.fixture
def start_api_mode(
    nursery: trio.Nursery, opslevel: OpsLevelDouble, kube: KubeApiDouble, tmp_path: Path
) -> StartApiMode:
    """Starts API mode, with ``env`` added, against both doubles, with the executor ``--executor
    kubernetes`` opens (no injected executor)."""

    async def start(**env: str) -> RunningMode:
        return await start_mode(nursery, opslevel, None, **kube_environ(kube, tmp_path), **env)

    return start


def job_objects(api: KubeApiDouble) -> dict[str, list[str]]:
    return {
        plural: [o["metadata"]["name"] for o in api.objects(plural, namespace=NS, api_version=version)]
        for plural, version in PLURALS
    }


def deleted_names(api: KubeApiDouble, plural: str) -> list[str]:
    return sorted(
        r.path.rsplit("/", 1)[1] for r in api.requests if r.method == "DELETE" and f"/{plural}/" in r.path
    )


def created_names(api: KubeApiDouble, plural: str) -> list[str]:
    return sorted(
        r.json()["metadata"]["name"] for r in api.requests if r.method == "POST" and r.path.endswith(plural)
    )


def peak_pods(api: KubeApiDouble) -> int:
    """The most pods that existed at once, from the store's event history."""
    alive = peak = 0
    for event in api.store.history:
        if event.collection == ("v1", NS, "pods"):
            alive += {"ADDED": 1, "DELETED": -1}.get(event.type, 0)
            peak = max(peak, alive)
    return peak


def is_interleaving(merged: Sequence[str], first: Sequence[str], second: Sequence[str]) -> bool:
    """``merged`` is ``first`` and ``second`` interleaved, each in its own order, each line once."""
    reachable = {(0, 0)}
    for line in merged:
        reachable = {
            step
            for i, j in reachable
            for step, fits in (
                ((i + 1, j), i < len(first) and first[i] == line),
                ((i, j + 1), j < len(second) and second[j] == line),
            )
            if fits
        }
    return (len(first), len(second)) in reachable


def notes_and_output(opslevel: OpsLevelDouble, job_id: str) -> tuple[list[str], list[str]]:
    lines = body_lines(opslevel, job_id)
    return [x for x in lines if x.startswith("[trunner")], [x for x in lines if not x.startswith("[trunner")]


# --- 1. N jobs at concurrency C -------------------------------------------------------------------

JOBS = 6
CONCURRENCY = 3
FAILING = 4


def job_commands(k: int) -> list[str]:
    commands = [
        f"printf 'out-{k}-%s\\n' 1 2 3",
        f"printf 'err-{k}-%s\\n' 1 2 >&2",
        f"echo ::set-outcome-var result=r{k}",
        "echo token=$SECRET",
        "printf %s $SECRET >secret.txt",
        "base64 secret.txt",
        "sleep 1.5",
        f"echo after-{k}",
    ]
    return commands + (["exit 3", "echo never"] if k == FAILING else [])


def expected_streams(k: int) -> tuple[list[str], list[str]]:
    """(stdout, stderr) lines as delivered: secrets masked, the outcome variable line consumed,
    dash's ``set -x`` trace on stderr."""
    stdout = [f"out-{k}-1", f"out-{k}-2", f"out-{k}-3", f"token={MASK}", MASK, f"after-{k}"]
    stderr = [
        f"+ printf out-{k}-%s\\n 1 2 3",
        f"+ printf err-{k}-%s\\n 1 2",
        f"err-{k}-1",
        f"err-{k}-2",
        f"+ echo ::set-outcome-var result=r{k}",
        f"+ echo token={MASK}",
        f"+ printf %s {MASK}",
        "+ base64 secret.txt",
        "+ sleep 1.5",
        f"+ echo after-{k}",
    ]
    return stdout, stderr + (["+ exit 3"] if k == FAILING else [])


@pytest.mark.skipif(DASH is None, reason="the expected trace lines are dash's")
async def test_jobs_at_concurrency_through_kubernetes_deliver_every_line_once_masked_and_clean_up(
    opslevel: OpsLevelDouble, kube: KubeApiDouble, start_api_mode: StartApiMode
) -> None:
    for k in range(JOBS):
        opslevel.add_job(
            job_payload(
                f"job-{k}",
                job_commands(k),
                variables=[
                    {"key": "SECRET", "value": SECRET, "sensitive": True, "scope": None},
                    {"key": "PLAIN", "value": "visible", "sensitive": False, "scope": "main"},
                ],
            )
        )
    running = await start_api_mode(OPSLEVEL_JOB_CONCURRENCY=str(CONCURRENCY), **FAST)
    with trio.fail_after(15):
        await opslevel.wait_until(lambda: len(opslevel.outcomes) == JOBS)
    with trio.fail_after(10):
        assert await running.stop() == 0

    for k in range(JOBS):
        job_id = f"job-{k}"
        [outcome] = opslevel.outcomes[job_id]
        assert outcome.outcome == ("failed" if k == FAILING else "success")
        assert outcome.variables == (("result", f"r{k}"),)
        assert outcome.after_lines == opslevel.line_counts[job_id]
        calls = [
            (i, c.operation)
            for i, c in enumerate(opslevel.calls)
            if c.operation in ("RunnerAppendJobLog", "RunnerReportJobOutcome")
            and c.variables["input"]["runnerJobId"] == job_id
        ]
        assert calls[-1][1] == "RunnerReportJobOutcome"
        # Lines before the job's sleep and after it go in separate batches: the sleep is longer
        # than the durable reader's poll interval (1 s).
        assert [op for _, op in calls[:-1]] == ["RunnerAppendJobLog"] * (len(calls) - 1) and len(calls) >= 3

        notes, output = notes_and_output(opslevel, job_id)
        stdout, stderr = expected_streams(k)
        assert len(output) == len(stdout) + len(stderr), output
        assert is_interleaving(output, stdout, stderr), output
        if k == FAILING:
            assert body_lines(opslevel, job_id)[-1] == "[trunner] command exited with code 3"
        assert all(n.startswith("[trunner] Waiting for pod") for n in notes if "exited with code" not in n)

    for call in opslevel.calls:
        assert SECRET.encode() not in call.body
        assert SECRET_B64.encode() not in call.body
    for k in range(JOBS):
        for line in opslevel.job_lines(f"job-{k}"):
            assert SECRET not in line and SECRET_B64 not in line

    assert peak_pods(kube) == CONCURRENCY
    # Each job: its launch, one reader that was never cut, its exit record.
    assert len(kube.exec_sessions) == 3 * JOBS
    assert sorted(s.request.command[3] for s in kube.exec_sessions) == sorted(
        ["trunner-launch", "trunner-read", "trunner-status"] * JOBS
    )
    assert all(s.request.namespace == NS for s in kube.exec_sessions)
    for plural, _ in PLURALS:
        assert len(created_names(kube, plural)) == JOBS
        assert deleted_names(kube, plural) == created_names(kube, plural)
    assert job_objects(kube) == NOTHING_LEFT
    assert opslevel.calls[-1].operation == "RunnerUnregister"


# --- 2. Shutdown mid-job --------------------------------------------------------------------------


async def test_shutdown_mid_job_cancels_after_the_grace_deletes_the_pod_and_exits_0(
    opslevel: OpsLevelDouble, kube: KubeApiDouble, start_api_mode: StartApiMode
) -> None:
    opslevel.add_job(job_payload("job-long", ["echo started", "sleep 60"]))
    running = await start_api_mode(OPSLEVEL_SHUTDOWN_GRACE="1", **FAST)
    with trio.fail_after(10):
        await opslevel.wait_until(lambda: "started" in notes_and_output(opslevel, "job-long")[1])
    assert job_objects(kube) != NOTHING_LEFT
    stopped = trio.current_time()
    with trio.fail_after(10):
        assert await running.stop() == 0
    assert running.ended_at is not None
    # The grace, then cleanup: the exec socket's close handshake, three deletes, the canceled
    # report and runnerUnregister on loopback.
    assert 1.0 <= running.ended_at - stopped <= 1.0 + 2.0

    assert [o.outcome for o in opslevel.outcomes["job-long"]] == ["canceled"]
    assert "started" in notes_and_output(opslevel, "job-long")[1]
    assert body_lines(opslevel, "job-long")[-1] == "[trunner] job canceled: the runner is shutting down"
    # The launch exec ended at once; the reader outlived its stream and died with the pod.
    launch, read = kube.exec_sessions
    assert launch.request.command[3] == "trunner-launch" and not launch.killed
    assert read.request.command[3] == "trunner-read" and read.killed
    assert read.process is not None and read.process.returncode is not None
    assert job_objects(kube) == NOTHING_LEFT
    for plural, _ in PLURALS:
        assert deleted_names(kube, plural) == created_names(kube, plural)
    assert created_names(kube, "pods") != [] and created_names(kube, "poddisruptionbudgets") != []
    [unregister] = opslevel.calls_to("RunnerUnregister")
    assert unregister.variables == {"runnerId": "runner-1"}
    assert opslevel.calls[-1].operation == "RunnerUnregister"


async def test_a_job_cancelled_mid_exec_is_cleaned_up_without_waiting_out_the_exec_close_timeout(
    opslevel: OpsLevelDouble,
    kube: KubeApiDouble,
    start_api_mode: StartApiMode,
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The double answers the client's close frame at once (as the apiserver's WebSocket library
    # does), so closing the exec socket need not take anywhere near its timeout.
    kube.script_exec(Stdout(b"started\n"), Pause(10_000), Exit(0))
    opslevel.add_job(job_payload("job-long", ["sleep 10000"]))
    running = await start_api_mode(OPSLEVEL_SHUTDOWN_GRACE="1", OPSLEVEL_JOB_POD_DURABLE_EXEC="false", **FAST)
    with trio.fail_after(60):
        await opslevel.wait_until(lambda: "started" in notes_and_output(opslevel, "job-long")[1])
    stopped = trio.current_time()
    with trio.fail_after(60):
        assert await running.stop() == 0
    [session] = kube.exec_sessions
    assert session.client_close_code == 1000
    assert [o.outcome for o in opslevel.outcomes["job-long"]] == ["canceled"]
    [pod_deleted] = [r for r in kube.requests if r.method == "DELETE" and "/pods/" in r.path]
    assert pod_deleted.at - stopped < 1.0 + 1.0


# --- 3. Faktory mode ------------------------------------------------------------------------------


def faktory_source(server: FaktoryDouble, api: KubeApiDouble, tmp_path: Path) -> SettingsSource:
    environ = {
        "FAKTORY_URL": server.url(),
        "OPSLEVEL_METRICS_PORT": "0",
        "OPSLEVEL_JOB_POD_LOG_MAX_INTERVAL": "0.1",
        **kube_environ(api, tmp_path),
    }
    # ``--mode faktory`` makes the executor name objects by job id, as the Go runner does.
    return SettingsSource(args=argparse.Namespace(mode="faktory"), environ=environ)


def pushed_args(server: FaktoryDouble, jobtype: str, job_id: str) -> list[dict[str, Any]]:
    return [
        j["args"][0]
        for j in server.pushed
        if j["jobtype"] == f"Runners::Faktory::{jobtype}" and j["args"][0]["runnerJobId"] == job_id
    ]


async def test_faktory_mode_runs_legacy_jobs_in_pods_and_acks_after_the_report(
    kube: KubeApiDouble, tmp_path: Path
) -> None:
    async with faktory_double() as server:
        jids = {
            server.enqueue(
                "legacy",
                [{"id": job_id, "image": "alpine", "commands": [f"echo hello {job_id}", "echo bye >&2"]}],
            ): job_id
            for job_id in ("101", "102")
        }
        faktory = FaktoryMode(
            faktory_source(server, kube, tmp_path), http_host="127.0.0.1", handle_signals=False
        )
        codes: list[int] = []
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:

                async def serve(task_status: trio.TaskStatus[FaktoryMode]) -> None:
                    codes.append(await faktory.serve(task_status=task_status))

                await nursery.start(serve)
                await server.wait_for(lambda: len(server.acks) == 2)
                faktory.stop()
        assert codes == [0]
        assert sorted(server.acks) == sorted(jids) and server.fails == []

        for jid, job_id in jids.items():
            lines = [
                base64.b64decode(chunk).decode().split("] ", 1)[1]
                for args in pushed_args(server, "AppendJobLog", job_id)
                for chunk in args["logChunk"]
            ]
            assert f"hello {job_id}" in lines and "bye" in lines
            [report] = pushed_args(server, "ReportJobOutcome", job_id)
            assert report["outcome"] == "success"
            pushes = [
                i
                for i, c in enumerate(server.commands)
                if c.verb == "PUSH" and f'"runnerJobId":"{job_id}"' in c.argument
            ]
            reported = next(i for i in pushes if "ReportJobOutcome" in server.commands[i].argument)
            acked = next(i for i, c in enumerate(server.commands) if c.verb == "ACK" and jid in c.argument)
            assert max(pushes) == reported < acked
        assert all(j["queue"] == "app" for j in server.pushed)
    pods = created_names(kube, "pods")
    assert len(pods) == 2 and all(
        name.startswith(("opslevel-job-101-", "opslevel-job-102-")) for name in pods
    )
    assert job_objects(kube) == NOTHING_LEFT


# --- 4. A pod that never starts -------------------------------------------------------------------


async def test_a_pod_stuck_in_image_pull_backoff_is_reported_pod_timeout_with_the_reason(
    opslevel: OpsLevelDouble,
    kube: KubeApiDouble,
    start_api_mode: StartApiMode,
    autojump_clock: trio.testing.MockClock,
) -> None:
    kube.pod_behaviour = PodBehaviour(waiting=("ImagePullBackOff", 'Back-off pulling image "alpine:nope"'))
    opslevel.add_job(job_payload("job-stuck", ["echo never"], image="alpine:nope"))
    running = await start_api_mode(OPSLEVEL_JOB_POD_MAX_WAIT="5", OPSLEVEL_POLL_INTERVAL="1")
    with trio.fail_after(60):
        await opslevel.wait_until(lambda: "job-stuck" in opslevel.outcomes)
    with trio.fail_after(60):
        assert await running.stop() == 0

    assert [o.outcome for o in opslevel.outcomes["job-stuck"]] == ["pod_timeout"]
    lines = body_lines(opslevel, "job-stuck")
    assert lines and all(line.startswith("[trunner") for line in lines)
    assert any("ImagePullBackOff" in line and "Back-off pulling image" in line for line in lines)
    assert any("was not running within 5 s" in line and "ImagePullBackOff" in line for line in lines)
    [report] = opslevel.calls_to("RunnerReportJobOutcome")
    [pod_created] = [r for r in kube.requests if r.method == "POST" and r.path.endswith("/pods")]
    assert report.at - pod_created.at == pytest.approx(5, abs=0.5)
    assert kube.exec_sessions == []
    assert job_objects(kube) == NOTHING_LEFT
    for plural, _ in PLURALS:
        assert deleted_names(kube, plural) == created_names(kube, plural)
    assert created_names(kube, "pods") != [] and created_names(kube, "poddisruptionbudgets") != []


# --- 4. A durable job survives a dropped exec stream ----------------------------------------------

CUT_LINES = 200_000
CUTS = 10


def half_lines(start: int, stop: int) -> str:
    return f"awk 'BEGIN {{ for (i = {start}; i < {stop}; i++) print \"line-\" i }}'"


async def run_with_cut_streams(
    nursery: trio.Nursery,
    opslevel: OpsLevelDouble,
    kube: KubeApiDouble,
    tmp_path: Path,
    payload: dict[str, Any],
    *,
    cuts: int,
    after_bytes: int,
) -> list[float]:
    """Runs ``payload`` to its outcome through API mode and the Kubernetes executor (durable
    stage, resume backoff in hundredths of a second) while the double cuts (TCP reset) each of
    the next ``cuts`` reader sessions once it has sent ``after_bytes`` bytes; returns the resume
    latencies."""
    kube.cut_exec(cuts, after_bytes=after_bytes)
    resumes: list[float] = []
    config = JobPodConfig(
        namespace=NS,
        owner="runner-e2e",
        helper_image=None,
        workdir=str(tmp_path / "jobs"),
        shell=DASH or "sh",
    )
    opslevel.add_job(payload)
    async with client_for(kube) as client:
        executor = KubernetesExecutor(
            client,
            config,
            runner_id="runner-1",
            resume_policy=ResumePolicy(base=0.05, cap=0.4),
            observe_resume=resumes.append,
        )
        running = await start_mode(nursery, opslevel, executor, **FAST)
        with trio.fail_after(120):
            await opslevel.wait_until(lambda: payload["id"] in opslevel.outcomes)
        with trio.fail_after(10):
            assert await running.stop() == 0
    assert sum(s.cut for s in kube.exec_sessions) == cuts
    assert len(resumes) == cuts
    assert sum(1 for s in kube.exec_sessions if s.request.command[3] == "trunner-launch") == 1
    return resumes


@pytest.mark.skipif(DASH is None, reason="the job shell is pinned to dash")
async def test_an_exec_stream_cut_ten_times_delivers_every_line_once_in_order_with_the_exit_code(
    nursery: trio.Nursery, opslevel: OpsLevelDouble, kube: KubeApiDouble, tmp_path: Path
) -> None:
    """Judged only by what reaches the OpsLevel API. The job prints half its lines, sleeps, prints
    the rest and exits 7; the double cuts each of the first ten reader sessions once it has sent
    64 KiB, so most cuts land while the job still runs."""
    half = CUT_LINES // 2
    commands = [
        half_lines(0, half),
        "sleep 1",
        half_lines(half, CUT_LINES),
        "echo ::set-outcome-var rows=all",
        "exit 7",
    ]
    payload = job_payload("job-cut", commands)
    await run_with_cut_streams(nursery, opslevel, kube, tmp_path, payload, cuts=CUTS, after_bytes=64 * 1024)

    [outcome] = opslevel.outcomes["job-cut"]
    assert outcome.outcome == "failed"
    assert outcome.variables == (("rows", "all"),)
    notes, output = notes_and_output(opslevel, "job-cut")
    assert all(n.startswith("[trunner] Waiting for pod") for n in notes if "exited with code" not in n)
    assert [line for line in output if not line.startswith("+ ")] == [f"line-{i}" for i in range(CUT_LINES)]
    assert [line for line in output if line.startswith("+ ")] == [
        f"+ {half_lines(0, half)}".replace("'", ""),
        "+ sleep 1",
        f"+ {half_lines(half, CUT_LINES)}".replace("'", ""),
        "+ echo ::set-outcome-var rows=all",
        "+ exit 7",
    ]
    assert body_lines(opslevel, "job-cut")[-1] == "[trunner] command exited with code 7"


SECRET_LINES = 20_000


@pytest.mark.skipif(DASH is None, reason="the job shell is pinned to dash")
async def test_a_secret_split_by_a_cut_stream_is_still_masked(
    nursery: trio.Nursery, opslevel: OpsLevelDouble, kube: KubeApiDouble, tmp_path: Path
) -> None:
    """Every line is the secret, so cuts land inside it; the resumed reads are checked to have
    started mid-secret, and nothing of it reaches the API."""
    command = f"awk 'BEGIN {{ for (i = 0; i < {SECRET_LINES}; i++) print ENVIRON[\"SECRET\"] }}'"
    payload = job_payload(
        "job-secret",
        [command],
        variables=[{"key": "SECRET", "value": SECRET, "sensitive": True, "scope": None}],
    )
    await run_with_cut_streams(nursery, opslevel, kube, tmp_path, payload, cuts=5, after_bytes=16 * 1024)

    [outcome] = opslevel.outcomes["job-secret"]
    assert outcome.outcome == "success"
    _, output = notes_and_output(opslevel, "job-secret")
    assert output == [f"+ {command}".replace("'", "").replace('\\"', '"')] + [MASK] * SECRET_LINES
    resumed_at = [
        int(s.request.command[5]) for s in kube.exec_sessions if s.request.command[3] == "trunner-read"
    ]
    written = (tmp_path / "jobs" / ".trunner" / "job-secret" / "main" / "stdout").read_bytes()
    first = written.index(SECRET.encode())
    inside = [
        o for o in resumed_at[1:] if o > first and (o - first) % (len(SECRET) + 1) not in (0, len(SECRET))
    ]
    assert inside, (first, resumed_at)
    for call in opslevel.calls:
        assert SECRET.encode() not in call.body
