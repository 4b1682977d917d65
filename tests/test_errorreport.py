"""Sentry error reporting: what reaches the Sentry stand-in (tests/doubles/sentry.py), and what never does.

Jobs run in virtual time; only the SDK's transport thread talks to the stand-in, in real time, and
:func:`errorreport.close` (as at process exit, after ``trio.run`` returns) bounds that wait.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from functools import partial
from typing import Any, TypeVar
from urllib.parse import quote, quote_plus

import pytest
import sentry_sdk
import trio
import trio.testing

from tests.doubles.executors import RecordingSink, ScriptedExecutor
from tests.doubles.sentry import SentryStandIn, parse_envelope, running_sentry, unused_port_dsn
from tests.test_job import SETTINGS
from trunner.executors.base import ExitKind, ExitResult
from trunner.job import run_job
from trunner.models import JobOutcome, JobVariable, Outcome, RunnerJob
from trunner.observability import errorreport

T = TypeVar("T")

SECRET = "s3cr3t token/value+x"
API_TOKEN = "opslevel-api-token-0123456789"
FAKTORY_PASSWORD = "faktory-pass-9876543210"


def forms(secret: str) -> list[bytes]:
    """The forms of ``secret`` the masker knows that an envelope could carry."""
    raw = secret.encode()
    return [
        raw,
        base64.b64encode(raw),
        quote(secret, safe="").encode(),
        quote_plus(secret).encode(),
        json.dumps(secret)[1:-1].encode(),
    ]


def assert_no_secret(standin: SentryStandIn, *secrets: str) -> None:
    for body in standin.bodies():
        for secret in secrets:
            for form in forms(secret):
                assert form not in body, f"{form!r} reached Sentry"


def in_virtual_time(fn: Callable[[], Awaitable[T]]) -> T:
    return trio.run(fn, clock=trio.testing.MockClock(autojump_threshold=0))


def secret_job(job_id: str = "77") -> RunnerJob:
    return RunnerJob(
        id=job_id, commands=("x",), variables=(JobVariable(key="TOKEN", value=SECRET, sensitive=True),)
    )


def leaky_output(count: int) -> list[bytes]:
    """``count`` numbered lines, each showing the job's secret in one of its forms and the API token
    (which the job's own masker does not know)."""
    shown = [f.decode() for f in forms(SECRET)[:3]]
    return [f"line {i} {shown[i % 3]} {API_TOKEN}\n".encode() for i in range(count)]


def failed_job(job: RunnerJob, output: list[bytes], code: int = 3) -> JobOutcome:
    executor = ScriptedExecutor(output, ExitResult.exited(code))
    return in_virtual_time(lambda: run_job(job, executor=executor, sink=RecordingSink(), settings=SETTINGS))


@pytest.fixture
def sentry() -> Iterator[SentryStandIn]:
    with running_sentry() as standin:
        assert errorreport.init({"SENTRY_DSN": standin.dsn}, secrets=[API_TOKEN, FAKTORY_PASSWORD]), (
            "reporting did not start"
        )
        try:
            yield standin
        finally:
            errorreport.close()


def test_a_failed_job_is_one_event_with_its_last_20_lines_masked(sentry):
    outcome = failed_job(secret_job(), leaky_output(30))
    assert outcome.outcome is Outcome.FAILED
    errorreport.close()

    [event] = sentry.events()
    assert event["message"] == "[job: 77] Ended with Outcome: failed"
    assert event["level"] == "error"
    assert event["tags"]["job"] == "77" and event["tags"]["outcome"] == "failed"
    assert event["release"] == f"trunner@{errorreport.__version__}"
    lines = event["contexts"]["logs"]["runner_logs"]
    assert len(lines) == 20
    assert lines[:19] == [f"line {i} ********** **********" for i in range(11, 30)]
    assert lines[19] == "[trunner] command exited with code 3"
    assert event["contexts"]["job"]["message"] == "command exited with code 3"
    assert event["breadcrumbs"]["values"] == []
    assert set(event["sdk"]["integrations"]) == {"dedupe"}
    assert_no_secret(sentry, SECRET, API_TOKEN)
    assert sentry.rejected == [] and sentry.envelopes[0].content_encoding == "gzip"
    assert sentry.envelopes[0].auth.startswith(f"Sentry sentry_key={sentry.dsn[7:39]}")


def test_every_outcome_but_success_and_canceled_is_reported(sentry):
    failed_job(secret_job("1"), [b"x\n"], code=0)
    hanging = ScriptedExecutor([b"slow\n"], hang=True)

    async def canceled() -> None:
        with trio.move_on_after(5):
            await run_job(
                RunnerJob(id="2", commands=("x",)), executor=hanging, sink=RecordingSink(), settings=SETTINGS
            )

    in_virtual_time(canceled)
    for job_id, kind in [("3", ExitKind.LIFETIME_EXCEEDED), ("4", ExitKind.POD_TIMEOUT)]:
        executor = ScriptedExecutor([b"late\n"], ExitResult(kind, None, "ran out of time"))
        job = RunnerJob(id=job_id, commands=("x",))
        in_virtual_time(partial(run_job, job, executor=executor, sink=RecordingSink(), settings=SETTINGS))
    errorreport.close()
    assert [e["tags"] for e in sentry.events()] == [
        {"job": "3", "outcome": "execution_timeout"},
        {"job": "4", "outcome": "pod_timeout"},
    ]


def test_an_exception_holding_secrets_is_masked_in_every_field(sentry):
    """An exception's text, its chain and the frames carry no secret and no local variables, while
    the job runs and after it ended."""
    job_masker = []

    async def capture_during_job() -> None:
        class Capturing(ScriptedExecutor):
            async def run(self, job: RunnerJob, output: Any) -> ExitResult:
                job_masker.append(True)
                try:
                    try:
                        raise KeyError(f"inner {SECRET}")
                    except KeyError as inner:
                        raise RuntimeError(f"outer {SECRET} {API_TOKEN} {FAKTORY_PASSWORD}") from inner
                except RuntimeError as exc:
                    errorreport.report_crash(exc)
                return ExitResult.exited(0)

        await run_job(secret_job("5"), executor=Capturing(), sink=RecordingSink(), settings=SETTINGS)

    in_virtual_time(capture_during_job)
    try:
        raise ValueError(f"after the job: {SECRET}")
    except ValueError as exc:
        errorreport.report_crash(exc)
    errorreport.close()

    events = sentry.events()
    assert len(events) == 2 and job_masker
    during, after = events
    values = [v["value"] for v in during["exception"]["values"]]
    assert values == ["'inner **********'", "outer ********** ********** **********"]
    assert during["level"] == "fatal"
    frames = [f for v in during["exception"]["values"] for f in v["stacktrace"]["frames"]]
    assert frames and not any("vars" in f for f in frames)
    assert after["exception"]["values"][0]["value"] == "after the job: **********"
    assert_no_secret(sentry, SECRET, API_TOKEN, FAKTORY_PASSWORD)


def test_a_fatal_error_is_an_event_with_the_runner_logs_last_errors(sentry):
    logging.getLogger("trunner.test").error("cannot use the OpsLevel API at http://x/%s: refused", API_TOKEN)
    errorreport.report_fatal("trunner could not start")
    errorreport.close()
    [event] = sentry.events()
    assert event["level"] == "fatal"
    assert (
        event["message"]
        == "trunner could not start: cannot use the OpsLevel API at http://x/**********: refused"
    )
    assert event["contexts"]["runner_log"]["last_errors"] == [
        "cannot use the OpsLevel API at http://x/**********: refused"
    ]
    assert_no_secret(sentry, API_TOKEN)


def test_a_successful_job_sends_nothing(sentry):
    outcome = failed_job(secret_job(), leaky_output(3), code=0)
    assert outcome.outcome is Outcome.SUCCESS
    errorreport.close()
    assert sentry.requests == 0


def test_without_sentry_dsn_nothing_starts_and_nothing_is_sent():
    with running_sentry() as standin:
        assert not errorreport.init({"SENTRY_DSN": ""}, secrets=[API_TOKEN])
        assert not errorreport.init({}, secrets=[API_TOKEN])
        assert not errorreport.enabled()
        assert not sentry_sdk.get_client().is_active()
        failed_job(secret_job(), leaky_output(3))
        errorreport.report_fatal("trunner could not start")
        errorreport.close()
        assert standin.requests == 0


def test_a_dsn_the_sdk_refuses_is_logged_and_reporting_stays_off(caplog):
    with caplog.at_level(logging.ERROR, logger="trunner.errorreport"):
        assert not errorreport.init({"SENTRY_DSN": f"not a dsn {API_TOKEN}"}, secrets=[API_TOKEN])
    assert not errorreport.enabled()
    assert "sentry.Init:" in caplog.text and API_TOKEN not in caplog.text


@pytest.mark.parametrize("stalled", [True, False], ids=["stalls", "down"])
def test_a_sentry_that_stalls_or_is_down_holds_up_neither_the_job_nor_the_exit(stalled):
    """The job ends in the same virtual time as without Sentry; the exit waits at most the flush
    timeout (real time: the SDK's thread), here 0.3 s."""
    with running_sentry(stall=True) as standin:
        assert errorreport.init({"SENTRY_DSN": standin.dsn if stalled else unused_port_dsn()})
        try:

            async def job_time() -> float:
                start = trio.current_time()
                await run_job(
                    secret_job(),
                    executor=ScriptedExecutor(leaky_output(3), ExitResult.exited(1)),
                    sink=RecordingSink(),
                    settings=SETTINGS,
                )
                return trio.current_time() - start

            assert in_virtual_time(job_time) == 0
        finally:
            start = time.monotonic()
            errorreport.close(timeout=0.3)
            closing = time.monotonic() - start
        assert closing < 3, f"close took {closing:.1f}s"
        assert standin.requests == (1 if stalled else 0)
        assert standin.envelopes == []


def test_the_standin_reads_envelopes_as_sentry_defines_them():
    body = (
        b'{"event_id":"9ec79c33ec9942ab8353589fcb2e04dc","dsn":"https://e12d836b15bb49d7bbf99e64295d995b@sentry.io/42"}\n'
        b'{"type":"attachment","length":10,"content_type":"text/plain","filename":"hello.txt"}\n'
        b"\xef\xbb\xbfHello\r\n\n"
        b'{"type":"event","filename":"application.log"}\n'
        b'{"message":"hello world","level":"error"}\n'
    )
    headers, items = parse_envelope(body)
    assert headers["event_id"] == "9ec79c33ec9942ab8353589fcb2e04dc"
    assert [i.type for i in items] == ["attachment", "event"]
    assert items[0].payload == b"\xef\xbb\xbfHello\r\n"
    assert items[1].json() == {"message": "hello world", "level": "error"}


def test_an_exception_that_ends_the_command_is_reported_then_raised(monkeypatch, tmp_path):
    """The command line's top-level failure path: the crash is one fatal event, masked, flushed
    before the exception leaves ``main``."""
    from trunner.cli import app as cli
    from trunner.cli.commands import test as test_command

    def crash(path: str) -> RunnerJob:
        raise RuntimeError(f"job file reader broke on {API_TOKEN}")

    monkeypatch.setattr(test_command, "load_job", crash)
    runner_log = logging.getLogger("trunner")
    for attribute in ("handlers", "propagate", "level"):
        monkeypatch.setattr(runner_log, attribute, getattr(runner_log, attribute))
    with running_sentry() as standin:
        monkeypatch.setenv("SENTRY_DSN", standin.dsn)
        monkeypatch.setenv("OPSLEVEL_API_TOKEN", API_TOKEN)
        with pytest.raises(RuntimeError):
            cli.main(["test", "--executor", "local", "-f", str(tmp_path / "job.yaml")])
    assert not errorreport.enabled()
    [event] = standin.events()
    assert event["level"] == "fatal"
    [value] = event["exception"]["values"]
    assert value["type"] == "RuntimeError" and value["value"] == "job file reader broke on **********"
    assert_no_secret(standin, API_TOKEN)
