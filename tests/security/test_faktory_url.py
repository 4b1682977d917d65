"""A Faktory job gets FAKTORY_URL (the server's password in it) as a sensitive variable: a job
that prints it ships it masked."""

from __future__ import annotations

import os
from pathlib import Path

import attrs

from tests.doubles.executors import RecordingSink
from tests.faktory.test_decode import job_with
from trunner.executors.local import LocalExecutor
from trunner.executors.settings import JobRunSettings
from trunner.faktory.decode import decode_legacy_job
from trunner.job import run_job
from trunner.logs.settings import LogSettings

PASSWORD = "faktory-secret-pw-4242"


async def test_a_job_printing_faktory_url_ships_it_masked(tmp_path: Path) -> None:
    environ = {"FAKTORY_URL": f"tcp://:{PASSWORD}@127.0.0.1:7419", "FAKTORY_PROVIDER": "FAKTORY_URL"}
    job = decode_legacy_job(job_with(), environ).job
    job = attrs.evolve(job, commands=('echo "url=$FAKTORY_URL"',), init_commands=(), files=())
    sink = RecordingSink()
    executor = LocalExecutor(JobRunSettings(job_pod_max_lifetime=60), base_env={"PATH": os.environ["PATH"]})
    settings = LogSettings(job_log_spool_dir=str(tmp_path))
    outcome = await run_job(job, executor=executor, sink=sink, settings=settings)
    assert outcome.exit_code == 0, sink.lines
    shipped = "\n".join(sink.lines)
    assert PASSWORD not in shipped
    assert "url=**********" in sink.bodies() or "url=tcp://:**********@127.0.0.1:7419" in sink.bodies()
