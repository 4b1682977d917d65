"""What the runner process does to itself at start so the jobs it runs, as its own user, cannot
read it: no ``/proc/<pid>/environ``, ``mem`` or ptrace of the runner (Linux; elsewhere nothing)."""

from __future__ import annotations

import ctypes
import sys

_PR_SET_DUMPABLE = 4
_PR_GET_DUMPABLE = 3


def _prctl(option: int, value: int = 0) -> int | None:
    """``prctl(option, value)``'s result, or None where there is no prctl."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    result: int = libc.prctl(option, ctypes.c_ulong(value), 0, 0, 0)
    return result


def make_undumpable() -> bool:
    """Mark the process non-dumpable (``PR_SET_DUMPABLE`` 0): its ``/proc/<pid>`` files belong
    to root and no process of the same user may ptrace it; a child gets the default back when it
    executes a program. Returns whether it took effect."""
    return _prctl(_PR_SET_DUMPABLE, 0) == 0


def is_dumpable() -> bool | None:
    result = _prctl(_PR_GET_DUMPABLE)
    return None if result is None else result == 1
