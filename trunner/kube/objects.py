"""attrs models of the Kubernetes objects the job layer writes and reads, and their converters.

Only the subset trunner emits (Secret, ConfigMap, PodDisruptionBudget, Pod) and the user-supplied pod
settings it passes through (security context, tolerations, affinity, resources) are modelled for
writing; a Pod is read back only as far as waiting for it needs (:class:`PodObservation`).
Attribute names are snake_case; on the wire they are camelCase and ``None`` is left out.

Two converters: :data:`strict` for hand-written configuration (unknown keys are errors, since the
API server would silently drop a misspelt field) and :data:`lenient` for what the API server sends.
"""

from __future__ import annotations

import decimal
import re
from typing import Any, NewType, TypeVar

import attrs

from trunner.wire import WireConverter, WireError, structure

T = TypeVar("T")

Quantity = NewType("Quantity", str)
"""A Kubernetes resource quantity such as ``500m``, ``1Gi`` or ``2``."""

# --- metadata -----------------------------------------------------------------------------------


@attrs.frozen
class ObjectMeta:
    name: str
    namespace: str | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None


@attrs.frozen
class OwnerReference:
    api_version: str
    kind: str
    name: str
    uid: str


@attrs.frozen
class LabelSelectorRequirement:
    key: str
    operator: str
    values: tuple[str, ...] | None = None


@attrs.frozen
class LabelSelector:
    match_labels: dict[str, str] | None = None
    match_expressions: tuple[LabelSelectorRequirement, ...] | None = None


# --- ConfigMap and PodDisruptionBudget ---------------------------------------------------------


@attrs.frozen(kw_only=True)
class ConfigMap:
    api_version: str = "v1"
    kind: str = "ConfigMap"
    metadata: ObjectMeta
    immutable: bool = True
    data: dict[str, str]


@attrs.frozen(kw_only=True)
class Secret:
    api_version: str = "v1"
    kind: str = "Secret"
    metadata: ObjectMeta
    immutable: bool = True
    type: str = "Opaque"
    data: dict[str, str]
    """Values base64-encoded, as the API stores them."""


@attrs.frozen
class PodDisruptionBudgetSpec:
    selector: LabelSelector
    max_unavailable: int


@attrs.frozen(kw_only=True)
class PodDisruptionBudget:
    api_version: str = "policy/v1"
    kind: str = "PodDisruptionBudget"
    metadata: ObjectMeta
    spec: PodDisruptionBudgetSpec


# --- pod settings a user may pass through ------------------------------------------------------


@attrs.frozen
class ResourceRequirements:
    requests: dict[str, Quantity] | None = None
    limits: dict[str, Quantity] | None = None


@attrs.frozen
class SELinuxOptions:
    user: str | None = None
    role: str | None = None
    type: str | None = None
    level: str | None = None


@attrs.frozen
class SeccompProfile:
    type: str
    localhost_profile: str | None = None


@attrs.frozen
class AppArmorProfile:
    type: str
    localhost_profile: str | None = None


@attrs.frozen
class Sysctl:
    name: str
    value: str


@attrs.frozen
class WindowsSecurityContextOptions:
    gmsa_credential_spec_name: str | None = None
    gmsa_credential_spec: str | None = None
    run_as_user_name: str | None = None
    host_process: bool | None = None


@attrs.frozen
class PodSecurityContext:
    run_as_user: int | None = None
    run_as_group: int | None = None
    run_as_non_root: bool | None = None
    fs_group: int | None = None
    fs_group_change_policy: str | None = None
    supplemental_groups: tuple[int, ...] | None = None
    supplemental_groups_policy: str | None = None
    se_linux_options: SELinuxOptions | None = None
    se_linux_change_policy: str | None = None
    seccomp_profile: SeccompProfile | None = None
    app_armor_profile: AppArmorProfile | None = None
    sysctls: tuple[Sysctl, ...] | None = None
    windows_options: WindowsSecurityContextOptions | None = None


@attrs.frozen
class Toleration:
    key: str | None = None
    operator: str | None = None
    value: str | None = None
    effect: str | None = None
    toleration_seconds: int | None = None


@attrs.frozen
class NodeSelectorRequirement:
    key: str
    operator: str
    values: tuple[str, ...] | None = None


