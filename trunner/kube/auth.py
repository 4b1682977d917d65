"""Credentials for the API server: a fixed token, a token file that is re-read (service account
tokens rotate), or an exec credential plugin (``client.authentication.k8s.io/v1`` and
``v1beta1``) whose result is cached until its ``expirationTimestamp`` and fetched again after a 401.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import attrs
import trio

from trunner.kube.errors import KubeError
from trunner.wire import WireConverter, WireError, structure

EXEC_API_VERSIONS = ("client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1")
TOKEN_FILE_RELOAD_SECONDS = 60.0
EXEC_PLUGIN_TIMEOUT_SECONDS = 60.0


class CredentialError(KubeError):
    """Credentials could not be obtained (unreadable token file, failing exec plugin)."""


@attrs.frozen
class Credentials:
    token: str | None = None
    client_cert_pem: bytes | None = None
    client_key_pem: bytes | None = None


@attrs.frozen
class ExecEnvVar:
    name: str
    value: str


@attrs.frozen
class ExecPluginSpec:
    """The ``user.exec`` section of a kubeconfig. ``command`` is already resolved against the
    kubeconfig's folder when it is a relative path."""

    api_version: str
    command: str
    args: tuple[str, ...] = ()
    env: tuple[ExecEnvVar, ...] = ()
    install_hint: str = ""
    provide_cluster_info: bool = False
    interactive_mode: str = "IfAvailable"


@attrs.frozen
class ExecClusterInfo:
    """What ``provideClusterInfo`` passes to the plugin in ``KUBERNETES_EXEC_INFO``."""

    server: str
    certificate_authority_data: bytes | None = None
    insecure_skip_tls_verify: bool = False
    tls_server_name: str = ""
    config: Any = None


@attrs.frozen
class StaticAuth:
    """A token known up front (or none: client certificates only, or no auth at all)."""

    token: str | None = None


@attrs.frozen
class TokenFileAuth:
    path: Path
    reload_seconds: float = TOKEN_FILE_RELOAD_SECONDS


@attrs.frozen
class ExecAuth:
    plugin: ExecPluginSpec
    cluster: ExecClusterInfo | None = None


AuthSpec = StaticAuth | TokenFileAuth | ExecAuth


class Authenticator(Protocol):
    async def credentials(self) -> Credentials:
        """Current credentials (cached as each kind allows)."""
        ...

    def invalidate(self) -> bool:
        """Called after a 401. True if fetching credentials again may give different ones."""
        ...


class _Static:
    def __init__(self, spec: StaticAuth) -> None:
        self._credentials = Credentials(token=spec.token)

    async def credentials(self) -> Credentials:
        return self._credentials

    def invalidate(self) -> bool:
        return False


def _read_token(path: Path) -> str:
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise CredentialError(f"{path}: cannot read token file: {exc.strerror or exc}") from None
    if not token:
        raise CredentialError(f"{path}: token file is empty")
    return token


class _TokenFile:
    """Re-reads the file when the cached token is older than ``reload_seconds`` (trio clock)."""

    def __init__(self, spec: TokenFileAuth) -> None:
        self._spec = spec
        self._token: str | None = None
        self._read_at = 0.0

    async def credentials(self) -> Credentials:
        now = trio.current_time()
        if self._token is None or now - self._read_at >= self._spec.reload_seconds:
            self._token = _read_token(self._spec.path)
            self._read_at = now
        return Credentials(token=self._token)

    def invalidate(self) -> bool:
        self._token = None
        return True


@attrs.frozen
class _ExecStatus:
    token: str | None = None
    client_certificate_data: str | None = None
    client_key_data: str | None = None
    expiration_timestamp: str | None = None


@attrs.frozen
class _ExecCredential:
    api_version: str = ""
    kind: str = ""
    status: _ExecStatus | None = None


_exec_conv = WireConverter(forbid_extra_keys=False)


def parse_timestamp(text: str) -> datetime:
    """An RFC 3339 time as Kubernetes writes it (``2026-01-01T00:00:00Z``)."""
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value


def exec_info(plugin: ExecPluginSpec, cluster: ExecClusterInfo | None) -> str:
    """The ``KUBERNETES_EXEC_INFO`` document for one run of the plugin."""
    spec: dict[str, Any] = {"interactive": False}
    if plugin.provide_cluster_info and cluster is not None:
        info: dict[str, Any] = {"server": cluster.server}
        if cluster.tls_server_name:
            info["tls-server-name"] = cluster.tls_server_name
        if cluster.insecure_skip_tls_verify:
            info["insecure-skip-tls-verify"] = True
        if cluster.certificate_authority_data:
            info["certificate-authority-data"] = base64.b64encode(cluster.certificate_authority_data).decode()
        if cluster.config is not None:
            info["config"] = cluster.config
        spec["cluster"] = info
    return json.dumps({"apiVersion": plugin.api_version, "kind": "ExecCredential", "spec": spec})


