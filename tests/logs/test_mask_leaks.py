"""Ways a secret could leave masking, each through the real pipeline (run_job with its job log,
shipper and sink): none of them lets any form of a secret out."""

from __future__ import annotations

import base64
import json
import logging

import pytest
import trio

from tests.doubles.executors import Chunk, RecordingSink, ScriptedExecutor
from tests.doubles.faktory import faktory_double
from tests.faktory.conftest import worker_client
from trunner.contracts import Stream
from trunner.executors.base import ExitKind, ExitResult
from trunner.faktory.sink import FaktorySink
from trunner.job import run_job
from trunner.logs.mask import MAX_SECRET_BYTES
from trunner.logs.secret_forms import forms_of
from trunner.logs.settings import LogSettings
from trunner.models import JobOutcome, JobVariable, Outcome, RunnerJob
from trunner.net.retry import ShipError

MASK = "**********"


def job_of(**secrets: str) -> RunnerJob:
    return RunnerJob(id="7", variables=tuple(JobVariable(k, v, sensitive=True) for k, v in secrets.items()))


def reads(data: bytes, size: int) -> list[Chunk]:
    return [Chunk(data[i : i + size], delay=0.001) for i in range(0, len(data), size)]


async def run(job: RunnerJob, chunks, settings: LogSettings | None = None, result=None, sink=None):
    sink = sink or RecordingSink()
    executor = ScriptedExecutor(chunks, result=result)
    outcome = await run_job(job, executor=executor, sink=sink, settings=settings or LogSettings())
    return sink, outcome


def assert_no_form(texts, *values: str, shortest: int = 6) -> None:
    needles = {n for v in values for n in forms_of(v).needles if len(n) >= shortest}
    for text in texts:
        encoded = text.encode()
        for needle in needles:
            assert needle not in encoded, (needle[:40], text[:120])


def everything(sink: RecordingSink, outcome: JobOutcome) -> list[str]:
    return [
        *sink.bodies(),
        outcome.message,
        *(v.key for v in outcome.outcome_variables),
        *(v.value for v in outcome.outcome_variables),
    ]


# --- secrets longer than the line limit ---


async def test_secret_longer_than_the_line_limit(autojump_clock):
    secret = "L0ng-" + "x9" * 150  # 305 characters; the line limit is 256 with a 1024-byte batch
    data = f"before {secret} after\n".encode()
    sink, outcome = await run(job_of(LONG=secret), reads(data, 7), LogSettings(job_pod_log_max_size=1024))
    assert sink.bodies() == [f"before {MASK} after"]
    assert_no_form(everything(sink, outcome), secret)


async def test_seventy_kilobyte_secret_with_default_settings(autojump_clock):
    secret = "".join(chr(0x41 + (i * 7) % 26) for i in range(70_000))
    data = b"x" * 70_000 + secret.encode() + b"y" * 10 + b"\n"
    sink, outcome = await run(job_of(BIG=secret), reads(data, 4096))
    assert MASK in "".join(sink.bodies())
    assert_no_form(everything(sink, outcome), secret)
    # the 70 kB of x are cut at the 64 KiB line limit as before; the secret is one mask
    assert sum(body.count(MASK) for body in sink.bodies()) == 1


async def test_base64_form_longer_than_the_line_limit(autojump_clock):
    secret = "b64-" + "k" * 400
    encoded = base64.b64encode(secret.encode())
    wrapped = b"\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76))
    data = b"one: " + encoded + b"\nwrapped:\n" + wrapped + b"\nend\n"
    sink, outcome = await run(job_of(B=secret), reads(data, 50), LogSettings(job_pod_log_max_size=1024))
    assert sink.bodies() == [f"one: {MASK}", "wrapped:", *[MASK] * len(wrapped.split(b"\n")), "end"]
    assert_no_form(everything(sink, outcome), secret)


