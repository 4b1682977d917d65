"""Where the Kubernetes API is and how to authenticate: kubeconfig files or the in-cluster
service account, resolved into one :class:`KubeConfig`.

Own parser rather than a library: lightkube reads one ``KUBECONFIG`` file only, reads the
service-account token once and accepts exec plugins of ``v1alpha1``/``v1beta1`` only (not
``v1``); kr8s pulls in anyio-based plumbing for what is ~200 lines of data mapping here.

Order, as client-go's loading rules: the files of ``KUBECONFIG`` (``:``-separated, merged so that
the first file to define a name or ``current-context`` wins) or else ``~/.kube/config``; when
neither exists, the in-cluster service account (``KUBERNETES_SERVICE_HOST``/``PORT``).
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import yaml
from cattrs.gen import make_dict_structure_fn, override

from trunner.kube.auth import (
    AuthSpec,
    ExecAuth,
    ExecClusterInfo,
    ExecEnvVar,
    ExecPluginSpec,
    StaticAuth,
    TokenFileAuth,
)
from trunner.kube.errors import KubeConfigError
from trunner.net.proxy import Proxy, ProxyEnvironment, ProxyError, parse_proxy
from trunner.wire import WireConverter, WireError, structure

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


@attrs.frozen
class KubeConfig:
    """Everything needed to reach one cluster as one user."""

    server: str
    """Base URL without a trailing slash, e.g. ``https://10.0.0.1:6443``."""
    namespace: str
    auth: AuthSpec
    ca_pem: bytes | None = None
    """Trusted CA bundle; None trusts the system's CAs."""
    insecure_skip_tls_verify: bool = False
    tls_server_name: str | None = None
    client_cert_pem: bytes | None = None
    client_key_pem: bytes | None = None
    source: str = ""
    """Where this came from, for messages: ``kubeconfig /path (context x)`` or ``in-cluster``."""
    proxy: Proxy | None = None
    """The cluster's ``proxy-url``, else the environment's proxy for the server (client-go's order)."""


# --- kubeconfig file model (keys as written in the file) ----------------------------------------


@attrs.frozen
class _ExecEnv:
    name: str
    value: str = ""


@attrs.frozen
class _Exec:
    api_version: str = ""
    command: str = ""
    args: tuple[str, ...] = ()
    env: tuple[_ExecEnv, ...] | None = None
    install_hint: str = ""
    provide_cluster_info: bool = False
    interactive_mode: str = ""


@attrs.frozen
class _Cluster:
    server: str = ""
    certificate_authority: str = ""
    certificate_authority_data: str = ""
    insecure_skip_tls_verify: bool = False
    tls_server_name: str = ""
    proxy_url: str = ""
    extensions: tuple[Any, ...] | None = None


@attrs.frozen
class _AuthProvider:
    name: str = ""


@attrs.frozen
class _User:
    token: str = ""
    token_file: str = ""
    client_certificate: str = ""
    client_certificate_data: str = ""
    client_key: str = ""
    client_key_data: str = ""
    username: str = ""
    password: str = ""
    exec: _Exec | None = None
    auth_provider: _AuthProvider | None = None


@attrs.frozen
class _Context:
    cluster: str = ""
    user: str = ""
    namespace: str = ""


def _converter() -> WireConverter:
    # kubeconfig keys are hyphenated; client-go accepts numbers as text and "true"/"false" as flags.
    conv = WireConverter(forbid_extra_keys=False, camel_case=False)

    def text(value: Any, _: Any) -> str:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise TypeError(f"expected text, got {type(value).__name__}")
        return str(value)

    def flag(value: Any, _: Any) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise TypeError(f"expected true or false, got {value!r}")

    conv.register_structure_hook(str, text)
    conv.register_structure_hook(bool, flag)

    def hyphens(cls: type[Any], **extra: str) -> None:
        renames: dict[str, Any] = {
            a.name: override(rename=a.name.replace("_", "-")) for a in attrs.fields(cls)
        }
        renames.update({name: override(rename=key) for name, key in extra.items()})
        conv.register_structure_hook(cls, make_dict_structure_fn(cls, conv, **renames))

    hyphens(_Cluster)
    hyphens(_User, token_file="tokenFile")
    hyphens(_Context)
    conv.register_structure_hook(
        _Exec,
        make_dict_structure_fn(
            _Exec,
            conv,
            api_version=override(rename="apiVersion"),
            install_hint=override(rename="installHint"),
            provide_cluster_info=override(rename="provideClusterInfo"),
            interactive_mode=override(rename="interactiveMode"),
        ),
    )
    return conv


