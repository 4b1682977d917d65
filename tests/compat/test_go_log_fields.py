"""Runner log records as the Go runner's JSON log has them: ``time`` in zerolog's Unix seconds when
asked (``--log-timestamp UNIX``), ``worker`` always a number, ``job`` on every record about a job:
logged while it runs (whatever module logs it), and while it is claimed, rejected, handed back or
acknowledged (API and Faktory mode, with ``jid`` in Faktory mode)."""

from __future__ import annotations

import base64
import io
import json
import logging
from collections.abc import Iterator

import pytest
import trio
import trio.testing

from tests.doubles.command_executor import CommandExecutor
from tests.doubles.executors import RecordingSink, ScriptedExecutor
from tests.doubles.faktory import faktory_double
from tests.doubles.opslevel import Delay, HttpStatus, OpsLevelDouble, job_payload
from tests.opslevel.harness import start_mode
from trunner.job import run_job
from trunner.logs.settings import LogSettings
from trunner.models import RunnerJob
from trunner.observability import runlog


@pytest.fixture(autouse=True)
def _restore_the_trunner_logger() -> Iterator[None]:
    logger = logging.getLogger("trunner")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved


def capture(fmt: str = "JSON", timestamp: str = "RFC3339", level: str = "DEBUG") -> io.StringIO:
    runlog.setup(level, fmt, timestamp)
    stream = io.StringIO()
    logging.getLogger("trunner").handlers[0].setStream(stream)  # type: ignore[attr-defined]
    return stream


def records(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_unix_seconds_behind_the_setting() -> None:
    stream = capture(timestamp="UNIX")
    logging.getLogger("trunner.test").info("hello")
    [entry] = records(stream)
    assert isinstance(entry["time"], int) and entry["level"] == "info" and entry["message"] == "hello"
    stream = capture()
    logging.getLogger("trunner.test").info("hello")
    assert records(stream)[0]["time"].endswith("Z")


async def test_records_of_a_job_carry_job_and_a_numeric_worker() -> None:
    stream = capture()

    async def job_task(number: str, worker: int) -> None:
        runlog.bind_job(number, worker)
        logging.getLogger("trunner.executors.kubernetes").warning("could not delete the pod")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: _child())

    async def _child() -> None:
        logging.getLogger("trunner.retry").info("delivered")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(job_task, "41", 1)
        nursery.start_soon(job_task, "42", 2)
    logging.getLogger("trunner.runner").info("no job here")
    entries = records(stream)
    by_job = sorted((e["job"], e["worker"], e["message"]) for e in entries if "job" in e)
    assert by_job == [
        ("41", 1, "could not delete the pod"),
        ("41", 1, "delivered"),
        ("42", 2, "could not delete the pod"),
        ("42", 2, "delivered"),
    ]
    assert [e["message"] for e in entries if "job" not in e] == ["no job here"]


class _LoggingExecutor(ScriptedExecutor):
    async def run(self, job, output):  # type: ignore[no-untyped-def]
        logging.getLogger("trunner.executors.test").warning("pod is slow")
        return await super().run(job, output)


async def test_run_job_records_carry_the_job_and_worker_as_a_number(autojump_clock) -> None:
    stream = capture()
    outcome = await run_job(
        RunnerJob(id="77", commands=("true",)),
        executor=_LoggingExecutor([b"hi\n"]),
        sink=RecordingSink(),
        settings=LogSettings(),
        worker="3",
    )
    assert outcome.outcome.value == "success"
    entries = records(stream)
    assert entries, "run_job logged nothing"
    assert all(e.get("job") == "77" and e.get("worker") == 3 for e in entries), entries


# --- every job-related record of both modes' real code paths carries ``job`` -------------------


def gid(number: int) -> str:
    return base64.urlsafe_b64encode(f"gid://opslevel/Runners::JobRun/{number}".encode()).decode().rstrip("=")


def check_job_fields(entries: list[dict], ids: dict[str, str], jids: dict[str, str] | None = None) -> None:
    """Every record that names a job (by number or GID), or that a job's task logged (it has
    ``worker``), carries that job's ``job``; one naming a Faktory jid carries it as ``jid`` and the
    job (where known) as ``job``; ``worker``, where present, is always a number; a record without
    ``job`` names no job."""
    jids = jids or {}
    assert entries
    for entry in entries:
        text = entry["message"] + " " + entry.get("error", "")
        named = {number for form, number in ids.items() if form in text}
        named_jids = {jid for jid in jids if jid in text}
        assert len(named) <= 1, entry
        if named:
            assert entry.get("job") in named, entry
        for jid in named_jids:
            assert entry.get("jid") == jid, entry
            if jids[jid]:
                assert entry.get("job") == jids[jid], entry
        if "worker" in entry:
            assert type(entry["worker"]) is int and "job" in entry, entry
        if "job" in entry:
            assert entry["job"] in ids.values(), entry
        else:
            assert not named and not named_jids, entry


