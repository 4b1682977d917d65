"""requirements.lock (written by `just lock`, installed by the Dockerfile) against pyproject.toml: every runtime
dependency and the build backend are pinned to a version their specifier admits, nothing else is locked as
a direct requirement, and every pin carries hashes. A dependency added or changed in pyproject.toml without
relocking fails here."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import attrs
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
LOCK = ROOT / "requirements.lock"


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
    entries = re.split(r"\n(?=[A-Za-z0-9])", text.strip())
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


def test_every_runtime_dependency_and_the_build_backend_is_pinned_within_its_specifier() -> None:
    pins = parse_lock(LOCK.read_text())
    wanted = [
        *PYPROJECT["project"]["dependencies"],
        *PYPROJECT["build-system"]["requires"],
    ]
    for text in wanted:
        requirement = Requirement(text)
        pin = pins.get(canonicalize_name(requirement.name))
        assert pin is not None, f"{requirement.name} is not in requirements.lock: run `just lock`"
        assert requirement.specifier.contains(pin.version, prereleases=True), (
            f"requirements.lock pins {pin.name}=={pin.version}, outside {text!r}: run `just lock`"
        )


def test_nothing_else_is_locked_as_a_direct_requirement() -> None:
    pins = parse_lock(LOCK.read_text())
    direct = {canonicalize_name(Requirement(t).name) for t in PYPROJECT["project"]["dependencies"]}
    backend = {canonicalize_name(Requirement(t).name) for t in PYPROJECT["build-system"]["requires"]}
    via_project = {p.name for p in pins.values() if "trunner (pyproject.toml)" in p.via}
    assert via_project == direct, "the lock was made from other dependencies: run `just lock`"
    unexplained = [p.name for p in pins.values() if not p.via and p.name not in backend]
    assert unexplained == [], "pins nothing asked for"


def test_every_pin_has_hashes() -> None:
    pins = parse_lock(LOCK.read_text())
    assert len(pins) >= len(PYPROJECT["project"]["dependencies"])
    assert [p.name for p in pins.values() if not p.hashes] == []


def test_the_parser_reads_uv_annotations() -> None:
    text = (
        "attrs==26.1.0 \\\n    --hash=sha256:" + "a" * 64 + "\n    # via\n    #   trunner (pyproject.toml)\n"
        "    #   cattrs\n"
        "cffi==2.1.1 ; os_name == 'nt' \\\n    --hash=sha256:" + "b" * 64 + "\n    # via trio\n"
        "setuptools==84.2.1 \\\n    --hash=sha256:" + "c" * 64 + "\n"
    )
    pins = parse_lock(text)
    assert pins["attrs"].via == ("trunner (pyproject.toml)", "cattrs")
    assert pins["cffi"].marker == "os_name == 'nt'" and pins["cffi"].via == ("trio",)
    assert pins["setuptools"].via == () and pins["setuptools"].hashes == ("c" * 64,)
