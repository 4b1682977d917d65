"""The shell script a job phase runs, identical for every executor (the Go runner's form)."""

from __future__ import annotations

import hashlib
import re
import shlex
from collections.abc import Sequence

_PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")
_UNSAFE_RUN = re.compile(r"[^A-Za-z0-9_.-]+")


def job_directory_name(job_id: str) -> str:
    """A single path component for ``job_id``: the id itself when it is a plain name (letters,
    digits, ``_.-``, not starting with a dot), else its safe characters plus a hash of the whole
    id, so ``../../etc`` can never leave the work directory and distinct ids stay distinct."""
    if _PLAIN_NAME.fullmatch(job_id):
        return job_id
    cleaned = _UNSAFE_RUN.sub("_", job_id).strip("._-")[:64] or "job"
    digest = hashlib.sha256(job_id.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{cleaned}-{digest}"


def job_directory(workdir: str, job_id: str) -> str:
    return f"{workdir.rstrip('/')}/{job_directory_name(job_id)}"


def phase_script(workdir: str, job_id: str, commands: Sequence[str]) -> str:
    """``mkdir -p <dir>;\\ncd <dir>;\\nset -xv;\\n<cmd1>;\\n<cmd2>``, the Go runner's script.

    stdout and stderr stay apart: outcome variables are read from stdout only, and the shell's
    ``set -x``/``set -v`` trace goes to stderr, so no trace line can land inside a value."""
    directory = shlex.quote(job_directory(workdir, job_id))
    return f"mkdir -p {directory};\ncd {directory};\nset -xv;\n" + ";\n".join(commands)


def phase_argv(shell: str, workdir: str, job_id: str, commands: Sequence[str]) -> list[str]:
    return [shell, "-e", "-c", phase_script(workdir, job_id, commands)]
