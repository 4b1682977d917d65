"""Outcome variables as the Go runner reads them: from the job's stdout only (Go's
``SetOutcomeVarLogProcessor.ProcessStderr`` passes stderr through), with the shell's ``set -xv``
trace on stderr, so a trace line never lands inside a value, whatever the job shell. Through the
real command line, in both executors, with every shell this machine has."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from tests.cli.support import ROOT, clean_env, write_job

JOB = """\
id: "3"
image: alpine:3.20
commands:
  - echo "::start-multiline-outcome-var summary"
  - echo "line1"
  - set -v
  - echo "line2"
  - echo "::end-multiline-outcome-var"
  - echo "::set-outcome-var answer=$((6 * 7))"
  - echo "::set-outcome-var from-stderr=1" >&2
  - echo done
"""


def shell(name: str, tmp_path: Path) -> str:
    """The shell's path; busybox's ``sh`` applet through a link named ``sh``."""
    if name == "busybox sh":
        busybox = shutil.which("busybox")
        if busybox is None:
            pytest.skip("busybox is not installed on this machine")
        link = tmp_path / "bin" / "sh"
        link.parent.mkdir()
        link.symlink_to(busybox)
        return str(link)
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed on this machine")
    return found


def variables(stdout: str) -> dict[str, str]:
    """``outcome variable K=V`` lines of ``trunner test``; a multi-line value runs to the next."""
    found: dict[str, str] = {}
    key = None
    for line in stdout.split("\n"):
        if line.startswith("outcome variable "):
            key, _, value = line.removeprefix("outcome variable ").partition("=")
            found[key] = value
        elif key is not None and line:
            found[key] += "\n" + line
    return found


async def run_test(tmp_path: Path, job_shell: str, executor: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "trunner", "test", "-f", write_job(tmp_path / "job.yaml", JOB)]
    argv += [
        "--executor",
        executor,
        "--job-pod-shell",
        job_shell,
        "--job-pod-workdir",
        str(tmp_path / "jobs"),
    ]
    env = clean_env(OPSLEVEL_JOB_POD_OWNER="outcome-vars")
    if executor == "local":
        done = await trio.run_process(
            argv, cwd=ROOT, env=env, capture_stdout=True, capture_stderr=True, check=False
        )
    else:
        from tests.doubles.kube import serve_kube_api

        async with serve_kube_api() as api:
            env["KUBECONFIG"] = str(api.write_kubeconfig(tmp_path / "kubeconfig"))
            with trio.fail_after(60):
                done = await trio.run_process(
                    argv, cwd=ROOT, env=env, capture_stdout=True, capture_stderr=True, check=False
                )
    return subprocess.CompletedProcess(argv, done.returncode, done.stdout.decode(), done.stderr.decode())


@pytest.mark.parametrize("executor", ["local", "kubernetes"])
@pytest.mark.parametrize("name", ["bash", "dash", "busybox sh"])
async def test_no_trace_line_lands_in_a_value(tmp_path: Path, name: str, executor: str) -> None:
    result = await run_test(tmp_path, shell(name, tmp_path), executor)
    assert result.returncode == 0, result.stderr
    assert variables(result.stdout.split("exit code: 0\n", 1)[1]) == {
        "summary": "line1\nline2",
        "answer": "42",
    }
    log = [line.split("] ", 1)[1] for line in result.stdout.splitlines() if line.startswith("20")]
    assert "::set-outcome-var from-stderr=1" in log, "stderr is shipped as it is, never parsed"
    assert "done" in log and "line1" not in log and "line2" not in log
    assert not any(line.startswith("::") and "from-stderr" not in line for line in log)