async def test_long_secret_inside_a_multiline_outcome_value(autojump_clock):
    secret = "multi-" + "m" * 300
    data = (
        b"::start-multiline-outcome-var REPORT\nfirst line\nsecret: " + secret.encode() + b" end\n"
        b"::end-multiline-outcome-var\n"
    )
    sink, outcome = await run(job_of(M=secret), reads(data, 13), LogSettings(job_pod_log_max_size=1024))
    [variable] = outcome.outcome_variables
    assert variable.value == f"first line\nsecret: {MASK} end"
    assert_no_form(everything(sink, outcome), secret)


# --- outcome variables, overlap, invalid text ---


async def test_secret_as_an_outcome_variable_key(autojump_clock):
    secret = "key_secret_123"
    data = f"::set-outcome-var {secret}=1\n::set-outcome-var plain=has {secret}\n".encode()
    sink, outcome = await run(job_of(K=secret), reads(data, 5))
    assert sink.bodies() == [f"::set-outcome-var {MASK}=1"]
    assert [(v.key, v.value) for v in outcome.outcome_variables] == [("plain", f"has {MASK}")]
    assert_no_form(everything(sink, outcome), secret)


async def test_overlapping_secrets_leave_nothing_behind(autojump_clock):
    data = b"abcdef123xyz789 | 123xyz789abcdef123\n"
    sink, _ = await run(job_of(A="abcdef123", B="123xyz789"), reads(data, 4))
    assert sink.bodies() == [f"{MASK} | {MASK}"]


async def test_lone_surrogate_in_a_secret_runs_the_job_and_reports(autojump_clock):
    value = json.loads('"tok-\\ud800-en-value"')
    printed = value.encode("utf-8", "surrogatepass")
    sink, outcome = await run(job_of(S=value), reads(b"got " + printed + b"\n", 3))
    assert sink.bodies() == [f"got {MASK}"]
    assert sink.outcomes == [outcome] and outcome.outcome is Outcome.SUCCESS


async def test_secret_too_long_refuses_the_job_with_a_reported_outcome(autojump_clock):
    executor = ScriptedExecutor([b"never\n"])
    sink = RecordingSink()
    job = job_of(HUGE="h" * (MAX_SECRET_BYTES + 1))
    outcome = await run_job(job, executor=executor, sink=sink, settings=LogSettings())
    assert executor.runs == 0
    assert outcome.outcome is Outcome.FAILED
    assert outcome.message.startswith("job refused: sensitive variable HUGE is 1048577 bytes long")
    assert sink.outcomes == [outcome] and any("job refused" in body for body in sink.bodies())


# --- over-masking ---


async def test_short_lines_of_a_multiline_secret_mask_no_braces(autojump_clock, caplog):
    value = '{\n  "private_key": "pk-0123456789"\n}'
    data = b"if (ok) { run(); }\n" + value.encode() + b"\n"
    with caplog.at_level(logging.WARNING, logger="trunner"):
        sink, _ = await run(job_of(SA_JSON=value), reads(data, 8))
    assert sink.bodies() == ["if (ok) { run(); }", MASK, MASK, MASK]
    warnings = [r.getMessage() for r in caplog.records if "SA_JSON" in r.getMessage()]
    assert warnings == [
        "sensitive variable SA_JSON: 2 of its lines are shorter than 6 characters and are not masked "
        "on their own (only as part of the whole value)"
    ]
    assert "pk-0123456789" not in caplog.text


async def test_short_secret_warns(autojump_clock, caplog):
    with caplog.at_level(logging.WARNING, logger="trunner"):
        sink, _ = await run(job_of(PIN="4711"), reads(b"pin=4711\n", 3))
    assert sink.bodies() == [f"pin={MASK}"]
    assert "sensitive variable PIN is shorter than 6 characters" in caplog.text
    assert "4711" not in caplog.text


