"""A job's on-disk queue of log batches: append-only, read oldest first, within a byte budget.

Each runner process makes one private directory (``trunner-spool-<random>``, mode 0700) under
the configured root, holding a ``lock`` file it keeps locked with ``flock`` for its life, so the
directory of a runner that died (crash, SIGKILL) is told apart from a live one by trying that
lock (:func:`remove_leftovers`). A job's spool is a private directory of segment files in it.
Everything below the root is opened through directory descriptors, never through a symlink and
never as an existing file (:mod:`trunner.process.privdir`): another local user can neither redirect nor
read a spool, even in a shared root such as /tmp. Records are
``header (seq, lines, markers, per-source counts, payload size, crc32) + payload``, the CRC
covering the header's other fields too (a zeroed record does not pass); a fully read segment is deleted, so the
bytes on disk (``used``) never exceed the budget. Every file operation runs in a worker thread.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import fcntl
import os
import shutil
import stat
import struct
import threading
import zlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from trunner.logs.batch import COUNTS, Batch
from trunner.process import privdir

RUNNER_PREFIX = "trunner-spool-"
DIR_PREFIX = "trunner-job-"
LOCK_NAME = "lock"
_FIELDS = struct.Struct(f"<QII{COUNTS}QI")
_CRC = struct.Struct("<I")
HEADER_SIZE = _FIELDS.size + _CRC.size
_IOV_MAX = os.sysconf("SC_IOV_MAX")
SEGMENTS_PER_BUDGET = 16
"""A segment is at most a sixteenth of the budget (or one record): at most that much
read-but-undeleted space."""


Offload = Callable[..., Awaitable[Any]]

offload: Offload = trio.to_thread.run_sync
"""How blocking file operations run: in a worker thread. (Tests on a virtual clock run them
inline instead: the clock would jump while a thread works.)"""


class SpoolError(OSError):
    """A spool file could not be written or read back intact."""


def record_size(batch: Batch) -> int:
    return HEADER_SIZE + max(batch.size - 1, 0)


def _writev_all(fd: int, vectors: list[bytes | memoryview]) -> None:
    """Write every vector in order, at most IOV_MAX per call, resuming after a short write."""
    start = 0
    while start < len(vectors):
        window = vectors[start : start + _IOV_MAX]
        written = os.writev(fd, window)
        for vector in window:
            if written < len(vector):
                vectors[start] = memoryview(vector)[written:]
                break
            written -= len(vector)
            start += 1


def _segment_name(index: int) -> str:
    return f"{index:08d}.seg"


class _RunnerDir:
    """This process's private directory under one spool root, and the lock that marks it live."""

    def __init__(self, root: Path) -> None:
        root_fd = privdir.open_root(root)
        try:
            self.name, self.fd = privdir.make_private(RUNNER_PREFIX, dir_fd=root_fd, shown_root=root)
        finally:
            os.close(root_fd)
        self.path = root / self.name
        try:
            self.lock_fd = privdir.create_file(LOCK_NAME, dir_fd=self.fd, flags=os.O_WRONLY)
            fcntl.flock(self.lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self.fd)
            with contextlib.suppress(OSError):
                root_fd = privdir.open_root(root)
                try:
                    shutil.rmtree(self.name, ignore_errors=True, dir_fd=root_fd)
                finally:
                    os.close(root_fd)
            raise

    def gone(self) -> bool:
        """The directory was deleted under the runner (a temporary-files cleaner)."""
        return os.fstat(self.fd).st_nlink == 0

    def close(self) -> None:
        os.close(self.lock_fd)
        os.close(self.fd)


_runner_dirs: dict[tuple[str, int], _RunnerDir] = {}
_runner_dirs_lock = threading.Lock()


def _runner_dir(root: Path) -> _RunnerDir:
    """This process's directory under ``root``, made on first use (a forked child makes its own)."""
    key = (os.path.abspath(root), os.getpid())
    with _runner_dirs_lock:
        found = _runner_dirs.get(key)
        if found is not None and found.gone():
            found.close()
            found = None
        if found is None:
            if not _runner_dirs:
                atexit.register(_remove_runner_dirs)
            found = _runner_dirs[key] = _RunnerDir(Path(key[0]))
        return found


