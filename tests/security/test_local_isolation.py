"""Local jobs are contained: a process a job starts in a new session (``setsid``) dies with the
job, and cannot see another job's processes (or read their environment, where sensitive
variables are)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest
import trio

from tests.executors.test_local import Collect, running_with
from trunner.executors import local
from trunner.executors.local import LocalExecutor
from trunner.executors.settings import JobRunSettings
from trunner.models import JobVariable, RunnerJob

SECRET = "job-b-secret-value-31337"


def executor() -> LocalExecutor:
    settings = JobRunSettings(job_pod_shell="/bin/sh", job_pod_max_lifetime=60)
    return LocalExecutor(settings, base_env={"PATH": os.environ["PATH"]})


def unique_sleep() -> str:
    """A sleep duration no other process on the host has in its command line (test runs of
    other checkouts may run at the same time)."""
    return f"312.{os.getpid()}{secrets.randbelow(10**6):06d}"


async def isolated() -> bool:
    for wrapper in local.pid_namespace_wrappers(os.geteuid()):
        if await local._probe_isolation(wrapper) is None:
            return True
    return False


async def test_a_setsid_process_dies_with_its_job() -> None:
    if not await isolated():
        pytest.skip("no PID namespace here (unshare --pid is refused); see the tracking test below")
    marker = unique_sleep()
    job = RunnerJob(id="a", commands=(f"setsid sleep {marker} & true",))
    with trio.fail_after(30):
        result = await executor().run(job, Collect())
    assert result.exit_code == 0
    assert running_with(marker) == []


async def test_without_a_pid_namespace_tracked_descendants_are_killed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if not Path("/proc/self/stat").exists():
        pytest.skip("tracking a job's processes needs /proc")

    async def unavailable(wrapper: list[str]) -> str:
        return "refused for this test"

    monkeypatch.setattr(local, "_probe_isolation", unavailable)
    marker = unique_sleep()
    job = RunnerJob(id="a", commands=(f"setsid sleep {marker} & sleep 2",))
    with trio.fail_after(30):
        result = await executor().run(job, Collect())
    assert result.exit_code == 0
    assert running_with(marker) == []


async def test_a_job_cannot_read_another_jobs_environment(tmp_path: Path) -> None:
    if not await isolated():
        pytest.skip("no PID namespace here: jobs of one user can read each other's /proc (see README)")
    r, b, s, out = (tmp_path / name for name in ("ready", "b-started", "scanned", "out"))
    wait = "while [ ! -f {0} ]; do sleep 0.05; done"
    scanner = (
        f"touch {r}; {wait.format(b)}; "
        f"for e in /proc/[0-9]*/environ; do tr '\\0' '\\n' < \\$e 2>/dev/null; done | grep -c {SECRET} > {out}; "
        f"touch {s}"
    )
    job_a = RunnerJob(id="a", commands=(f'setsid sh -c "{scanner}" & {wait.format(s)}',))
    job_b = RunnerJob(
        id="b",
        commands=(f"{wait.format(r)}; touch {b}; {wait.format(s)}",),
        variables=(JobVariable("SECRET_B", SECRET, sensitive=True),),
    )
    shared = executor()
    results = []

    async def run(job: RunnerJob) -> None:
        results.append(await shared.run(job, Collect()))

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run, job_a)
            nursery.start_soon(run, job_b)
    assert [r.exit_code for r in results] == [0, 0]
    assert out.read_text().strip() == "0"


def test_variable_names_an_environment_cannot_hold_are_a_clear_problem() -> None:
    job = RunnerJob(
        id="v",
        commands=("true",),
        variables=(
            JobVariable("A=B", "1"),
            JobVariable("NUL\0NAME", "1"),
            JobVariable("", "1"),
            JobVariable("OK", "a\0b", sensitive=True),
        ),
    )
    problems = executor().check_job(job)
    assert "variables[0].key: 'A=B' is not a valid environment variable name" in problems
    assert "variables[1].key: 'NUL\\x00NAME' is not a valid environment variable name" in problems
    assert "variables[2].key: '' is not a valid environment variable name" in problems
    assert any(p.startswith("variables[3] (OK): the value holds a NUL") and "a\0b" not in p for p in problems)
