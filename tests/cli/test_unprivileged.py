"""Local runs as a normal user: the real ``nobody`` account, where this machine has one and the
test runs as root (to switch to it)."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import pytest

from tests.cli.support import ROOT

EXAMPLE = (ROOT / "examples" / "jobs" / "01-hello.yaml").read_text()


def _nobody() -> str | None:
    if os.geteuid() != 0 or shutil.which("runuser") is None:
        return None
    try:
        pwd.getpwnam("nobody")
    except KeyError:
        return None
    return "nobody"


def _python_for(user: str) -> list[str] | None:
    """A Python the user can run with trunner and its dependencies importable (this one may
    live under root's home)."""
    site = sysconfig.get_paths()["purelib"]
    env = [f"PYTHONPATH={ROOT}:{site}", "HOME=/tmp", "PATH=" + os.environ["PATH"]]
    for candidate in (sys.executable, f"/usr/bin/python{sys.version_info[0]}.{sys.version_info[1]}"):
        probe = subprocess.run(
            ["runuser", "-u", user, "--", "env", "-i", *env, candidate, "-c", "import trunner"],
            capture_output=True,
            cwd="/",
            timeout=30,
        )
        if probe.returncode == 0:
            return ["env", "-i", *env, candidate]
    return None


USER = _nobody()
PYTHON = _python_for(USER) if USER else None
pytestmark = pytest.mark.skipif(
    PYTHON is None, reason="needs root, runuser, a nobody user and a Python it can run"
)


def run_as_nobody(job: str, *, path_prefix: str = "") -> subprocess.CompletedProcess[str]:
    assert USER and PYTHON
    command = list(PYTHON)
    if path_prefix:
        command = [
            part.replace("PATH=", f"PATH={path_prefix}:", 1) if part.startswith("PATH=") else part
            for part in command
        ]
    return subprocess.run(
        ["runuser", "-u", USER, "--", *command, "-m", "trunner", "test", "--executor", "local", "-f", "-"],
        input=job,
        capture_output=True,
        text=True,
        cwd="/",
        timeout=60,
    )


def test_the_first_example_runs_as_nobody():
    result = run_as_nobody(EXAMPLE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Hello from inside the script" in result.stdout and "outcome: success" in result.stdout
    if os.path.isdir("/opslevel") and _user_namespaces_allowed():
        assert "cannot be mounted" not in result.stdout, "expected the user + mount namespace"


def _user_namespaces_allowed() -> bool:
    assert USER
    probe = subprocess.run(
        ["runuser", "-u", USER, "--", "unshare", "--user", "--map-root-user", "--mount", "true"],
        capture_output=True,
        timeout=30,
    )
    return probe.returncode == 0


def run_with_unshare_refused() -> subprocess.CompletedProcess[str]:
    """A kernel that refuses unprivileged namespaces, played by an ``unshare`` that fails as the
    real one does there."""
    with tempfile.TemporaryDirectory(prefix="trunner-shims-") as shims:
        os.chmod(shims, 0o755)
        fake = Path(shims, "unshare")
        fake.write_text("#!/bin/sh\necho 'unshare: unshare failed: Operation not permitted' >&2\nexit 1\n")
        fake.chmod(0o755)
        return run_as_nobody(EXAMPLE, path_prefix=shims)


@pytest.mark.skipif(
    not os.path.isdir("/opslevel"),
    reason="trunner probes for a mount namespace only where /opslevel exists, and never creates it",
)
def test_without_namespaces_files_are_mapped_and_the_log_says_so():
    result = run_with_unshare_refused()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Hello from inside the script" in result.stdout
    assert (
        "/opslevel cannot be mounted here (no private mount namespace: unshare: unshare failed"
        in result.stdout
    )
    assert "/opslevel/ in its commands stands for that directory" in result.stdout


@pytest.mark.skipif(
    os.path.isdir("/opslevel"), reason="this host has /opslevel, and a test must not remove it"
)
def test_without_opslevel_files_are_mapped_and_the_log_says_so():
    result = run_with_unshare_refused()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Hello from inside the script" in result.stdout
    assert "/opslevel cannot be mounted here (/opslevel does not exist on this host)" in result.stdout
    assert "/opslevel/ in its commands stands for that directory" in result.stdout
