"""The job log spool against other local users: a root they own or redirect is refused, a
spool's files are theirs to neither read nor redirect, and nothing planted is followed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.security.other_user import as_other, needs_other_user, other_uid, shared_directory
from trunner.logs.batch import Batch
from trunner.logs.spool import LOCK_NAME, RUNNER_PREFIX, Spool, remove_leftovers
from trunner.process.privdir import UnsafeDirectoryError


def batch(seq: int, text: str) -> Batch:
    b = Batch(seq=seq)
    b.add_block(text.encode(), 1)
    return b


async def test_a_root_another_user_made_first_is_refused_and_never_written() -> None:
    needs_other_user()
    with shared_directory() as shared:
        root = shared / "spool"
        assert as_other(["mkdir", "-m", "0777", str(root)]).returncode == 0
        spool = Spool(root, "job", budget=1 << 20)
        with pytest.raises(UnsafeDirectoryError, match=f"owned by another user \\(uid {other_uid()}\\)"):
            await spool.append(batch(0, "job output"))
        assert list(root.iterdir()) == []


async def test_a_root_that_is_another_users_symlink_is_refused(tmp_path: Path) -> None:
    needs_other_user()
    victim = tmp_path / "victim"
    victim.mkdir()
    with shared_directory() as shared:
        root = shared / "spool"
        assert as_other(["ln", "-s", str(victim), str(root)]).returncode == 0
        with pytest.raises(UnsafeDirectoryError, match="symlink owned by another user"):
            await Spool(root, "job", budget=1 << 20).append(batch(0, "job output"))
    assert list(victim.iterdir()) == []


async def test_in_a_shared_root_another_user_can_neither_read_list_nor_move_a_spool() -> None:
    needs_other_user()
    with shared_directory() as shared:
        spool = Spool(shared, "job", budget=1 << 20)
        await spool.append(batch(0, "secret-looking job output"))
        assert spool.path is not None
        runner_dir = spool.path.parent
        assert runner_dir.parent == shared and runner_dir.name.startswith(RUNNER_PREFIX)
        assert oct(runner_dir.stat().st_mode & 0o777) == oct(0o700)
        assert oct(spool.path.stat().st_mode & 0o777) == oct(0o700)
        segment = next(p for p in spool.path.iterdir())
        assert as_other(["cat", str(segment)]).returncode != 0
        assert as_other(["ls", str(runner_dir)]).returncode != 0
        assert as_other(["mv", str(runner_dir), str(shared / "moved")]).returncode != 0
        assert (await spool.read()).text_lines() == ["secret-looking job output"]
        await spool.remove()


async def test_a_job_spool_swapped_for_a_symlink_is_not_followed(tmp_path: Path) -> None:
    """Where another user may rename entries of the root (no sticky bit), swapping a spool for a
    symlink changes nothing: the spool is used through its open directory."""
    victim = tmp_path / "victim"
    victim.mkdir()
    root = tmp_path / "root"
    spool = Spool(root, "job", budget=4096)
    await spool.append(batch(0, "first"))
    assert spool.path is not None
    original = spool.path
    original.rename(original.with_name("moved-away"))
    original.symlink_to(victim)
    for seq in range(1, 12):
        await spool.append(batch(seq, f"line {seq} " + "x" * 200))
    assert list(victim.iterdir()) == []
    seqs = []
    while spool.records:
        seqs.append((await spool.read()).seq)
    assert seqs == list(range(12))
    await spool.remove()
    assert list(victim.iterdir()) == [] and victim.is_dir()


async def test_a_planted_segment_is_never_opened(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_bytes(b"")
    spool = Spool(tmp_path / "root", "job", budget=4096)
    await spool.append(batch(0, "x" * 900))
    assert spool.path is not None
    (spool.path / "00000001.seg").symlink_to(target)
    with pytest.raises(FileExistsError):
        for seq in range(1, 12):
            await spool.append(batch(seq, "y" * 900))
    assert target.read_bytes() == b""


def test_leftovers_removal_follows_no_symlink_and_leaves_other_users_alone(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / LOCK_NAME).touch()
    (elsewhere / "precious").write_text("keep")
    root = tmp_path / "root"
    root.mkdir()
    (root / f"{RUNNER_PREFIX}link").symlink_to(elsewhere)
    others = root / f"{RUNNER_PREFIX}others"
    others.mkdir()
    (others / LOCK_NAME).touch()
    if os.geteuid() == 0:
        os.chown(others, 65534, 65534)
    else:
        pytest.skip("giving a directory to another user needs root")
    assert remove_leftovers(root) == 0
    assert (elsewhere / "precious").read_text() == "keep" and others.exists()
