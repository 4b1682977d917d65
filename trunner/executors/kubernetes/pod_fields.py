"""Job pod fields the ``kubernetes:`` section may set beyond the Go runner's: ``imagePullSecrets``
(images from private registries), ``priorityClassName``, extra pod ``labels``, ``runtimeClassName``
(gVisor or Kata sandboxes), ``topologySpreadConstraints``, ``hostAliases`` and ``dnsConfig``.
Each is checked here as the API server checks it, so a mistake fails at startup, not every job."""

from __future__ import annotations

import ipaddress

import attrs

from trunner.executors.kubernetes.names import INSTANCE_LABEL, MANAGED_BY_LABEL, OWNER_LABEL
from trunner.kube.names import is_dns_subdomain, is_label_value, label_key_problem
from trunner.kube.objects import HostAlias, LocalObjectReference, PodDNSConfig, TopologySpreadConstraint

WHEN_UNSATISFIABLE = ("DoNotSchedule", "ScheduleAnyway")
INCLUSION_POLICIES = ("Honor", "Ignore")
MAX_NAMESERVERS = 3
MAX_SEARCHES = 32
MAX_SEARCH_CHARACTERS = 2048
RESERVED_LABELS = (INSTANCE_LABEL, MANAGED_BY_LABEL, OWNER_LABEL)
"""Labels trunner sets on every job object to find it again; the section may not change them."""


@attrs.frozen
class PodFields:
    image_pull_secrets: tuple[LocalObjectReference, ...] | None = None
    priority_class_name: str | None = None
    labels: dict[str, str] | None = None
    runtime_class_name: str | None = None
    topology_spread_constraints: tuple[TopologySpreadConstraint, ...] | None = None
    host_aliases: tuple[HostAlias, ...] | None = None
    dns_config: PodDNSConfig | None = None


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def pod_field_problems(fields: PodFields, dns_policy: str | None) -> list[str]:
    """What the API server would refuse in ``fields`` (with the pod's final ``dnsPolicy``), as
    ``kubernetes.<key>: <reason>``."""
    problems: list[str] = []
    names = [secret.name for secret in fields.image_pull_secrets or ()]
    for index, name in enumerate(names):
        if not is_dns_subdomain(name):
            problems.append(
                f"kubernetes.imagePullSecrets[{index}].name: {name!r} is not a Secret name (DNS-1123 subdomain)"
            )
        elif name in names[:index]:
            problems.append(f"kubernetes.imagePullSecrets[{index}].name: {name!r} is listed twice")
    for key in ("priority_class_name", "runtime_class_name"):
        value = getattr(fields, key)
        if value is not None and not is_dns_subdomain(value):
            wire = "priorityClassName" if key == "priority_class_name" else "runtimeClassName"
            problems.append(f"kubernetes.{wire}: {value!r} is not a DNS-1123 subdomain")
    for key, value in (fields.labels or {}).items():
        if (problem := label_key_problem(key)) is not None:
            problems.append(f"kubernetes.labels: {problem}")
        elif key in RESERVED_LABELS:
            problems.append(f"kubernetes.labels: {key!r} is set by trunner to find the job's objects")
        elif not is_label_value(value):
            problems.append(f"kubernetes.labels: {key}={value!r} is not a valid label value")
    problems += _spread_problems(fields.topology_spread_constraints or ())
    for index, alias in enumerate(fields.host_aliases or ()):
        where = f"kubernetes.hostAliases[{index}]"
        if not _is_ip(alias.ip):
            problems.append(f"{where}.ip: {alias.ip!r} is not an IP address")
        if not alias.hostnames:
            problems.append(f"{where}.hostnames: at least one host name is needed")
        for name in alias.hostnames or ():
            if not is_dns_subdomain(name):
                problems.append(f"{where}.hostnames: {name!r} is not a DNS-1123 subdomain")
    problems += _dns_problems(fields.dns_config, dns_policy)
    return problems


def _spread_problems(constraints: tuple[TopologySpreadConstraint, ...]) -> list[str]:
    problems: list[str] = []
    seen: set[tuple[str, str]] = set()
    for index, constraint in enumerate(constraints):
        where = f"kubernetes.topologySpreadConstraints[{index}]"
        if constraint.max_skew < 1:
            problems.append(f"{where}.maxSkew: must be 1 or more, got {constraint.max_skew}")
        if (problem := label_key_problem(constraint.topology_key)) is not None:
            problems.append(f"{where}.topologyKey: {problem}")
        if constraint.when_unsatisfiable not in WHEN_UNSATISFIABLE:
            problems.append(
                f"{where}.whenUnsatisfiable: must be one of {', '.join(WHEN_UNSATISFIABLE)}, "
                f"got {constraint.when_unsatisfiable!r}"
            )
        if constraint.min_domains is not None:
            if constraint.min_domains < 1:
                problems.append(f"{where}.minDomains: must be 1 or more, got {constraint.min_domains}")
            elif constraint.when_unsatisfiable != "DoNotSchedule":
                problems.append(f"{where}.minDomains: only with whenUnsatisfiable: DoNotSchedule")
        for key in ("node_affinity_policy", "node_taints_policy"):
            value = getattr(constraint, key)
            if value is not None and value not in INCLUSION_POLICIES:
                wire = "nodeAffinityPolicy" if key == "node_affinity_policy" else "nodeTaintsPolicy"
                problems.append(
                    f"{where}.{wire}: must be one of {', '.join(INCLUSION_POLICIES)}, got {value!r}"
                )
        for key in constraint.match_label_keys or ():
            if (problem := label_key_problem(key)) is not None:
                problems.append(f"{where}.matchLabelKeys: {problem}")
        pair = (constraint.topology_key, constraint.when_unsatisfiable)
        if pair in seen:
            problems.append(f"{where}: a second constraint for {pair[0]!r} with {pair[1]}")
        seen.add(pair)
    return problems


def _dns_problems(config: PodDNSConfig | None, dns_policy: str | None) -> list[str]:
    if config is None:
        if dns_policy == "None":
            return ["kubernetes.dnsConfig: dnsPolicy None needs a dnsConfig with at least one nameserver"]
        return []
    problems: list[str] = []
    nameservers = config.nameservers or ()
    if len(nameservers) > MAX_NAMESERVERS:
        problems.append(
            f"kubernetes.dnsConfig.nameservers: at most {MAX_NAMESERVERS}, got {len(nameservers)}"
        )
    problems += [
        f"kubernetes.dnsConfig.nameservers: {n!r} is not an IP address" for n in nameservers if not _is_ip(n)
    ]
    if dns_policy == "None" and not nameservers:
        problems.append("kubernetes.dnsConfig.nameservers: dnsPolicy None needs at least one")
    searches = config.searches or ()
    if len(searches) > MAX_SEARCHES:
        problems.append(f"kubernetes.dnsConfig.searches: at most {MAX_SEARCHES}, got {len(searches)}")
    if sum(len(s) for s in searches) + max(len(searches) - 1, 0) > MAX_SEARCH_CHARACTERS:
        problems.append(f"kubernetes.dnsConfig.searches: more than {MAX_SEARCH_CHARACTERS} characters in all")
    problems += [
        f"kubernetes.dnsConfig.searches: {s!r} is not a DNS-1123 subdomain"
        for s in searches
        if not is_dns_subdomain(s.removesuffix("."))
    ]
    for index, option in enumerate(config.options or ()):
        if not option.name:
            problems.append(f"kubernetes.dnsConfig.options[{index}].name: required")
    return problems
