"""Private directories under a shared root (the job log spool, the local executor's work
directory): trunner makes its own directory there, mode 0700, and uses it through an open
descriptor, so nothing another local user plants or swaps under the root is ever followed.

Blocking: call these from a worker thread where the event loop must not wait.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from pathlib import Path

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
NOFOLLOW = os.O_NOFOLLOW
_ATTEMPTS = 100


class UnsafeDirectoryError(OSError):
    """A directory trunner would write in is not safe from other local users."""

    def __init__(self, path: Path | str, problem: str) -> None:
        super().__init__(errno.EPERM, f"{path}: {problem}; refusing to use it")
        self.path = str(path)


def _owner_ok(uid: int) -> bool:
    return uid in (os.geteuid(), 0)


def _check_shared(path: Path | str, info: os.stat_result) -> None:
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not info.st_mode & stat.S_ISVTX:
        raise UnsafeDirectoryError(
            path, f"may be written by other users (mode {stat.S_IMODE(info.st_mode):04o}) and is not sticky"
        )


def _check_ancestors(path: Path) -> None:
    """Every directory above ``path`` (symlinks resolved) belongs to this user or root and, if
    others may write to it, is sticky: else another user could swap a directory on the way."""
    for ancestor in Path(os.path.realpath(path)).parents:
        try:
            info = os.stat(ancestor)
        except FileNotFoundError:
            continue
        if not _owner_ok(info.st_uid):
            raise UnsafeDirectoryError(ancestor, f"is owned by another user (uid {info.st_uid})")
        _check_shared(ancestor, info)


def open_root(path: Path, *, sticky_if_shared: bool = False) -> int:
    """A descriptor of the shared root ``path``, created (mode 0700) when missing. Refused when
    it, or the symlink it is reached by, belongs to another user (not this one, not root); with
    ``sticky_if_shared`` also when it or a directory above it may be written by others and is not
    sticky (as /tmp is), for roots whose paths other programs follow (a shell's ``cd``)."""
    if sticky_if_shared:
        _check_ancestors(path)
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except FileExistsError:
        raise UnsafeDirectoryError(path, "exists and is not a directory") from None
    link = os.lstat(path)
    if stat.S_ISLNK(link.st_mode) and not _owner_ok(link.st_uid):
        raise UnsafeDirectoryError(path, f"is a symlink owned by another user (uid {link.st_uid})")
    fd = os.open(path, _DIR_FLAGS)
    try:
        info = os.fstat(fd)
        if not _owner_ok(info.st_uid):
            raise UnsafeDirectoryError(
                path, f"is owned by another user (uid {info.st_uid}), not by uid {os.geteuid()} or root"
            )
        if sticky_if_shared:
            _check_shared(path, info)
            _check_ancestors(path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def check_private(fd: int, path: Path | str) -> None:
    """Refuse the open directory ``fd`` unless it is a directory of this user that no one else
    may enter (mode 0700 or narrower)."""
    info = os.fstat(fd)
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafeDirectoryError(path, "is not a directory")
    if info.st_uid != os.geteuid():
        raise UnsafeDirectoryError(path, f"is owned by uid {info.st_uid}, not by uid {os.geteuid()}")
    if info.st_mode & 0o077:
        raise UnsafeDirectoryError(
            path, f"has mode {stat.S_IMODE(info.st_mode):04o}; a private directory must be 0700"
        )


def open_private(name: str, *, dir_fd: int, shown: Path | str) -> int:
    """Open the existing private directory ``name`` of ``dir_fd`` without following a symlink,
    and check it (:func:`check_private`)."""
    try:
        fd = os.open(name, _DIR_FLAGS | NOFOLLOW, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UnsafeDirectoryError(shown, "is a symlink or not a directory") from None
        raise
    try:
        check_private(fd, shown)
    except BaseException:
        os.close(fd)
        raise
    return fd


def make_private(prefix: str, *, dir_fd: int, shown_root: Path | str) -> tuple[str, int]:
    """Create a new directory ``<prefix><random>`` (mode 0700) in ``dir_fd``, as ``mkdtemp``
    does, and return its name and an open descriptor of it."""
    for _ in range(_ATTEMPTS):
        name = prefix + secrets.token_hex(6)
        try:
            os.mkdir(name, 0o700, dir_fd=dir_fd)
        except FileExistsError:
            continue
        return name, open_private(name, dir_fd=dir_fd, shown=Path(shown_root, name))
    raise FileExistsError(errno.EEXIST, f"no unused directory name {prefix}* in {shown_root}")


def create_file(name: str, *, dir_fd: int, flags: int) -> int:
    """A new file ``name`` (mode 0600) in ``dir_fd``: never an existing one, never through a
    symlink."""
    return os.open(name, flags | os.O_CREAT | os.O_EXCL | NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
