"""The shell script a job phase runs, identical for every executor (the Go runner's form)."""

from __future__ import annotations

import shlex
from collections.abc import Sequence


def job_directory(workdir: str, job_id: str) -> str:
    return f"{workdir.rstrip('/')}/{job_id}"


def phase_script(workdir: str, job_id: str, commands: Sequence[str]) -> str:
    """``mkdir -p <dir>;\\ncd <dir>;\\nset -xv;\\n<cmd1>;\\n<cmd2>``"""
    directory = shlex.quote(job_directory(workdir, job_id))
    return f"mkdir -p {directory};\ncd {directory};\nset -xv;\n" + ";\n".join(commands)


def phase_argv(shell: str, workdir: str, job_id: str, commands: Sequence[str]) -> list[str]:
    return [shell, "-e", "-c", phase_script(workdir, job_id, commands)]
