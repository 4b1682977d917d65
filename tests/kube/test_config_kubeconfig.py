"""kubeconfig and in-cluster configuration: every field, merge order, relative paths, errors."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import yaml

from trunner.config import ConfigError
from trunner.kube.auth import ExecAuth, StaticAuth, TokenFileAuth
from trunner.kube.config import load_config, load_in_cluster
from trunner.kube.errors import KubeConfigError

PEM = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def kubeconfig(
    *,
    clusters: dict[str, dict[str, Any]] | None = None,
    users: dict[str, dict[str, Any]] | None = None,
    contexts: dict[str, dict[str, Any]] | None = None,
    current: str | None = "main",
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": n, "cluster": c} for n, c in (clusters or {}).items()],
        "users": [{"name": n, "user": u} for n, u in (users or {}).items()],
        "contexts": [{"name": n, "context": c} for n, c in (contexts or {}).items()],
    }
    if current is not None:
        doc["current-context"] = current
    return doc


def simple(
    server: str = "https://10.0.0.1:6443", user: dict[str, Any] | None = None, **ctx: Any
) -> dict[str, Any]:
    return kubeconfig(
        clusters={"c": {"server": server}},
        users={"u": user if user is not None else {"token": "abc"}},
        contexts={"main": {"cluster": "c", "user": "u", **ctx}},
    )


def write(path: Path, doc: dict[str, Any] | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc))
    return path


def env_for(*paths: Path, home: Path | None = None) -> dict[str, str]:
    env = {"HOME": str(home or "/nonexistent-home")}
    if paths:
        env["KUBECONFIG"] = ":".join(str(p) for p in paths)
    return env


def test_token_user_and_context_namespace(tmp_path: Path) -> None:
    path = write(tmp_path / "config", simple(namespace="ci"))
    config = load_config(env_for(path))
    assert config.server == "https://10.0.0.1:6443"
    assert config.namespace == "ci"
    assert config.auth == StaticAuth("abc")
    assert config.ca_pem is None
    assert not config.insecure_skip_tls_verify
    assert config.tls_server_name is None
    assert "context main" in config.source and str(path) in config.source


def test_namespace_defaults_to_default_and_trailing_slash_is_dropped(tmp_path: Path) -> None:
    path = write(tmp_path / "config", simple(server="https://kube.example:443/"))
    config = load_config(env_for(path))
    assert config.namespace == "default"
    assert config.server == "https://kube.example:443"


def test_default_file_is_home_kube_config(tmp_path: Path) -> None:
    write(tmp_path / ".kube" / "config", simple(namespace="home"))
    assert load_config({"HOME": str(tmp_path)}).namespace == "home"


def test_cluster_tls_fields(tmp_path: Path) -> None:
    doc = simple()
    doc["clusters"][0]["cluster"].update(
        {
            "certificate-authority-data": b64(PEM),
            "insecure-skip-tls-verify": True,
            "tls-server-name": "kube.internal",
        }
    )
    config = load_config(env_for(write(tmp_path / "config", doc)))
    assert config.ca_pem == PEM
    assert config.insecure_skip_tls_verify is True
    assert config.tls_server_name == "kube.internal"


def test_certificate_authority_path_is_relative_to_the_kubeconfig(tmp_path: Path) -> None:
    (tmp_path / "conf" / "pki").mkdir(parents=True)
    (tmp_path / "conf" / "pki" / "ca.crt").write_bytes(PEM)
    doc = simple()
    doc["clusters"][0]["cluster"]["certificate-authority"] = "pki/ca.crt"
    config = load_config(env_for(write(tmp_path / "conf" / "config", doc)))
    assert config.ca_pem == PEM


def test_certificate_authority_data_wins_over_the_path(tmp_path: Path) -> None:
    doc = simple()
    doc["clusters"][0]["cluster"].update(
        {"certificate-authority": "missing.crt", "certificate-authority-data": b64(PEM)}
    )
    assert load_config(env_for(write(tmp_path / "config", doc))).ca_pem == PEM


def test_client_certificate_files_relative_and_data(tmp_path: Path) -> None:
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "me.crt").write_bytes(b"CERT")
    (tmp_path / "certs" / "me.key").write_bytes(b"KEY")
    by_file = simple(user={"client-certificate": "certs/me.crt", "client-key": "certs/me.key"})
    config = load_config(env_for(write(tmp_path / "config", by_file)))
    assert (config.client_cert_pem, config.client_key_pem) == (b"CERT", b"KEY")
    assert config.auth == StaticAuth(None)
    by_data = simple(
        user={"client-certificate-data": b64(b"CERT2"), "client-key-data": b64(b"KEY2"), "token": "t"}
    )
    config = load_config(env_for(write(tmp_path / "other", by_data)))
    assert (config.client_cert_pem, config.client_key_pem) == (b"CERT2", b"KEY2")
    assert config.auth == StaticAuth("t")


def test_token_file_is_relative_to_the_kubeconfig(tmp_path: Path) -> None:
    path = write(tmp_path / "k" / "config", simple(user={"tokenFile": "secrets/token"}))
    config = load_config(env_for(path))
    assert config.auth == TokenFileAuth(tmp_path / "k" / "secrets" / "token")


def test_token_wins_over_token_file(tmp_path: Path) -> None:
    path = write(tmp_path / "config", simple(user={"token": "direct", "tokenFile": "/x"}))
    assert load_config(env_for(path)).auth == StaticAuth("direct")


def test_exec_plugin_settings(tmp_path: Path) -> None:
    user = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": "./bin/get-token",
            "args": ["--cluster", "prod"],
            "env": [{"name": "AWS_PROFILE", "value": "ci"}],
            "installHint": "install get-token",
            "provideClusterInfo": True,
            "interactiveMode": "Never",
        }
    }
    doc = simple(user=user)
    doc["clusters"][0]["cluster"]["extensions"] = [
        {"name": "client.authentication.k8s.io/exec", "extension": {"audience": "prod"}}
    ]
    config = load_config(env_for(write(tmp_path / "config", doc)))
    assert isinstance(config.auth, ExecAuth)
    plugin = config.auth.plugin
    assert plugin.command == str(tmp_path / "bin" / "get-token")
    assert plugin.args == ("--cluster", "prod")
    assert [(v.name, v.value) for v in plugin.env] == [("AWS_PROFILE", "ci")]
    assert plugin.install_hint == "install get-token"
    assert plugin.provide_cluster_info
    assert plugin.interactive_mode == "Never"
    assert config.auth.cluster is not None
    assert config.auth.cluster.server == "https://10.0.0.1:6443"
    assert config.auth.cluster.config == {"audience": "prod"}


def test_exec_command_without_a_separator_is_looked_up_on_path(tmp_path: Path) -> None:
    user = {"exec": {"apiVersion": "client.authentication.k8s.io/v1beta1", "command": "aws"}}
    config = load_config(env_for(write(tmp_path / "config", simple(user=user))))
    assert isinstance(config.auth, ExecAuth)
    assert config.auth.plugin.command == "aws"
    assert config.auth.plugin.interactive_mode == "IfAvailable"


def test_kubeconfig_list_merges_first_definition_wins(tmp_path: Path) -> None:
    first = write(
        tmp_path / "a" / "first",
        kubeconfig(
            clusters={"shared": {"server": "https://first:6443"}},
            users={"u": {"token": "first-token"}},
            contexts={},
            current="second-ctx",
        ),
    )
    second = write(
        tmp_path / "b" / "second",
        kubeconfig(
            clusters={"shared": {"server": "https://second:6443"}, "own": {"server": "https://own:6443"}},
            users={"u": {"token": "second-token"}},
            contexts={"second-ctx": {"cluster": "shared", "user": "u", "namespace": "two"}},
            current="ignored",
        ),
    )
    config = load_config(env_for(first, second))
    assert config.server == "https://first:6443"
    assert config.auth == StaticAuth("first-token")
    assert config.namespace == "two"


def test_relative_paths_resolve_against_the_file_that_defines_them(tmp_path: Path) -> None:
    (tmp_path / "b" / "ca.crt").parent.mkdir(parents=True)
    (tmp_path / "b" / "ca.crt").write_bytes(PEM)
    first = write(tmp_path / "a" / "config", kubeconfig(contexts={"main": {"cluster": "c", "user": "u"}}))
    second = write(
        tmp_path / "b" / "config",
        kubeconfig(
            clusters={"c": {"server": "https://x:6443", "certificate-authority": "ca.crt"}},
            users={"u": {"tokenFile": "token"}},
            current=None,
        ),
    )
    config = load_config(env_for(first, second))
    assert config.ca_pem == PEM
    assert config.auth == TokenFileAuth(tmp_path / "b" / "token")


def test_missing_files_in_the_list_are_skipped(tmp_path: Path) -> None:
    real = write(tmp_path / "config", simple(namespace="found"))
    assert load_config(env_for(tmp_path / "missing", real)).namespace == "found"


def test_explicit_context(tmp_path: Path) -> None:
    doc = simple()
    doc["contexts"].append(
        {"name": "other", "context": {"cluster": "c", "user": "u", "namespace": "elsewhere"}}
    )
    config = load_config(env_for(write(tmp_path / "config", doc)), context="other")
    assert config.namespace == "elsewhere"
    assert "context other" in config.source


def test_kubeconfig_wins_over_in_cluster(tmp_path: Path) -> None:
    env = env_for(write(tmp_path / "config", simple(namespace="from-file")))
    env.update(KUBERNETES_SERVICE_HOST="10.0.0.1", KUBERNETES_SERVICE_PORT="443")
    assert load_config(env, account_dir=tmp_path / "nothing").namespace == "from-file"


def service_account(folder: Path, *, namespace: str | None = "jobs") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "token").write_text("sa-token\n")
    (folder / "ca.crt").write_bytes(PEM)
    if namespace is not None:
        (folder / "namespace").write_text(namespace)
    return folder


def test_in_cluster(tmp_path: Path) -> None:
    folder = service_account(tmp_path / "sa")
    env = {"HOME": str(tmp_path), "KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    config = load_config(env, account_dir=folder)
    assert config.server == "https://10.96.0.1:443"
    assert config.namespace == "jobs"
    assert config.ca_pem == PEM
    assert config.auth == TokenFileAuth(folder / "token")
    assert config.source == "in-cluster service account"


def test_in_cluster_ipv6_host_gets_brackets_and_namespace_defaults(tmp_path: Path) -> None:
    folder = service_account(tmp_path / "sa", namespace=None)
    env = {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "6443"}
    config = load_in_cluster(env, account_dir=folder)
    assert config.server == "https://[fd00::1]:6443"
    assert config.namespace == "default"


def test_in_cluster_without_a_token_names_the_file(tmp_path: Path) -> None:
    folder = tmp_path / "sa"
    folder.mkdir()
    env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443", "HOME": str(tmp_path)}
    with pytest.raises(KubeConfigError, match=r"sa/token: service account token not found"):
        load_config(env, account_dir=folder)


def test_in_cluster_needs_host_and_port(tmp_path: Path) -> None:
    with pytest.raises(KubeConfigError, match="KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT"):
        load_in_cluster({"KUBERNETES_SERVICE_HOST": "10.0.0.1"}, account_dir=tmp_path)


# --- errors: one ConfigError naming the file and the problem -------------------------------------


def problem(env: dict[str, str], **kwargs: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(env, **kwargs)
    assert isinstance(caught.value, KubeConfigError)
    assert len(caught.value.problems) == 1
    return caught.value.problems[0]


def test_nothing_found(tmp_path: Path) -> None:
    message = problem({"HOME": str(tmp_path)}, account_dir=tmp_path)
    assert message.startswith(str(tmp_path / ".kube" / "config") + ": no kubeconfig found")
    assert "KUBERNETES_SERVICE_HOST" in message


def test_kubeconfig_list_with_no_existing_file(tmp_path: Path) -> None:
    message = problem(env_for(tmp_path / "a", tmp_path / "b"))
    assert message == f"KUBECONFIG={tmp_path / 'a'}:{tmp_path / 'b'}: none of these kubeconfig files exists"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("clusters: [", "not valid YAML"),
        ("- a\n- b\n", "expected a mapping at the top level"),
        ("clusters: {}\n", "clusters: expected a list"),
        ("clusters:\n- cluster: {server: x}\n", "clusters[0]: expected a mapping with a name"),
        ("users:\n- name: u\n  user: {token: [1]}\n", "users[0] (u).user.token: expected text, got list"),
        (
            "clusters:\n- name: c\n  cluster: {insecure-skip-tls-verify: maybe}\n",
            "clusters[0] (c).cluster.insecure_skip_tls_verify: expected true or false, got 'maybe'",
        ),
    ],
)
def test_broken_file(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path / "config", text)
    message = problem(env_for(path))
    assert message.startswith(f"{path}: ")
    assert expected in message


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        (simple() | {"current-context": None}, "no current-context is set"),
        (simple() | {"current-context": "nope"}, "context 'nope' is not defined"),
        (kubeconfig(contexts={"main": {"cluster": "gone", "user": "u"}}), "refers to cluster 'gone'"),
        (
            kubeconfig(
                clusters={"c": {"server": "https://x"}}, contexts={"main": {"cluster": "c", "user": "who"}}
            ),
            "refers to user 'who'",
        ),
        (kubeconfig(clusters={"c": {}}, contexts={"main": {"cluster": "c"}}), "cluster 'c' has no server"),
        (simple(server="10.0.0.1:6443"), "must be an http(s) URL"),
        (
            kubeconfig(
                clusters={"c": {"server": "https://x", "certificate-authority-data": "***"}},
                contexts={"main": {"cluster": "c"}},
            ),
            "certificate-authority-data: not valid base64",
        ),
        (
            kubeconfig(
                clusters={"c": {"server": "https://x", "certificate-authority": "/nonexistent/ca.crt"}},
                contexts={"main": {"cluster": "c"}},
            ),
            "certificate-authority /nonexistent/ca.crt: cannot read",
        ),
        (
            simple(user={"client-certificate-data": b64(b"C")}),
            "client-certificate and client-key must be given together",
        ),
        (simple(user={"auth-provider": {"name": "gcp"}}), "auth-provider 'gcp' is not supported"),
        (
            kubeconfig(
                clusters={"c": {"server": "https://x", "proxy-url": "socks5://proxy:1080"}},
                contexts={"main": {"cluster": "c"}},
            ),
            "proxy-url: SOCKS proxies are not supported",
        ),
        (simple(user={"username": "admin", "password": "x"}), "basic auth"),
        (simple(user={"exec": {"apiVersion": "client.authentication.k8s.io/v1"}}), "exec.command is missing"),
        (simple(user={"exec": {"command": "x"}}), "exec.apiVersion is missing"),
    ],
)
def test_unusable_config(tmp_path: Path, doc: dict[str, Any], expected: str) -> None:
    path = write(tmp_path / "config", doc)
    message = problem(env_for(path))
    assert message.startswith(f"{path}: ")
    assert expected in message


def test_unknown_explicit_context(tmp_path: Path) -> None:
    path = write(tmp_path / "config", simple())
    assert "context 'elsewhere' is not defined" in problem(env_for(path), context="elsewhere")
