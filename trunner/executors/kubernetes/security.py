"""Checks of the job pods' security settings: ``kubernetes.securityContext`` (the pod's) and
``kubernetes.containerSecurityContext`` (every container's: helper, init and job).

Each value the API server would refuse, or that would keep a container from starting (the kubelet
refuses ``runAsNonRoot`` with uid 0), is a problem at startup instead of a failed job later. A
container-only key written under the pod's ``securityContext`` is a problem too: Go's decoding drops
it silently, so a config that looks hardened (``allowPrivilegeEscalation: false``) was not.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from trunner.kube.objects import (
    AppArmorProfile,
    PodSecurityContext,
    SeccompProfile,
    SecurityContext,
    WindowsSecurityContextOptions,
)
from trunner.wire import camel

PROFILE_TYPES = ("RuntimeDefault", "Localhost", "Unconfined")
PROC_MOUNTS = ("Default", "Unmasked")
FS_GROUP_CHANGE_POLICIES = ("OnRootMismatch", "Always")
SUPPLEMENTAL_GROUPS_POLICIES = ("Merge", "Strict")
SE_LINUX_CHANGE_POLICIES = ("MountOption", "Recursive")
ID_MAX = 2**31 - 1

CONTAINER_ONLY = tuple(
    camel(f.name)
    for f in attrs.fields(SecurityContext)
    if f.name not in {g.name for g in attrs.fields(PodSecurityContext)}
)
"""Container securityContext keys that a pod securityContext does not have."""


def misplaced_container_keys(section: Any, where: str = "kubernetes") -> list[str]:
    """A problem per container-only key under the section's pod ``securityContext`` (matched
    case-insensitively, as the section's keys are)."""
    if not isinstance(section, Mapping):
        return []
    pod = next((v for k, v in section.items() if str(k).lower() == "securitycontext"), None)
    if not isinstance(pod, Mapping):
        return []
    by_lower = {name.lower(): name for name in CONTAINER_ONLY}
    return [
        f"{where}.securityContext.{key}: a container setting, which the pod securityContext does not "
        f"have; put it under {where}.containerSecurityContext (it applies to the helper, init and job "
        "containers)"
        for key in pod
        if str(key).lower() in by_lower
    ]


def _one_of(where: str, value: str | None, allowed: tuple[str, ...]) -> list[str]:
    if value is None or value in allowed:
        return []
    return [f"{where}: must be one of {', '.join(allowed)}, got {value!r}"]


def _profile(where: str, profile: SeccompProfile | AppArmorProfile | None) -> list[str]:
    if profile is None:
        return []
    problems = _one_of(f"{where}.type", profile.type, PROFILE_TYPES)
    if profile.type == "Localhost" and not profile.localhost_profile:
        problems.append(f"{where}.localhostProfile: required when the type is Localhost")
    if profile.type != "Localhost" and profile.localhost_profile is not None:
        problems.append(f"{where}.localhostProfile: only allowed when the type is Localhost")
    return problems


def _ids(where: str, **ids: int | None) -> list[str]:
    return [
        f"{where}.{name}: must be between 0 and {ID_MAX}, got {value}"
        for name, value in ids.items()
        if value is not None and not 0 <= value <= ID_MAX
    ]


def _windows(where: str, options: WindowsSecurityContextOptions | None) -> list[str]:
    if options is not None and options.host_process:
        return [f"{where}.windowsOptions.hostProcess: needs hostNetwork, which job pods never use"]
    return []


def pod_context_problems(context: PodSecurityContext | None, where: str) -> list[str]:
    if context is None:
        return []
    return [
        *_ids(
            where,
            runAsUser=context.run_as_user,
            runAsGroup=context.run_as_group,
            fsGroup=context.fs_group,
        ),
        *[
            problem
            for group in context.supplemental_groups or ()
            for problem in _ids(where, supplementalGroups=group)
        ],
        *_one_of(f"{where}.fsGroupChangePolicy", context.fs_group_change_policy, FS_GROUP_CHANGE_POLICIES),
        *_one_of(
            f"{where}.supplementalGroupsPolicy",
            context.supplemental_groups_policy,
            SUPPLEMENTAL_GROUPS_POLICIES,
        ),
        *_one_of(f"{where}.seLinuxChangePolicy", context.se_linux_change_policy, SE_LINUX_CHANGE_POLICIES),
        *_profile(f"{where}.seccompProfile", context.seccomp_profile),
        *_profile(f"{where}.appArmorProfile", context.app_armor_profile),
        *_windows(where, context.windows_options),
    ]


def container_context_problems(context: SecurityContext | None, where: str) -> list[str]:
    if context is None:
        return []
    problems = [
        *_ids(where, runAsUser=context.run_as_user, runAsGroup=context.run_as_group),
        *_one_of(f"{where}.procMount", context.proc_mount, PROC_MOUNTS),
        *_profile(f"{where}.seccompProfile", context.seccomp_profile),
        *_profile(f"{where}.appArmorProfile", context.app_armor_profile),
        *_windows(where, context.windows_options),
    ]
    for kind in ("add", "drop"):
        names = getattr(context.capabilities, kind, None) or ()
        problems += [
            f"{where}.capabilities.{kind}[{i}]: must be a capability name such as NET_BIND_SERVICE or ALL"
            for i, name in enumerate(names)
            if not name.strip()
        ]
    if context.allow_privilege_escalation is False:
        if context.privileged:
            problems.append(
                f"{where}: allowPrivilegeEscalation false and privileged true cannot be set together"
            )
        added = {
            name.upper().removeprefix("CAP_") for name in getattr(context.capabilities, "add", None) or ()
        }
        if "SYS_ADMIN" in added:
            problems.append(
                f"{where}: allowPrivilegeEscalation false and capabilities.add SYS_ADMIN cannot be set together"
            )
    return problems


def effective_problems(
    pod: PodSecurityContext | None, container: SecurityContext | None, where: str
) -> list[str]:
    """What the container fields over the pod fields amount to: the kubelet does not start a
    container that must run as non-root with uid 0."""
    non_root = _first(container and container.run_as_non_root, pod and pod.run_as_non_root)
    user = _first(container and container.run_as_user, pod and pod.run_as_user)
    if non_root and user == 0:
        return [f"{where}: runAsNonRoot true with runAsUser 0: the kubelet would not start the containers"]
    return []


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def agent_mode_problems(container: SecurityContext | None, where: str) -> list[str]:
    """Agent mode runs the init and job containers privileged as root (the pod's runAsUser is 0)."""
    if container is None:
        return []
    problems = []
    if container.allow_privilege_escalation is False:
        problems.append(
            f"{where}.allowPrivilegeEscalation: false contradicts agent mode, which runs the job "
            "containers privileged"
        )
    if container.privileged is False:
        problems.append(
            f"{where}.privileged: false contradicts agent mode, which runs the job containers privileged"
        )
    if container.run_as_non_root and container.run_as_user in (None, 0):
        problems.append(f"{where}.runAsNonRoot: true contradicts agent mode, which runs the job pod as root")
    return problems


def job_container_context(container: SecurityContext | None, *, agent_mode: bool) -> SecurityContext | None:
    """The security context of the init and job containers: agent mode makes them privileged."""
    if not agent_mode:
        return container
    return attrs.evolve(container or SecurityContext(), privileged=True)