async def test_every_record_about_a_job_in_api_mode_carries_job(
    nursery: trio.Nursery, opslevel: OpsLevelDouble, autojump_clock: trio.testing.MockClock
) -> None:
    stream = capture("JSON", level="TRACE")
    good, bad, odd, late = gid(907001), gid(907002), gid(907003), gid(907004)
    opslevel.add_job(job_payload(good, ["say hello", "err oops", "exit 0"]))
    malformed = job_payload(bad, ["exit 0"])
    malformed["commands"] = "echo not a list"
    opslevel.add_job(malformed)
    opslevel.add_job({**job_payload(odd, ["exit 1"]), "outcome": "decided-by-a-future-api"})
    # One append answered 503: the delivery loop's retry record carries its job too.
    opslevel.inject(HttpStatus(503), operation="RunnerAppendJobLog")
    env = {"OPSLEVEL_POLL_INTERVAL": "1", "OPSLEVEL_JOB_POD_LOG_MAX_INTERVAL": "1"}
    running = await start_mode(nursery, opslevel, CommandExecutor(), **env)
    with trio.fail_after(120):
        await opslevel.wait_until(lambda: len(opslevel.outcomes) == 3)
    opslevel.add_job(job_payload(late, ["say never runs"]))
    opslevel.inject(Delay(3.0), operation="RunnerGetPendingJob")
    await trio.sleep(1.5)
    assert await running.stop() == 0
    assert [o.outcome for o in opslevel.outcomes[late]] == ["canceled"]

    entries = records(stream)
    numbers = {job_id: RunnerJob(id=job_id).number() for job_id in (good, bad, odd, late)}
    ids = numbers | {number: number for number in numbers.values()}
    check_job_fields(entries, ids)
    by_job = {e["job"]: [] for e in entries if "job" in e}
    for entry in entries:
        if "job" in entry:
            by_job[entry["job"]].append(entry["message"])
    assert any(m.startswith("claimed job 907001") for m in by_job["907001"])
    assert any(m.startswith(f"job {bad} rejected") for m in by_job["907002"])
    assert any(m.startswith("ignoring unknown job outcome") for m in by_job["907003"])
    assert any("arrived while shutting down" in m for m in by_job["907004"])
    assert any("failed, retrying" in m for messages in by_job.values() for m in messages)
    assert any(e.get("worker") == 1 and e["job"] == "907001" for e in entries if "job" in e)


async def test_every_record_about_a_job_in_faktory_mode_carries_job_and_jid(
    autojump_clock: trio.testing.MockClock,
) -> None:
    from tests.doubles.executors import CountingExecutor
    from tests.faktory.test_mode import running_mode

    stream = capture("JSON", level="TRACE")
    good, bad, nojid, custom = gid(908001), gid(908002), gid(908003), gid(908004)
    async with faktory_double() as server:
        jids = {
            server.enqueue("legacy", [{"id": good, "image": "alpine", "commands": ["echo hi"]}]): "908001",
            server.enqueue("legacy", [{"id": bad, "commands": "echo"}]): "908002",
            server.enqueue("SomethingElse", [{"id": gid(908005)}]): "908005",
            server.enqueue(
                "legacy",
                [{"id": "ignored", "commands": ["echo hi"]}],
                custom={"opslevel-runner-job-id": custom},
            ): "908004",
        }
        server.enqueue_raw("default", {"jobtype": "legacy", "args": [{"id": nojid, "commands": []}]})
        server.inject("ACK", "reject", message="busy")
        async with running_mode(server, CountingExecutor(duration=2)) as (handle, _):
            await server.wait_for(lambda: len(server.acks) == 2 and len(server.fails) == 2)
            handle.runner.begin_shutdown()
    entries = records(stream)
    numbers = ("908001", "908002", "908003", "908004", "908005")
    ids = {gid(int(n)): n for n in numbers} | {n: n for n in numbers}
    check_job_fields(entries, ids, jids)
    assert any(e.get("job") == "908001" and e["message"].startswith("claimed Faktory job") for e in entries)
    assert any(e.get("job") == "908002" and "answering FAIL" in e["message"] for e in entries)
    assert any(e.get("job") == "908005" and "answering FAIL" in e["message"] for e in entries)
    assert any(e.get("job") == "908003" and "without a jid" in e["message"] for e in entries)
    assert any(e.get("job") == "908004" and e["message"].startswith("claimed Faktory job") for e in entries)
    assert any(
        e.get("job") in ("908001", "908004")
        and e["message"].startswith("ACK")
        and type(e.get("worker")) is int
        for e in entries
    )


def test_job_fields_reach_logfmt_records_too_and_end_with_their_block() -> None:
    from tests.cli.test_runner_log_text import parse_logfmt

    stream = capture("TEXT")
    with runlog.job_fields("907009", jid="jid-1"):
        logging.getLogger("trunner.faktory").info("claimed Faktory job 907009")
    logging.getLogger("trunner.faktory").info("fetching jobs from Faktory again")
    inside, outside = (parse_logfmt(line) for line in stream.getvalue().splitlines())
    assert inside["job"] == "907009" and inside["jid"] == "jid-1"
    assert "job" not in outside and "jid" not in outside


def test_json_records_have_zerologs_level_names_and_field_set() -> None:
    stream = capture(level="DEBUG")
    log = logging.getLogger("trunner.test")
    log.debug("d")
    log.info("i")
    log.warning("w", extra={"job": "5"})
    log.error("e")
    log.critical("c")
    entries = records(stream)
    assert [e["level"] for e in entries] == ["debug", "info", "warn", "error", "fatal"]
    assert list(entries[2]) == ["level", "job", "time", "message"], "zerolog's order, no logger field"


def test_a_warning_through_the_cli_reads_level_warn(tmp_path) -> None:
    from tests.cli.support import trunner, write_job

    job = write_job(tmp_path / "job.yaml", 'id: "9"\ncommands:\n  - exit 4\n')
    result = trunner("test", "--executor", "local", "-f", job, "--log-format", "JSON")
    entries = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    warnings = [e for e in entries if "job ended failed" in e["message"]]
    assert warnings and all(e["level"] == "warn" and "logger" not in e for e in warnings), entries
