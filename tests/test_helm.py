"""The Helm chart in helm/trunner: rendered offline with the Helm Go SDK (helm-python-sdk), linted, every object
validated against the Kubernetes 1.33 schemas (kubernetes-validate, strict), and checked against trunner itself:
its flags and environment variables, its config file section, and the Kubernetes API calls it makes."""

from __future__ import annotations

import base64
import importlib
import json
import math
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs
import helm_python as helm
import kubernetes_validate
import pytest
import trio
import yaml

import tests.doubles.kube as kube_double
import trunner
from tests.doubles import kube_store
from tests.doubles.kube import serve_kube_api
from tests.doubles.kube_exec import Exit, Stdout
from tests.doubles.opslevel import OpsLevelDouble
from tests.executors.kubernetes.test_executor import CONFIG, JOB, NAME, NOW, plant_leftovers
from tests.kube.transport_support import NS, RecordingFeed, client_for
from tests.opslevel.scaling_support import DEPLOYMENT, add_runner_objects, scaling_runner
from trunner import config as trunner_config
from trunner.executors.kubernetes import KubernetesExecutor
from trunner.opslevel.scaling import ScalingSettings

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "trunner"
KUBE_VERSION = "1.33.0"
RELEASE = "demo"
NAMESPACE = "runners"
FULLNAME = f"{RELEASE}-trunner"

TOKEN = {"opslevel": {"apiToken": "s3cr3t-token"}}
EXISTING = {"opslevel": {"existingSecret": {"name": "opslevel-token", "key": "token"}}}
SCALING = {
    **TOKEN,
    "scaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 7, "jobConcurrencyFactor": 50},
}
FULL = {
    **EXISTING,
    "fullnameOverride": "runner",
    "image": {"repository": "registry.example.com/trunner", "digest": "sha256:" + "ab" * 32},
    "imagePullSecrets": [{"name": "pull"}],
    "opslevel": {**EXISTING["opslevel"], "apiUrl": "https://opslevel.example.com", "queue": "builds"},
    "runner": {
        "jobConcurrency": 8,
        "shutdownGrace": 600,
        "logFlushTimeout": 12.5,
        "jobOutcomeTimeout": 20,
        "logLevel": "DEBUG",
        "logFormat": "TEXT",
        "extraArgs": ["--poll-interval=5"],
        "extraEnv": [{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}],
    },
    "scaling": {"enabled": True, "maxReplicas": 4},
    "jobPods": {
        "namespace": "jobs",
        "config": {
            "serviceAccountName": "job-runner",
            "annotations": {"example.com/team": "platform"},
            "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}},
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "workingDir": "/work",
        },
    },
    "serviceAccount": {"name": "runner-sa", "annotations": {"iam.example.com/role": "runner"}},
    "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
    "service": {"annotations": {"example.com/scrape": "true"}},
    "podAnnotations": {"example.com/owner": "platform"},
    "podLabels": {"team": "platform"},
    "nodeSelector": {"kubernetes.io/arch": "amd64"},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "runners", "effect": "NoSchedule"}],
    "affinity": {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 100,
                    "podAffinityTerm": {
                        "topologyKey": "kubernetes.io/hostname",
                        "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "trunner"}},
                    },
                }
            ]
        }
    },
    "topologySpreadConstraints": [
        {
            "maxSkew": 1,
            "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "trunner"}},
        }
    ],
    "priorityClassName": "runners",
    "tmpSizeLimit": None,
}
NO_RBAC = {
    **TOKEN,
    "rbac": {"create": False},
    "serviceAccount": {"create": False, "name": "existing-sa"},
    "service": {"enabled": False},
}

VALUE_SETS = {
    "token": TOKEN,
    "existing-secret": EXISTING,
    "scaling": SCALING,
    "full": FULL,
    "no-rbac": NO_RBAC,
    **{f"ci/{path.name}": yaml.safe_load(path.read_text()) for path in sorted((CHART / "ci").glob("*.yaml"))},
}


def _merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        merged[key] = _merge(merged[key], value) if isinstance(value, Mapping) and key in merged else value
    return merged


@attrs.frozen
class Rendered:
    manifests: dict[str, str]
    objects: list[dict[str, Any]]

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str, name: str | None = None) -> dict[str, Any]:
        found = [o for o in self.all(kind) if name is None or o["metadata"]["name"] == name]
        assert len(found) == 1, (
            f"expected one {kind} {name or ''}, found {[o['metadata']['name'] for o in found]}"
        )
        return found[0]

    @property
    def container(self) -> dict[str, Any]:
        containers = self.one("Deployment")["spec"]["template"]["spec"]["containers"]
        assert len(containers) == 1
        return containers[0]

    @property
    def pod_spec(self) -> dict[str, Any]:
        return self.one("Deployment")["spec"]["template"]["spec"]  # type: ignore[no-any-return]

    def env(self) -> dict[str, dict[str, Any]]:
        return {e["name"]: e for e in self.container["env"]}

    def args(self) -> list[str]:
        return list(self.container["args"])

    def flag(self, name: str) -> str | None:
        values = [a.partition("=")[2] for a in self.args() if a.partition("=")[0] == name]
        assert len(values) <= 1, f"{name} given twice"
        return values[0] if values else None


