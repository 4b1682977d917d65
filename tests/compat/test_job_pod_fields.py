"""Job pod fields teams ask for that the Go runner lacks, set in the ``kubernetes:`` section:
``imagePullSecrets``, ``priorityClassName``, ``labels``, ``runtimeClassName``,
``topologySpreadConstraints``, ``hostAliases``, ``dnsConfig``. Checked as the API server checks
them (strict schema of Kubernetes 1.33 for the pod), refused at startup when wrong, and on the pod
a real ``trunner test`` creates in the Kubernetes double."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import trio
import yaml

from tests.cli.support import ROOT, clean_env, trunner, write_job
from tests.doubles.kube import serve_kube_api
from trunner.config import ConfigError, SettingsSource
from trunner.executors.base import JobNaming
from trunner.executors.kubernetes.names import job_identity
from trunner.executors.kubernetes.podspec import build_pod
from trunner.executors.registry import job_pod_config
from trunner.kube.objects import to_wire
from trunner.models import RunnerJob

SECTION = """\
kubernetes:
  namespace: jobs
  imagePullSecrets: [{name: registry-creds}, {name: mirror.creds}]
  priorityClassName: batch-low
  labels: {team: platform, cost-center: "42"}
  runtimeClassName: gvisor
  topologySpreadConstraints:
    - maxSkew: 1
      topologyKey: topology.kubernetes.io/zone
      whenUnsatisfiable: ScheduleAnyway
      labelSelector: {matchLabels: {app.kubernetes.io/managed-by: trunner}}
      matchLabelKeys: [pod-template-hash]
  hostAliases:
    - {ip: 10.1.2.3, hostnames: [git.internal, artifacts.internal]}
  dnsConfig:
    nameservers: [10.0.0.10]
    searches: [corp.example.com]
    options: [{name: ndots, value: "2"}, {name: edns0}]