class _ExecPlugin:
    def __init__(self, spec: ExecAuth, now: Callable[[], datetime]) -> None:
        self._spec = spec
        self._now = now
        self._cached: Credentials | None = None
        self._expires: datetime | None = None
        self._lock = trio.Lock()

    def _fresh(self) -> bool:
        if self._cached is None:
            return False
        return self._expires is None or self._now() < self._expires

    async def credentials(self) -> Credentials:
        async with self._lock:
            if not self._fresh():
                self._cached, self._expires = await self._run()
            assert self._cached is not None
            return self._cached

    def invalidate(self) -> bool:
        self._cached = None
        self._expires = None
        return True

    def _problem(self, text: str) -> CredentialError:
        plugin = self._spec.plugin
        hint = f" ({plugin.install_hint.strip()})" if plugin.install_hint.strip() else ""
        return CredentialError(f"exec credential plugin {plugin.command!r}: {text}{hint}")

    async def _run(self) -> tuple[Credentials, datetime | None]:
        plugin = self._spec.plugin
        if plugin.api_version not in EXEC_API_VERSIONS:
            raise self._problem(
                f"apiVersion {plugin.api_version!r} is not supported (use {' or '.join(EXEC_API_VERSIONS)})"
            )
        if plugin.interactive_mode == "Always":
            raise self._problem("interactiveMode Always needs a terminal; the runner is never interactive")
        env: Mapping[str, str] = {
            **os.environ,
            **{var.name: var.value for var in plugin.env},
            "KUBERNETES_EXEC_INFO": exec_info(plugin, self._spec.cluster),
        }
        try:
            with trio.fail_after(EXEC_PLUGIN_TIMEOUT_SECONDS):
                done = await trio.run_process(
                    [plugin.command, *plugin.args],
                    stdin=subprocess.DEVNULL,
                    capture_stdout=True,
                    capture_stderr=True,
                    check=False,
                    env=env,
                )
        except trio.TooSlowError:
            raise self._problem(f"did not finish within {EXEC_PLUGIN_TIMEOUT_SECONDS:g} s") from None
        except OSError as exc:
            raise self._problem(f"cannot run: {exc.strerror or exc}") from None
        if done.returncode != 0:
            stderr = done.stderr.decode("utf-8", "replace").strip()[-500:]
            raise self._problem(f"exited with code {done.returncode}: {stderr or '(no stderr)'}")
        return self._parse(done.stdout)

    def _parse(self, stdout: bytes) -> tuple[Credentials, datetime | None]:
        try:
            raw = json.loads(stdout)
            credential = structure(raw, _ExecCredential, converter=_exec_conv)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise self._problem("printed something that is not JSON") from None
        except WireError as exc:
            raise self._problem(f"printed an invalid ExecCredential: {exc}") from None
        plugin = self._spec.plugin
        if credential.api_version != plugin.api_version:
            raise self._problem(
                f"configured for {plugin.api_version!r} but returned apiVersion {credential.api_version!r}"
            )
        if credential.kind != "ExecCredential":
            raise self._problem(f"returned kind {credential.kind!r}, expected ExecCredential")
        status = credential.status
        if status is None:
            raise self._problem("returned no status")
        if bool(status.client_certificate_data) != bool(status.client_key_data):
            raise self._problem("returned only one of clientCertificateData and clientKeyData")
        if not status.token and not status.client_certificate_data:
            raise self._problem("returned neither a token nor a client certificate")
        expires: datetime | None = None
        if status.expiration_timestamp:
            try:
                expires = parse_timestamp(status.expiration_timestamp)
            except ValueError:
                raise self._problem(
                    f"returned an invalid expirationTimestamp {status.expiration_timestamp!r}"
                ) from None
        return (
            Credentials(
                token=status.token or None,
                client_cert_pem=(status.client_certificate_data or "").encode() or None,
                client_key_pem=(status.client_key_data or "").encode() or None,
            ),
            expires,
        )


def _utc_now() -> datetime:
    return datetime.now(UTC)


def authenticator(spec: AuthSpec, *, now: Callable[[], datetime] = _utc_now) -> Authenticator:
    """The stateful credential source for ``spec``; ``now`` is the wall clock used for exec
    credential expiry."""
    if isinstance(spec, StaticAuth):
        return _Static(spec)
    if isinstance(spec, TokenFileAuth):
        return _TokenFile(spec)
    return _ExecPlugin(spec, now)
