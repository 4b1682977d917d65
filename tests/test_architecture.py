"""The import contract in pyproject.toml ([tool.importlinter]) holds: layers point down, kube/ and
logs/ import nothing above them, no mode imports the Kubernetes executor's internals, and sibling
modules form no cycle; executors are handed typed settings; the README's package map names every
part."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_import_contract_is_kept() -> None:
    lint_imports = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run(
        [str(lint_imports), "--no-cache", "--no-logo"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    # A new top-level module must be given its layer in pyproject.toml before this passes.
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_readme_package_map_names_every_part() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Architecture", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`([a-z_]+(?:\.py|/))`", section))
    parts = {
        path.name + ("/" if path.is_dir() else "")
        for path in (ROOT / "trunner").iterdir()
        if (path.suffix == ".py" or (path / "__init__.py").exists())
        and path.name not in ("__init__.py", "__main__.py")
    }
    assert parts <= named, sorted(parts - named)


def names_imported_from(path: Path, module: str) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == module:
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import) and any(alias.name == module for alias in node.names):
            names.add("*")
    return names


def test_executors_take_typed_settings_not_the_settings_source() -> None:
    """Only the registry turns flags, environment and config file into an executor's settings;
    the executors themselves never see where a setting came from."""
    executors = ROOT / "trunner" / "executors"
    readers = [
        str(path.relative_to(ROOT))
        for path in sorted(executors.rglob("*.py"))
        if path.name != "registry.py"
        and {"SettingsSource", "load", "*"} & names_imported_from(path, "trunner.config")
    ]
    assert readers == []


def test_at_most_ten_modules_sit_at_the_top_of_the_package() -> None:
    """``__init__.py`` and ``__main__.py`` count; sub-packages hold the rest."""
    top = sorted(path.name for path in (ROOT / "trunner").glob("*.py"))
    assert len(top) <= 10, top


def test_the_readme_package_map_names_every_module_of_the_grouped_packages() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Architecture", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`([a-z_]+(?:\.py|/))`", section))
    for package in ("cli", "observability", "net", "process"):
        parts = {
            path.name + ("/" if path.is_dir() else "")
            for path in (ROOT / "trunner" / package).iterdir()
            if (path.suffix == ".py" or (path / "__init__.py").exists()) and path.name != "__init__.py"
        }
        assert parts <= named, (package, sorted(parts - named))