"""


def config_from(text: str) -> Any:
    return job_pod_config(SettingsSource(environ={}, file=yaml.safe_load(text), source_name="opslevel.yaml"))


def pod_for(text: str) -> dict[str, Any]:
    config = config_from(text)
    job = RunnerJob(id="1", image="alpine")
    identity = job_identity(job, runner_id="r", owner=config.owner, naming=JobNaming.NUMBER, unix_time=1)
    return to_wire(build_pod(job, identity, config))


def test_every_field_reaches_the_pod_and_passes_the_strict_schema() -> None:
    pod = pod_for(SECTION)
    kubernetes_validate.validate(pod, "1.33.0", strict=True)
    spec = pod["spec"]
    assert spec["imagePullSecrets"] == [{"name": "registry-creds"}, {"name": "mirror.creds"}]
    assert spec["priorityClassName"] == "batch-low" and spec["runtimeClassName"] == "gvisor"
    assert spec["topologySpreadConstraints"] == [
        {
            "maxSkew": 1,
            "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": {"app.kubernetes.io/managed-by": "trunner"}},
            "matchLabelKeys": ["pod-template-hash"],
        }
    ]
    assert spec["hostAliases"] == [{"ip": "10.1.2.3", "hostnames": ["git.internal", "artifacts.internal"]}]
    assert spec["dnsConfig"] == {
        "nameservers": ["10.0.0.10"],
        "searches": ["corp.example.com"],
        "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}],
    }
    labels = pod["metadata"]["labels"]
    assert labels["team"] == "platform" and labels["cost-center"] == "42"
    assert "app.kubernetes.io/instance" in labels and "runner.opslevel.com/owner" in labels


def test_keys_match_case_insensitively_as_the_rest_of_the_section() -> None:
    pod = pod_for("kubernetes:\n  IMAGEPULLSECRETS: [{NAME: creds}]\n  RuntimeClassName: kata\n")
    assert (
        pod["spec"]["imagePullSecrets"] == [{"name": "creds"}] and pod["spec"]["runtimeClassName"] == "kata"
    )


def test_without_the_fields_the_pod_is_as_before() -> None:
    spec = pod_for("kubernetes: {namespace: jobs}\n")["spec"]
    for key in ("imagePullSecrets", "priorityClassName", "runtimeClassName", "topologySpreadConstraints"):
        assert key not in spec
    assert "hostAliases" not in spec and "dnsConfig" not in spec


BAD = [
    ("imagePullSecrets: [{name: Bad_Name}]", "kubernetes.imagePullSecrets[0].name: 'Bad_Name'"),
    ("imagePullSecrets: [{name: a}, {name: a}]", "listed twice"),
    ("priorityClassName: High Priority", "kubernetes.priorityClassName: 'High Priority'"),
    ("runtimeClassName: -gvisor", "kubernetes.runtimeClassName"),
    ("labels: {'bad key!': x}", "kubernetes.labels: 'bad key!'"),
    ("labels: {team: 'not a value'}", "kubernetes.labels: team='not a value'"),
    ("labels: {app.kubernetes.io/instance: mine}", "set by trunner"),
    (
        "topologySpreadConstraints: [{maxSkew: 0, topologyKey: zone, whenUnsatisfiable: Maybe}]",
        "topologySpreadConstraints[0].maxSkew: must be 1 or more",
    ),
    (
        "topologySpreadConstraints: [{maxSkew: 1, topologyKey: zone, whenUnsatisfiable: Maybe}]",
        "whenUnsatisfiable: must be one of DoNotSchedule, ScheduleAnyway",
    ),
    (
        "topologySpreadConstraints: [{maxSkew: 1, topologyKey: zone, whenUnsatisfiable: ScheduleAnyway, minDomains: 2}]",
        "minDomains: only with whenUnsatisfiable: DoNotSchedule",
    ),
    ("hostAliases: [{ip: not-an-ip, hostnames: [a]}]", "hostAliases[0].ip: 'not-an-ip' is not an IP address"),
    ("hostAliases: [{ip: 10.0.0.1}]", "hostAliases[0].hostnames: at least one"),
    ("dnsConfig: {nameservers: [1.1.1.1, 2.2.2.2, 3.3.3.3, 4.4.4.4]}", "nameservers: at most 3"),
    ("dnsConfig: {options: [{value: x}]}", "dnsConfig.options[0].name: required"),
    ("dnsPolicy: None", "dnsPolicy None needs a dnsConfig"),
    ("topologySpreadConstraints: [{maxSkew: one}]", "topologySpreadConstraints"),
]


@pytest.mark.parametrize(("line", "expected"), BAD, ids=[b[0][:40] for b in BAD])
def test_a_value_the_api_server_would_refuse_is_refused_at_startup(line: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config_from(f"kubernetes:\n  {line}\n")
    assert any(expected in problem for problem in caught.value.problems), caught.value.problems


def test_validate_lists_every_problem_of_the_fields_at_once(tmp_path: Path) -> None:
    config = tmp_path / "opslevel.yaml"
    config.write_text(
        "kubernetes:\n  priorityClassName: X\n  runtimeClassName: Y\n  hostAliases: [{ip: nope, hostnames: [a]}]\n"
    )
    result = trunner("validate", "-c", str(config))
    assert result.returncode == 1
    assert "kubernetes.priorityClassName" in result.stderr and "kubernetes.runtimeClassName" in result.stderr
    assert "kubernetes.hostAliases[0].ip" in result.stderr


async def test_trunner_test_creates_the_pod_with_the_fields(tmp_path: Path) -> None:
    config = tmp_path / "opslevel.yaml"
    config.write_text(SECTION.replace("namespace: jobs", "namespace: default"))
    job = write_job(tmp_path / "job.yaml", 'id: "3"\nimage: alpine:3.20\ncommands:\n  - echo in the pod\n')
    async with serve_kube_api() as api:
        env = clean_env(
            KUBECONFIG=str(api.write_kubeconfig(tmp_path / "kubeconfig")), OPSLEVEL_JOB_POD_OWNER="f"
        )
        argv = [
            sys.executable,
            "-m",
            "trunner",
            "test",
            "-f",
            job,
            "-c",
            str(config),
            "--executor",
            "kubernetes",
        ]
        argv += ["--job-pod-workdir", str(tmp_path / "jobs")]
        with trio.fail_after(60):
            done = await trio.run_process(
                argv, cwd=ROOT, env=env, capture_stdout=True, capture_stderr=True, check=False
            )
        result = subprocess.CompletedProcess(
            argv, done.returncode, done.stdout.decode(), done.stderr.decode()
        )
        [created] = [r.json() for r in api.requests if r.method == "POST" and r.path.endswith("/pods")]
    assert result.returncode == 0, result.stderr
    assert "in the pod" in result.stdout
    spec = created["spec"]
    assert spec["imagePullSecrets"] == [{"name": "registry-creds"}, {"name": "mirror.creds"}]
    assert spec["runtimeClassName"] == "gvisor" and spec["priorityClassName"] == "batch-low"
    assert spec["hostAliases"][0]["ip"] == "10.1.2.3" and spec["dnsConfig"]["nameservers"] == ["10.0.0.10"]
    assert len(spec["topologySpreadConstraints"]) == 1
    assert created["metadata"]["labels"]["team"] == "platform"
