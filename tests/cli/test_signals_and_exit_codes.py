"""Ctrl-C / SIGTERM and exit statuses, through the real command line."""

from __future__ import annotations

import signal

import pytest

from tests.cli.support import read_until, start_trunner, trunner, write_job

SLEEPER = """\
id: "7"
commands:
  - echo started
  - sleep 30
  - echo never
"""


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_during_test_cancels_cleanly_with_the_shell_status(tmp_path, signum, status):
    process = start_trunner("test", "--executor", "local", "-f", write_job(tmp_path / "job.yaml", SLEEPER))
    try:
        read_until(process, "started")
        process.send_signal(signum)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == status, stderr
    assert "outcome: canceled" in stdout and "never" not in stdout.replace("echo never", "")
    assert "Traceback" not in stderr and "Error" not in stderr
    assert f"canceled by {signal.Signals(signum).name}" in stderr


def test_signal_during_local_run_stops_with_the_shell_status(tmp_path):
    (tmp_path / "jobs").mkdir()
    write_job(tmp_path / "jobs" / "sleeper.yaml", SLEEPER)
    process = start_trunner(
        "run", "--mode", "local", "--jobs", str(tmp_path / "jobs"), "--shutdown-grace", "0"
    )
    try:
        read_until(process, "started")
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 143, stderr
    assert "canceled" in stdout and "Traceback" not in stderr
    assert "1 of 1 jobs did not succeed; stopped by SIGTERM" in stderr


def test_local_run_fails_when_any_job_fails_and_says_how_many(tmp_path):
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    write_job(jobs / "ok.yaml", 'id: "1"\ncommands: [echo fine]\n')
    write_job(jobs / "bad.yaml", 'id: "2"\ncommands: ["exit 4"]\n')
    write_job(jobs / "worse.yaml", 'id: "3"\ncommands: ["exit 5"]\n')
    result = trunner("run", "--mode", "local", "--jobs", str(jobs))
    assert result.returncode == 1
    assert "trunner: 2 of 3 jobs did not succeed" in result.stderr


def test_local_run_succeeds_when_every_job_does(tmp_path):
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    write_job(jobs / "ok.yaml", 'id: "1"\ncommands: [echo fine]\n')
    result = trunner("run", "--mode", "local", "--jobs", str(jobs))
    assert result.returncode == 0, result.stderr
    assert "did not succeed" not in result.stderr


def test_local_run_counts_unreadable_job_files(tmp_path):
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    write_job(jobs / "ok.yaml", 'id: "1"\ncommands: [echo fine]\n')
    write_job(jobs / "broken.yaml", "id: [\n")
    result = trunner("run", "--mode", "local", "--jobs", str(jobs))
    assert result.returncode == 1
    assert "1 job file could not be read" in result.stderr
