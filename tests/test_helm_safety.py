"""The chart's safe defaults and the values that change them: flags the chart owns, the ServiceAccount, host
access and privilege, disruption budgets and autoscalers, extra volumes and environment, the CA bundle,
Faktory mode, probes, the strictness of values.schema.json, the ci/ value files, NOTES.txt and the README's
RBAC table (rendered with the Helm SDK, as in tests/test_helm.py)."""

from __future__ import annotations

import importlib
import json
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

from tests.test_helm import (
    CHART,
    FULL,
    FULLNAME,
    NAMESPACE,
    SCALING,
    TOKEN,
    VALUE_SETS,
    Rendered,
    _merge,
    container_environment,
    render,
    render_error,
)
from trunner import config as trunner_config

ROOT = Path(__file__).resolve().parent.parent
CI_VALUES = {path.name: yaml.safe_load(path.read_text()) for path in sorted((CHART / "ci").glob("*.yaml"))}
FAKTORY = {"mode": "faktory", "faktory": {"url": "tcp+tls://:pw@faktory.example.com:7419"}}
PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


@pytest.fixture(scope="module")
def chart() -> Iterator[helm.Chart]:
    helm.disable_logging()
    with helm.Chart.load(str(CHART)) as loaded:
        yield loaded


def managed_flags() -> dict[str, str]:
    """The chart's list of the flags it sets, each with the value that sets it."""
    text = (CHART / "templates" / "_helpers.tpl").read_text()
    block = re.search(r'define "trunner.managedFlags" -}}\n(.*?)\n\{\{- end', text, re.DOTALL)
    assert block is not None
    pairs = [line.split("=", 1) for line in block[1].splitlines()]
    assert len({flag for flag, _ in pairs}) == len(pairs), "a flag is listed twice"
    return dict(pairs)


def run_parser_options() -> set[str]:
    from trunner.cli.app import build_parser

    parser = build_parser()
    [subparsers] = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    run = subparsers.choices["run"]  # type: ignore[attr-defined]
    return {option for action in run._actions for option in action.option_strings}


# --- flags the chart owns ----------------------------------------------------------------------------


@pytest.mark.parametrize("flag", sorted(managed_flags()))
def test_extra_args_cannot_override_a_flag_the_chart_sets(chart: helm.Chart, flag: str) -> None:
    use = managed_flags()[flag]
    for extra in ([f"{flag}=1"], [flag, "1"]):
        error = render_error(chart, _merge(TOKEN, {"runner": {"extraArgs": extra}}))
        assert f"runner.extraArgs: {flag} would override {flag}" in error and f"use {use} instead" in error


def test_extra_args_cannot_override_a_flag_by_an_abbreviation(chart: helm.Chart) -> None:
    """argparse takes any unambiguous prefix of a long flag for the flag."""
    error = render_error(chart, _merge(TOKEN, {"runner": {"extraArgs": ["--shutdown-g=5"]}}))
    assert "--shutdown-g would override --shutdown-grace" in error and "use runner.shutdownGrace" in error
    error = render_error(chart, _merge(TOKEN, {"runner": {"extraArgs": ["--metrics-p", "9"]}}))
    assert "use runner.metricsPort instead" in error
    rendered = render(chart, _merge(TOKEN, {"runner": {"extraArgs": ["--job-pod-max-lifetime=7200"]}}))
    assert rendered.args()[-1] == "--job-pod-max-lifetime=7200"


def test_the_managed_list_covers_every_flag_the_chart_renders_and_only_real_flags(chart: helm.Chart) -> None:
    managed = managed_flags()
    options = run_parser_options()
    assert set(managed) <= options, sorted(set(managed) - options)
    for values in [*VALUE_SETS.values(), FAKTORY]:
        rendered = render(chart, values)
        flags = {a.split("=", 1)[0] for a in rendered.args() if a.startswith("-")}
        extra = set((values.get("runner") or {}).get("extraArgs") or [])
        assert {f for f in flags if f not in {e.split("=", 1)[0] for e in extra}} <= set(managed)
    # An unmanaged flag that is a prefix of a managed one could not be passed through extraArgs at all.
    for option in options - set(managed):
        assert not any(flag.startswith(option) for flag in managed if option.startswith("--")), option


# --- identity, host access and privilege -----------------------------------------------------------------


