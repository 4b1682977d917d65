"""A runner pod of the chart's Deployment turned into a `podman run`, field by field, as the kubelet would run
it: args after the image's entrypoint, the environment with Secret, ConfigMap and downward-API values filled
in, envFrom, every volume mount (emptyDir as a tmpfs, ConfigMap and Secret volumes as read-only files), the
service account token the kubelet mounts, and the security context (user, groups, read-only root filesystem,
capabilities, privilege escalation). A field this translation does not know fails the run instead of being
ignored."""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

SERVICE_ACCOUNT_MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"

_POD_FIELDS = {
    "serviceAccountName",
    "automountServiceAccountToken",
    "terminationGracePeriodSeconds",
    "securityContext",
    "containers",
    "volumes",
}
_CONTAINER_FIELDS = {
    "name",
    "image",
    "imagePullPolicy",
    "args",
    "env",
    "envFrom",
    "ports",
    "livenessProbe",
    "readinessProbe",
    "startupProbe",
    "resources",
    "securityContext",
    "volumeMounts",
}
_SECURITY_FIELDS = {
    "runAsNonRoot",
    "runAsUser",
    "runAsGroup",
    "fsGroup",
    "seccompProfile",
    "readOnlyRootFilesystem",
    "allowPrivilegeEscalation",
    "capabilities",
}


@attrs.frozen
class PodRun:
    args: list[str]
    environment: dict[str, str]
    options: list[str]
    writable_paths: list[str]
    container: dict[str, Any]
    termination_grace: int


def _objects(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def _secret_data(secret: Mapping[str, Any]) -> dict[str, str]:
    data = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
    data.update(secret.get("stringData") or {})
    return data


_UNITS = {"": 1, "k": 1000, "M": 1000**2, "G": 1000**3, "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3}


def _size(quantity: str | int) -> str:
    """A Kubernetes quantity (a number of bytes, or with a decimal or binary suffix) in bytes."""
    found = re.fullmatch(r"(\d+)(k|M|G|Ki|Mi|Gi)?", str(quantity))
    assert found, f"the pod simulation does not read the quantity {quantity!r}"
    return str(int(found[1]) * _UNITS[found[2] or ""])


def pod_run(
    objects: list[dict[str, Any]],
    *,
    workdir: Path,
    pod_name: str,
    existing: list[dict[str, Any]] = (),  # type: ignore[assignment]
    service_account: Mapping[str, str] | None = None,
    kubernetes_service: tuple[str, int] | None = None,
) -> PodRun:
    """``objects``: the rendered chart; ``existing``: Secrets/ConfigMaps the operator made beforehand;
    ``service_account``: the files of the projected token volume (token, ca.crt, namespace)."""
    everything = [*objects, *existing]
    secrets = {name: _secret_data(o) for name, o in _objects(everything, "Secret").items()}
    config_maps = {name: dict(o.get("data") or {}) for name, o in _objects(everything, "ConfigMap").items()}
    [deployment] = [o for o in objects if o["kind"] == "Deployment"]
    namespace = deployment["metadata"]["namespace"]
    spec = deployment["spec"]["template"]["spec"]
    unknown = set(spec) - _POD_FIELDS
    assert not unknown, f"the pod simulation does not know the pod fields {sorted(unknown)}"
    [container] = spec["containers"]
    unknown = set(container) - _CONTAINER_FIELDS
    assert not unknown, f"the pod simulation does not know the container fields {sorted(unknown)}"

    environment: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        if "secretRef" in source:
            values = secrets[source["secretRef"]["name"]]
        else:
            values = config_maps[source["configMapRef"]["name"]]
        environment.update({prefix + k: v for k, v in values.items()})
    downward = {"metadata.name": pod_name, "metadata.namespace": namespace}
    for entry in container.get("env") or []:
        if "value" in entry:
            environment[entry["name"]] = entry["value"]
            continue
        ref = entry["valueFrom"]
        if "secretKeyRef" in ref:
            environment[entry["name"]] = secrets[ref["secretKeyRef"]["name"]][ref["secretKeyRef"]["key"]]
        elif "configMapKeyRef" in ref:
            key = ref["configMapKeyRef"]
            environment[entry["name"]] = config_maps[key["name"]][key["key"]]
        else:
            environment[entry["name"]] = downward[ref["fieldRef"]["fieldPath"]]

    security = {**(spec.get("securityContext") or {}), **(container.get("securityContext") or {})}
    unknown = set(security) - _SECURITY_FIELDS
    assert not unknown, f"the pod simulation does not know the security fields {sorted(unknown)}"
    options = ["--user", f"{security['runAsUser']}:{security.get('runAsGroup', 0)}"]
    if "fsGroup" in security:
        options += ["--group-add", str(security["fsGroup"])]
    if security.get("readOnlyRootFilesystem"):
        options += ["--read-only", "--read-only-tmpfs=false"]
    capabilities = security.get("capabilities") or {}
    assert not capabilities.get("add"), "the runner needs no added capability"
    for dropped in capabilities.get("drop") or []:
        options += ["--cap-drop", dropped]
    if security.get("allowPrivilegeEscalation") is False:
        options += ["--security-opt", "no-new-privileges"]

    volumes = {v["name"]: v for v in spec.get("volumes") or []}
    writable = []
    for index, mount in enumerate(container.get("volumeMounts") or []):
        volume = volumes[mount["name"]]
        path = mount["mountPath"]
        assert "subPath" not in mount, "the pod simulation mounts whole volumes"
        if "emptyDir" in volume:
            limit = (volume["emptyDir"] or {}).get("sizeLimit")
            size = f",size={_size(limit)}" if limit else ""
            options += ["--tmpfs", f"{path}:rw,mode=1777{size}"]
            writable.append(path)
            continue
        folder = workdir / f"volume-{index}"
        folder.mkdir()
        folder.chmod(0o755)
        if "configMap" in volume:
            files = config_maps[volume["configMap"]["name"]]
        elif "secret" in volume:
            files = secrets[volume["secret"]["secretName"]]
        else:
            raise AssertionError(f"the pod simulation does not know the volume {volume}")
        for key, text in files.items():
            (folder / key).write_text(text)
            (folder / key).chmod(0o644)
        assert mount.get("readOnly"), f"{path}: ConfigMap and Secret volumes are mounted read-only"
        options += ["--volume", f"{folder}:{path}:ro"]

    if spec.get("automountServiceAccountToken", True) and service_account is not None:
        folder = workdir / "serviceaccount"
        folder.mkdir()
        folder.chmod(0o755)
        for key, text in service_account.items():
            (folder / key).write_text(text)
            (folder / key).chmod(0o644)
        options += ["--volume", f"{folder}:{SERVICE_ACCOUNT_MOUNT}:ro"]
    if kubernetes_service is not None:
        environment["KUBERNETES_SERVICE_HOST"], port = kubernetes_service[0], kubernetes_service[1]
        environment["KUBERNETES_SERVICE_PORT"] = str(port)
    return PodRun(
        args=list(container.get("args") or []),
        environment=environment,
        options=options,
        writable_paths=writable,
        container=container,
        termination_grace=int(spec["terminationGracePeriodSeconds"]),
    )
