"""Credentials: token files re-read as they rotate, exec credential plugins (v1 and v1beta1)
cached until expiry and run again after a 401.

Exec plugin tests run a real subprocess (a small Python script), so they use the real clock;
expiry is checked against an injected wall clock instead of waiting.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.doubles.kube import serve_kube_api
from tests.doubles.kube_exec import Exit, Stdout
from tests.kube.transport_support import NS, RecordingFeed, client_for, running_pod
from trunner.executors.base import ExitResult
from trunner.executors.kubernetes.exec import exec_stream
from trunner.kube.auth import (
    CredentialError,
    Credentials,
    ExecAuth,
    ExecClusterInfo,
    ExecEnvVar,
    ExecPluginSpec,
    StaticAuth,
    TokenFileAuth,
    authenticator,
    exec_info,
)
from trunner.kube.errors import Unauthorized

V1 = "client.authentication.k8s.io/v1"
V1BETA1 = "client.authentication.k8s.io/v1beta1"

PLUGIN = """#!{python}
import json, os, pathlib, sys
state = pathlib.Path({state!r})
count = int(state.read_text()) + 1 if state.exists() else 1
state.write_text(str(count))
pathlib.Path({info!r}).write_text(os.environ.get("KUBERNETES_EXEC_INFO", ""))
pathlib.Path({env!r}).write_text(os.environ.get("PLUGIN_SETTING", ""))
output = {output}
if isinstance(output, str):
    sys.stderr.write(output)
    sys.exit(3)
status = dict(output)
if "token" in status:
    status["token"] = status["token"].replace("N", str(count))
