"""A runner pod as the chart renders it, run from the built image against the OpsLevel double (HTTPS with a
private CA given as the chart's caBundle) and the Kubernetes double (TLS, a service account token) on loopback: it registers, becomes ready, runs a job as a job pod,
and on SIGTERM (as in a rollout) lets the running job finish, reports it, unregisters, deletes the job's
objects and exits 0. Real processes on the real clock; every wait is bounded."""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
from collections.abc import Iterator, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import helm_python as helm
import httpx
import pytest
import trio
import trustme
import yaml

from tests.doubles.kube import KubeApiDouble, serve_kube_api
from tests.doubles.kube_exec import Pause, Stdout, durable_stage_script
from tests.doubles.opslevel import OpsLevelDouble, job_payload
from tests.image.pod import PodRun, pod_run
from tests.image.podman import PODMAN, ULIMITS, Podman

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "trunner"
RELEASE = "ci"
NAMESPACE = "runners"
JOB_NAMESPACE = "jobs"
POD_NAME = "ci-trunner-5d8c7b9f4-x2x7q"
SERVICE_ACCOUNT_TOKEN = "service-account-token"
JOB_OUTPUT = b"hello from the job pod\n"
JOB_SECONDS = 4
"""How long the job runs after it started: SIGTERM arrives in the middle of it."""


@pytest.fixture(scope="module")
def chart() -> Iterator[helm.Chart]:
    helm.disable_logging()
    with helm.Chart.load(str(CHART)) as loaded:
        yield loaded


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def render(chart: helm.Chart, values: Mapping[str, Any]) -> list[dict[str, Any]]:
    manifests = chart.render(dict(values), name=RELEASE, namespace=NAMESPACE)
    return [
        doc
        for path, text in manifests.items()
        if not path.endswith("NOTES.txt")
        for doc in yaml.safe_load_all(text)
        if doc
    ]


class Container:
    def __init__(self, name: str, process: trio.Process, log: Path) -> None:
        self.name = name
        self.process = process
        self.log = log

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    async def exec(self, *argv: str) -> subprocess.CompletedProcess[bytes]:
        with trio.fail_after(30):
            return await podman_command("exec", self.name, *argv)

    async def kill(self, signal: str = "KILL") -> subprocess.CompletedProcess[bytes]:
        with trio.fail_after(30):
            return await podman_command("kill", "--signal", signal, self.name)

    async def wait(self, timeout: float) -> int:
        with trio.move_on_after(timeout):
            return await self.process.wait()
        await self.kill()
        await self.process.wait()
        raise AssertionError(f"the container did not exit within {timeout} s:\n{self.output}")


async def podman_command(*args: str) -> subprocess.CompletedProcess[bytes]:
    return await trio.run_process([*PODMAN, *args], capture_stdout=True, capture_stderr=True, check=False)


async def start(podman: Podman, run: PodRun, tmp_path: Path) -> Container:
    name = f"trunner-image-check-{os.getpid()}"
    env_file = tmp_path / "env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in run.environment.items()))
    log = tmp_path / "container.log"
    argv = [
        *PODMAN,
        "run",
        "--rm",
        "--name",
        name,
        "--network",
        "host",
        *ULIMITS,
        "--env-file",
        str(env_file),
        *run.options,
        podman.image,
        *run.args,
    ]
    with log.open("wb") as sink:
        process = await trio.lowlevel.open_process(
            argv, stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT
        )
    return Container(name, process, log)


async def until(condition: Any, container: Container, what: str, timeout: float = 60) -> None:
    with trio.move_on_after(timeout):
        while not condition():
            if container.process.returncode is not None:
                raise AssertionError(f"the container exited before {what}:\n{container.output}")
            await trio.sleep(0.2)
        return
    raise AssertionError(f"not {what} within {timeout} s:\n{container.output}")


async def probe(port: int, path: str) -> int:
    try:
        async with httpx.AsyncClient(timeout=2) as client:
            return (await client.get(f"http://127.0.0.1:{port}{path}")).status_code
    except httpx.HTTPError:
        return 0


