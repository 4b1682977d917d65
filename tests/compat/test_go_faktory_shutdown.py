"""A Faktory job interrupted by the runner's shutdown is left to Faktory's redelivery, as the Go
runner leaves it (its handler never returns, so faktory_worker_go neither ACKs nor FAILs it):
through the real command line, ``trunner run --mode faktory`` against the Faktory double."""

from __future__ import annotations

import signal
import sys

import trio

from tests.cli.support import ROOT, clean_env
from tests.doubles.faktory import faktory_double


async def test_sigterm_past_the_grace_neither_reports_nor_acks_the_running_job(tmp_path) -> None:
    async with faktory_double() as server:
        jid = server.enqueue(
            "legacy", [{"id": "41", "image": "alpine", "commands": ["echo started", "sleep 600"]}]
        )
        env = clean_env(
            FAKTORY_URL=server.url(),
            OPSLEVEL_METRICS_PORT="0",
            OPSLEVEL_JOB_POD_WORKDIR=str(tmp_path / "jobs"),
        )
        argv = [sys.executable, "-m", "trunner", "run", "--mode", "faktory", "--executor", "local"]
        argv += ["--shutdown-grace", "1", "--job-pod-log-max-interval", "1"]
        with trio.fail_after(60):
            process = await trio.lowlevel.open_process(argv, cwd=ROOT, env=env)
            try:
                await server.wait_for(
                    lambda: any(p["jobtype"] == "Runners::Faktory::AppendJobLog" for p in server.pushed)
                )
                process.send_signal(signal.SIGTERM)
                code = await process.wait()
            finally:
                process.kill()
    assert code == 0
    assert server.acks == [] and server.fails == []
    assert list(server.working) == [jid]
    kinds = [p["jobtype"] for p in server.pushed]
    assert "Runners::Faktory::ReportJobOutcome" not in kinds and "Runners::Faktory::AppendJobLog" in kinds
