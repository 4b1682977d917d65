"""What a person at a terminal sees: each line at once, in the order the job wrote it as far as
two streams allow (stdout and stderr each in written order, interleaved as they arrived)."""

from __future__ import annotations

import sys

import trio

from tests.cli.support import ROOT, clean_env, read_until, start_trunner, trunner, write_job
from tests.test_end_to_end import is_interleaving

ALTERNATING = """\
id: "8"
commands:
  - "sh -c 'i=0; while [ $i -lt 5000 ]; do echo out-$i; echo err-$i >&2; i=$((i+1)); done'"
"""


def written_order(stdout: str) -> list[str]:
    return [
        line.rsplit(" ", 1)[-1]
        for line in stdout.splitlines()
        if line.rsplit(" ", 1)[-1][:4] in ("out-", "err-")
    ]


def assert_each_stream_in_order(stdout: str) -> None:
    seen = written_order(stdout)
    assert [x for x in seen if x.startswith("out-")] == [f"out-{i}" for i in range(5000)]
    assert [x for x in seen if x.startswith("err-")] == [f"err-{i}" for i in range(5000)]


def test_ten_thousand_alternating_writes_keep_each_streams_order_locally(tmp_path):
    result = trunner("test", "--executor", "local", "-f", write_job(tmp_path / "job.yaml", ALTERNATING))
    assert result.returncode == 0, result.stderr
    assert_each_stream_in_order(result.stdout)


async def test_ten_thousand_alternating_writes_keep_each_streams_order_in_a_pod(tmp_path):
    from tests.doubles.kube import serve_kube_api

    async with serve_kube_api() as api:
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
        env = clean_env(KUBECONFIG=str(kubeconfig), OPSLEVEL_JOB_POD_OWNER="cli-order")
        job = write_job(tmp_path / "job.yaml", ALTERNATING + "image: alpine:3.20\n")
        argv = [sys.executable, "-m", "trunner", "test", "-f", job, "--executor", "kubernetes"]
        argv += ["--job-pod-workdir", str(tmp_path / "jobs")]
        with trio.fail_after(60):
            result = await trio.run_process(
                argv, cwd=ROOT, env=env, capture_stdout=True, capture_stderr=True, check=False
            )
    assert result.returncode == 0, result.stderr.decode()
    assert_each_stream_in_order(result.stdout.decode())


def test_the_failing_lines_come_before_the_exit_note(tmp_path):
    job = 'id: "5"\ncommands:\n  - echo about to fail\n  - echo something went wrong >&2\n  - exit 3\n'
    result = trunner("test", "--executor", "local", "-f", write_job(tmp_path / "job.yaml", job))
    assert result.returncode == 1
    shown = [line.split("] ", 1)[1] for line in result.stdout.splitlines() if "] " in line]
    stdout, stderr = (
        ["about to fail"],
        ["+ echo about to fail", "+ echo something went wrong", "something went wrong", "+ exit 3"],
    )
    assert is_interleaving(shown[:5], stdout, stderr), shown
    assert shown[5] == "[trunner] command exited with code 3"


def test_each_line_reaches_the_console_while_the_job_still_runs(tmp_path):
    """The job prints ``two`` and then waits for the test to have seen it; held for the 30 s
    interval, it would only arrive when the lifetime cut the job off (execution_timeout)."""
    seen_one, seen_two = tmp_path / "one", tmp_path / "two"
    job = f"""\
id: "9"
commands:
  - echo one
  - "while [ ! -e {seen_one} ]; do sleep 0.02; done"
  - echo two
  - "while [ ! -e {seen_two} ]; do sleep 0.02; done"
  - echo three
"""
    process = start_trunner(
        "test",
        "--executor",
        "local",
        "-f",
        write_job(tmp_path / "job.yaml", job),
        "--job-pod-max-lifetime",
        "20",
    )
    try:
        read_until(process, "] one")
        seen_one.touch()
        read_until(process, "] two")
        seen_two.touch()
        stdout, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 0, stderr
    assert "] three" in stdout and "outcome: success" in stdout


def test_outcome_variables_come_from_stdout_only_with_the_trace_on_stderr(tmp_path):
    job = """\
id: "10"
commands:
  - echo warming up >&2
  - echo "::set-outcome-var status=green"
  - echo "::start-multiline-outcome-var summary"
  - "printf 'checks passed: 12\\\\nchecks failed: 0\\\\n'"
  - echo "::end-multiline-outcome-var"
  - echo "::set-outcome-var after=stderr" >&2
"""
    result = trunner("test", "--executor", "local", "-f", write_job(tmp_path / "job.yaml", job))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "outcome variable status=green\n" in out
    assert "outcome variable summary=checks passed: 12\nchecks failed: 0\n" in out
    assert "outcome variable after=" not in out and "] ::set-outcome-var after=stderr" in out
    assert "+ echo ::set-outcome-var status=green" in out and "] ::set-outcome-var status" not in out


def test_just_runs_examples_fit_a_terminal():
    result = trunner("run", "--mode", "local", "--jobs", "examples/jobs")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) < 600
    assert max(len(line) for line in lines) < 400
    folded = [line for line in lines if "characters folded for display]" in line]
    assert len(folded) == 4 and all(line.endswith(" [trunner: line continues]") for line in folded[:3])
    assert folded[1].startswith("06-chatty | ") and "] [trunner: continued] xxx" in folded[1]


def test_the_console_folds_only_for_display():
    from trunner.local.console import FOLD_HEAD, FOLD_TAIL, fold_for_display

    line = "a" * 1000 + "b" * 1000 + "c" * 100
    shown = fold_for_display(line)
    assert shown.startswith("a" * FOLD_HEAD) and shown.endswith("c" * FOLD_TAIL)
    hidden = len(line) - FOLD_HEAD - FOLD_TAIL
    assert f"[trunner: {hidden:,} characters folded for display]" in shown
    assert fold_for_display("short line") == "short line"
    assert fold_for_display("x" * (FOLD_HEAD + FOLD_TAIL + 20)) == "x" * (FOLD_HEAD + FOLD_TAIL + 20)