def http_probe(container: dict[str, Any], probe_name: str) -> tuple[int, str]:
    get = container[probe_name]["httpGet"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    return ports.get(get["port"], get["port"]), get["path"]


def server_context() -> tuple[ssl.SSLContext, str]:
    """A server context for 127.0.0.1 and the PEM of the new CA that issued it."""
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    return server, ca.cert_pem.bytes().decode()


async def test_the_chart_s_runner_pod_runs_a_job_and_survives_a_rollout(
    podman: Podman, chart: helm.Chart, tmp_path: Path
) -> None:
    server_tls, ca_pem = server_context()
    private_tls, private_ca_pem = server_context()
    metrics_port = free_port()
    async with serve_kube_api(tls=server_tls) as api, trio.open_nursery() as nursery:
        api.tokens = {SERVICE_ACCOUNT_TOKEN}
        # The OpsLevel API behind a private CA, trusted only through the chart's caBundle.
        opslevel: OpsLevelDouble = await nursery.start(partial(OpsLevelDouble().serve, tls=private_tls))
        objects = render(
            chart,
            {
                "opslevel": {"apiUrl": opslevel.url, "apiToken": opslevel.token},
                "runner": {"metricsPort": metrics_port, "logLevel": "DEBUG"},
                "jobPods": {"namespace": JOB_NAMESPACE},
                "caBundle": {"pem": private_ca_pem},
            },
        )
        run = pod_run(
            objects,
            workdir=tmp_path,
            pod_name=POD_NAME,
            service_account={"token": SERVICE_ACCOUNT_TOKEN, "ca.crt": ca_pem, "namespace": NAMESPACE},
            kubernetes_service=("127.0.0.1", api.port),
        )
        container = await start(podman, run, tmp_path)
        try:
            await exercise(container, run, api, opslevel)
        finally:
            if container.process.returncode is None:
                with trio.CancelScope(shield=True):
                    await container.kill()
                    await container.process.wait()
        nursery.cancel_scope.cancel()


async def exercise(container: Container, run: PodRun, api: KubeApiDouble, opslevel: OpsLevelDouble) -> None:
    ready_port, ready_path = http_probe(run.container, "readinessProbe")
    live_port, live_path = http_probe(run.container, "livenessProbe")

    async def status(port: int, path: str) -> int:
        return await probe(port, path)

    await until(lambda: opslevel.calls_to("RunnerRegister"), container, "registered")
    ready = False

    async def poll_ready() -> None:
        nonlocal ready
        while not ready:
            ready = await status(ready_port, ready_path) == 200
            await trio.sleep(0.2)

    with trio.fail_after(60):
        await poll_ready()
    assert await status(live_port, live_path) == 200

    # The process tree: tini is PID 1, trunner its child.
    pid1 = await container.exec("cat", "/proc/1/cmdline")
    assert pid1.returncode == 0, pid1.stderr
    assert pid1.stdout.split(b"\0")[0] == b"/usr/bin/tini", pid1.stdout
    # Writable: the chart's emptyDir mounts, nothing else.
    writable = await container.exec(
        "find", "/", "(", "-path", "/proc", "-o", "-path", "/sys", "-o", "-path", "/dev", ")", "-prune",
        "-o", "-type", "d", "-writable", "-print",
    )  # fmt: skip
    found = sorted(p for p in writable.stdout.decode().split("\n") if p)
    outside = [p for p in found if not any(p == w or p.startswith(w + "/") for w in run.writable_paths)]
    assert outside == [], f"writable outside the chart's emptyDir mounts: {outside}"
    assert sorted(run.writable_paths) == sorted(p for p in found if p in run.writable_paths)

    api.exec_plan = durable_stage_script(Stdout(JOB_OUTPUT), Pause(JOB_SECONDS), stdout_size=len(JOB_OUTPUT))
    opslevel.add_job(job_payload("job-1", ["echo hello"]))
    await until(lambda: api.exec_sessions, container, "the job's commands were exec'd into its pod")
    pods = api.objects("pods", namespace=JOB_NAMESPACE)
    assert [p["spec"]["containers"][0]["image"] for p in pods] == ["public.ecr.aws/opslevel/cli:v2022.02.25"]

    # A rollout: SIGTERM to the pod. The running job has the chart's long grace to finish.
    killed = await container.kill("TERM")
    assert killed.returncode == 0, killed.stderr
    code = await container.wait(timeout=JOB_SECONDS + 60)
    assert code == 0, container.output
    [outcome] = opslevel.outcomes["job-1"]
    assert outcome.outcome == "success", container.output
    lines = opslevel.job_lines("job-1")
    assert any(line.endswith(" " + JOB_OUTPUT.decode().strip()) for line in lines), lines
    assert opslevel.calls_to("RunnerUnregister"), "the runner unregisters on the way out"
    for plural, version in (("pods", "v1"), ("secrets", "v1"), ("poddisruptionbudgets", "policy/v1")):
        assert api.objects(plural, namespace=JOB_NAMESPACE, api_version=version) == [], plural
    log = [json.loads(line) for line in container.output.splitlines() if line.startswith("{")]
    assert log, "the runner logs JSON lines, as the chart asks"
