"""Settings of Kubernetes job pods: the Go runner's ``--job-pod-*`` flags plus the ``kubernetes:``
section of the config file, resolved into one :class:`JobPodConfig`.

Precedence, as in the Go runner: the ``kubernetes:`` section wins over everything for the keys it
sets; for the others a flag, then an environment variable, then a top-level config-file key named
after the flag, then the default. Deployments such as the OpsLevel chart pass ``--job-pod-*`` flags
and a section and rely on the section winning; each key where the two disagree is logged once at
startup. Resources merge per quantity (``resources.limits.memory`` in the section replaces only that
one flag value), as the Go runner's YAML decoding into its flag-filled defaults does.

The section is read as Go's JSON decoding reads it: keys match case-insensitively at every level,
a whole number may be written as text (``'1800'``) and a number where text is expected; an unknown
key is ignored with a warning (Go ignores it silently). Values are checked: a wrong type or a value
the API server would refuse is an error at startup.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Mapping
from typing import Any

import attrs

from trunner.config import (
    ConfigError,
    find_key,
    non_negative,
    one_of,
    positive,
    setting,
)
from trunner.executors.kubernetes import security
from trunner.executors.settings import JobRunSettings
from trunner.kube.client import KubeApiSettings
from trunner.kube.config import KubeConfig
from trunner.kube.names import dns_label_problem, is_dns_label, is_label_value, label_key_problem
from trunner.kube.objects import (
    Affinity,
    ObjectError,
    PodSecurityContext,
    Quantity,
    ResourceRequirements,
    SecurityContext,
    Toleration,
    from_wire,
    parse_quantity,
)
from trunner.wire import camel

DEFAULT_HELPER_IMAGE = "public.ecr.aws/opslevel/opslevel-runner:v2026.7.8"
"""The Go runner's published image, whose ``/opslevel-runner`` binary the helper init container
copies into ``/mount`` for job commands that call it."""
DEFAULT_WORKDIR = "/jobs"
PULL_POLICIES = ("Always", "IfNotPresent", "Never")
DNS_POLICIES = ("ClusterFirst", "ClusterFirstWithHostNet", "Default", "None")


def _key_values(value: tuple[str, ...]) -> str | None:
    bad = [item for item in value if "=" not in item]
    return f"expected key=value items ({', '.join(repr(item) for item in bad)} has no '=')" if bad else None


@attrs.frozen
class KubeJobSettings:
    """Kubernetes job pods"""

    job_pod_namespace: str = setting(
        "default", help="Namespace the job pods are created in.", checks=[dns_label_problem]
    )
    job_pod_max_wait: float = setting(
        60.0,
        help="Seconds a job pod may take to be running before the job ends as pod_timeout.",
        checks=[positive],
    )
    job_pod_exec_max_wait: float = setting(
        60.0,
        help="Seconds the exec of a job's commands may take to start (the API server's answer to the "
        "exec request); then the job fails.",
        checks=[positive],
    )
    job_pod_durable_exec: bool = setting(
        True,
        help="Run the job's commands detached in the pod, their output in files on the pod's work "
        "directory volume, and read it by byte offset: a dropped exec stream is resumed where it "
        "stopped instead of ending the job. Needs only a POSIX sh with mkdir, wc, dd, sleep, mv and "
        "cat in the job image. Off: one exec stream carries the commands, as in the Go runner.",
    )
    job_pod_requests_cpu: int = setting(
        1000, help="CPU request of the job containers, in millicores (0: none).", checks=[non_negative]
    )
    job_pod_requests_memory: int = setting(
        1024, help="Memory request of the job containers, in MiB (0: none).", checks=[non_negative]
    )
    job_pod_requests_ephemeral_storage: int = setting(
        64, help="Ephemeral-storage request of the job containers, in MiB (0: none).", checks=[non_negative]
    )
    job_pod_limits_cpu: int = setting(
        1000, help="CPU limit of the job containers, in millicores (0: none).", checks=[non_negative]
    )
    job_pod_limits_memory: int = setting(
        1024, help="Memory limit of the job containers, in MiB (0: none).", checks=[non_negative]
    )
    job_pod_limits_ephemeral_storage: int = setting(
        26624, help="Ephemeral-storage limit of the job containers, in MiB (0: none).", checks=[non_negative]
    )
    job_pod_helper_enabled: bool = setting(
        True, help="Run the helper init container that copies the opslevel-runner binary to /mount."
    )
    job_pod_helper_image: str = setting(
        "", help=f"Image of the helper init container (empty: {DEFAULT_HELPER_IMAGE})."
    )
    job_agent_mode: bool = setting(
        False,
        help="Agent mode: job containers run privileged and the pod as root (container-in-container). "
        "Only for trusted workloads.",
    )
    job_pod_pull_policy: str = setting(
        "IfNotPresent", help="Image pull policy of the job pod's containers.", checks=[one_of(*PULL_POLICIES)]
    )
    job_pod_service_account: str = setting(
        "", help="Service account of the job pods (empty: the namespace's default)."
    )
    job_pod_termination_grace_period: int = setting(
        5, help="Seconds a deleted job pod gets to stop.", checks=[non_negative]
    )
    job_pod_dns_policy: str = setting(
        "",
        help="DNS policy of the job pods (empty: the cluster default).",
        checks=[one_of("", *DNS_POLICIES)],
    )
    job_pod_node_selector: tuple[str, ...] = setting(
        (), help="Node selector of the job pods, as key=value items.", checks=[_key_values]
    )
    job_pod_annotations: tuple[str, ...] = setting(
        (), help="Annotations of the job pods, as key=value items.", checks=[_key_values]
    )
    job_pod_owner: str = setting(
        "",
        env=("OPSLEVEL_JOB_POD_OWNER", "RUNNER_POD_NAME"),
        help="Name of this runner process on its job objects; at startup objects left by an earlier "
        "process of the same name are deleted (empty: the host name). Must differ between runners "
        "that share a namespace.",
    )


@attrs.frozen
class KubernetesSection:
    """The ``kubernetes:`` section of the config file (the Go runner's ``K8SPodConfig`` plus
    ``tolerations`` and ``affinity``)."""

    namespace: str | None = None
    lifetime: int | None = None
    shell: str | None = None
    working_dir: str | None = None
    annotations: dict[str, str] | None = None
    resources: ResourceRequirements | None = None
    service_account_name: str | None = None
    termination_grace_period_seconds: int | None = None
    dns_policy: str | None = None
    pull_policy: str | None = None
    security_context: PodSecurityContext | None = None
    container_security_context: SecurityContext | None = None
    """Not in the Go runner: the securityContext of every container of a job pod."""
    node_selector: dict[str, str] | None = None
    agent_mode: bool | None = None
    helper_image: str | None = None
    tolerations: tuple[Toleration, ...] | None = None
    affinity: Affinity | None = None


@attrs.frozen
class JobPodConfig:
    """Everything the job layer needs to build and run job pods, fully resolved."""

    namespace: str = "default"
    shell: str = "/bin/sh"
    workdir: str = DEFAULT_WORKDIR
    lifetime: float = 3600.0
    max_wait: float = 60.0
    exec_max_wait: float = 60.0
    durable: bool = True
    """The commands run detached and are read by offset (``durable``), or over one exec stream."""
    resources: ResourceRequirements | None = None
    helper_image: str | None = DEFAULT_HELPER_IMAGE
    """``None``: no helper init container."""
    agent_mode: bool = False
    pull_policy: str = "IfNotPresent"
    service_account_name: str | None = None
    termination_grace_period_seconds: int = 5
    dns_policy: str | None = None
    node_selector: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    security_context: PodSecurityContext | None = None
    container_security_context: SecurityContext | None = None
    tolerations: tuple[Toleration, ...] | None = None
    affinity: Affinity | None = None
    owner: str = "trunner"


@attrs.frozen
class KubernetesSettings:
    """What the Kubernetes executor is opened with: the resolved job-pod config, the API client's
    settings and the cluster it talks to."""

    pods: JobPodConfig
    api: KubeApiSettings
    cluster: KubeConfig


def _mapping(items: tuple[str, ...], what: str, *, label_values: bool) -> tuple[dict[str, str], list[str]]:
    result: dict[str, str] = {}
    problems: list[str] = []
    for item in items:
        key, _, value = item.partition("=")
        if (problem := label_key_problem(key)) is not None:
            problems.append(f"{what}: {problem}")
        elif label_values and not is_label_value(value):
            problems.append(f"{what}: {key}={value!r}: not a valid label value")
        else:
            result[key] = value
    return result, problems


def _section_problems(section: KubernetesSection) -> list[str]:
    checks: list[tuple[str, object, bool]] = [
        ("namespace", section.namespace, section.namespace is None or is_dns_label(section.namespace)),
        ("lifetime", section.lifetime, section.lifetime is None or section.lifetime > 0),
        ("shell", section.shell, section.shell is None or section.shell.startswith("/")),
        (
            "workingDir",
            section.working_dir,
            section.working_dir is None or section.working_dir.startswith("/"),
        ),
        (
            "terminationGracePeriodSeconds",
            section.termination_grace_period_seconds,
            section.termination_grace_period_seconds is None or section.termination_grace_period_seconds >= 0,
        ),
        ("dnsPolicy", section.dns_policy, section.dns_policy in (None, "", *DNS_POLICIES)),
        ("pullPolicy", section.pull_policy, section.pull_policy in (None, *PULL_POLICIES)),
    ]
    expected = {
        "namespace": "a DNS-1123 label",
        "lifetime": "a number of seconds greater than 0",
        "shell": "an absolute path",
        "workingDir": "an absolute path",
        "terminationGracePeriodSeconds": "0 or greater",
        "dnsPolicy": f"one of {', '.join(DNS_POLICIES)}",
        "pullPolicy": f"one of {', '.join(PULL_POLICIES)}",
    }
    return [
        f"kubernetes.{key}: must be {expected[key]}, got {value!r}" for key, value, ok in checks if not ok
    ]


def _security_problems(section: KubernetesSection) -> list[str]:
    pod, container = section.security_context, section.container_security_context
    problems = [
        *security.pod_context_problems(pod, "kubernetes.securityContext"),
        *security.container_context_problems(container, "kubernetes.containerSecurityContext"),
        *security.effective_problems(pod, container, "kubernetes.securityContext/containerSecurityContext"),
    ]
    if section.agent_mode:
        problems += security.agent_mode_problems(container, "kubernetes.containerSecurityContext")
    return problems


_SECTION_TO_SETTING: dict[str, tuple[type[Any], str]] = {
    "namespace": (KubeJobSettings, "job_pod_namespace"),
    "lifetime": (JobRunSettings, "job_pod_max_lifetime"),
    "shell": (JobRunSettings, "job_pod_shell"),
    "working_dir": (JobRunSettings, "job_pod_workdir"),
    "service_account_name": (KubeJobSettings, "job_pod_service_account"),
    "termination_grace_period_seconds": (KubeJobSettings, "job_pod_termination_grace_period"),
    "dns_policy": (KubeJobSettings, "job_pod_dns_policy"),
    "pull_policy": (KubeJobSettings, "job_pod_pull_policy"),
    "agent_mode": (KubeJobSettings, "job_agent_mode"),
    "helper_image": (KubeJobSettings, "job_pod_helper_image"),
    "annotations": (KubeJobSettings, "job_pod_annotations"),
    "node_selector": (KubeJobSettings, "job_pod_node_selector"),
}
"""Section keys and the setting each overrides."""

_RESOURCE_FLAGS = {
    ("requests", "cpu"): "job_pod_requests_cpu",
    ("requests", "memory"): "job_pod_requests_memory",
    ("requests", "ephemeral-storage"): "job_pod_requests_ephemeral_storage",
    ("limits", "cpu"): "job_pod_limits_cpu",
    ("limits", "memory"): "job_pod_limits_memory",
    ("limits", "ephemeral-storage"): "job_pod_limits_ephemeral_storage",
}


# --- reading the section as Go's JSON decoding does -------------------------------------------------


def _unwrap_optional(type_: Any) -> Any:
    if typing.get_origin(type_) in (typing.Union, _UNION_TYPE):
        options = [t for t in typing.get_args(type_) if t is not type(None)]
        if len(options) == 1:
            return options[0]
    return type_


_UNION_TYPE = type(int | None)
_WHOLE_NUMBER = re.compile(r"[+-]?[0-9]+")


def go_json_view(raw: Any, type_: Any, where: str, warnings: list[str]) -> Any:
    """``raw`` with keys renamed to the fields of ``type_`` they match case-insensitively, unknown
    keys dropped (one warning each), whole numbers given as text made numbers and numbers given
    where text is expected made text. Anything else is left for the strict structuring to judge."""
    type_ = _unwrap_optional(type_)
    if attrs.has(type_) and isinstance(raw, Mapping):
        hints = typing.get_type_hints(type_)
        fields = {camel(f.name).lower(): (camel(f.name), hints[f.name]) for f in attrs.fields(type_)}
        view: dict[str, Any] = {}
        for key, value in raw.items():
            match = fields.get(str(key).lower())
            if match is None:
                warnings.append(f"{where}.{key}: unknown key, ignored")
                continue
            name, field_type = match
            view[name] = go_json_view(value, field_type, f"{where}.{name}", warnings)
        return view
    origin = typing.get_origin(type_)
    if origin is tuple and isinstance(raw, list):
        item_type = typing.get_args(type_)[0]
        return [go_json_view(item, item_type, f"{where}[{i}]", warnings) for i, item in enumerate(raw)]
    if origin is dict and isinstance(raw, Mapping):
        value_type = typing.get_args(type_)[1]
        return {k: go_json_view(v, value_type, f"{where}[{k!r}]", warnings) for k, v in raw.items()}
    if type_ is int and isinstance(raw, str) and _WHOLE_NUMBER.fullmatch(raw.strip()):
        return int(raw.strip())
    if type_ is str and isinstance(raw, int | float) and not isinstance(raw, bool):
        return str(raw)
    return raw


def read_section_with_warnings(
    file: Mapping[str, Any], source_name: str
) -> tuple[KubernetesSection, list[str]]:
    """The ``kubernetes:`` section of a config file, checked, and a warning per ignored key."""
    found, raw = find_key(file, "kubernetes")
    if not found or raw is None:
        return KubernetesSection(), []
    warnings: list[str] = []
    misplaced = security.misplaced_container_keys(raw)
    view = go_json_view(raw, KubernetesSection, "kubernetes", warnings)
    try:
        section = from_wire(view, KubernetesSection, where="kubernetes")
    except ObjectError as exc:
        raise ConfigError([f"{source_name}: {problem}" for problem in misplaced + exc.problems]) from None
    problems = misplaced + _section_problems(section) + _security_problems(section)
    if problems:
        raise ConfigError([f"{source_name}: {problem}" for problem in problems])
    return section, [f"{source_name}: {warning}" for warning in warnings]


def read_section(file: Mapping[str, Any], source_name: str) -> KubernetesSection:
    """The ``kubernetes:`` section of a config file, checked; empty if the file has none."""
    return read_section_with_warnings(file, source_name)[0]


# --- precedence ------------------------------------------------------------------------------------


def _section_value(section: KubernetesSection, key: str) -> Any:
    value = getattr(section, key)
    if isinstance(value, dict):
        return tuple(f"{k}={v}" for k, v in value.items())
    return value


def _describe(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(value) or '""'
    return repr(value)


def section_overrides(
    run: JobRunSettings,
    pods: KubeJobSettings,
    section: KubernetesSection,
    *,
    origins: Mapping[str, str],
    source_name: str,
) -> list[str]:
    """One line per key that the section sets to another value than a flag, the environment or
    a top-level config-file key gave; ``origins`` says where each given setting of ``run`` and
    ``pods`` (by field name) was given."""
    groups: dict[type[Any], Any] = {JobRunSettings: run, KubeJobSettings: pods}
    lines = []
    for key, (cls, field) in _SECTION_TO_SETTING.items():
        wanted = getattr(section, key)
        if wanted is None:
            continue
        origin = origins.get(field)
        given = getattr(groups[cls], field)
        if origin is None or _section_value(section, key) == given:
            continue
        if isinstance(given, float) and isinstance(wanted, int) and given == wanted:
            continue
        lines.append(
            f"{source_name}: kubernetes.{camel(key)} {_describe(_section_value(section, key))} "
            f"overrides {origin} {_describe(given)} (the kubernetes: section wins, as in the Go runner)"
        )
    for kind in ("requests", "limits"):
        for resource, quantity in (getattr(section.resources, kind, None) or {}).items():
            resource_field = _RESOURCE_FLAGS.get((kind, resource))
            if resource_field is None:
                continue
            resource_origin = origins.get(resource_field)
            if resource_origin is None:
                continue
            amount: int = getattr(pods, resource_field)
            flag_quantity = f"{amount}m" if resource == "cpu" else f"{amount}Mi"
            if amount and parse_quantity(flag_quantity) == parse_quantity(quantity):
                continue
            lines.append(
                f"{source_name}: kubernetes.resources.{kind}.{resource} {quantity} overrides "
                f"{resource_origin} {amount} (the kubernetes: section wins, as in the Go runner)"
            )
    return lines


def _resources(
    flags: KubeJobSettings, section: ResourceRequirements | None
) -> tuple[ResourceRequirements | None, list[str]]:
    lists: dict[str, dict[str, Quantity]] = {"requests": {}, "limits": {}}
    for (kind, resource), field in _RESOURCE_FLAGS.items():
        amount: int = getattr(flags, field)
        if amount:
            lists[kind][resource] = Quantity(f"{amount}m" if resource == "cpu" else f"{amount}Mi")
    for kind in ("requests", "limits"):
        for resource, quantity in (getattr(section, kind, None) or {}).items():
            lists[kind][resource] = quantity
    problems = [
        f"resources: the {resource} request ({request}) is more than its limit ({lists['limits'][resource]})"
        for resource, request in lists["requests"].items()
        if resource in lists["limits"] and parse_quantity(request) > parse_quantity(lists["limits"][resource])
    ]
    if not lists["requests"] and not lists["limits"]:
        return None, problems
    return ResourceRequirements(requests=lists["requests"] or None, limits=lists["limits"] or None), problems


def resolve(
    run: JobRunSettings, pods: KubeJobSettings, section: KubernetesSection, *, hostname: str
) -> JobPodConfig:
    """The job-pod config: ``section``'s keys over ``run`` and ``pods``; ``hostname`` names the
    owner when ``--job-pod-owner`` is empty. All problems are reported together in one
    ConfigError."""
    overrides: dict[type[Any], dict[str, Any]] = {JobRunSettings: {}, KubeJobSettings: {}}
    for key, (cls, field) in _SECTION_TO_SETTING.items():
        if getattr(section, key) is not None:
            overrides[cls][field] = _section_value(section, key)
    run = attrs.evolve(run, **overrides[JobRunSettings])
    flags: KubeJobSettings = attrs.evolve(pods, **overrides[KubeJobSettings])
    node_selector, selector_problems = _mapping(
        flags.job_pod_node_selector, "--job-pod-node-selector", label_values=True
    )
    annotations, annotation_problems = _mapping(
        flags.job_pod_annotations, "--job-pod-annotations", label_values=False
    )
    resources, resource_problems = _resources(flags, section.resources)
    problems = selector_problems + annotation_problems + resource_problems
    if flags.job_agent_mode and not section.agent_mode:
        problems += security.agent_mode_problems(
            section.container_security_context, "kubernetes.containerSecurityContext (with --job-agent-mode)"
        )
    if problems:
        raise ConfigError(problems)
    return JobPodConfig(
        namespace=flags.job_pod_namespace,
        shell=run.job_pod_shell,
        workdir=run.job_pod_workdir or DEFAULT_WORKDIR,
        lifetime=run.job_pod_max_lifetime,
        max_wait=flags.job_pod_max_wait,
        exec_max_wait=flags.job_pod_exec_max_wait,
        durable=flags.job_pod_durable_exec,
        resources=resources,
        helper_image=(flags.job_pod_helper_image or DEFAULT_HELPER_IMAGE)
        if flags.job_pod_helper_enabled
        else None,
        agent_mode=flags.job_agent_mode,
        pull_policy=flags.job_pod_pull_policy,
        service_account_name=flags.job_pod_service_account or None,
        termination_grace_period_seconds=flags.job_pod_termination_grace_period,
        dns_policy=flags.job_pod_dns_policy or None,
        node_selector=node_selector or None,
        annotations=annotations or None,
        security_context=section.security_context,
        container_security_context=section.container_security_context,
        tolerations=section.tolerations,
        affinity=section.affinity,
        owner=flags.job_pod_owner or hostname,
    )
