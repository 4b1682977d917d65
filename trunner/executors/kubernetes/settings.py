"""Settings of Kubernetes job pods: the Go runner's ``--job-pod-*`` flags plus the ``kubernetes:``
section of the config file, resolved into one :class:`JobPodConfig`.

Precedence, for every value: a flag or environment variable given explicitly, then the
``kubernetes:`` section, then a top-level config-file key named after the flag, then the default.
The Go runner lets the section override even explicit flags; here an explicit flag wins, so an
operator can always override a shared config file from the command line. Resources merge per
quantity (``resources.limits.memory`` in the section replaces only that one flag value), as the Go
runner's YAML decoding into its flag-filled defaults does. The section is checked strictly: an
unknown or misspelt key is an error at startup, not a setting silently ignored by the API server.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Mapping
from typing import Any

import attrs

from trunner.config import ConfigError, SettingsSource, load, non_negative, one_of, positive, setting
from trunner.executors.kubernetes import names
from trunner.executors.settings import JobRunSettings
from trunner.kube.objects import (
    Affinity,
    ObjectError,
    PodSecurityContext,
    Quantity,
    ResourceRequirements,
    Toleration,
    from_wire,
    parse_quantity,
)

DEFAULT_HELPER_IMAGE = "public.ecr.aws/opslevel/opslevel-runner:v2026.7.8"
"""The Go runner's published image, whose ``/opslevel-runner`` binary the helper init container
copies into ``/mount`` for job commands that call it."""
DEFAULT_WORKDIR = "/jobs"
PULL_POLICIES = ("Always", "IfNotPresent", "Never")
DNS_POLICIES = ("ClusterFirst", "ClusterFirstWithHostNet", "Default", "None")


def _dns_label(value: str) -> str | None:
    return None if names.is_dns_label(value) else "must be a DNS-1123 label (lower-case letters, digits, '-')"


def _key_values(value: tuple[str, ...]) -> str | None:
    bad = [item for item in value if "=" not in item]
    return f"expected key=value items, got {bad!r}" if bad else None


@attrs.frozen
class KubeJobSettings:
    """Kubernetes job pods"""

    job_pod_namespace: str = setting(
        "default", help="Namespace the job pods are created in.", checks=[_dns_label]
    )
    job_pod_max_wait: float = setting(
        60.0,
        help="Seconds a job pod may take to be running before the job ends as pod_timeout.",
        checks=[positive],
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
    node_selector: dict[str, str] | None = None
    agent_mode: bool | None = None
    helper_image: str | None = None
    tolerations: tuple[Toleration, ...] | None = None
    affinity: Affinity | None = None


_SECTION_TO_FILE_KEY = {
    "namespace": "job-pod-namespace",
    "lifetime": "job-pod-max-lifetime",
    "shell": "job-pod-shell",
    "working_dir": "job-pod-workdir",
    "service_account_name": "job-pod-service-account",
    "termination_grace_period_seconds": "job-pod-termination-grace-period",
    "dns_policy": "job-pod-dns-policy",
    "pull_policy": "job-pod-pull-policy",
    "agent_mode": "job-agent-mode",
    "helper_image": "job-pod-helper-image",
    "annotations": "job-pod-annotations",
    "node_selector": "job-pod-node-selector",
}


@attrs.frozen
class JobPodConfig:
    """Everything the job layer needs to build and run job pods, fully resolved."""

    namespace: str = "default"
    shell: str = "/bin/sh"
    workdir: str = DEFAULT_WORKDIR
    lifetime: float = 3600.0
    max_wait: float = 60.0
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
    tolerations: tuple[Toleration, ...] | None = None
    affinity: Affinity | None = None
    owner: str = "trunner"


_LABEL_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def label_key_problem(key: str) -> str | None:
    """Why ``key`` is not a valid label or annotation key (``[prefix/]name``), or None."""
    prefix, _, name = key.rpartition("/")
    if "/" in key and (len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix)):
        return f"{key!r}: the prefix must be a DNS subdomain"
    if len(name) > 63 or not _LABEL_NAME.fullmatch(name):
        return f"{key!r}: the name must be 1-63 letters, digits, '-', '_' or '.', starting and ending alphanumeric"
    return None


def _mapping(items: tuple[str, ...], what: str, *, label_values: bool) -> tuple[dict[str, str], list[str]]:
    result: dict[str, str] = {}
    problems: list[str] = []
    for item in items:
        key, _, value = item.partition("=")
        if (problem := label_key_problem(key)) is not None:
            problems.append(f"{what}: {problem}")
        elif label_values and not names.is_label_value(value):
            problems.append(f"{what}: {key}={value!r}: not a valid label value")
        else:
            result[key] = value
    return result, problems


def _section_problems(section: KubernetesSection) -> list[str]:
    checks: list[tuple[str, object, bool]] = [
        ("namespace", section.namespace, section.namespace is None or names.is_dns_label(section.namespace)),
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


def _file_view(file: Mapping[str, Any], section: KubernetesSection) -> dict[str, Any]:
    """The config file with the section's values standing in for the flag-named keys."""
    view = dict(file)
    for field, file_key in _SECTION_TO_FILE_KEY.items():
        value = getattr(section, field)
        if value is None:
            continue
        view[file_key] = [f"{k}={v}" for k, v in value.items()] if isinstance(value, dict) else value
    return view