@pytest.fixture(scope="module")
def chart() -> Iterator[helm.Chart]:
    helm.disable_logging()
    with helm.Chart.load(str(CHART)) as loaded:
        yield loaded


def selector_matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """A LabelSelector (matchLabels, matchExpressions In/NotIn/Exists/DoesNotExist) against labels."""
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
        ok = {
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
            "In": labels.get(key) in values,
            "NotIn": labels.get(key) not in values,
        }[operator]
        if not ok:
            return False
    return True


def render(chart: helm.Chart, values: Mapping[str, Any], namespace: str = NAMESPACE) -> Rendered:
    manifests = chart.render(dict(values), name=RELEASE, namespace=namespace)
    objects = []
    for path, text in manifests.items():
        if path.endswith("NOTES.txt"):
            continue
        objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return Rendered(manifests, objects)


def render_error(chart: helm.Chart, values: Mapping[str, Any]) -> str:
    with pytest.raises((helm.HelmRenderError, helm.HelmValuesError)) as caught:
        chart.render(dict(values), name=RELEASE, namespace=NAMESPACE)
    return str(caught.value)


# --- lint and schemas ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", VALUE_SETS)
def test_lint_is_clean(name: str) -> None:
    helm.disable_logging()
    result = helm.lint(
        str(CHART), dict(VALUE_SETS[name]), strict=True, namespace=NAMESPACE, kube_version=KUBE_VERSION
    )
    assert result["errors"] == []
    # Severity 1 is INFO ("icon is recommended"); warnings (2) and errors (3) must not appear.
    assert [m for m in result["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("name", VALUE_SETS)
def test_every_object_is_valid_for_kubernetes(chart: helm.Chart, name: str) -> None:
    rendered = render(chart, VALUE_SETS[name])
    problems = []
    for obj in rendered.objects:
        if obj["apiVersion"] == "monitoring.coreos.com/v1":
            continue
        try:
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            problems.append(f"{obj['kind']} {obj['metadata']['name']}: {exc.message}")
    assert problems == []
    for obj in rendered.objects:
        assert obj["metadata"]["name"] and len(obj["metadata"]["name"]) <= 63
        assert obj["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE


def test_service_monitor_selects_the_metrics_service(chart: helm.Chart) -> None:
    rendered = render(chart, FULL)
    monitor = rendered.one("ServiceMonitor")
    service = rendered.one("Service")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [NAMESPACE]
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    assert not render(chart, TOKEN).all("ServiceMonitor")
    error = render_error(
        chart, _merge(TOKEN, {"serviceMonitor": {"enabled": True}, "service": {"enabled": False}})
    )
    assert "needs service.enabled" in error


def test_values_schema_rejects_misspelt_and_mistyped_values(chart: helm.Chart) -> None:
    assert "additional properties 'replica' not allowed" in render_error(chart, {**TOKEN, "replica": 3})
    assert "want number" in render_error(chart, _merge(TOKEN, {"runner": {"shutdownGrace": "20s"}}))
    assert "minimum" in render_error(chart, _merge(TOKEN, {"runner": {"jobConcurrency": 0}}))


# --- security ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", VALUE_SETS)
def test_runner_runs_non_root_read_only_without_capabilities(chart: helm.Chart, name: str) -> None:
    rendered = render(chart, VALUE_SETS[name])
    pod = rendered.pod_spec["securityContext"]
    assert pod["runAsNonRoot"] is True and pod["runAsUser"] > 0
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    container = rendered.container["securityContext"]
    assert container["runAsNonRoot"] is True
    assert container["readOnlyRootFilesystem"] is True
    assert container["allowPrivilegeEscalation"] is False
    assert container["capabilities"] == {"drop": ["ALL"]}
    assert container["seccompProfile"] == {"type": "RuntimeDefault"}
    mounts = {m["mountPath"]: m for m in rendered.container["volumeMounts"]}
    volumes = {v["name"]: v for v in rendered.pod_spec["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]], "trunner needs a writable /tmp"
    assert mounts["/etc/trunner"]["readOnly"] is True


def test_runner_uid_matches_the_image_user(chart: helm.Chart) -> None:
    user = re.search(r"^USER (\d+):(\d+)$", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert user is not None
    pod = render(chart, TOKEN).pod_spec["securityContext"]
    assert (pod["runAsUser"], pod["runAsGroup"]) == (int(user[1]), int(user[2]))


def test_api_token_never_appears_in_the_pod_spec(chart: helm.Chart) -> None:
    rendered = render(chart, TOKEN)
    assert "s3cr3t-token" not in json.dumps(rendered.one("Deployment"))
    assert "s3cr3t-token" not in json.dumps(rendered.one("ConfigMap"))


# --- the API token: a Secret the chart creates, or an existing one -----------------------------------------


def test_token_value_creates_a_secret_the_container_reads(chart: helm.Chart) -> None:
    rendered = render(chart, TOKEN)
    secret = rendered.one("Secret")
    assert secret["type"] == "Opaque"
    assert base64.b64decode(secret["data"]["api-token"]).decode() == "s3cr3t-token"
    ref = rendered.env()["OPSLEVEL_API_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": secret["metadata"]["name"], "key": "api-token"}
    annotations = rendered.one("Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert re.fullmatch(r"[0-9a-f]{64}", annotations["checksum/secret"]), "pods roll when the token changes"
    other = render(chart, _merge(TOKEN, {"opslevel": {"apiToken": "rotated"}}))
    other_annotations = other.one("Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert other_annotations["checksum/secret"] != annotations["checksum/secret"]


def test_existing_secret_is_referenced_and_none_is_created(chart: helm.Chart) -> None:
    rendered = render(chart, EXISTING)
    assert rendered.all("Secret") == []
    ref = rendered.env()["OPSLEVEL_API_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "opslevel-token", "key": "token"}
    assert "checksum/secret" not in rendered.one("Deployment")["spec"]["template"]["metadata"]["annotations"]


def test_token_must_come_from_exactly_one_place(chart: helm.Chart) -> None:
    assert "the OpsLevel API token is missing" in render_error(chart, {})
    both = _merge(TOKEN, EXISTING)
    assert "not both" in render_error(chart, both)


# --- shutdown: terminationGracePeriodSeconds ------------------------------------------------------------


def grace(rendered: Rendered) -> int:
    value = rendered.pod_spec["terminationGracePeriodSeconds"]
    assert isinstance(value, int)
    return value


def code_shutdown_deadlines() -> float:
    """trunner's own deadlines after running jobs are canceled, from the code: a canceled job's exec stream
    closes, its objects are deleted, then the runner unregisters and releases its Lease."""
    from trunner.executors.kubernetes.exec import ExecTiming
    from trunner.executors.kubernetes.executor import CLEANUP_TIMEOUT
    from trunner.kube.leader import RELEASE_TIMEOUT
    from trunner.opslevel.mode import UNREGISTER_TIMEOUT

    return ExecTiming().close_timeout + CLEANUP_TIMEOUT + UNREGISTER_TIMEOUT + RELEASE_TIMEOUT


def required_grace(runner: Mapping[str, Any], slack: int) -> int:
    return (
        math.ceil(runner["shutdownGrace"])
        + math.ceil(runner["logFlushTimeout"])
        + math.ceil(runner["jobOutcomeTimeout"])
        + math.ceil(code_shutdown_deadlines())
        + slack
    )


def test_grace_period_covers_the_shutdown_grace_and_every_deadline_after_it(chart: helm.Chart) -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    runner, slack = values["runner"], values["terminationGraceSlackSeconds"]
    assert code_shutdown_deadlines() == 50
    assert slack == 10
    rendered = render(chart, TOKEN)
    assert grace(rendered) == required_grace(runner, slack) == 3600 + 60 + 30 + 50 + 10
    assert rendered.flag("--shutdown-grace") == "3600"
    assert rendered.flag("--log-flush-timeout") == "60"
    assert rendered.flag("--job-outcome-timeout") == "30"


def test_rollouts_let_running_jobs_finish_by_default(chart: helm.Chart) -> None:
    """A `helm upgrade` replaces every runner pod: each gets SIGTERM and lets its running jobs finish
    for runner.shutdownGrace (an hour, as gitlab-runner's chart waits) before canceling them."""
    rendered = render(chart, TOKEN)
    assert float(rendered.flag("--shutdown-grace") or 0) >= 3600
    assert rendered.one("Deployment")["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_grace_period_follows_the_values_and_rounds_up(chart: helm.Chart) -> None:
    rendered = render(chart, FULL)
    assert grace(rendered) == required_grace(FULL["runner"], 10) == 600 + 13 + 20 + 50 + 10
    assert rendered.flag("--shutdown-grace") == "600"
    assert rendered.flag("--log-flush-timeout") == "12.5"
    short = render(chart, _merge(TOKEN, {"runner": {"shutdownGrace": 20}, "terminationGraceSlackSeconds": 0}))
    assert grace(short) == 20 + 60 + 30 + 50


def test_explicit_grace_period_must_not_be_shorter_than_trunner_needs(chart: helm.Chart) -> None:
    assert grace(render(chart, {**TOKEN, "terminationGracePeriodSeconds": 3750})) == 3750
    assert grace(render(chart, {**TOKEN, "terminationGracePeriodSeconds": 4000})) == 4000
    error = render_error(chart, {**TOKEN, "terminationGracePeriodSeconds": 3749})
    assert "terminationGracePeriodSeconds 3749 is shorter than trunner needs" in error and "= 3750" in error


def test_trunner_shutdown_defaults_match_the_chart() -> None:
    from trunner.logs.settings import LogSettings
    from trunner.runner import RunSettings

    values = yaml.safe_load((CHART / "values.yaml").read_text())["runner"]
    assert values["logFlushTimeout"] == LogSettings().log_flush_timeout
    assert values["jobOutcomeTimeout"] == LogSettings().job_outcome_timeout
    assert values["jobConcurrency"] == RunSettings().job_concurrency
    assert values["shutdownGrace"] >= RunSettings().shutdown_grace


# --- the Deployment ------------------------------------------------------------------------------------


def test_deployment_defaults(chart: helm.Chart) -> None:
    rendered = render(chart, TOKEN)
    deployment = rendered.one("Deployment", FULLNAME)
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert rendered.container["image"] == "trunner:0.1.0"
    assert rendered.args()[:2] == ["run", "--mode=api"]
    assert rendered.flag("--executor") == "kubernetes"
    assert rendered.flag("--job-pod-namespace") == NAMESPACE
    assert rendered.flag("--scaling-enabled") is None
    env = rendered.env()
    assert env["OPSLEVEL_API_URL"]["value"] == "https://api.opslevel.com"
    assert "OPSLEVEL_QUEUE" not in env
    assert env["RUNNER_POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["RUNNER_POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert rendered.pod_spec["serviceAccountName"] == FULLNAME
    assert rendered.pod_spec["automountServiceAccountToken"] is True
    for absent in ("nodeSelector", "tolerations", "affinity", "priorityClassName", "imagePullSecrets"):
        assert absent not in rendered.pod_spec


def test_deployment_takes_every_pod_setting_from_values(chart: helm.Chart) -> None:
    rendered = render(chart, FULL)
    template = rendered.one("Deployment", "runner")["spec"]["template"]
    spec = rendered.pod_spec
    assert template["metadata"]["labels"]["team"] == "platform"
    assert template["metadata"]["annotations"]["example.com/owner"] == "platform"
    for key in (
        "nodeSelector",
        "tolerations",
        "affinity",
        "topologySpreadConstraints",
        "priorityClassName",
        "imagePullSecrets",
    ):
        assert spec[key] == FULL[key], key
    assert spec["serviceAccountName"] == "runner-sa"
    assert rendered.container["image"] == "registry.example.com/trunner@sha256:" + "ab" * 32
    env = rendered.env()
    assert env["OPSLEVEL_API_URL"]["value"] == "https://opslevel.example.com"
    assert env["OPSLEVEL_QUEUE"]["value"] == "builds"
    assert env["HTTPS_PROXY"]["value"] == "http://proxy:3128"
    assert rendered.flag("--job-concurrency") == "8"
    assert rendered.flag("--log-level") == "DEBUG" and rendered.flag("--log-format") == "TEXT"
    assert rendered.flag("--job-pod-namespace") == "jobs"
    assert rendered.args()[-1] == "--poll-interval=5"
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["tmp"]["emptyDir"] == {}


def test_probes_and_metrics_port(chart: helm.Chart) -> None:
    rendered = render(chart, TOKEN)
    [port] = rendered.container["ports"]
    assert port == {"name": "metrics", "containerPort": 10354, "protocol": "TCP"}
    assert rendered.flag("--metrics-port") == "10354"
    assert rendered.container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert rendered.container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    service = rendered.one("Service")
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 10354, "targetPort": "metrics", "protocol": "TCP"}
    ]
    assert (
        service["spec"]["selector"].items()
        <= rendered.one("Deployment")["spec"]["template"]["metadata"]["labels"].items()
    )
    moved = render(chart, _merge(TOKEN, {"runner": {"metricsPort": 9100}}))
    assert moved.container["ports"][0]["containerPort"] == 9100 and moved.flag("--metrics-port") == "9100"


def test_large_numbers_are_not_rendered_in_exponent_form(chart: helm.Chart) -> None:
    rendered = render(chart, _merge(TOKEN, {"runner": {"shutdownGrace": 1000000}}))
    assert rendered.flag("--shutdown-grace") == "1000000"
    assert grace(rendered) == 1000000 + 60 + 30 + 50 + 10


def container_environment(rendered: Rendered) -> dict[str, str]:
    """The container's environment as the kubelet would fill it in (Secret and downward API values)."""
    environ = {}
    for name, entry in rendered.env().items():
        source = entry.get("valueFrom") or {}
        if "secretKeyRef" in source:
            environ[name] = "token-from-the-secret"
        elif "fieldRef" in source:
            field = source["fieldRef"]["fieldPath"]
            environ[name] = {"metadata.name": f"{FULLNAME}-7d9f8-abcde", "metadata.namespace": NAMESPACE}[
                field
            ]
        else:
            environ[name] = entry["value"]
    return environ


@pytest.mark.parametrize("name", ["token", "scaling", "full"])
def test_trunner_accepts_the_rendered_arguments_environment_and_config_file(
    chart: helm.Chart, name: str
) -> None:
    """`trunner run` parses the chart's arguments and resolves every setting from them, the container's
    environment and the mounted config file without a problem (what it does at start in the pod)."""
    from trunner.cli.app import build_parser
    from trunner.cli.commands.run import MODES
    from trunner.executors import registry
    from trunner.executors.registry import job_pod_config
    from trunner.executors.settings import JobRunSettings
    from trunner.logs.settings import LogSettings
    from trunner.opslevel.scaling import check_scaling
    from trunner.opslevel.settings import ApiSettings, PollSettings
    from trunner.runner import RunSettings

    values = VALUE_SETS[name]
    rendered = render(chart, values)
    try:
        args = build_parser().parse_args(rendered.args())
    except SystemExit:
        pytest.fail(f"trunner rejects the chart's arguments: {rendered.args()}")
    file = yaml.safe_load(rendered.one("ConfigMap")["data"]["trunner.yaml"])
    source = trunner_config.SettingsSource(
        args=args, environ=container_environment(rendered), file=file, source_name="/etc/trunner/trunner.yaml"
    )
    api_mode = MODES[args.mode]
    source.check(RunSettings, LogSettings, JobRunSettings, *registry.settings_classes(), *api_mode.SETTINGS)
    job_pods = job_pod_config(source)
    check_scaling(source)
    assert args.mode == "api" and source.get(RunSettings).executor == "kubernetes"
    assert source.get(ApiSettings).api_token == "token-from-the-secret"
    assert source.get(PollSettings).runner_pod_name == f"{FULLNAME}-7d9f8-abcde"
    assert job_pods.namespace == (values.get("jobPods") or {}).get("namespace", NAMESPACE)
    assert source.get(ScalingSettings).scaling_enabled == bool((values.get("scaling") or {}).get("enabled"))


def _settings_env_names() -> set[str]:
    """Every environment variable any settings class of trunner reads (every module, packages with or
    without an ``__init__``)."""
    names: set[str] = set()
    package_root = Path(trunner.__file__).parent
    for path in sorted(package_root.rglob("*.py")):
        parts = path.relative_to(package_root.parent).with_suffix("").parts
        if parts[-1] in ("__init__", "__main__"):
            parts = parts[:-1] if parts[-1] == "__init__" else ()
        if not parts:
            continue
        module = importlib.import_module(".".join(parts))
        for value in vars(module).values():
            if isinstance(value, type) and attrs.has(value) and value.__module__ == module.__name__:
                names.update(env for _, spec, _ in trunner_config._fields(value) for env in spec.env)
    return names


def test_every_environment_variable_is_read_by_trunner(chart: helm.Chart) -> None:
    known = _settings_env_names()
    for name in ("scaling", "full"):
        env = render(chart, VALUE_SETS[name]).env()
        chart_env = {key for key in env if key not in {"HTTPS_PROXY"}}
        assert chart_env - known == set()


# --- the job pod config ----------------------------------------------------------------------------------


def test_config_map_holds_the_kubernetes_section_trunner_reads(chart: helm.Chart) -> None:
    from trunner.executors.kubernetes.settings import read_section

    rendered = render(chart, FULL)
    config_map = rendered.one("ConfigMap")
    file = yaml.safe_load(config_map["data"]["trunner.yaml"])
    assert file == {"kubernetes": FULL["jobPods"]["config"]}
    section = read_section(file, "trunner.yaml")
    assert section.service_account_name == "job-runner"
    assert section.working_dir == "/work"
    mount = next(m for m in rendered.container["volumeMounts"] if m["name"] == "config")
    volume = next(v for v in rendered.pod_spec["volumes"] if v["name"] == "config")
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]
    assert rendered.flag("--config") == mount["mountPath"] + "/trunner.yaml"
    empty = yaml.safe_load(render(chart, TOKEN).one("ConfigMap")["data"]["trunner.yaml"])
    assert empty == {"kubernetes": {}}
    read_section(empty, "trunner.yaml")


def test_job_pod_namespace_is_set_by_jobpods_namespace_only(chart: helm.Chart) -> None:
    error = render_error(chart, _merge(TOKEN, {"jobPods": {"config": {"namespace": "x"}}}))
    assert "jobPods.namespace" in error


# --- RBAC ------------------------------------------------------------------------------------------------


@attrs.frozen
class ApiCall:
    verb: str
    group: str
    resource: str
    subresource: str = ""
    name: str | None = None


def allowed(rules: list[dict[str, Any]], call: ApiCall) -> bool:
    """Kubernetes RBAC rule matching for one namespaced request."""
    resource = f"{call.resource}/{call.subresource}" if call.subresource else call.resource
    for rule in rules:
        if call.group not in rule.get("apiGroups", []) and "*" not in rule.get("apiGroups", []):
            continue
        if resource not in rule.get("resources", []) and "*" not in rule.get("resources", []):
            continue
        if call.verb not in rule["verbs"] and "*" not in rule["verbs"]:
            continue
        names = rule.get("resourceNames")
        if names and (call.name is None or call.name not in names):
            continue
        return True
    return False


def roles_for_service_account(
    rendered: Rendered, namespace: str, release_namespace: str = NAMESPACE
) -> list[dict[str, Any]]:
    """Rules of every Role in ``namespace`` bound to the runner's ServiceAccount (which lives in the
    release namespace)."""
    account = rendered.pod_spec["serviceAccountName"]
    rules = []
    for binding in rendered.all("RoleBinding"):
        if binding["metadata"]["namespace"] != namespace:
            continue
        if not any(
            s["kind"] == "ServiceAccount" and s["name"] == account and s["namespace"] == release_namespace
            for s in binding["subjects"]
        ):
            continue
        role = rendered.one("Role", binding["roleRef"]["name"])
        assert role["metadata"]["namespace"] == namespace
        rules.extend(role["rules"])
    return rules


# The Kubernetes calls trunner makes for a job (create the job's Secret, PodDisruptionBudget and pod, make the
# pod the Secret's owner, wait for it, exec, delete the three) and at start-up (delete leftovers of this runner
# by label: list and delete, one deletecollection for Secrets; ConfigMaps of earlier versions).
JOB_CALLS = [
    ApiCall("list", "", "pods"),
    ApiCall("list", "", "configmaps"),
    ApiCall("list", "policy", "poddisruptionbudgets"),
    ApiCall("deletecollection", "", "secrets"),
    ApiCall("create", "", "secrets"),
    ApiCall("patch", "", "secrets", name="job-secret"),
    ApiCall("create", "policy", "poddisruptionbudgets"),
    ApiCall("create", "", "pods"),
    ApiCall("get", "", "pods", name="job-pod"),
    ApiCall("watch", "", "pods"),
    ApiCall("get", "", "pods", "exec", name="job-pod"),
    ApiCall("create", "", "pods", "exec", name="job-pod"),
    ApiCall("delete", "", "pods", name="job-pod"),
    ApiCall("delete", "", "configmaps", name="job-files"),
    ApiCall("delete", "", "secrets", name="job-secret"),
    ApiCall("delete", "policy", "poddisruptionbudgets", name="job-pdb"),
]


def scaling_calls(deployment: str) -> list[ApiCall]:
    return [
        ApiCall("get", "coordination.k8s.io", "leases", name=deployment),
        ApiCall("create", "coordination.k8s.io", "leases"),
        ApiCall("update", "coordination.k8s.io", "leases", name=deployment),
        ApiCall("get", "apps", "deployments", "scale", name=deployment),
        ApiCall("update", "apps", "deployments", "scale", name=deployment),
        ApiCall("patch", "", "pods", name=f"{deployment}-7d9f8-abcde"),
    ]


def test_job_rbac_allows_what_the_executor_does_and_no_more(chart: helm.Chart) -> None:
    rendered = render(chart, TOKEN)
    rules = roles_for_service_account(rendered, NAMESPACE)
    denied = [call for call in JOB_CALLS if not allowed(rules, call)]
    assert denied == []
    for call in [
        ApiCall("get", "", "secrets", name="x"),
        ApiCall("list", "", "secrets"),
        ApiCall("watch", "", "secrets"),
        ApiCall("create", "", "configmaps"),
        ApiCall("patch", "", "pods", name="job-pod"),
        ApiCall("create", "", "pods", "attach", name="job-pod"),
        ApiCall("get", "", "pods", "log", name="job-pod"),
        ApiCall("create", "coordination.k8s.io", "leases"),
        ApiCall("get", "apps", "deployments", name=FULLNAME),
        ApiCall("update", "apps", "deployments", "scale", name=FULLNAME),
        ApiCall("deletecollection", "", "pods"),
    ]:
        assert not allowed(rules, call), call
    for rule in rules:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"]


def test_scaling_rbac_only_when_scaling_is_enabled(chart: helm.Chart) -> None:
    off = render(chart, TOKEN)
    on = render(chart, SCALING)
    assert {r["metadata"]["name"] for r in off.all("Role")} == {f"{FULLNAME}-jobs"}
    assert {r["metadata"]["name"] for r in on.all("Role")} == {f"{FULLNAME}-jobs", f"{FULLNAME}-scaling"}
    deployment = on.one("Deployment")["metadata"]["name"]
    assert on.flag("--runner-deployment") == deployment, "the Lease and the scaled Deployment share a name"
    rules = roles_for_service_account(on, NAMESPACE)
    assert [c for c in scaling_calls(deployment) + JOB_CALLS if not allowed(rules, c)] == []
    for call in [
        ApiCall("get", "coordination.k8s.io", "leases", name="someone-elses-lease"),
        ApiCall("update", "apps", "deployments", "scale", name="other-deployment"),
        ApiCall("update", "apps", "deployments", name=deployment),
        ApiCall("get", "apps", "deployments", name=deployment),
        ApiCall("patch", "apps", "deployments", "scale", name=deployment),
        ApiCall("delete", "coordination.k8s.io", "leases", name=deployment),
    ]:
        assert not allowed(rules, call), call
    off_rules = roles_for_service_account(off, NAMESPACE)
    assert [c for c in scaling_calls(deployment) if allowed(off_rules, c)] == []


def test_scaling_flags_and_replicas(chart: helm.Chart) -> None:
    rendered = render(chart, SCALING)
    assert "replicas" not in rendered.one("Deployment")["spec"], "the leader owns the replica count"
    assert rendered.flag("--scaling-enabled") == "true"
    assert rendered.flag("--runner-min-replicas") == "2"
    assert rendered.flag("--runner-max-replicas") == "7"
    assert rendered.flag("--job-concurrency-factor") == "50"
    error = render_error(chart, _merge(SCALING, {"scaling": {"minReplicas": 8}}))
    assert "maxReplicas must be at least scaling.minReplicas" in error


def test_job_role_goes_to_the_job_namespace(chart: helm.Chart) -> None:
    rendered = render(chart, FULL)
    job_rules = roles_for_service_account(rendered, "jobs")
    assert [c for c in JOB_CALLS if not allowed(job_rules, c)] == []
    home_rules = roles_for_service_account(rendered, NAMESPACE)
    assert [c for c in scaling_calls("runner") if not allowed(home_rules, c)] == []
    assert not allowed(home_rules, ApiCall("create", "", "pods")), "no job pods in the runner namespace"
    for binding in rendered.all("RoleBinding"):
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "runner-sa", "namespace": NAMESPACE}
        ]


def test_rbac_and_service_account_can_be_left_to_the_operator(chart: helm.Chart) -> None:
    rendered = render(chart, NO_RBAC)
    for kind in ("Role", "RoleBinding", "ServiceAccount", "Service"):
        assert rendered.all(kind) == [], kind
    assert rendered.pod_spec["serviceAccountName"] == "existing-sa"


# --- documentation ----------------------------------------------------------------------------------------

KUBERNETES_OBJECT_VALUES = {
    "updateStrategy",
    "resources",
    "podSecurityContext",
    "securityContext",
    "livenessProbe",
    "readinessProbe",
    "startupProbe",
    "jobPods.config",
    "jobPods.networkPolicy.ingress",
    "jobPods.networkPolicy.egress",
}


def documented_values() -> list[tuple[str, bool]]:
    """(dotted key, has a comment directly above) for every key of values.yaml outside Kubernetes objects."""
    found = []
    stack: list[str] = []
    previous = ""
    for line in (CHART / "values.yaml").read_text().splitlines():
        key = re.match(r"^(\s*)([A-Za-z][\w-]*):", line)
        if key:
            stack = [*stack[: len(key[1]) // 2], key[2]]
            path = ".".join(stack)
            if not any(path.startswith(p + ".") for p in KUBERNETES_OBJECT_VALUES):
                found.append((path, previous.lstrip().startswith("#")))
        if line.strip():
            previous = line
    return found


def test_values_are_documented_line_by_line() -> None:
    undocumented = [path for path, commented in documented_values() if not commented]
    assert undocumented == []


def test_readme_table_lists_every_value_with_its_default() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    rows = {}
    for line in (CHART / "README.md").read_text().splitlines():
        row = re.match(r"^\| `([\w.]+)` \| `(.*)` \| .+ \|$", line)
        if row:
            rows[row[1]] = json.loads(row[2].replace("\\|", "|"))
    leaves = set()
    for path, _ in documented_values():
        value: Any = values
        for part in path.split("."):
            value = value[part]
        if isinstance(value, dict) and value and path not in KUBERNETES_OBJECT_VALUES:
            continue
        leaves.add(path)
        assert path in rows, f"{path} is missing from the README table"
        assert rows[path] == value, f"README default of {path}"
    assert set(rows) == leaves


def test_notes_render(chart: helm.Chart) -> None:
    notes = render(chart, SCALING).manifests["trunner/templates/NOTES.txt"]
    assert "between 2 and 7" in notes and "termination grace period is 3750 s" in notes


# --- RBAC against the requests trunner really makes --------------------------------------------------------


def required_permissions(request: Any) -> list[ApiCall]:
    """The RBAC checks the apiserver makes for one request (its RequestInfo: verb from the method, list vs
    get from the presence of a name, watch from the parameter). A WebSocket exec is a GET that newer
    apiservers also authorize as create, so both must be allowed."""
    where = kube_store.parse_path(request.path)
    assert where is not None, request.path
    method = request.method
    if method == "GET":
        watch = request.param("watch") in ("1", "true")
        verbs = ["get"] if where.name else ["watch"] if watch else ["list"]
        if where.subresource == "exec":
            verbs = ["get", "create"]
    else:
        verbs = [{"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method, "")]
        if method == "DELETE":
            verbs = ["delete" if where.name else "deletecollection"]
    return [ApiCall(verb, where.group, where.plural, where.subresource, where.name or None) for verb in verbs]


async def test_the_roles_allow_every_request_of_a_job_and_of_scaling(
    chart: helm.Chart, autojump_clock: trio.abc.Clock
) -> None:
    """A job (with leftovers of a crashed predecessor to delete) through the Kubernetes executor, and two
    runners electing a leader that scales, against the Kubernetes API double; every request it recorded
    must be allowed by the Roles the chart binds to the runner's ServiceAccount."""
    rendered = render(
        chart, {**TOKEN, "fullnameOverride": DEPLOYMENT, "scaling": {"enabled": True}}, namespace=NS
    )
    assert rendered.flag("--runner-deployment") == DEPLOYMENT
    async with serve_kube_api() as api, trio.open_nursery() as nursery:
        add_runner_objects(api)
        plant_leftovers(api)
        # The pod takes a moment to start (the executor watches it), and the second run is killed (the
        # executor reads the pod to explain the exit): every request a job can make is made.
        api.pod_behaviour = kube_double.PodBehaviour(start_delay=2)
        api.script_exec(Stdout(b"hello\n"), Exit(0))
        api.script_exec(Stdout(b"killed\n"), Exit(137))
        async with client_for(api) as client:
            executor = KubernetesExecutor(client, CONFIG, runner_id="1234", wall_clock=lambda: NOW)
            assert await executor.delete_leftovers() == 8
            result = await executor.run(JOB, RecordingFeed())
            assert result.exit_code == 0
            killed = await executor.run(JOB, RecordingFeed())
            assert killed.exit_code == 137
        opslevel: OpsLevelDouble = await nursery.start(OpsLevelDouble().serve)
        opslevel.recommended_replicas = 5
        settings = ScalingSettings(
            scaling_enabled=True, runner_deployment=DEPLOYMENT, runner_pod_namespace=NS
        )
        scopes = [trio.CancelScope(), trio.CancelScope()]
        for scope, pod in zip(scopes, ("runner-a", "runner-b"), strict=True):
            nursery.start_soon(scaling_runner, api, opslevel, settings, pod, scope)
            await trio.sleep(1)
        await trio.sleep(70)
        scopes[0].cancel()
        await trio.sleep(70)
        scopes[1].cancel()
        assert {c.variables["runnerId"] for c in opslevel.calls_to("RunnerScale")} == {
            "id-runner-a",
            "id-runner-b",
        }
        nursery.cancel_scope.cancel()
    rules = roles_for_service_account(rendered, NS, release_namespace=NS)
    seen = {call for request in api.requests for call in required_permissions(request)}
    assert {c.resource for c in seen} == {
        "pods",
        "secrets",
        "configmaps",
        "poddisruptionbudgets",
        "leases",
        "deployments",
    }
    assert ApiCall("update", "apps", "deployments", "scale", DEPLOYMENT) in seen
    assert ApiCall("patch", "", "pods", "", "runner-a") in seen
    assert ApiCall("create", "", "pods", "exec", NAME) in seen
    assert sorted(str(c) for c in seen if not allowed(rules, c)) == []
    # And nothing in the Roles goes unused: every verb on every resource of every rule was needed by some
    # request.
    unused = []
    for rule in rules:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    atom = {**rule, "apiGroups": [group], "resources": [resource], "verbs": [verb]}
                    if not any(allowed([atom], c) for c in seen):
                        unused.append(f"{verb} {group or 'core'}/{resource}")
    assert unused == [], "granted but never needed"


# --- the job log spool ------------------------------------------------------------------------------------


def test_job_log_spool_gets_an_empty_dir_of_concurrency_times_its_budget(chart: helm.Chart) -> None:
    from trunner.logs.settings import LogSettings

    defaults = yaml.safe_load((CHART / "values.yaml").read_text())["runner"]
    assert defaults["jobLogSpoolSize"] == LogSettings().job_log_spool_size
    assert defaults["jobLogBuffer"] == LogSettings().job_log_buffer
    rendered = render(chart, _merge(TOKEN, {"runner": {"jobConcurrency": 5, "jobLogSpoolSize": 1048576}}))
    volumes = {v["name"]: v for v in rendered.pod_spec["volumes"]}
    assert volumes["job-log-spool"]["emptyDir"] == {"sizeLimit": 5 * 1048576}
    mounts = {m["name"]: m["mountPath"] for m in rendered.container["volumeMounts"]}
    assert rendered.flag("--job-log-spool-dir") == mounts["job-log-spool"]
    assert rendered.flag("--job-log-spool-size") == "1048576"
    assert rendered.flag("--job-log-buffer") == "spool"


def test_memory_only_job_logs_get_no_spool_volume(chart: helm.Chart) -> None:
    rendered = render(chart, _merge(TOKEN, {"runner": {"jobLogBuffer": "memory"}}))
    assert "job-log-spool" not in {v["name"] for v in rendered.pod_spec["volumes"]}
    assert rendered.flag("--job-log-buffer") == "memory"
    assert rendered.flag("--job-log-spool-dir") is None
    assert "jobLogBuffer" in render_error(chart, _merge(TOKEN, {"runner": {"jobLogBuffer": "disk"}}))


def test_memory_request_and_limit_follow_from_job_concurrency_and_batch_size(chart: helm.Chart) -> None:
    per_job = 5 * 1_000_000 + 4 * 1048576
    rendered = render(chart, TOKEN)
    resources = rendered.container["resources"]
    assert resources["requests"] == {"cpu": "100m", "memory": 64 * 1048576 + 3 * per_job}
    assert resources["limits"] == {"memory": 2 * (64 * 1048576 + 3 * per_job)}
    assert rendered.flag("--job-pod-log-max-size") == "1000000"
    bigger = render(chart, _merge(TOKEN, {"runner": {"jobConcurrency": 20, "jobPodLogMaxSize": 256000}}))
    request = 64 * 1048576 + 20 * (5 * 256000 + 4 * 1048576)
    assert bigger.container["resources"]["requests"]["memory"] == request
    assert bigger.container["resources"]["limits"]["memory"] == 2 * request
    chosen = render(
        chart, _merge(TOKEN, {"resources": {"requests": {"memory": "1Gi"}, "limits": {"memory": "2Gi"}}})
    )
    assert chosen.container["resources"]["requests"]["memory"] == "1Gi"
    assert chosen.container["resources"]["limits"]["memory"] == "2Gi"
    assert "job-pod-log-max-size" in render_error(
        chart, _merge(TOKEN, {"runner": {"extraArgs": ["--job-pod-log-max-size=5"]}})
    )
