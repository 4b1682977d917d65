"""Runner log records as the Go runner's JSON log has them: ``time`` in zerolog's Unix seconds when
asked (``--log-timestamp UNIX``), ``worker`` always a number, ``job`` on every record logged while a
job runs (whatever module logs it)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import trio

from tests.doubles.executors import RecordingSink, ScriptedExecutor
from trunner import runlog
from trunner.job import run_job
from trunner.logs.settings import LogSettings
from trunner.models import RunnerJob


@pytest.fixture(autouse=True)
def _restore_the_trunner_logger() -> Iterator[None]:
    logger = logging.getLogger("trunner")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved


def capture(fmt: str = "JSON", timestamp: str = "RFC3339") -> io.StringIO:
    runlog.setup("DEBUG", fmt, timestamp)
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
    entries = [e for e in records(stream) if e["logger"].startswith("trunner.")]
    assert entries, "run_job logged nothing"
    assert all(e.get("job") == "77" and e.get("worker") == 3 for e in entries), entries
