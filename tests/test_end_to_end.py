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
from tests.opslevel.harness import RunningMode, body_lines, start_mode
from trunner.config import SettingsSource
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
        "sleep 0.5",
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
        "+ sleep 0.5",
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
        # Lines before the job's sleep and after it go in separate batches.
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
    assert len(kube.exec_sessions) == JOBS
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
    [session] = kube.exec_sessions
    assert session.killed
    assert session.process is not None and session.process.returncode is not None
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
    running = await start_api_mode(OPSLEVEL_SHUTDOWN_GRACE="1", **FAST)
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