def _remove_runner_dirs() -> None:
    """At exit, this process's runner directories go (their job spools are gone already)."""
    with _runner_dirs_lock:
        for (root, pid), runner in list(_runner_dirs.items()):
            if pid != os.getpid():
                continue
            with contextlib.suppress(OSError):
                root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                try:
                    shutil.rmtree(runner.name, ignore_errors=True, dir_fd=root_fd)
                finally:
                    os.close(root_fd)
            runner.close()
            del _runner_dirs[(root, pid)]


class Spool:
    """Not safe for two concurrent appends or two concurrent reads; one of each may overlap
    (they touch different file offsets, and only whole records become visible to the reader)."""

    def __init__(self, root: Path, name: str, budget: int) -> None:
        self.root = root
        self.budget = budget
        self._name = name
        self._dir: Path | None = None
        self._dir_fd: int | None = None
        self._runner: _RunnerDir | None = None
        self._segment_limit = max(budget // SEGMENTS_PER_BUDGET, 1)
        self._write_index = 0
        self._write_offset = 0
        self._write_fd: int | None = None
        self._read_index = 0
        self._read_offset = 0
        self._read_fd: int | None = None
        self._sealed: dict[int, int] = {}
        """Segments no longer written to: index -> size."""
        self.used = 0
        """Bytes of segment files on disk."""
        self.records = 0
        self.lines = 0
        self.size = 0
        """Lines (not counting gap markers) and line bytes (as :attr:`Batch.size` counts them)
        not yet read back."""
        self.counts = [0] * COUNTS
        """The sum of :attr:`Batch.counts` of the records not yet read back."""

    @property
    def path(self) -> Path | None:
        return self._dir

    def fits(self, batch: Batch) -> bool:
        if self.records == 0:
            # The next append starts a new segment and the read-through one is deleted.
            return record_size(batch) <= self.budget
        return self.used + record_size(batch) <= self.budget

    async def append(self, batch: Batch) -> None:
        """Write ``batch`` as the newest record; raises :class:`OSError` if the disk refuses."""
        length = max(batch.size - 1, 0)
        fields = _FIELDS.pack(batch.seq, batch.line_count, batch.markers, *batch.counts, length)
        crc = zlib.crc32(fields)
        for index, block in enumerate(batch.blocks):
            crc = zlib.crc32(block, zlib.crc32(b"\n", crc) if index else crc)
        header = fields + _CRC.pack(crc)
        if self._dir is None:
            await offload(self._create)
        roll = self._write_offset > 0 and (
            self.records == 0 or self._write_offset + len(header) + length > self._segment_limit
        )
        if roll:
            await offload(self._roll)
        await offload(self._append_sync, header, batch.blocks)
        self._write_offset += len(header) + length
        self.used += len(header) + length
        self.records += 1
        self.lines += batch.line_count - batch.markers
        self.size += batch.size
        self.counts = [a + b for a, b in zip(self.counts, batch.counts, strict=True)]

    async def read(self) -> Batch:
        """The oldest record not yet read; only call while :attr:`records` > 0."""
        assert self.records > 0
        seq, lines, marks, counts, payload = await offload(self._read_sync)
        batch = Batch(
            seq=seq,
            blocks=[payload],
            line_count=lines,
            size=len(payload) + 1,
            markers=marks,
            counts=counts,
        )
        self.records -= 1
        self.lines -= lines - marks
        self.size -= batch.size
        self.counts = [a - b for a, b in zip(self.counts, counts, strict=True)]
        return batch

    async def remove(self) -> None:
        """Delete the spool's files and release its lock; safe to call more than once."""
        if self._dir is not None:
            await offload(self._remove_sync)

    # --- worker-thread side ---

    def _create(self) -> None:
        runner = _runner_dir(self.root)
        name, fd = privdir.make_private(
            f"{DIR_PREFIX}{self._name}-", dir_fd=runner.fd, shown_root=runner.path
        )
        self._runner, self._dir, self._dir_fd = runner, runner.path / name, fd
        try:
            self._write_fd = self._open_segment(self._write_index, create=True)
        except OSError:
            self._remove_sync()
            raise

    def _open_segment(self, index: int, *, create: bool = False) -> int:
        assert self._dir_fd is not None
        if create:
            return privdir.create_file(
                _segment_name(index), dir_fd=self._dir_fd, flags=os.O_WRONLY | os.O_APPEND
            )
        return os.open(
            _segment_name(index), os.O_RDONLY | privdir.NOFOLLOW | os.O_CLOEXEC, dir_fd=self._dir_fd
        )

    def _roll(self) -> None:
        """Seal the write segment and start the next one; a segment already read through is
        deleted at once."""
        assert self._write_fd is not None
        os.close(self._write_fd)
        self._write_fd = None
        self._sealed[self._write_index] = self._write_offset
        self._write_index += 1
        self._write_offset = 0
        self._write_fd = self._open_segment(self._write_index, create=True)
        self._drop_read_segments()

    def _append_sync(self, header: bytes, blocks: list[bytes]) -> None:
        """Writes the header and the blocks joined by newlines with ``writev``: no copy of the
        batch (or of a part of it) is made, whatever the shape of its blocks."""
        fd = self._write_fd
        assert fd is not None
        vectors: list[bytes | memoryview] = [header]
        for index, block in enumerate(blocks):
            if index:
                vectors.append(b"\n")
            vectors.append(block)
        _writev_all(fd, vectors)

    def _read_sync(self) -> tuple[int, int, int, list[int], bytes]:
        self._drop_read_segments()
        if self._read_fd is None:
            self._read_fd = self._open_segment(self._read_index)
        header = os.pread(self._read_fd, HEADER_SIZE, self._read_offset)
        if len(header) != HEADER_SIZE:
            raise SpoolError(errno.EIO, "spool record header is truncated")
        fields, (crc,) = header[: _FIELDS.size], _CRC.unpack(header[_FIELDS.size :])
        seq, lines, marks, *counts, length = _FIELDS.unpack(fields)
        if length > self.budget:
            raise SpoolError(errno.EIO, "spool record header is damaged")
        payload = os.pread(self._read_fd, length, self._read_offset + HEADER_SIZE)
        if len(payload) != length or zlib.crc32(payload, zlib.crc32(fields)) != crc:
            raise SpoolError(errno.EIO, "spool record does not read back intact")
        self._read_offset += HEADER_SIZE + length
        return seq, lines, marks, counts, payload

    def _drop_read_segments(self) -> None:
        """Delete sealed segments the reader has passed the end of."""
        while self._sealed.get(self._read_index) == self._read_offset:
            if self._read_fd is not None:
                os.close(self._read_fd)
                self._read_fd = None
            size = self._sealed.pop(self._read_index)
            assert self._dir_fd is not None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(_segment_name(self._read_index), dir_fd=self._dir_fd)
            self.used -= size
            self._read_index += 1
            self._read_offset = 0

    def _remove_sync(self) -> None:
        for fd in (self._write_fd, self._read_fd, self._dir_fd):
            if fd is not None:
                os.close(fd)
        self._write_fd = self._read_fd = self._dir_fd = None
        if self._dir is not None and self._runner is not None:
            shutil.rmtree(self._dir.name, ignore_errors=True, dir_fd=self._runner.fd)
        self._dir = self._runner = None
        self.used = self.records = self.lines = self.size = 0
        self.counts = [0] * COUNTS


def remove_leftovers(root: Path) -> int:
    """Delete the runner directories under ``root`` of runners that are gone (their lock is free,
    or they have none: the runner could not create it) and that belong to this user; returns how
    many. Blocking: call it through ``trio.to_thread``."""
    try:
        root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return 0
    removed = 0
    try:
        for name in os.listdir(root_fd):
            if name.startswith(RUNNER_PREFIX) and _is_abandoned(name, root_fd):
                shutil.rmtree(name, ignore_errors=True, dir_fd=root_fd)
                removed += 1
    finally:
        os.close(root_fd)
    return removed


def _is_abandoned(name: str, root_fd: int) -> bool:
    try:
        info = os.stat(name, dir_fd=root_fd, follow_symlinks=False)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
            return False
        dir_fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | privdir.NOFOLLOW | os.O_CLOEXEC, dir_fd=root_fd)
    except OSError:
        return False
    try:
        lock_fd = os.open(LOCK_NAME, os.O_RDONLY | privdir.NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    finally:
        os.close(dir_fd)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(lock_fd)
    return True