@attrs.frozen
class NodeSelectorTerm:
    match_expressions: tuple[NodeSelectorRequirement, ...] | None = None
    match_fields: tuple[NodeSelectorRequirement, ...] | None = None


@attrs.frozen
class NodeSelector:
    node_selector_terms: tuple[NodeSelectorTerm, ...]


@attrs.frozen
class PreferredSchedulingTerm:
    weight: int
    preference: NodeSelectorTerm


@attrs.frozen
class NodeAffinity:
    required_during_scheduling_ignored_during_execution: NodeSelector | None = None
    preferred_during_scheduling_ignored_during_execution: tuple[PreferredSchedulingTerm, ...] | None = None


@attrs.frozen
class PodAffinityTerm:
    topology_key: str
    label_selector: LabelSelector | None = None
    namespaces: tuple[str, ...] | None = None
    namespace_selector: LabelSelector | None = None
    match_label_keys: tuple[str, ...] | None = None
    mismatch_label_keys: tuple[str, ...] | None = None


@attrs.frozen
class WeightedPodAffinityTerm:
    weight: int
    pod_affinity_term: PodAffinityTerm


@attrs.frozen
class PodAffinity:
    required_during_scheduling_ignored_during_execution: tuple[PodAffinityTerm, ...] | None = None
    preferred_during_scheduling_ignored_during_execution: tuple[WeightedPodAffinityTerm, ...] | None = None


@attrs.frozen
class PodAntiAffinity:
    required_during_scheduling_ignored_during_execution: tuple[PodAffinityTerm, ...] | None = None
    preferred_during_scheduling_ignored_during_execution: tuple[WeightedPodAffinityTerm, ...] | None = None


@attrs.frozen
class Affinity:
    node_affinity: NodeAffinity | None = None
    pod_affinity: PodAffinity | None = None
    pod_anti_affinity: PodAntiAffinity | None = None


# --- Pod -----------------------------------------------------------------------------------------


@attrs.frozen
class SecretKeySelector:
    name: str
    key: str


@attrs.frozen
class EnvVarSource:
    secret_key_ref: SecretKeySelector


@attrs.frozen
class EnvVar:
    name: str
    value: str | None = None
    value_from: EnvVarSource | None = None


@attrs.frozen
class VolumeMount:
    name: str
    mount_path: str
    read_only: bool | None = None


@attrs.frozen
class Capabilities:
    add: tuple[str, ...] | None = None
    drop: tuple[str, ...] | None = None


@attrs.frozen
class SecurityContext:
    """A container's security context: every field of the v1 ``SecurityContext``."""

    allow_privilege_escalation: bool | None = None
    app_armor_profile: AppArmorProfile | None = None
    capabilities: Capabilities | None = None
    privileged: bool | None = None
    proc_mount: str | None = None
    read_only_root_filesystem: bool | None = None
    run_as_group: int | None = None
    run_as_non_root: bool | None = None
    run_as_user: int | None = None
    se_linux_options: SELinuxOptions | None = None
    seccomp_profile: SeccompProfile | None = None
    windows_options: WindowsSecurityContextOptions | None = None


@attrs.frozen
class Container:
    name: str
    image: str
    command: tuple[str, ...]
    image_pull_policy: str | None = None
    env: tuple[EnvVar, ...] | None = None
    resources: ResourceRequirements | None = None
    security_context: SecurityContext | None = None
    volume_mounts: tuple[VolumeMount, ...] | None = None


@attrs.frozen
class ConfigMapVolumeSource:
    name: str
    default_mode: int | None = None


@attrs.frozen
class KeyToPath:
    key: str
    path: str


@attrs.frozen
class SecretVolumeSource:
    secret_name: str
    items: tuple[KeyToPath, ...] | None = None
    default_mode: int | None = None


@attrs.frozen
class EmptyDirVolumeSource:
    medium: str | None = None


@attrs.frozen
class Volume:
    name: str
    config_map: ConfigMapVolumeSource | None = None
    secret: SecretVolumeSource | None = None
    empty_dir: EmptyDirVolumeSource | None = None