print(json.dumps({{"apiVersion": {api_version!r}, "kind": "ExecCredential", "status": status}}))
"""


class Plugin:
    def __init__(
        self, folder: Path, *, output: Any = None, api_version: str = V1, returned_version: str | None = None
    ) -> None:
        self.folder = folder
        self.state = folder / "count"
        self.info = folder / "info.json"
        self.env = folder / "env"
        self.script = folder / "plugin.py"
        body = PLUGIN.format(
            python=sys.executable,
            state=str(self.state),
            info=str(self.info),
            env=str(self.env),
            output=repr(output if output is not None else {"token": "token-N"}),
            api_version=returned_version or api_version,
        )
        self.script.write_text(body)
        self.script.chmod(0o755)
        self.api_version = api_version

    def spec(self, **changes: Any) -> ExecAuth:
        plugin = ExecPluginSpec(
            api_version=self.api_version,
            command=str(self.script),
            env=(ExecEnvVar("PLUGIN_SETTING", "from-kubeconfig"),),
            install_hint=changes.pop("install_hint", ""),
            **changes,
        )
        return ExecAuth(
            plugin, ExecClusterInfo(server="https://kube.test:6443", certificate_authority_data=b"CA")
        )

    @property
    def runs(self) -> int:
        return int(self.state.read_text()) if self.state.exists() else 0


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


async def test_static_token() -> None:
    auth = authenticator(StaticAuth("abc"))
    assert await auth.credentials() == Credentials(token="abc")
    assert auth.invalidate() is False


async def test_token_file_is_reread_every_minute(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    token = tmp_path / "token"
    token.write_text("first\n")
    auth = authenticator(TokenFileAuth(token))
    assert (await auth.credentials()).token == "first"
    token.write_text("second")
    await trio.sleep(59)
    assert (await auth.credentials()).token == "first"
    await trio.sleep(1)
    assert (await auth.credentials()).token == "second"


async def test_token_file_is_reread_after_invalidate(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("first")
    auth = authenticator(TokenFileAuth(token))
    assert (await auth.credentials()).token == "first"
    token.write_text("rotated")
    assert auth.invalidate() is True
    assert (await auth.credentials()).token == "rotated"


@pytest.mark.parametrize(
    ("content", "expected"), [(None, "cannot read token file"), ("  \n", "token file is empty")]
)
async def test_token_file_problems(tmp_path: Path, content: str | None, expected: str) -> None:
    token = tmp_path / "token"
    if content is not None:
        token.write_text(content)
    with pytest.raises(CredentialError, match=expected):
        await authenticator(TokenFileAuth(token)).credentials()


async def test_rotated_service_account_token_after_a_401(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("old")
    async with serve_kube_api() as api, client_for(api, auth=TokenFileAuth(token)) as client:
        api.tokens = {"old"}
        await client.request("GET", f"/api/v1/namespaces/{NS}/configmaps")
        token.write_text("new")
        api.tokens = {"new"}
        await client.request("GET", f"/api/v1/namespaces/{NS}/configmaps")
        sent = [r.header("authorization") for r in api.requests]
        assert sent == ["Bearer old", "Bearer old", "Bearer new"]


@pytest.mark.parametrize("api_version", [V1, V1BETA1])
async def test_exec_plugin_token(tmp_path: Path, api_version: str) -> None:
    plugin = Plugin(tmp_path, api_version=api_version)
    auth = authenticator(plugin.spec(provide_cluster_info=True))
    assert await auth.credentials() == Credentials(token="token-1")
    info = json.loads(plugin.info.read_text())
    assert info == {
        "apiVersion": api_version,
        "kind": "ExecCredential",
        "spec": {
            "interactive": False,
            "cluster": {"server": "https://kube.test:6443", "certificate-authority-data": "Q0E="},
        },
    }
    assert plugin.env.read_text() == "from-kubeconfig"


async def test_exec_info_without_cluster_info() -> None:
    spec = ExecPluginSpec(api_version=V1, command="x")
    assert json.loads(exec_info(spec, ExecClusterInfo(server="https://x"))) == {
        "apiVersion": V1,
        "kind": "ExecCredential",
        "spec": {"interactive": False},
    }


async def test_exec_plugin_cached_until_expiry(tmp_path: Path) -> None:
    clock = Clock()
    expiry = (clock.now + timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
    plugin = Plugin(tmp_path, output={"token": "token-N", "expirationTimestamp": expiry})
    auth = authenticator(plugin.spec(), now=clock)
    assert (await auth.credentials()).token == "token-1"
    clock.now += timedelta(minutes=9, seconds=59)
    assert (await auth.credentials()).token == "token-1"
    assert plugin.runs == 1
    clock.now += timedelta(seconds=1)
    assert (await auth.credentials()).token == "token-2"
    assert plugin.runs == 2


async def test_exec_plugin_without_expiry_is_cached_until_invalidated(tmp_path: Path) -> None:
    plugin = Plugin(tmp_path)
    auth = authenticator(plugin.spec())
    for _ in range(3):
        assert (await auth.credentials()).token == "token-1"
    assert auth.invalidate() is True
    assert (await auth.credentials()).token == "token-2"


async def test_concurrent_callers_share_one_plugin_run(tmp_path: Path) -> None:
    plugin = Plugin(tmp_path)
    auth = authenticator(plugin.spec())
    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(auth.credentials)
    assert plugin.runs == 1


async def test_exec_plugin_client_certificate(tmp_path: Path) -> None:
    plugin = Plugin(tmp_path, output={"clientCertificateData": "CERT PEM", "clientKeyData": "KEY PEM"})
    credentials = await authenticator(plugin.spec()).credentials()
    assert credentials == Credentials(token=None, client_cert_pem=b"CERT PEM", client_key_pem=b"KEY PEM")


async def test_exec_plugin_rerun_after_401(tmp_path: Path) -> None:
    plugin = Plugin(tmp_path)
    async with serve_kube_api() as api, client_for(api, auth=plugin.spec()) as client:
        api.tokens = {"token-2"}
        await client.request("GET", f"/api/v1/namespaces/{NS}/pods")
        assert [r.header("authorization") for r in api.requests] == ["Bearer token-1", "Bearer token-2"]
        api.tokens = {"token-9"}
        with pytest.raises(Unauthorized):
            await client.request("GET", f"/api/v1/namespaces/{NS}/pods")
        assert plugin.runs == 3


async def test_exec_plugin_rerun_after_401_on_the_exec_upgrade(tmp_path: Path) -> None:
    plugin = Plugin(tmp_path)
    async with serve_kube_api() as api, client_for(api, auth=plugin.spec()) as client:
        async with running_pod(api, client) as pod:
            api.tokens = {"token-2"}
            api.script_exec(Stdout(b"authenticated\n"), Exit(0))
            feed = RecordingFeed()
            with trio.fail_after(20):
                result = await exec_stream(client, NS, pod, "job", ["true"], feed)
        assert result == ExitResult.exited(0)
        assert feed.stdout == b"authenticated\n"
        upgrades = [r.header("authorization") for r in api.requests if r.path.endswith("/exec")]
        assert upgrades == ["Bearer token-1", "Bearer token-2"]


@pytest.mark.parametrize(
    ("output", "kwargs", "expected"),
    [
        ("no credentials here", {}, "exited with code 3: no credentials here"),
        ({}, {}, "returned neither a token nor a client certificate"),
        ({"clientCertificateData": "C"}, {}, "only one of clientCertificateData and clientKeyData"),
        ({"token": "t", "expirationTimestamp": "soon"}, {}, "invalid expirationTimestamp 'soon'"),
        ("broken", {"install_hint": "brew install it"}, r"\(brew install it\)"),
    ],
)
async def test_exec_plugin_failures(
    tmp_path: Path, output: Any, kwargs: dict[str, Any], expected: str
) -> None:
    plugin = Plugin(tmp_path, output=output)
    with pytest.raises(CredentialError, match=expected) as caught:
        await authenticator(plugin.spec(**kwargs)).credentials()
    assert str(plugin.script) in str(caught.value)


async def test_exec_plugin_wrong_api_version_in_answer(tmp_path: Path) -> None:
    plugin = Plugin(tmp_path, api_version=V1, returned_version=V1BETA1)
    with pytest.raises(
        CredentialError, match="configured for 'client.authentication.k8s.io/v1' but returned"
    ):
        await authenticator(plugin.spec()).credentials()


async def test_exec_plugin_unsupported_settings(tmp_path: Path) -> None:
    plugin = Plugin(tmp_path, api_version="client.authentication.k8s.io/v1alpha1")
    with pytest.raises(CredentialError, match="v1alpha1' is not supported"):
        await authenticator(plugin.spec()).credentials()
    plugin = Plugin(tmp_path)
    with pytest.raises(CredentialError, match="interactiveMode Always needs a terminal"):
        await authenticator(plugin.spec(interactive_mode="Always")).credentials()
    assert plugin.runs == 0


async def test_exec_plugin_not_json_or_missing(tmp_path: Path) -> None:
    script = tmp_path / "echo.sh"
    script.write_text("#!/bin/sh\necho hello\n")
    script.chmod(0o755)
    spec = ExecAuth(ExecPluginSpec(api_version=V1, command=str(script)))
    with pytest.raises(CredentialError, match="printed something that is not JSON"):
        await authenticator(spec).credentials()
    missing = ExecAuth(ExecPluginSpec(api_version=V1, command=os.fspath(tmp_path / "nope")))
    with pytest.raises(CredentialError, match="cannot run"):
        await authenticator(missing).credentials()