def test_service_account_create_false_needs_a_name(chart: helm.Chart) -> None:
    error = render_error(chart, _merge(TOKEN, {"serviceAccount": {"create": False}}))
    assert "serviceAccount.name is required when serviceAccount.create is false" in error
    rendered = render(chart, _merge(TOKEN, {"serviceAccount": {"create": False, "name": "runner"}}))
    assert rendered.pod_spec["serviceAccountName"] == "runner"
    assert rendered.all("ServiceAccount") == []
    for binding in rendered.all("RoleBinding"):
        assert [s["name"] for s in binding["subjects"]] == ["runner"]


def test_the_pod_patch_grant_can_be_left_out(chart: helm.Chart) -> None:
    """Kubernetes cannot limit `pods: patch` to the runner's own pods (their names are only known at run
    time), so the grant that keeps pod-deletion-cost up to date can be dropped."""

    def pod_patch(values: dict[str, Any]) -> list[dict[str, Any]]:
        rules = [r for role in render(chart, values).all("Role") for r in role["rules"]]
        return [r for r in rules if "pods" in r["resources"] and "patch" in r["verbs"]]

    [rule] = pod_patch(SCALING)
    assert "resourceNames" not in rule
    assert pod_patch(_merge(SCALING, {"scaling": {"podDeletionCost": False}})) == []
    assert pod_patch(TOKEN) == []


ALL_SETS = {**VALUE_SETS, "faktory": FAKTORY}


@pytest.mark.parametrize("name", ALL_SETS)
def test_no_host_namespaces_host_paths_or_privilege(chart: helm.Chart, name: str) -> None:
    rendered = render(chart, ALL_SETS[name])
    spec = rendered.pod_spec
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        assert not spec.get(field), field
    assert [v["name"] for v in spec.get("volumes", []) if "hostPath" in v] == []
    for container in [*spec["containers"], *spec.get("initContainers", [])]:
        security = container.get("securityContext") or {}
        assert security.get("privileged", False) is False
        assert not (security.get("capabilities") or {}).get("add")
        assert security.get("allowPrivilegeEscalation") is False
        assert "hostPort" not in json.dumps(container.get("ports", []))


def test_the_schema_refuses_privilege_and_host_paths(chart: helm.Chart) -> None:
    for values in (
        {"securityContext": {"privileged": True}},
        {"securityContext": {"capabilities": {"add": ["NET_ADMIN"]}}},
        {"runner": {"extraVolumes": [{"name": "host", "hostPath": {"path": "/"}}]}},
        {"hostNetwork": True},
    ):
        assert render_error(chart, _merge(TOKEN, values)), values


# --- disruptions --------------------------------------------------------------------------------------


