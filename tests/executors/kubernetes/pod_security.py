"""The Pod Security Standards' baseline and restricted levels as checks of a pod spec, written from
https://kubernetes.io/docs/concepts/security/pod-security-standards/ (the policy pod-security
admission enforces when a namespace is labelled ``pod-security.kubernetes.io/enforce``)."""

from __future__ import annotations

from typing import Any

BASELINE_CAPABILITIES = frozenset(
    {
        "AUDIT_WRITE",
        "CHOWN",
        "DAC_OVERRIDE",
        "FOWNER",
        "FSETID",
        "KILL",
        "MKNOD",
        "NET_BIND_SERVICE",
        "SETFCAP",
        "SETGID",
        "SETPCAP",
        "SETUID",
        "SYS_CHROOT",
    }
)
SELINUX_TYPES = frozenset({"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"})
SAFE_SYSCTLS = frozenset(
    {
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time",
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
    }
)
RESTRICTED_VOLUMES = frozenset(
    {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
)


def _containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        *spec.get("initContainers", []),
        *spec.get("containers", []),
        *spec.get("ephemeralContainers", []),
    ]


def baseline_violations(pod: dict[str, Any]) -> list[str]:
    spec = pod["spec"]
    pod_sc = spec.get("securityContext") or {}
    found = []
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(key):
            found.append(f"host namespaces: spec.{key}")
    if (pod_sc.get("windowsOptions") or {}).get("hostProcess"):
        found.append("HostProcess: spec.securityContext.windowsOptions.hostProcess")
    for volume in spec.get("volumes", []):
        if "hostPath" in volume:
            found.append(f"hostPath volume {volume['name']}")
    for sysctl in pod_sc.get("sysctls") or []:
        if sysctl["name"] not in SAFE_SYSCTLS:
            found.append(f"sysctl {sysctl['name']}")
    contexts = [("spec.securityContext", pod_sc)]
    for container in _containers(spec):
        where = f"container {container['name']}"
        sc = container.get("securityContext") or {}
        contexts.append((f"{where} securityContext", sc))
        if sc.get("privileged"):
            found.append(f"privileged: {where}")
        if (sc.get("windowsOptions") or {}).get("hostProcess"):
            found.append(f"HostProcess: {where}")
        for capability in (sc.get("capabilities") or {}).get("add") or []:
            if capability not in BASELINE_CAPABILITIES:
                found.append(f"capabilities: {where} adds {capability}")
        for port in container.get("ports", []):
            if port.get("hostPort"):
                found.append(f"host ports: {where}")
        if sc.get("procMount") not in (None, "Default"):
            found.append(f"/proc mount type: {where}")
    for where, sc in contexts:
        if (sc.get("appArmorProfile") or {}).get("type") not in (None, "RuntimeDefault", "Localhost"):
            found.append(f"AppArmor: {where}")
        selinux = sc.get("seLinuxOptions") or {}
        if selinux.get("type", "") not in SELINUX_TYPES or selinux.get("user") or selinux.get("role"):
            found.append(f"SELinux: {where}")
        if (sc.get("seccompProfile") or {}).get("type") == "Unconfined":
            found.append(f"seccomp: {where} is Unconfined")
    return found


def restricted_violations(pod: dict[str, Any]) -> list[str]:
    """Every control of the restricted level that ``pod`` breaks (the baseline level's included)."""
    spec = pod["spec"]
    pod_sc = spec.get("securityContext") or {}
    found = baseline_violations(pod)
    for volume in spec.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            found.append(f"volume types: {volume['name']} is {sorted(kinds)}")
    if pod_sc.get("runAsUser") == 0:
        found.append("non-root user: spec.securityContext.runAsUser is 0")
    pod_seccomp = (pod_sc.get("seccompProfile") or {}).get("type")
    for container in _containers(spec):
        where = f"container {container['name']}"
        sc = container.get("securityContext") or {}
        if sc.get("allowPrivilegeEscalation") is not False:
            found.append(f"privilege escalation: {where} does not set allowPrivilegeEscalation false")
        non_root = sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))
        if non_root is not True:
            found.append(f"running as non-root: {where}")
        if sc.get("runAsUser") == 0:
            found.append(f"non-root user: {where} runAsUser is 0")
        seccomp = (sc.get("seccompProfile") or {}).get("type", pod_seccomp)
        if seccomp not in ("RuntimeDefault", "Localhost"):
            found.append(f"seccomp: {where} has no RuntimeDefault or Localhost profile")
        capabilities = sc.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            found.append(f"capabilities: {where} does not drop ALL")
        for capability in capabilities.get("add") or []:
            if capability != "NET_BIND_SERVICE":
                found.append(f"capabilities: {where} adds {capability}")
    return found