def _given(source: SettingsSource, field: str) -> bool:
    """Whether a setting of :class:`KubeJobSettings` came from a flag or the environment."""
    env = "OPSLEVEL_" + field.upper()
    return (source.args is not None and field in vars(source.args)) or env in source.environ


_RESOURCE_FLAGS = {
    ("requests", "cpu"): "job_pod_requests_cpu",
    ("requests", "memory"): "job_pod_requests_memory",
    ("requests", "ephemeral-storage"): "job_pod_requests_ephemeral_storage",
    ("limits", "cpu"): "job_pod_limits_cpu",
    ("limits", "memory"): "job_pod_limits_memory",
    ("limits", "ephemeral-storage"): "job_pod_limits_ephemeral_storage",
}


def _resources(
    source: SettingsSource, flags: KubeJobSettings, section: ResourceRequirements | None
) -> tuple[ResourceRequirements | None, list[str]]:
    lists: dict[str, dict[str, Quantity]] = {"requests": {}, "limits": {}}
    for (kind, resource), field in _RESOURCE_FLAGS.items():
        amount: int = getattr(flags, field)
        if amount:
            lists[kind][resource] = Quantity(f"{amount}m" if resource == "cpu" else f"{amount}Mi")
    for kind in ("requests", "limits"):
        for resource, quantity in (getattr(section, kind, None) or {}).items():
            field_name = _RESOURCE_FLAGS.get((kind, resource))
            if field_name is None or not _given(source, field_name):
                lists[kind][resource] = quantity
    problems = [
        f"resources: the {resource} request ({request}) is more than its limit ({lists['limits'][resource]})"
        for resource, request in lists["requests"].items()
        if resource in lists["limits"] and parse_quantity(request) > parse_quantity(lists["limits"][resource])
    ]
    if not lists["requests"] and not lists["limits"]:
        return None, problems
    return ResourceRequirements(requests=lists["requests"] or None, limits=lists["limits"] or None), problems


def read_section(file: Mapping[str, Any], source_name: str) -> KubernetesSection:
    """The ``kubernetes:`` section of a config file, checked; empty if the file has none."""
    raw = file.get("kubernetes")
    if raw is None:
        return KubernetesSection()
    try:
        section = from_wire(raw, KubernetesSection, where="kubernetes")
    except ObjectError as exc:
        raise ConfigError([f"{source_name}: {problem}" for problem in exc.problems]) from None
    problems = _section_problems(section)
    if problems:
        raise ConfigError([f"{source_name}: {problem}" for problem in problems])
    return section


def resolve(source: SettingsSource) -> JobPodConfig:
    """Resolve every job-pod setting; all problems are reported together in one ConfigError."""
    problems: list[str] = []
    try:
        section = read_section(source.file, source.source_name)
    except ConfigError as exc:
        problems.extend(exc.problems)
        section = KubernetesSection()
    view = _file_view(source.file, section)
    groups: dict[type[Any], Any] = {}
    for cls in (JobRunSettings, KubeJobSettings):
        try:
            groups[cls] = load(
                cls, args=source.args, environ=source.environ, file=view, source_name=source.source_name
            )
        except ConfigError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ConfigError(problems)
    run: JobRunSettings = groups[JobRunSettings]
    flags: KubeJobSettings = groups[KubeJobSettings]
    node_selector, selector_problems = _mapping(
        flags.job_pod_node_selector, "--job-pod-node-selector", label_values=True
    )
    annotations, annotation_problems = _mapping(
        flags.job_pod_annotations, "--job-pod-annotations", label_values=False
    )
    resources, resource_problems = _resources(source, flags, section.resources)
    problems = selector_problems + annotation_problems + resource_problems
    if problems:
        raise ConfigError(problems)
    return JobPodConfig(
        namespace=flags.job_pod_namespace,
        shell=run.job_pod_shell,
        workdir=run.job_pod_workdir or DEFAULT_WORKDIR,
        lifetime=run.job_pod_max_lifetime,
        max_wait=flags.job_pod_max_wait,
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
        tolerations=section.tolerations,
        affinity=section.affinity,
        owner=flags.job_pod_owner or socket.gethostname(),
    )