def test_runner_pods_have_a_disruption_budget(chart: helm.Chart) -> None:
    rendered = render(chart, TOKEN)
    budget = rendered.one("PodDisruptionBudget")
    assert budget["spec"]["maxUnavailable"] == 1
    labels = rendered.one("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert budget["spec"]["selector"] == rendered.one("Deployment")["spec"]["selector"]
    off = render(chart, _merge(TOKEN, {"podDisruptionBudget": {"enabled": False}}))
    assert off.all("PodDisruptionBudget") == []


def test_autoscalers_are_kept_from_evicting_runner_pods(chart: helm.Chart) -> None:
    annotations = render(chart, TOKEN).one("Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["cluster-autoscaler.kubernetes.io/safe-to-evict"] == "false"
    assert annotations["karpenter.sh/do-not-disrupt"] == "true"
    off = render(chart, {**TOKEN, "autoscalerEvictionProtection": False})
    off_annotations = off.one("Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert "cluster-autoscaler.kubernetes.io/safe-to-evict" not in off_annotations


# --- volumes, environment, CA bundle -----------------------------------------------------------------


def test_extra_volumes_mounts_and_env_from(chart: helm.Chart) -> None:
    values = CI_VALUES["hardened-values.yaml"]
    rendered = render(chart, values)
    volumes = {v["name"]: v for v in rendered.pod_spec["volumes"]}
    assert volumes["scratch"] == {"name": "scratch", "emptyDir": {"sizeLimit": "1Gi"}}
    mounts = {m["name"]: m for m in rendered.container["volumeMounts"]}
    assert mounts["scratch"] == {"name": "scratch", "mountPath": "/scratch"}
    assert rendered.container["envFrom"] == [{"configMapRef": {"name": "runner-proxy"}}]
    assert "envFrom" not in render(chart, TOKEN).container


def test_ca_bundle_is_mounted_read_only_and_named_by_ssl_cert_file(chart: helm.Chart) -> None:
    rendered = render(chart, {**TOKEN, "caBundle": {"pem": PEM}})
    config_map = rendered.one("ConfigMap", f"{FULLNAME}-ca")
    assert config_map["data"]["ca-bundle.crt"] == PEM
    volume = next(
        v for v in rendered.pod_spec["volumes"] if v.get("configMap", {}).get("name") == f"{FULLNAME}-ca"
    )
    mount = next(m for m in rendered.container["volumeMounts"] if m["name"] == volume["name"])
    assert mount["readOnly"] is True
    assert rendered.env()["SSL_CERT_FILE"]["value"] == mount["mountPath"] + "/ca-bundle.crt"
    existing = render(chart, CI_VALUES["hardened-values.yaml"])
    assert existing.env()["SSL_CERT_FILE"]["value"].endswith("/bundle.pem")
    assert [c["metadata"]["name"] for c in existing.all("ConfigMap")] == [FULLNAME]
    assert "SSL_CERT_FILE" not in render(chart, TOKEN).env()
    both = {**TOKEN, "caBundle": {"pem": PEM, "existingConfigMap": {"name": "x"}}}
    assert "not both" in render_error(chart, both)


def test_trunner_reads_ssl_cert_file_for_every_client() -> None:
    """SSL_CERT_FILE reaches the OpsLevel client (tested in tests/opslevel/test_opslevel_client.py), Faktory
    TLS and the kubeconfig client without a CA (tests/compat/test_system_trust.py): each builds its context
    from the system trust store (trunner.net.tls, truststore), which honours the variable as OpenSSL does."""
    for module in ("trunner.opslevel.client", "trunner.faktory.client", "trunner.kube.tls"):
        source = Path(importlib.import_module(module).__file__ or "").read_text()
        assert "system_trust_context()" in source, module
        assert not re.search(r"import certifi|certifi\.where", source), module


# --- Faktory mode ---------------------------------------------------------------------------------------


def test_faktory_mode_runs_the_faktory_worker_from_a_secret(chart: helm.Chart) -> None:
    from trunner.cli.app import build_parser
    from trunner.cli.commands.run import MODES
    from trunner.executors import registry
    from trunner.executors.settings import JobRunSettings
    from trunner.faktory.client import locate_server
    from trunner.faktory.settings import FaktorySettings
    from trunner.logs.settings import LogSettings
    from trunner.runner import RunSettings

    rendered = render(chart, CI_VALUES["faktory-values.yaml"])
    assert rendered.flag("--mode") == "faktory"
    assert [a for a in rendered.args() if a.startswith("--queues")] == [
        "--queues=runner-high",
        "--queues=runner",
    ]
    env = rendered.env()
    assert env["FAKTORY_URL"]["valueFrom"]["secretKeyRef"] == {"name": "faktory", "key": "url"}
    assert "OPSLEVEL_API_TOKEN" not in env and rendered.all("Secret") == []
    args = build_parser().parse_args(rendered.args())
    environ = container_environment(rendered)
    environ["FAKTORY_URL"] = "tcp+tls://:pw@faktory.example.com:7419"
    file = yaml.safe_load(rendered.one("ConfigMap")["data"]["trunner.yaml"])
    source = trunner_config.SettingsSource(args=args, environ=environ, file=file, source_name="trunner.yaml")
    mode = MODES[args.mode]
    source.check(RunSettings, LogSettings, JobRunSettings, *registry.settings_classes(), *mode.SETTINGS)
    assert source.get(FaktorySettings).queues == ("runner-high", "runner")
    location = locate_server(environ)
    assert location.tls and location.host == "faktory.example.com"

    created = render(chart, FAKTORY)
    [secret] = created.all("Secret")
    assert env_secret(created, "FAKTORY_URL") == (secret["metadata"]["name"], "url")
    assert "scaling.enabled works in mode api only" in render_error(
        chart, {**FAKTORY, **SCALING, "mode": "faktory"}
    )
    assert "needs the Faktory URL" in render_error(chart, {"mode": "faktory"})


def env_secret(rendered: Rendered, name: str) -> tuple[str, str]:
    ref = rendered.env()[name]["valueFrom"]["secretKeyRef"]
    return ref["name"], ref["key"]


# --- probes ---------------------------------------------------------------------------------------------


def test_probes_are_configurable_and_a_startup_probe_guards_liveness(chart: helm.Chart) -> None:
    rendered = render(chart, TOKEN)
    startup = rendered.container["startupProbe"]
    assert startup["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 60, "a minute to start"
    tuned = render(chart, CI_VALUES["hardened-values.yaml"])
    assert tuned.container["startupProbe"]["failureThreshold"] == 24
    assert tuned.container["readinessProbe"]["periodSeconds"] == 5
    assert render_error(chart, {**TOKEN, "livenessProbe": {"httpGet": {"path": "/x"}}})


# --- values.schema.json --------------------------------------------------------------------------------

OPEN_OBJECTS = {
    "jobPods.config",
    "jobPods.networkPolicy.ingress[]",
    "jobPods.networkPolicy.egress[]",
    "global",
    "runner.extraEnv[].valueFrom",
    "runner.extraVolumes[]",
    "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[]",
    "affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution[].preference",
    "affinity.podAffinity.requiredDuringSchedulingIgnoredDuringExecution[]",
    "affinity.podAffinity.preferredDuringSchedulingIgnoredDuringExecution[].podAffinityTerm",
    "affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution[]",
    "affinity.podAntiAffinity.preferredDuringSchedulingIgnoredDuringExecution[].podAffinityTerm",
    "topologySpreadConstraints[]",
}
"""Kubernetes objects passed through whole (the API server validates them; the tests render them)."""


def schema_objects(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    if schema.get("type") == "object" or "properties" in schema:
        yield path, schema
        for key, sub in (schema.get("properties") or {}).items():
            if isinstance(sub, dict):
                yield from schema_objects(sub, f"{path}.{key}" if path else key)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            yield from schema_objects(extra, f"{path}.*")
    if isinstance(schema.get("items"), dict):
        yield from schema_objects(schema["items"], f"{path}[]")


def test_every_nested_object_of_the_schema_is_closed() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    open_ones = []
    for path, sub in schema_objects(schema):
        closed = sub.get("additionalProperties") is False or isinstance(sub.get("additionalProperties"), dict)
        if not closed and path not in OPEN_OBJECTS:
            open_ones.append(path)
    assert open_ones == [], "objects of values.schema.json that accept any key"
    for name in ("resources", "securityContext", "podSecurityContext", "affinity", "updateStrategy"):
        assert schema["properties"][name].get("additionalProperties") is False, name


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"resources": {"limit": {"memory": "1Gi"}}}, "additional properties 'limit' not allowed"),
        ({"resources": {"limits": {"memory": "lots"}}}, "does not match pattern"),
        ({"securityContext": {"readOnlyRootFilesytem": True}}, "additional properties"),
        ({"podSecurityContext": {"runAsUsr": 1}}, "additional properties"),
        ({"affinity": {"podAntiAfinity": {}}}, "additional properties"),
        ({"updateStrategy": {"type": "RollingUpdate", "rollingupdate": {}}}, "additional properties"),
        ({"runner": {"extraEnv": [{"value": "x"}]}}, "missing property 'name'"),
        ({"serviceMonitor": {"interval": "30 seconds"}}, "does not match pattern"),
        ({"serviceMonitor": {"scrapeTimeout": "10"}}, "does not match pattern"),
        ({"startupProbe": {"periodSecond": 5}}, "additional properties"),
        ({"podDisruptionBudget": {"minAvailable": 1}}, "additional properties"),
        ({"caBundle": {"pem": "not a certificate"}}, "does not match pattern"),
        ({"mode": "gitlab"}, "value must be one of"),
    ],
)
def test_the_schema_refuses_misspelt_nested_values(
    chart: helm.Chart, values: dict[str, Any], message: str
) -> None:
    assert message in render_error(chart, _merge(TOKEN, values))


# --- ci/ value files, metadata, NOTES, README ----------------------------------------------------------


def test_ci_value_files_are_among_the_tested_value_sets() -> None:
    assert set(CI_VALUES) == {
        "default-values.yaml",
        "faktory-values.yaml",
        "hardened-values.yaml",
        "restricted-values.yaml",
    }
    for name, values in CI_VALUES.items():
        assert VALUE_SETS[f"ci/{name}"] == values


def test_chart_metadata_names_the_project() -> None:
    metadata = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert metadata["appVersion"] == project["version"]
    assert metadata["home"] == project["urls"]["Homepage"]
    assert project["urls"]["Source"] in metadata["sources"]
    assert [m["name"] for m in metadata["maintainers"]] == [m["name"] for m in project["maintainers"]]


@pytest.mark.parametrize("name", ALL_SETS)
def test_every_object_carries_the_chart_labels(chart: helm.Chart, name: str) -> None:
    for obj in render(chart, ALL_SETS[name]).objects:
        labels = obj["metadata"]["labels"]
        assert labels["helm.sh/chart"] == "trunner-0.1.0"
        assert labels["app.kubernetes.io/name"] == "trunner"
        assert labels["app.kubernetes.io/part-of"] == "trunner"
        assert labels["app.kubernetes.io/component"] == "runner"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"


def test_notes_name_the_real_port_and_deployment(chart: helm.Chart) -> None:
    rendered = render(chart, _merge(TOKEN, {"runner": {"metricsPort": 9100}}))
    notes = rendered.manifests["trunner/templates/NOTES.txt"]
    port = rendered.container["ports"][0]["containerPort"]
    assert port == 9100
    forwarded = re.findall(r"port-forward deployment/(\S+) (\d+)", notes)
    assert forwarded == [(rendered.one("Deployment")["metadata"]["name"], str(port))]
    urls = re.findall(r"http://127\.0\.0\.1:(\d+)(/\w+)", notes)
    assert urls and all(p == str(port) for p, _ in urls)
    probes = {rendered.container[p]["httpGet"]["path"] for p in ("livenessProbe", "readinessProbe")}
    assert {path for _, path in urls} >= {"/metrics"} | (probes - {"/healthz"})
    assert f"termination grace period is {rendered.pod_spec['terminationGracePeriodSeconds']} s" in notes


def readme_rbac_rows() -> set[tuple[str, str, str]]:
    """(API group, resource, verb) of the README's RBAC table."""
    rows: set[tuple[str, str, str]] = set()
    for line in (CHART / "README.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or cells[0] in ("API group", "---") or not re.fullmatch(r"[\w.]+", cells[0]):
            continue
        group = "" if cells[0] == "core" else cells[0]
        verbs = re.sub(r"\([^)]*\)", "", cells[2]).replace(";", ",")
        for verb in (v.strip() for v in verbs.split(",")):
            rows.add((group, cells[1], verb))
    return rows


def test_readme_rbac_table_is_the_chart_s_roles(chart: helm.Chart) -> None:
    rendered = render(chart, SCALING)
    rules = {
        (group, resource, verb)
        for role in rendered.all("Role")
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert readme_rbac_rows() == rules


def test_full_values_still_render_every_setting(chart: helm.Chart) -> None:
    rendered = render(chart, FULL)
    assert rendered.flag("--job-pod-namespace") == "jobs"
    assert NAMESPACE in {o["metadata"]["namespace"] for o in rendered.objects}


# --- job pod security ----------------------------------------------------------------------------------


def rendered_job_pod(rendered: Rendered, job: Any = None) -> dict[str, Any]:
    """The job pod trunner builds from the rendered config file (as `trunner run` in the runner pod would)."""
    from tests.executors.kubernetes.test_podspec import JOB, identity_for
    from tests.executors.kubernetes.test_settings import source
    from trunner.executors.kubernetes.podspec import build_job_objects
    from trunner.executors.registry import job_pod_config
    from trunner.kube.objects import to_wire

    text = rendered.one("ConfigMap", FULLNAME)["data"]["trunner.yaml"]
    config = job_pod_config(source(file=text))
    job = job or JOB
    return to_wire(build_job_objects(job, identity_for(job), config).pod)


def test_the_restricted_profile_makes_job_pods_pass_the_restricted_level(chart: helm.Chart) -> None:
    from tests.executors.kubernetes.pod_security import restricted_violations
    from trunner.models import RunnerJob

    rendered = render(chart, CI_VALUES["restricted-values.yaml"])
    for job in (None, RunnerJob(id="7", image="busybox")):
        pod = rendered_job_pod(rendered, job)
        assert restricted_violations(pod) == []
        assert {c["name"] for c in [*pod["spec"].get("initContainers", []), *pod["spec"]["containers"]]} >= {
            "helper",
            "job",
        }
    assert restricted_violations(rendered_job_pod(render(chart, TOKEN)))


def test_job_pod_config_keys_win_over_the_restricted_profile(chart: helm.Chart) -> None:
    values = _merge(
        CI_VALUES["restricted-values.yaml"],
        {"jobPods": {"config": {"securityContext": {"runAsUser": 1000}, "workingDir": "/work"}}},
    )
    file = yaml.safe_load(render(chart, values).one("ConfigMap", FULLNAME)["data"]["trunner.yaml"])
    assert file["kubernetes"]["securityContext"]["runAsUser"] == 1000
    assert file["kubernetes"]["securityContext"]["runAsNonRoot"] is True
    assert file["kubernetes"]["containerSecurityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert file["kubernetes"]["workingDir"] == "/work"


@pytest.mark.parametrize(
    "agent",
    [{"jobPods": {"config": {"agentMode": True}}}, {"runner": {"extraArgs": ["--job-agent-mode"]}}],
    ids=["config", "flag"],
)
def test_the_restricted_profile_refuses_agent_mode(chart: helm.Chart, agent: dict[str, Any]) -> None:
    values = _merge(CI_VALUES["restricted-values.yaml"], agent)
    assert "cannot be combined with agent mode" in render_error(chart, values)


@pytest.mark.parametrize("key", ["serviceAccountName", "serviceaccountname"])
def test_job_pods_may_not_run_as_the_runner_s_service_account(chart: helm.Chart, key: str) -> None:
    own = _merge(TOKEN, {"jobPods": {"config": {key: FULLNAME}}})
    assert f'jobPods.config.{key} is "{FULLNAME}", the runner\'s own ServiceAccount' in render_error(
        chart, own
    )
    named = _merge(
        TOKEN, {"serviceAccount": {"name": "runner-sa"}, "jobPods": {"config": {key: "runner-sa"}}}
    )
    assert "the runner's own ServiceAccount" in render_error(chart, named)
    # Another account, or the same name in the job namespace (another account there), is fine.
    render(chart, _merge(TOKEN, {"jobPods": {"config": {key: "job-runner"}}}))
    render(chart, _merge(TOKEN, {"jobPods": {"namespace": "jobs", "config": {key: FULLNAME}}}))


def test_no_network_policy_unless_asked(chart: helm.Chart) -> None:
    assert render(chart, TOKEN).all("NetworkPolicy") == []


def test_the_job_network_policy_selects_the_job_pods_only(chart: helm.Chart) -> None:
    from tests.test_helm import selector_matches

    rendered = render(chart, CI_VALUES["hardened-values.yaml"])
    policy = rendered.one("NetworkPolicy")
    assert policy["metadata"]["namespace"] == "opslevel-jobs"
    spec = policy["spec"]
    assert spec["policyTypes"] == ["Ingress", "Egress"] and spec["ingress"] == []
    job_pod = rendered_job_pod(rendered)
    assert selector_matches(spec["podSelector"], job_pod["metadata"]["labels"])
    runner_labels = rendered.one("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert not selector_matches(spec["podSelector"], runner_labels)
    dns, internet = spec["egress"]
    assert {(p["protocol"], p["port"]) for p in dns["ports"]} == {("UDP", 53), ("TCP", 53)}
    blocked = {cidr for block in internet["to"] for cidr in block["ipBlock"]["except"]}
    assert {"10.0.0.0/8", "169.254.0.0/16", "fc00::/7"} <= blocked

    custom = _merge(
        TOKEN,
        {"jobPods": {"networkPolicy": {"enabled": True, "egress": [], "ingress": [{"from": []}]}}},
    )
    custom_spec = render(chart, custom).one("NetworkPolicy")["spec"]
    assert custom_spec["egress"] == [] and custom_spec["ingress"] == [{"from": []}]
    assert render(chart, custom).one("NetworkPolicy")["metadata"]["namespace"] == NAMESPACE