_conv = _converter()


@attrs.define
class _Merged:
    """The union of the kubeconfig files; the first file to define each name wins."""

    clusters: dict[str, tuple[_Cluster, Path]] = attrs.Factory(dict)
    users: dict[str, tuple[_User, Path]] = attrs.Factory(dict)
    contexts: dict[str, tuple[_Context, Path]] = attrs.Factory(dict)
    current_context: str = ""
    current_context_file: Path | None = None


_SECTIONS: dict[str, tuple[str, type[Any]]] = {
    "clusters": ("cluster", _Cluster),
    "users": ("user", _User),
    "contexts": ("context", _Context),
}


def _read_file(path: Path, merged: _Merged) -> None:
    where = str(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise KubeConfigError(where, f"cannot read kubeconfig: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise KubeConfigError(where, f"not valid YAML: {exc}") from None
    if data is None:
        return
    if not isinstance(data, dict):
        raise KubeConfigError(where, "expected a mapping at the top level (a kubeconfig file)")
    for section, (body_key, model) in _SECTIONS.items():
        entries = data.get(section)
        if entries is None:
            entries = []
        if not isinstance(entries, list):
            raise KubeConfigError(where, f"{section}: expected a list")
        target: dict[str, tuple[Any, Path]] = getattr(merged, section)
        for index, entry in enumerate(entries):
            if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry["name"]:
                raise KubeConfigError(where, f"{section}[{index}]: expected a mapping with a name")
            name = entry["name"]
            body = entry.get(body_key) or {}
            if not isinstance(body, dict):
                raise KubeConfigError(where, f"{section}[{index}] ({name}).{body_key}: expected a mapping")
            try:
                parsed = structure(
                    body, model, root=f"{section}[{index}] ({name}).{body_key}", converter=_conv
                )
            except WireError as exc:
                raise KubeConfigError(where, str(exc)) from None
            target.setdefault(name, (parsed, path))
    current = data.get("current-context")
    if current and not merged.current_context:
        if not isinstance(current, str):
            raise KubeConfigError(where, "current-context: expected a context name")
        merged.current_context = current
        merged.current_context_file = path


def _resolve(path_text: str, base: Path) -> Path:
    path = Path(path_text).expanduser()
    return path if path.is_absolute() else base.parent / path


def _read_bytes(path: Path, where: str, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise KubeConfigError(where, f"{what} {path}: cannot read: {exc.strerror or exc}") from None


def _b64(data: str, where: str, what: str) -> bytes:
    try:
        return base64.b64decode("".join(data.split()), validate=True)
    except (binascii.Error, ValueError):
        raise KubeConfigError(where, f"{what}: not valid base64") from None


def _pem_or_file(data: str, file: str, base: Path, where: str, what: str) -> bytes | None:
    if data:
        return _b64(data, where, f"{what}-data")
    if file:
        return _read_bytes(_resolve(file, base), where, what)
    return None


def _user_auth(name: str, user: _User, base: Path, where: str, cluster: ExecClusterInfo) -> AuthSpec:
    if user.auth_provider is not None:
        raise KubeConfigError(
            where,
            f"user {name!r}: auth-provider {user.auth_provider.name!r} is not supported "
            "(removed from Kubernetes clients; use an exec credential plugin)",
        )
    if user.exec is not None:
        plugin = user.exec
        if not plugin.command:
            raise KubeConfigError(where, f"user {name!r}: exec.command is missing")
        if not plugin.api_version:
            raise KubeConfigError(where, f"user {name!r}: exec.apiVersion is missing")
        command = plugin.command
        if os.sep in command and not Path(command).is_absolute():
            command = str(base.parent / command)
        return ExecAuth(
            ExecPluginSpec(
                api_version=plugin.api_version,
                command=command,
                args=plugin.args,
                env=tuple(ExecEnvVar(var.name, var.value) for var in plugin.env or ()),
                install_hint=plugin.install_hint,
                provide_cluster_info=plugin.provide_cluster_info,
                interactive_mode=plugin.interactive_mode or "IfAvailable",
            ),
            cluster,
        )
    if user.token:
        return StaticAuth(user.token)
    if user.token_file:
        return TokenFileAuth(_resolve(user.token_file, base))
    if user.username or user.password:
        raise KubeConfigError(
            where, f"user {name!r}: username/password (basic auth) is not supported by Kubernetes"
        )
    return StaticAuth(None)


def _server(text: str, where: str, cluster_name: str) -> str:
    if not text:
        raise KubeConfigError(where, f"cluster {cluster_name!r} has no server")
    if not text.startswith(("https://", "http://")):
        raise KubeConfigError(where, f"cluster {cluster_name!r}: server {text!r} must be an http(s) URL")
    return text.rstrip("/")


def _from_merged(merged: _Merged, files: list[Path], context: str | None) -> KubeConfig:
    listed = ", ".join(str(f) for f in files)
    name = context or merged.current_context
    if not name:
        raise KubeConfigError(listed, "no current-context is set (and no context was chosen)")
    if name not in merged.contexts:
        where = str(merged.current_context_file) if not context and merged.current_context_file else listed
        raise KubeConfigError(where, f"context {name!r} is not defined")
    ctx, ctx_file = merged.contexts[name]
    where = str(ctx_file)
    if not ctx.cluster or ctx.cluster not in merged.clusters:
        raise KubeConfigError(
            where, f"context {name!r} refers to cluster {ctx.cluster!r}, which is not defined"
        )
    cluster, cluster_file = merged.clusters[ctx.cluster]
    cluster_where = str(cluster_file)
    try:
        proxy = (
            parse_proxy(cluster.proxy_url, f"cluster {ctx.cluster!r}: proxy-url")
            if cluster.proxy_url
            else None
        )
    except ProxyError as exc:
        raise KubeConfigError(cluster_where, str(exc)) from None
    server = _server(cluster.server, cluster_where, ctx.cluster)
    ca = _pem_or_file(
        cluster.certificate_authority_data,
        cluster.certificate_authority,
        cluster_file,
        cluster_where,
        "certificate-authority",
    )
    if ctx.user and ctx.user not in merged.users:
        raise KubeConfigError(where, f"context {name!r} refers to user {ctx.user!r}, which is not defined")
    user, user_file = merged.users[ctx.user] if ctx.user else (_User(), ctx_file)
    user_where = str(user_file)
    cert = _pem_or_file(
        user.client_certificate_data, user.client_certificate, user_file, user_where, "client-certificate"
    )
    key = _pem_or_file(user.client_key_data, user.client_key, user_file, user_where, "client-key")
    if (cert is None) != (key is None):
        raise KubeConfigError(
            user_where, f"user {ctx.user!r}: client-certificate and client-key must be given together"
        )
    cluster_info = ExecClusterInfo(
        server=server,
        certificate_authority_data=ca,
        insecure_skip_tls_verify=cluster.insecure_skip_tls_verify,
        tls_server_name=cluster.tls_server_name,
        config=_exec_extension(cluster.extensions),
    )
    return KubeConfig(
        server=server,
        namespace=ctx.namespace or "default",
        auth=_user_auth(ctx.user, user, user_file, user_where, cluster_info),
        ca_pem=ca,
        insecure_skip_tls_verify=cluster.insecure_skip_tls_verify,
        tls_server_name=cluster.tls_server_name or None,
        client_cert_pem=cert,
        client_key_pem=key,
        source=f"kubeconfig {where} (context {name})",
        proxy=proxy,
    )


def _exec_extension(extensions: tuple[Any, ...] | None) -> Any:
    """The ``client.authentication.k8s.io/exec`` cluster extension passed to exec plugins."""
    for entry in extensions or ():
        if isinstance(entry, dict) and entry.get("name") == "client.authentication.k8s.io/exec":
            return entry.get("extension")
    return None


def load_kubeconfig(files: list[Path], *, context: str | None = None) -> KubeConfig:
    """Merge ``files`` (first definition wins) and resolve ``context`` (default: current-context)."""
    merged = _Merged()
    for path in files:
        _read_file(path, merged)
    return _from_merged(merged, files, context)


def load_in_cluster(environ: Mapping[str, str], *, account_dir: Path = SERVICE_ACCOUNT_DIR) -> KubeConfig:
    host = environ.get("KUBERNETES_SERVICE_HOST", "")
    port = environ.get("KUBERNETES_SERVICE_PORT", "")
    if not host or not port:
        raise KubeConfigError(
            "in-cluster config", "KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT must both be set"
        )
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    token = account_dir / "token"
    if not token.is_file():
        raise KubeConfigError(str(token), "service account token not found")
    ca = _read_bytes(account_dir / "ca.crt", str(account_dir / "ca.crt"), "service account CA")
    try:
        namespace = (account_dir / "namespace").read_text().strip()
    except OSError:
        namespace = ""
    return KubeConfig(
        server=f"https://{host}:{port}",
        namespace=namespace or "default",
        auth=TokenFileAuth(token),
        ca_pem=ca,
        source="in-cluster service account",
    )


def kubeconfig_files(environ: Mapping[str, str]) -> tuple[list[Path], str]:
    """The kubeconfig files that exist, and a description of where they were looked for."""
    listed = environ.get("KUBECONFIG", "")
    if listed:
        candidates = []
        for part in listed.split(os.pathsep):
            if part and Path(part).expanduser() not in candidates:
                candidates.append(Path(part).expanduser())
        return [p for p in candidates if p.exists()], f"KUBECONFIG={listed}"
    home = environ.get("HOME") or str(Path.home())
    default = Path(home) / ".kube" / "config"
    return ([default] if default.exists() else []), str(default)


def load_config(
    environ: Mapping[str, str] | None = None,
    *,
    context: str | None = None,
    account_dir: Path = SERVICE_ACCOUNT_DIR,
) -> KubeConfig:
    """The configuration to use, by client-go's rules (see the module docstring). Raises
    :class:`KubeConfigError` naming the file and the problem."""
    environ = os.environ if environ is None else environ
    config = _load(environ, context, account_dir)
    if config.proxy is not None:
        return config
    try:
        return attrs.evolve(config, proxy=ProxyEnvironment.from_environ(environ).proxy_for(config.server))
    except ProxyError as exc:
        raise KubeConfigError("the environment", str(exc)) from None


def _load(environ: Mapping[str, str], context: str | None, account_dir: Path) -> KubeConfig:
    files, looked_at = kubeconfig_files(environ)
    if files:
        return load_kubeconfig(files, context=context)
    if environ.get("KUBECONFIG"):
        raise KubeConfigError(looked_at, "none of these kubeconfig files exists")
    if environ.get("KUBERNETES_SERVICE_HOST") and environ.get("KUBERNETES_SERVICE_PORT"):
        if context:
            raise KubeConfigError(
                "in-cluster config", f"context {context!r} requested but there is no kubeconfig"
            )
        return load_in_cluster(environ, account_dir=account_dir)
    raise KubeConfigError(
        looked_at,
        "no kubeconfig found, and not running in a cluster (KUBERNETES_SERVICE_HOST/PORT unset)",
    )
