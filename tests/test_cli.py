"""The command line as a user runs it: real subprocesses, bounded by timeouts."""

from __future__ import annotations

import sys

from tests.cli.support import ROOT, clean_env, trunner


def test_version():
    result = trunner("version", "--short")
    assert result.returncode == 0 and result.stdout.startswith("trunner ")


def test_test_command_prints_lines_outcome_and_variables():
    result = trunner("test", "--executor", "local", "-f", "examples/jobs/02-outcome-vars.yaml")
    assert result.returncode == 0, result.stderr
    assert "computing a report" in result.stdout
    assert "outcome: success" in result.stdout
    assert "outcome variable status=green" in result.stdout
    assert "::set-outcome-var" not in result.stdout.replace("+ echo ::set-outcome-var", "")


def test_test_command_exit_status_follows_the_outcome():
    result = trunner("test", "--executor", "local", "-f", "examples/failing.yaml")
    assert result.returncode == 1
    assert "outcome: failed" in result.stdout and "exit code: 3" in result.stdout


def test_test_command_reads_stdin():
    result = trunner(
        "test", "--executor", "local", "-f", "-", stdin='{"id": "9", "commands": ["echo from stdin"]}'
    )
    assert result.returncode == 0 and "from stdin" in result.stdout


def test_invalid_settings_are_rejected_before_running():
    result = trunner(
        "test", "-f", "examples/jobs/01-hello.yaml", env=clean_env(OPSLEVEL_JOB_POD_LOG_MAX_SIZE="0")
    )
    assert result.returncode == 2
    assert "--job-pod-log-max-size (OPSLEVEL_JOB_POD_LOG_MAX_SIZE): must be greater than 0" in result.stderr
    assert "Traceback" not in result.stderr


def test_flags_win_over_environment():
    result = trunner(
        "test",
        "--executor",
        "local",
        "-f",
        "examples/jobs/01-hello.yaml",
        "--job-pod-log-max-size",
        "4096",
        env=clean_env(OPSLEVEL_JOB_POD_LOG_MAX_SIZE="0"),
    )
    assert result.returncode == 0, result.stderr


def test_run_local_mode_runs_every_example_and_prints_a_summary():
    result = trunner("run", "--mode", "local", "--jobs", "examples/jobs")
    assert result.returncode == 0, result.stderr
    summary = result.stdout[result.stdout.index("job  ") :]
    for job_id, outcome in [("1", "success"), ("2", "success"), ("6", "success")]:
        assert any(line.split()[:2] == [job_id, outcome] for line in summary.splitlines()), summary
    assert "01-hello | " in result.stdout
    assert "World!" not in result.stdout


def test_run_help_documents_settings_with_defaults_and_env():
    result = trunner("run", "--help")
    assert result.returncode == 0
    for text in (
        "--job-concurrency",
        "OPSLEVEL_JOB_CONCURRENCY",
        "--job-pod-log-max-size",
        "--shutdown-grace",
    ):
        assert text in result.stdout


async def test_test_command_runs_the_job_as_a_pod_by_default(tmp_path):
    """``trunner test`` without ``--executor``, as the Go runner's ``test`` (which has no other
    executor): the job runs as a pod of the Kubernetes API double, found through KUBECONFIG as a
    real cluster would be, over REST and the WebSocket exec protocol; the double runs the exec'd
    commands as local processes."""
    import trio

    from tests.doubles.kube import serve_kube_api

    async with serve_kube_api() as api:
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
        env = clean_env(KUBECONFIG=str(kubeconfig), OPSLEVEL_JOB_POD_OWNER="cli-test")
        with trio.fail_after(60):
            result = await trio.run_process(
                [sys.executable, "-m", "trunner", "test", "-f", "examples/jobs/02-outcome-vars.yaml"],
                cwd=ROOT,
                env=env,
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
        stdout = result.stdout.decode()
        assert result.returncode == 0, result.stderr.decode()
        assert "computing a report" in stdout and "outcome: success" in stdout
        assert "outcome variable status=green" in stdout
        created = [r.path for r in api.requests if r.method == "POST"]
        # The job has no files and no sensitive variables: it needs no Secret.
        assert any(p.endswith("/pods") for p in created) and not any(p.endswith("/secrets") for p in created)
        # The durable stage: its launch, its reader, its exit record.
        assert [(s.request.command[3], s.subprotocol) for s in api.exec_sessions] == [
            ("trunner-launch", "v5.channel.k8s.io"),
            ("trunner-read", "v5.channel.k8s.io"),
            ("trunner-status", "v5.channel.k8s.io"),
        ]
        assert not api.objects("pods") and not api.objects("secrets")
