"""Failing fast and clearly when what the runner needs cannot be reached."""

from __future__ import annotations

import socket

from tests.cli.support import clean_env, trunner

KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: "https://127.0.0.1:{port}"}}}}]
users: [{{name: u, user: {{token: abc}}}}]
contexts: [{{name: x, context: {{cluster: c, user: u}}}}]
current-context: x
"""


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_an_unreachable_kubernetes_api_fails_at_once_with_what_to_check(tmp_path):
    port = _closed_port()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG.format(port=port))
    result = trunner(
        "test",
        "-f",
        "examples/jobs/02-outcome-vars.yaml",
        "--executor",
        "kubernetes",
        env=clean_env(KUBECONFIG=str(kubeconfig)),
        timeout=30,
    )
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith(
        f"trunner: cannot start the kubernetes executor: the Kubernetes API at https://127.0.0.1:{port} cannot be reached: "
    )
    assert "check that the cluster is up and the kubeconfig" in line
    assert "outcome" not in result.stdout and "delete" not in result.stderr.lower()


def test_an_unreachable_faktory_fails_at_start_up_with_what_to_check():
    port = _closed_port()
    result = trunner(
        "run",
        "--mode",
        "faktory",
        "--metrics-port",
        "0",
        env=clean_env(FAKTORY_URL=f"tcp://127.0.0.1:{port}"),
        timeout=30,
    )
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if "level=error" in line]
    assert len(errors) == 1, result.stderr
    assert f"Faktory at tcp://127.0.0.1:{port} cannot be reached: " in errors[0]
    assert "check FAKTORY_URL (or FAKTORY_PROVIDER)" in errors[0]
    assert "heartbeat" not in result.stderr and "fetching" not in result.stderr