async def test_one_character_secret_does_not_get_lines_dropped(autojump_clock):
    line = b"ab" * 400 + b"\n"  # 800 bytes, a 1024-byte batch: masked, it is 10 times longer
    sink, outcome = await run(job_of(ONE="a"), reads(line * 20, 300), LogSettings(job_pod_log_max_size=1024))
    assert "could not be delivered" not in outcome.message
    joined = "".join(
        body.removesuffix(" [trunner: line continues]").removeprefix("[trunner: continued] ")
        for body in sink.bodies()
    )
    assert "a" not in joined.replace("[trunner]", "")
    assert joined.count("b") == 20 * 400


# --- everywhere text leaves trunner ---


async def test_exit_message_notes_and_runner_log_are_masked(autojump_clock, caplog):
    secret = "runner-log-secret"
    result = ExitResult(ExitKind.EXITED, 2, f"command failed: {secret}")
    with caplog.at_level(logging.DEBUG, logger="trunner"):
        sink, outcome = await run(job_of(S=secret), reads(f"printing {secret}\n".encode(), 4), result=result)
    assert outcome.message == f"command failed: {MASK}"
    assert f"[trunner] command failed: {MASK}" in sink.bodies()
    assert secret not in caplog.text and "job ended failed" in caplog.text


async def test_internal_error_traceback_is_masked(autojump_clock, caplog):
    secret = "exception-secret"
    executor = ScriptedExecutor([b"x\n"], raise_after=RuntimeError(f"boom {secret}"))
    sink = RecordingSink()
    with caplog.at_level(logging.DEBUG, logger="trunner"):
        outcome = await run_job(job_of(S=secret), executor=executor, sink=sink, settings=LogSettings())
    assert outcome.message == f"internal error: RuntimeError: boom {MASK}"
    assert "Traceback" in caplog.text and secret not in caplog.text
    assert all(secret not in body for body in sink.bodies())


async def test_faktory_pushes_carry_masked_lines_and_outcome():
    secret = "faktory-secret-9"
    data = f"line {secret}\n::set-outcome-var {secret}=1\n::set-outcome-var out={secret}\n".encode()
    async with faktory_double() as server, worker_client(server) as client:
        sink = FaktorySink(client, runner_job_id="7")
        with trio.fail_after(10):
            outcome = await run_job(
                job_of(S=secret), executor=ScriptedExecutor(reads(data, 6)), sink=sink, settings=LogSettings()
            )
    assert outcome.outcome is Outcome.SUCCESS
    raw = "".join(server.pushed_raw)
    lines = [
        base64.b64decode(chunk).decode()
        for job in server.pushed
        for chunk in job["args"][0].get("logChunk", [])
    ]
    assert_no_form([raw, *lines], secret)
    assert any(line.endswith(f"line {MASK}") for line in lines)
    [report] = [job["args"][0] for job in server.pushed if "outcome" in job["args"][0]]
    assert report["outcomeVariables"] == [{"key": "out", "value": MASK}]


@pytest.mark.parametrize("stream", [Stream.STDOUT, Stream.STDERR])
async def test_split_reads_of_every_size_on_both_streams(autojump_clock, stream):
    secret = "split-everywhere"
    data = f"a {secret} b {secret[:5]}\n".encode()
    for size in (1, 2, 5, 16):
        chunks = [Chunk(data[i : i + size], stream=stream) for i in range(0, len(data), size)]
        sink, _ = await run(job_of(S=secret), chunks)
        assert sink.bodies() == [f"a {MASK} b {secret[:5]}"]


async def test_sink_error_text_is_masked_in_the_runner_log(autojump_clock, caplog):
    secret = "echoed-by-the-api"

    def fail_first(batch, attempt):
        if attempt == 1:
            return ShipError(f"rejected input: credentials {secret} expired", retryable=True)
        return None

    sink = RecordingSink(fail=fail_first)
    with caplog.at_level(logging.DEBUG, logger="trunner"):
        _, outcome = await run(job_of(S=secret), [f"token {secret}\n".encode()], sink=sink)
    assert outcome.outcome is Outcome.SUCCESS
    assert "rejected input" in caplog.text and secret not in caplog.text