@attrs.frozen
class PodSpec:
    containers: tuple[Container, ...]
    restart_policy: str = "Never"
    termination_grace_period_seconds: int | None = None
    init_containers: tuple[Container, ...] | None = None
    volumes: tuple[Volume, ...] | None = None
    security_context: PodSecurityContext | None = None
    service_account_name: str | None = None
    automount_service_account_token: bool | None = None
    node_selector: dict[str, str] | None = None
    dns_policy: str | None = None
    tolerations: tuple[Toleration, ...] | None = None
    affinity: Affinity | None = None


@attrs.frozen(kw_only=True)
class Pod:
    api_version: str = "v1"
    kind: str = "Pod"
    metadata: ObjectMeta
    spec: PodSpec


# --- a Pod as read back while waiting for it ----------------------------------------------------


@attrs.frozen
class ObservedMeta:
    name: str = ""
    resource_version: str = ""
    deletion_timestamp: str | None = None


@attrs.frozen
class ContainerStateWaiting:
    reason: str = ""
    message: str = ""


@attrs.frozen
class ContainerStateRunning:
    started_at: str | None = None


@attrs.frozen
class ContainerStateTerminated:
    exit_code: int = 0
    reason: str = ""
    message: str = ""
    signal: int | None = None


@attrs.frozen
class ContainerState:
    waiting: ContainerStateWaiting | None = None
    running: ContainerStateRunning | None = None
    terminated: ContainerStateTerminated | None = None


@attrs.frozen
class ContainerStatus:
    name: str = ""
    ready: bool = False
    restart_count: int = 0
    state: ContainerState | None = None


@attrs.frozen
class PodCondition:
    type: str = ""
    status: str = ""
    reason: str = ""
    message: str = ""


@attrs.frozen
class PodStatus:
    phase: str = ""
    reason: str = ""
    message: str = ""
    conditions: tuple[PodCondition, ...] = ()
    init_container_statuses: tuple[ContainerStatus, ...] = ()
    container_statuses: tuple[ContainerStatus, ...] = ()


@attrs.frozen
class PodObservation:
    metadata: ObservedMeta = ObservedMeta()
    status: PodStatus = PodStatus()


@attrs.frozen
class ListMeta:
    resource_version: str = ""


@attrs.frozen
class PodObservationList:
    metadata: ListMeta = ListMeta()
    items: tuple[PodObservation, ...] = ()


# --- converters ----------------------------------------------------------------------------------


_QUANTITY = re.compile(
    r"(?P<number>[+-]?(?:\d+\.?\d*|\.\d+))(?P<suffix>[eE][+-]?\d+|Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|)"
)
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}


def parse_quantity(text: str) -> decimal.Decimal:
    """The value of a Kubernetes quantity (``500m`` -> 0.5, ``1Gi`` -> 1073741824)."""
    match = _QUANTITY.fullmatch(text)
    if match is None:
        raise ValueError(f"not a Kubernetes quantity: {text!r} (e.g. 500m, 2, 1Gi, 512Mi)")
    value, suffix = decimal.Decimal(match["number"]), match["suffix"]
    if suffix in _BINARY:
        return value * _BINARY[suffix]
    if suffix[:1] in ("e", "E"):
        return value.scaleb(int(suffix[1:]))
    return value.scaleb(_DECIMAL[suffix])


def _structure_quantity(value: Any, _: Any) -> Quantity:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise TypeError(f"expected a quantity such as 500m or 1Gi, got {value!r}")
    text = value if isinstance(value, str) else format(value, "g") if isinstance(value, float) else str(value)
    parse_quantity(text)
    return Quantity(text)


strict = WireConverter(forbid_extra_keys=True, omit_none=True, show_value=repr)
lenient = WireConverter(forbid_extra_keys=False, omit_none=True, show_value=repr)
for _converter in (strict, lenient):
    _converter.register_structure_hook(Quantity, _structure_quantity)


def to_wire(obj: Any) -> dict[str, Any]:
    """The JSON-ready form of a model: camelCase keys, ``None`` left out."""
    data: dict[str, Any] = strict.unstructure(obj)
    return data


ObjectError = WireError
"""Data that does not fit a model; ``problems`` are ``<dotted.camelCase.path>: <reason>``."""


def from_wire(data: Any, cls: type[T], *, where: str, converter: WireConverter = strict) -> T:
    """Structure ``data`` as ``cls``, naming each bad field by its wire path under ``where``."""
    return structure(data, cls, root=where, converter=converter)
