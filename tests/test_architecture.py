"""The import contract in pyproject.toml ([tool.importlinter]) holds: layers point down, kube/ and
logs/ import nothing above them, and sibling modules form no cycle."""

from __future__ import annotations

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
