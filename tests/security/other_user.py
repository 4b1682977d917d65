"""Acting as another local user: ``runuser -u nobody`` where the host allows it (the tests run as
root and the command exists), else the test is skipped with the reason."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

OTHER = "nobody"


def other_user_problem() -> str | None:
    """Why acting as another user is impossible here, or None."""
    if os.geteuid() != 0:
        return "acting as another local user needs root (runuser); the tests do not run as root"
    if shutil.which("runuser") is None:
        return "the runuser command (util-linux) is not installed"
    try:
        probe = subprocess.run(["runuser", "-u", OTHER, "--", "true"], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"runuser -u {OTHER} cannot run: {exc}"
    if probe.returncode != 0:
        return f"runuser -u {OTHER} fails here: {probe.stderr.decode(errors='replace').strip()}"
    return None


def needs_other_user() -> None:
    problem = other_user_problem()
    if problem:
        pytest.skip(problem)


def as_other(argv: Sequence[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["runuser", "-u", OTHER, "--", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        **kwargs,  # type: ignore[arg-type]
    )


def other_uid() -> int:
    import pwd

    return pwd.getpwnam(OTHER).pw_uid


@contextmanager
def shared_directory() -> Iterator[Path]:
    """A fresh directory every user can write in and pass through, sticky as /tmp is (pytest's
    own temporary directories are private to the user running the tests)."""
    path = Path(tempfile.mkdtemp(prefix="trunner-shared-test-"))
    try:
        path.chmod(0o1777)
        assert stat.S_IMODE(path.stat().st_mode) == 0o1777
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
