"""The locks (written by `just lock`) against pyproject.toml: requirements-dev.lock (runtime, dev extra and
build backend: every recipe but `run`, and CI) and requirements.lock (runtime and build backend: `just run`,
the image, pipx). Each records the digest of pyproject.toml's dependency tables it was made from; every
requirement is pinned to a version its specifier admits, nothing else is locked as a direct requirement,
both locks agree on every version and hash, and every pin carries hashes. A dependency added or changed in
pyproject.toml without relocking fails here."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import re
import sys
import tomllib
from pathlib import Path
from typing import Any

import attrs
import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
LOCK = ROOT / "requirements.lock"
DEV_LOCK = ROOT / "requirements-dev.lock"
PROJECT = PYPROJECT["project"]
RUNTIME = [*PROJECT["dependencies"], *PYPROJECT["build-system"]["requires"]]
EVERYTHING = [*RUNTIME, *PROJECT["optional-dependencies"]["dev"]]
LOCKS = [(LOCK, RUNTIME), (DEV_LOCK, EVERYTHING)]
IDS = [LOCK.name, DEV_LOCK.name]


@attrs.frozen
class Pin:
    name: str
    version: Version
    hashes: tuple[str, ...]
    via: tuple[str, ...]
    marker: str


def parse_lock(text: str) -> dict[str, Pin]:
    """uv's requirements format: ``name==version [; marker] \\``, ``--hash=sha256:...`` lines, then
    ``# via`` annotations (one name on the line, or one per following ``#   `` line)."""
    pins: dict[str, Pin] = {}
    body = re.sub(r"\A(?:#[^\n]*\n)*", "", text.strip() + "\n")
    entries = re.split(r"\n(?=[A-Za-z0-9])", body.strip())
    for entry in entries:
        head = re.match(r"([A-Za-z0-9._-]+)==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\", entry)
        assert head, f"not a pinned requirement: {entry.splitlines()[0]!r}"
        via_block = entry.split("# via", 1)[1] if "# via" in entry else ""
        via = tuple(line.strip("# ").strip() for line in via_block.splitlines() if line.strip("# ").strip())
        name = canonicalize_name(head[1])
        pins[name] = Pin(
            name=name,
            version=Version(head[2]),
            hashes=tuple(re.findall(r"--hash=sha256:([0-9a-f]{64})", entry)),
            via=via,
            marker=(head[3] or "").strip(),
        )
    return pins


def dependency_digest(pyproject: dict[str, Any]) -> str:
    tables = [
        pyproject["build-system"]["requires"],
        pyproject["project"]["requires-python"],
        pyproject["project"]["dependencies"],
        pyproject["project"].get("optional-dependencies", {}),
    ]
    return hashlib.sha256(json.dumps(tables, sort_keys=True).encode()).hexdigest()


def recorded_digest(text: str) -> str | None:
    found = re.search(r"^# pyproject-dependencies-sha256: ([0-9a-f]{64})$", text, re.M)
    return found[1] if found else None


@pytest.mark.parametrize("lock", [LOCK, DEV_LOCK], ids=IDS)
def test_the_lock_was_made_from_the_dependency_tables_as_they_are(lock: Path) -> None:
    assert recorded_digest(lock.read_text()) == dependency_digest(PYPROJECT), (
        f"{lock.name} was made from other dependency tables than pyproject.toml's: run `just lock`"
    )


def test_the_digest_changes_with_any_dependency_table() -> None:
    base = dependency_digest(PYPROJECT)
    changed = [
        {**PYPROJECT, "build-system": {"requires": ["setuptools>=69"]}},
        {**PYPROJECT, "project": {**PROJECT, "requires-python": ">=3.12"}},
        {**PYPROJECT, "project": {**PROJECT, "dependencies": [*PROJECT["dependencies"], "idna"]}},
        {**PYPROJECT, "project": {**PROJECT, "optional-dependencies": {"dev": ["pytest>=9"]}}},
    ]
    assert len({base, *(dependency_digest(p) for p in changed)}) == 1 + len(changed)
    assert dependency_digest({**PYPROJECT, "project": {**PROJECT, "version": "9.9"}}) == base


@pytest.mark.parametrize(("lock", "wanted"), LOCKS, ids=IDS)
def test_every_requirement_is_pinned_within_its_specifier(lock: Path, wanted: list[str]) -> None:
    pins = parse_lock(lock.read_text())
    for text in wanted:
        requirement = Requirement(text)
        pin = pins.get(canonicalize_name(requirement.name))
        assert pin is not None, f"{requirement.name} is not in {lock.name}: run `just lock`"
        assert requirement.specifier.contains(pin.version, prereleases=True), (
            f"{lock.name} pins {pin.name}=={pin.version}, outside {text!r}: run `just lock`"
        )


@pytest.mark.parametrize(("lock", "wanted"), LOCKS, ids=IDS)
def test_nothing_else_is_locked_as_a_direct_requirement(lock: Path, wanted: list[str]) -> None:
    pins = parse_lock(lock.read_text())
    backend = {canonicalize_name(Requirement(t).name) for t in PYPROJECT["build-system"]["requires"]}
    direct = {canonicalize_name(Requirement(t).name) for t in wanted} - backend
    via_project = {
        p.name for p in pins.values() if any(v.startswith("trunner (pyproject.toml)") for v in p.via)
    }
    assert via_project == direct, f"{lock.name} was made from other dependencies: run `just lock`"
    unexplained = [p.name for p in pins.values() if not p.via and p.name not in backend]
    assert unexplained == [], "pins nothing asked for"


def test_the_runtime_lock_is_the_dev_lock_restricted_to_the_runtime() -> None:
    runtime, everything = parse_lock(LOCK.read_text()), parse_lock(DEV_LOCK.read_text())
    assert runtime.keys() <= everything.keys()
    for name, pin in runtime.items():
        assert (pin.version, set(pin.hashes)) == (everything[name].version, set(everything[name].hashes)), (
            f"{name} differs between the locks: run `just lock`"
        )


@pytest.mark.parametrize("lock", [LOCK, DEV_LOCK], ids=IDS)
def test_every_pin_has_hashes(lock: Path) -> None:
    pins = parse_lock(lock.read_text())
    assert len(pins) >= len(PROJECT["dependencies"])
    assert [p.name for p in pins.values() if not p.hashes] == []


def test_the_parser_reads_uv_annotations() -> None:
    text = (
        "# Made by `just lock` from pyproject.toml; do not edit.\n"
        "# pyproject-dependencies-sha256: " + "d" * 64 + "\n"
        "attrs==26.1.0 \\\n    --hash=sha256:" + "a" * 64 + "\n    # via\n    #   trunner (pyproject.toml)\n"
        "    #   cattrs\n"
        "cffi==2.1.1 ; os_name == 'nt' \\\n    --hash=sha256:" + "b" * 64 + "\n    # via trio\n"
        "setuptools==84.2.1 \\\n    --hash=sha256:" + "c" * 64 + "\n"
    )
    pins = parse_lock(text)
    assert list(pins) == ["attrs", "cffi", "setuptools"] and recorded_digest(text) == "d" * 64
    assert pins["attrs"].via == ("trunner (pyproject.toml)", "cattrs")
    assert pins["cffi"].marker == "os_name == 'nt'" and pins["cffi"].via == ("trio",)
    assert pins["setuptools"].via == () and pins["setuptools"].hashes == ("c" * 64,)


def test_the_readme_installs_trunner_with_the_runtime_lock_as_constraints() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "uv tool install . --constraints requirements.lock" in readme
    assert "pipx install ." not in readme, "an install without the lock resolves every range afresh"


@pytest.mark.skipif(
    Path(sys.prefix).resolve() != (ROOT / ".venv").resolve(),
    reason="checks the project's .venv, which `just setup` syncs to the dev lock; this is another environment",
)
def test_the_venv_holds_exactly_the_dev_lock() -> None:
    wanted = {
        name: str(pin.version)
        for name, pin in parse_lock(DEV_LOCK.read_text()).items()
        if not pin.marker or Marker(pin.marker).evaluate()
    }
    installed = {
        canonicalize_name(d.metadata["Name"]): d.version
        for d in importlib.metadata.distributions()
        if canonicalize_name(d.metadata["Name"]) not in {"pip", "trunner"}
    }
    assert installed == wanted, "run `just setup`: .venv differs from requirements-dev.lock"
