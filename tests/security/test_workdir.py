"""--job-pod-workdir in a shared directory: job ids are predictable, so another local user can
plant ``<workdir>/<job id>``; the local executor works in a private directory of its own."""

from __future__ import annotations

import os
from pathlib import Path

from tests.executors.test_local import Collect
from tests.security.other_user import as_other, needs_other_user, other_uid, shared_directory
from trunner.executors.base import ExitKind
from trunner.executors.local import WORKDIR_PREFIX, LocalExecutor
from trunner.executors.settings import JobRunSettings
from trunner.models import RunnerJob


def executor(workdir: Path) -> LocalExecutor:
    settings = JobRunSettings(job_pod_shell="/bin/sh", job_pod_workdir=str(workdir), job_pod_max_lifetime=60)
    return LocalExecutor(settings, base_env={"PATH": os.environ["PATH"]})


async def test_a_planted_job_directory_symlink_is_not_entered(tmp_path: Path) -> None:
    needs_other_user()
    with shared_directory() as shared:
        trap = shared / "trap"
        script = "#!/bin/sh\ntouch " + str(shared / "attacker-ran") + "\n"
        assert as_other(["mkdir", str(trap)]).returncode == 0
        assert as_other(["sh", "-c", f"printf '%s' '{script}' > {trap}/build.sh"]).returncode == 0
        assert as_other(["ln", "-s", str(trap), str(shared / "42")]).returncode == 0
        feed = Collect()
        job = RunnerJob(id="42", commands=("pwd", "test -f ./build.sh && sh ./build.sh || echo no-script"))
        result = await executor(shared).run(job, feed)
        assert result.kind is ExitKind.EXITED and result.exit_code == 0
        assert not (shared / "attacker-ran").exists()
        pwd = feed.out.splitlines()[0]
        assert Path(pwd).parent.parent == shared and Path(pwd).parent.name.startswith(WORKDIR_PREFIX)
        assert "no-script" in feed.out
        assert oct(Path(pwd).parent.stat().st_mode & 0o777) == oct(0o700)


async def test_a_workdir_another_user_owns_is_refused() -> None:
    needs_other_user()
    with shared_directory() as shared:
        root = shared / "work"
        assert as_other(["mkdir", "-m", "1777", str(root)]).returncode == 0
        feed = Collect()
        result = await executor(root).run(RunnerJob(id="1", commands=("touch made",)), feed)
        assert result.kind is ExitKind.COULD_NOT_START
        assert f"owned by another user (uid {other_uid()})" in result.message
        assert list(root.iterdir()) == []


async def test_a_workdir_others_may_write_without_a_sticky_bit_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "open"
    root.mkdir()
    root.chmod(0o777)
    result = await executor(root).run(RunnerJob(id="1", commands=("touch made",)), Collect())
    assert result.kind is ExitKind.COULD_NOT_START
    assert "may be written by other users (mode 0777) and is not sticky" in result.message
    assert list(root.iterdir()) == []


async def test_a_workdir_below_a_directory_others_may_write_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "open"
    shared.mkdir()
    shared.chmod(0o777)
    root = shared / "mine"
    result = await executor(root).run(RunnerJob(id="1", commands=("touch made",)), Collect())
    assert result.kind is ExitKind.COULD_NOT_START
    assert f"{shared}: may be written by other users (mode 0777) and is not sticky" in result.message
    assert list(shared.iterdir()) == []
