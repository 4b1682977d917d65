"""``SENTRY_DSN`` through the real command line: a failed job and a start-up failure each reach the
Sentry stand-in once, with no secret in any byte of what was sent; a successful job sends nothing."""

from __future__ import annotations

import socket
import time

from tests.cli.support import clean_env, trunner, write_job
from tests.doubles.sentry import running_sentry
from tests.test_errorreport import API_TOKEN, SECRET, assert_no_secret
from trunner.observability import errorreport

FAILING = f"""\
id: "31"
commands:
  - "for i in $(seq 1 25); do echo \\"step $i $TOKEN\\"; done"
  - "printf '%s' \\"$TOKEN\\" | base64"
  - "echo \\"https://example.com/?t=$(printf '%s' \\"$TOKEN\\" | sed 's/ /%20/g;s|/|%2F|g;s/+/%2B/g')\\""
  - "exit 4"
variables:
  - {{key: TOKEN, value: "{SECRET}", sensitive: true}}
"""

PASSING = """\
id: "32"
commands:
  - "echo fine"
"""


def test_a_failed_job_run_by_trunner_test_reaches_sentry_once_masked(tmp_path):
    with running_sentry() as sentry:
        env = clean_env(SENTRY_DSN=sentry.dsn, OPSLEVEL_API_TOKEN=API_TOKEN)
        result = trunner(
            "test", "--executor", "local", "-f", write_job(tmp_path / "job.yaml", FAILING), env=env
        )
    assert result.returncode == 1, result.stderr
    [event] = sentry.events()
    assert event["message"] == "[job: 31] Ended with Outcome: failed"
    lines = event["contexts"]["logs"]["runner_logs"]
    shown = [
        line.split("] ", 1)[1] for line in result.stdout.splitlines() if line[:2] == "20" and "] " in line
    ]
    assert lines == shown[-20:]
    # stdout and its trace on stderr reach the tail in arrival order: either may be the one shown.
    assert any("step 25 **********" in line for line in lines)
    assert any("https://example.com/?t=**********" in line for line in lines)
    assert lines[-1] == "[trunner] command exited with code 4"
    assert_no_secret(sentry, SECRET, API_TOKEN)
    assert len(sentry.envelopes) == 1 and sentry.rejected == []


def test_a_successful_job_sends_nothing(tmp_path):
    with running_sentry() as sentry:
        env = clean_env(SENTRY_DSN=sentry.dsn)
        result = trunner(
            "test", "--executor", "local", "-f", write_job(tmp_path / "job.yaml", PASSING), env=env
        )
    assert result.returncode == 0, result.stderr
    assert sentry.requests == 0


def test_a_start_up_failure_is_a_fatal_event_without_the_token():
    """``run`` cannot reach the API (its URL holds the token, so the error text does too)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    with running_sentry() as sentry:
        env = clean_env(
            SENTRY_DSN=sentry.dsn,
            OPSLEVEL_API_TOKEN=API_TOKEN,
            OPSLEVEL_API_URL=f"http://127.0.0.1:{closed}/{API_TOKEN}",
            OPSLEVEL_API_MAX_RETRIES="0",
        )
        result = trunner("run", "--executor", "local", "--metrics-port", "0", env=env)
    assert result.returncode == 1, result.stderr
    [event] = sentry.events()
    assert event["level"] == "fatal"
    assert event["message"].startswith(
        f"trunner could not start: cannot use the OpsLevel API at http://127.0.0.1:{closed}/**********/graphql"
    )
    assert_no_secret(sentry, API_TOKEN)


def test_a_stalled_sentry_delays_the_exit_by_at_most_the_flush_timeout(tmp_path):
    """The stand-in takes the event and never answers: the job's output and outcome are as
    without Sentry, and the process exits once the 2 s flush timeout has passed."""
    with running_sentry(stall=True) as sentry:
        env = clean_env(SENTRY_DSN=sentry.dsn)
        start = time.monotonic()
        result = trunner(
            "test", "--executor", "local", "-f", write_job(tmp_path / "job.yaml", FAILING), env=env
        )
        took = time.monotonic() - start
    assert result.returncode == 1, result.stderr
    assert "outcome: failed" in result.stdout
    assert sentry.requests == 1 and sentry.envelopes == []
    assert took < errorreport.FLUSH_TIMEOUT + 8, f"exit took {took:.1f}s"
