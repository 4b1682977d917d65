"""The built image, run with podman: what it contains, who it runs as, and a runner pod as the chart renders it
(arguments, environment, volumes, security context) against the OpsLevel and Kubernetes doubles on loopback.
These run real processes on the real clock; every wait is bounded."""

from __future__ import annotations

import os
import pkgutil
import re
import tomllib
from pathlib import Path

import pytest

import trunner
from tests.image.podman import Podman

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
VERSION = PYPROJECT["project"]["version"]
USER = re.search(r"^USER (\d+):(\d+)$", (ROOT / "Dockerfile").read_text(), re.MULTILINE)


def test_help_and_version(podman: Podman) -> None:
    helped = podman.run("--help")
    assert helped.code == 0, helped.stderr
    assert "usage: trunner" in helped.stdout
    for command in ("run", "test", "version"):
        assert command in helped.stdout
    version = podman.run("version", "--short")
    assert version.code == 0, version.stderr
    assert version.stdout.startswith(f"trunner {VERSION} "), version.stdout


def test_labels_come_from_the_build_arguments(podman: Podman) -> None:
    labels = podman.inspect()["Labels"]
    prefix = "org.opencontainers.image."
    assert labels[prefix + "version"] == VERSION
    assert labels[prefix + "source"] == PYPROJECT["project"]["urls"]["Source"]
    assert labels[prefix + "revision"] == os.environ["TRUNNER_IMAGE_REVISION"]
    assert labels[prefix + "created"] == os.environ["TRUNNER_IMAGE_CREATED"]
    assert labels[prefix + "licenses"] == PYPROJECT["project"]["license"]["text"]
    assert labels[prefix + "base.name"], "the base image is named"
    assert prefix + "base.digest" in labels


def test_runs_as_the_fixed_non_root_user(podman: Podman) -> None:
    assert USER is not None
    uid, gid = USER[1], USER[2]
    config = podman.inspect()["Config"]
    assert config["User"] == f"{uid}:{gid}"
    who = podman.shell("id -u; id -g; getent passwd trunner")
    assert who.code == 0, who.stderr
    found_uid, found_gid, passwd = who.stdout.split("\n")[:3]
    assert (found_uid, found_gid) == (uid, gid)
    # The account in /etc/passwd is the USER's (tools that look the user up by name find the same UID).
    assert passwd.split(":")[2:4] == [uid, gid], passwd


@pytest.mark.parametrize("user", ["4242:0", "4242:4242"])
def test_an_arbitrary_uid_runs_trunner(podman: Podman, user: str) -> None:
    """OpenShift-style restricted policies run the container as a random UID (group 0 or its own)."""
    done = podman.run("version", "--short", options=["--user", user])
    assert done.code == 0, done.stderr
    assert done.stdout.startswith(f"trunner {VERSION} ")


def test_the_install_is_read_only_for_the_runtime_user(podman: Podman) -> None:
    found = podman.shell(
        "find /opt/trunner ! -type l -perm -o+w -print; find /opt/trunner ! -type l ! -user root -print"
    )
    assert found.code == 0, found.stderr
    assert found.stdout == "", f"writable by the runtime user or not owned by root:\n{found.stdout[:2000]}"
    write = podman.shell("touch /opt/trunner/bin/x")
    assert write.code != 0, "the runtime user can modify the installed code"


def test_every_module_of_the_package_imports(podman: Podman) -> None:
    """Every module of trunner/ is installed (a package left out of the build context or the install would
    only show up when the code path that imports it runs)."""
    expected = sorted(
        m.name for m in pkgutil.walk_packages(trunner.__path__, "trunner.") if m.name != "trunner.__main__"
    )
    script = (
        "import importlib, pkgutil, trunner\n"
        "names = sorted(m.name for m in pkgutil.walk_packages(trunner.__path__, 'trunner.')\n"
        "               if m.name != 'trunner.__main__')\n"
        "for name in names:\n"
        "    importlib.import_module(name)\n"
        "print('\\n'.join(names))\n"
    )
    done = podman.run("-c", script, options=["--entrypoint", "python"])
    assert done.code == 0, done.stderr
    assert done.stdout.split() == expected
    origin = podman.run("-c", "import trunner; print(trunner.__file__)", options=["--entrypoint", "python"])
    assert origin.stdout.strip().startswith("/opt/trunner/lib/"), "the venv's installed copy is used"


def test_output_is_not_held_in_a_buffer(podman: Podman) -> None:
    """A pod's stdout is a pipe: output written just before the process dies must already be out."""
    script = "import os; print('written before the end'); os._exit(3)"
    done = podman.run("-c", script, options=["--entrypoint", "python"])
    assert done.code == 3
    assert done.stdout == "written before the end\n"


def test_tini_is_the_entrypoint(podman: Podman) -> None:
    config = podman.inspect()["Config"]
    assert config["Entrypoint"][:2] == ["/usr/bin/tini", "--"]
    assert config["Cmd"] == ["run"]
    present = podman.shell("test -x /usr/bin/tini && /usr/bin/tini --version")
    assert present.code == 0 and "tini version" in present.stdout, present.stderr
