"""``python -m trunner run`` as a real process pointed at the OpsLevel double, with the local
executor: real signals, real exit codes. These wait on real time, bounded, for the process only."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from tests.doubles.opslevel import OpsLevelDouble, Stall, job_payload
from tests.opslevel.harness import job_output

ROOT = Path(__file__).resolve().parents[2]


class RunnerProcess:
    def __init__(self, process: trio.Process, stderr: Path) -> None:
        self.process = process
        self.stderr_path = stderr

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()

    async def wait(self, timeout: float) -> tuple[int, float]:
        """Exit code and seconds taken; kills the process if it overruns."""
        started = trio.current_time()
        with trio.move_on_after(timeout):
            code = await self.process.wait()
            return code, trio.current_time() - started
        self.process.kill()
        await self.process.wait()
        raise AssertionError(f"trunner did not exit within {timeout}s; stderr:\n{self.stderr}")


async def start_runner(
    opslevel: OpsLevelDouble, tmp_path: Path, *, prefix: tuple[str, ...] = (), **env: str
) -> RunnerProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("OPSLEVEL_", "FAKTORY_", "RUNNER_"))}
    environ.update(
        OPSLEVEL_API_URL=opslevel.url,
        OPSLEVEL_API_TOKEN=opslevel.token,
        OPSLEVEL_METRICS_PORT="0",
        OPSLEVEL_EXECUTOR="local",
        OPSLEVEL_POLL_INTERVAL="0.2",
        OPSLEVEL_JOB_POD_LOG_MAX_INTERVAL="0.2",
        PYTHONPATH=str(ROOT),
    )
    environ.update(env)
    stderr = tmp_path / "trunner.stderr"
    process = await trio.lowlevel.open_process(
        [*prefix, sys.executable, "-m", "trunner", "run"],
        env=environ,
        cwd=str(ROOT),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=stderr.open("wb"),
    )
    return RunnerProcess(process, stderr)


async def wait_for(
    opslevel: OpsLevelDouble, predicate: object, runner: RunnerProcess, timeout: float = 30
) -> None:
    with trio.move_on_after(timeout):
        await opslevel.wait_until(predicate)  # type: ignore[arg-type]
        return
    runner.process.kill()
    raise AssertionError(f"condition not met within {timeout}s; stderr:\n{runner.stderr}")


async def test_sigterm_mid_job_reports_canceled_unregisters_and_exits_0(
    opslevel: OpsLevelDouble, tmp_path: Path
) -> None:
    opslevel.add_job(job_payload("job-ok", ["echo hello", "echo '::set-outcome-var answer=42'"]))
    opslevel.add_job(job_payload("job-long", ["echo started", "sleep 60"]))
    runner = await start_runner(opslevel, tmp_path, OPSLEVEL_JOB_CONCURRENCY="1", OPSLEVEL_SHUTDOWN_GRACE="1")
    await wait_for(opslevel, lambda: "started" in job_output(opslevel, "job-long"), runner)
    runner.process.send_signal(signal.SIGTERM)
    code, seconds = await runner.wait(timeout=20)
    assert code == 0, runner.stderr
    assert seconds < 10
    [ok] = opslevel.outcomes["job-ok"]
    assert (ok.outcome, ok.variables) == ("success", (("answer", "42"),))
    assert "hello" in job_output(opslevel, "job-ok")
    assert [o.outcome for o in opslevel.outcomes["job-long"]] == ["canceled"]
    assert opslevel.calls[-1].operation == "RunnerUnregister"
    assert not opslevel.runners["runner-1"].registered


async def test_a_hung_api_at_shutdown_still_lets_the_process_exit(
    opslevel: OpsLevelDouble, tmp_path: Path
) -> None:
    opslevel.add_job(job_payload("job-long", ["echo started", "sleep 60"]))
    runner = await start_runner(
        opslevel,
        tmp_path,
        OPSLEVEL_SHUTDOWN_GRACE="1",
        OPSLEVEL_LOG_FLUSH_TIMEOUT="2",
        OPSLEVEL_JOB_OUTCOME_TIMEOUT="2",
        OPSLEVEL_API_TIMEOUT="2",
    )
    await wait_for(opslevel, lambda: "started" in job_output(opslevel, "job-long"), runner)
    opslevel.inject(Stall(), times=None)
    runner.process.send_signal(signal.SIGTERM)
    code, seconds = await runner.wait(timeout=30)
    assert code == 0, runner.stderr
    assert seconds < 1 + 2 + 2 + 2 + 3
    assert "could not unregister" in runner.stderr


async def test_a_rejected_token_exits_1_with_one_line_and_no_token(
    opslevel: OpsLevelDouble, tmp_path: Path
) -> None:
    runner = await start_runner(opslevel, tmp_path, OPSLEVEL_API_TOKEN="wrong-secret-token")
    code, _ = await runner.wait(timeout=30)
    assert code == 1
    errors = [line for line in runner.stderr.splitlines() if " level=error " in line]
    assert len(errors) == 1, runner.stderr
    assert "export OPSLEVEL_API_TOKEN=<token>" in errors[0]
    assert "wrong-secret-token" not in runner.stderr


async def test_a_missing_token_is_a_configuration_error(opslevel: OpsLevelDouble, tmp_path: Path) -> None:
    runner = await start_runner(opslevel, tmp_path, OPSLEVEL_API_TOKEN="")
    code, _ = await runner.wait(timeout=30)
    assert code == 2
    assert "--api-token (OPSLEVEL_API_TOKEN): is required" in runner.stderr
    assert opslevel.calls == []


def _pid_namespaces_allowed() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--pid", "--fork", "true"], capture_output=True, timeout=30)
    return probe.returncode == 0


@pytest.mark.skipif(
    not _pid_namespaces_allowed(), reason="needs unshare(1) and a PID namespace this user may create"
)
async def test_as_pid_1_sigterm_still_shuts_down_gracefully(opslevel: OpsLevelDouble, tmp_path: Path) -> None:
    opslevel.add_job(job_payload("job-long", ["echo started", "sleep 60"]))
    runner = await start_runner(
        opslevel, tmp_path, prefix=("unshare", "--pid", "--fork", "--kill-child"), OPSLEVEL_SHUTDOWN_GRACE="1"
    )
    await wait_for(opslevel, lambda: "started" in job_output(opslevel, "job-long"), runner)
    children = Path(f"/proc/{runner.process.pid}/task/{runner.process.pid}/children").read_text().split()
    [pid_1] = children
    [nspid] = [
        line for line in Path(f"/proc/{pid_1}/status").read_text().splitlines() if line.startswith("NSpid:")
    ]
    assert nspid.split()[-1] == "1"
    os.kill(int(pid_1), signal.SIGTERM)
    code, seconds = await runner.wait(timeout=20)
    assert code == 0, runner.stderr
    assert seconds < 10
    assert [o.outcome for o in opslevel.outcomes["job-long"]] == ["canceled"]
    assert opslevel.calls[-1].operation == "RunnerUnregister"


async def test_sigterm_with_a_full_spool_exits_in_time_counts_what_is_left_and_removes_the_spool(
    opslevel: OpsLevelDouble, tmp_path: Path
) -> None:
    spool_dir = tmp_path / "spool"
    opslevel.inject(Stall(), operation="RunnerAppendJobLog", times=None)
    opslevel.add_job(job_payload("job-loud", ["seq 1 3000000", "sleep 60"]))
    runner = await start_runner(
        opslevel,
        tmp_path,
        OPSLEVEL_SHUTDOWN_GRACE="1",
        OPSLEVEL_LOG_FLUSH_TIMEOUT="2",
        OPSLEVEL_JOB_OUTCOME_TIMEOUT="5",
        OPSLEVEL_API_TIMEOUT="2",
        OPSLEVEL_LOG_STALL_TIMEOUT="600",
        OPSLEVEL_JOB_POD_LOG_MAX_SIZE="65536",
        OPSLEVEL_JOB_LOG_SPOOL_SIZE="1048576",
        OPSLEVEL_JOB_LOG_SPOOL_DIR=str(spool_dir),
    )

    def spooled() -> int:
        return sum(p.stat().st_size for p in spool_dir.rglob("*.seg")) if spool_dir.exists() else 0

    for _ in range(600):  # the spool is a file: polled, at most 60 s
        if spooled() >= 900_000:
            break
        await trio.sleep(0.1)
    assert spooled() >= 900_000, runner.stderr
    assert spooled() <= 1048576
    runner.process.send_signal(signal.SIGTERM)
    code, seconds = await runner.wait(timeout=30)
    assert code == 0, runner.stderr
    assert seconds < 1 + 2 + 5 + 3, runner.stderr
    [outcome] = opslevel.outcomes["job-loud"]
    assert outcome.outcome == "canceled"
    assert "log lines" in runner.stderr and "could not be delivered" in runner.stderr
    assert "the runner's shutdown deadline" in runner.stderr
    assert list(spool_dir.iterdir()) == []
