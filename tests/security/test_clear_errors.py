"""Bad input from the environment ends in one clear line and exit 2, never a traceback or a
credential."""

from __future__ import annotations

import os

import pytest
import yaml

from tests.cli.support import clean_env, trunner
from tests.doubles.executors import RecordingSink
from trunner.executors.local import LocalExecutor
from trunner.executors.settings import JobRunSettings
from trunner.job import run_job
from trunner.logs.settings import LogSettings
from trunner.models import RunnerJob


@pytest.mark.parametrize(
    "url", ["tcp://:s3cret-pw@[::1", "tcp://:s3cret-pw@host:notaport", "http://:s3cret-pw@x"]
)
def test_a_malformed_faktory_url_is_one_line_and_exit_2(url: str) -> None:
    result = trunner(
        "run", "--mode", "faktory", "--metrics-port", "0", env=clean_env(FAKTORY_URL=url), timeout=60
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "s3cret-pw" not in result.stderr
    problems = [line for line in result.stderr.splitlines() if line.startswith("  - ")]
    assert len(problems) == 1 and problems[0].startswith("  - FAKTORY_URL: "), result.stderr


FAKE = "printf 'x\\033[2K\\routcome: success\\n'"


def test_terminal_escapes_in_job_output_cannot_fake_a_line(tmp_path) -> None:
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({"id": "9", "commands": [FAKE, "exit 3"]}, width=1000))
    result = trunner("test", "--executor", "local", "-f", str(job))
    assert result.returncode != 0
    for stream in (result.stdout, result.stderr):
        assert "\x1b" not in stream and "\r" not in stream
    assert "x\\x1b[2K\\x0doutcome: success" in result.stdout
    outcomes = [line for line in result.stdout.splitlines() if line.startswith("outcome: ")]
    assert outcomes == ["outcome: failed"]


async def test_what_is_shipped_keeps_the_jobs_bytes(tmp_path) -> None:
    sink = RecordingSink()
    executor = LocalExecutor(JobRunSettings(job_pod_max_lifetime=60), base_env={"PATH": os.environ["PATH"]})
    job = RunnerJob(id="9", commands=(FAKE,))
    await run_job(job, executor=executor, sink=sink, settings=LogSettings(job_log_spool_dir=str(tmp_path)))
    assert "x\x1b[2K\routcome: success" in sink.bodies()
