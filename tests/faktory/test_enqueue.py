"""``trunner enqueue``: YAML job descriptions (good and bad) and pushing them to the double."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from tests.doubles.faktory import faktory_double
from trunner.cli.app import main
from trunner.faktory.definition import JobDefinitionError, parse_job_definition

NOW = dt.datetime(2026, 7, 1, 12, 0, 0, tzinfo=dt.UTC)

SCRIPT_JOB = Path(__file__).parents[1] / "compat" / "fixtures" / "enqueue-runner-job.yaml"
"""The job file the Go runner's tests/enqueue-runner-jobs.sh writes."""


def test_the_go_test_script_job() -> None:
    definition = parse_job_definition(SCRIPT_JOB.read_text(), "job.yaml")
    job = definition.build(NOW)
    assert (job.jobtype, job.queue, job.reserve_for, job.retry) == ("legacy", "runner", 300, 0)
    assert job.args[0]["files"][0]["contents"] == "#!/bin/sh\necho Running test script"
    assert job.custom == {"opslevel-runner-job-id": "test-job-1-1764600000"}
    assert job.created_at == "2026-07-01T12:00:00Z" and len(job.jid) == 16


def test_defaults() -> None:
    job = parse_job_definition("type: legacy\n", "f").build(NOW)
    assert (job.queue, job.args, job.retry, job.reserve_for, job.at, job.custom) == (
        "default",
        (),
        25,
        0,
        "",
        {},
    )


def test_go_spellings_are_accepted() -> None:
    text = "type: t\nreservefor: 120\nuniquefor: 60\nuniqueuntil: start\nexpiresin: 30\n"
    job = parse_job_definition(text, "f").build(NOW)
    assert job.reserve_for == 120
    assert job.custom == {"unique_for": 60, "unique_until": "start", "expires_at": "2026-07-01T12:00:30Z"}


def test_custom_keys_override_the_helpers_like_go() -> None:
    job = parse_job_definition(
        "type: t\nunique_for: 60\ncustom: {unique_for: 5, x: [1, {a: b}]}\n", "f"
    ).build(NOW)
    assert job.custom == {"unique_for": 5, "x": [1, {"a": "b"}]}


def test_at_accepts_timestamps_with_a_zone() -> None:
    assert (
        parse_job_definition("type: t\nat: '2026-08-01T10:00:00+02:00'\n", "f").at
        == "2026-08-01T10:00:00+02:00"
    )
    # YAML itself reads an unquoted timestamp; it is sent as RFC3339 in UTC
    assert parse_job_definition("type: t\nat: 2026-08-01T10:00:00Z\n", "f").at == "2026-08-01T10:00:00Z"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "expected a mapping of job fields, got an empty file"),
        ("- a\n- b\n", "expected a mapping of job fields, got a list"),
        ("type: [unclosed\n", "not valid YAML"),
        ("queue: q\n", "type: required"),
        ("type: ''\n", "type: expected a non-empty string"),
        ("type: t\nreserv_for: 300\n", "unknown key 'reserv_for' (known: type, queue"),
        (
            "type: t\nreserve_for: 300\nreservefor: 300\n",
            "'reserve_for' is given twice (as 'reservefor' too)",
        ),
        (
            "type: t\nreserve_for: 30\n",
            "reserve_for: must be between 60 and 86400 (or 0 for the default), got 30",
        ),
        ("type: t\nreserve_for: 90000\n", "reserve_for: must be between 60 and 86400"),
        ("type: t\nretries: -2\n", "retries: must be at least -1"),
        ("type: t\nretries: three\n", "retries: expected a whole number, got 'three'"),
        ("type: t\nretries: true\n", "retries: expected a whole number, got True"),
        ("type: t\nargs: {id: 1}\n", "args: expected a list of job arguments, got mapping"),
        ("type: t\nargs: [2026-01-01]\n", "args: args[0]: YAML read datetime.date(2026, 1, 1) as a date"),
        ("type: t\ncustom: [1]\n", "custom: expected a mapping, got list"),
        ("type: t\ncustom: {1: a}\n", "custom: keys must be strings, got 1"),
        ("type: t\nat: 2026-08-01T10:00:00\n", "at: 2026-08-01T10:00:00 has no time zone"),
        ("type: t\nat: 2026-08-01\n", "at: 2026-08-01 is a date; give a time too"),
        ("type: t\nat: soon\n", "at: 'soon' is not an RFC3339 timestamp"),
        ("type: t\nqueue: 'two words'\n", "queue: queue name 'two words' contains whitespace"),
        ("type: t\nunique_until: never\n", "unique_until: must be success or start, got 'never'"),
        ("type: t\nexpires_in: 0\n", "expires_in: must be at least 1, got 0"),
        ("type: t\nbatch: 5\n", "batch: expected a non-empty string (a batch id), got 5"),
    ],
)
def test_bad_input_is_named(text: str, problem: str) -> None:
    with pytest.raises(JobDefinitionError) as caught:
        parse_job_definition(text, "job.yaml")
    assert any(problem in p for p in caught.value.problems), caught.value.problems
    assert caught.value.origin == "job.yaml"


def test_all_problems_at_once() -> None:
    with pytest.raises(JobDefinitionError) as caught:
        parse_job_definition("queue: 'a b'\nretries: x\nfoo: 1\n", "f")
    assert len(caught.value.problems) == 4


# --- the command --------------------------------------------------------------------------------


@pytest.fixture
def restore_logging() -> Iterator[None]:
    logger = logging.getLogger("trunner")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved


async def run_cli(*argv: str) -> int:
    return await trio.to_thread.run_sync(main, list(argv))


async def test_enqueue_pushes_the_job(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    async with faktory_double(password="pw") as server:
        monkeypatch.setenv("FAKTORY_URL", server.url())
        assert await run_cli("enqueue", "-f", str(SCRIPT_JOB)) == 0
        [pushed] = server.pushed
    assert pushed["jobtype"] == "legacy" and pushed["queue"] == "runner" and pushed["reserve_for"] == 300
    assert pushed["retry"] == 0 and pushed["custom"] == {"opslevel-runner-job-id": "test-job-1-1764600000"}
    assert server.hellos[0]["wid"] == ""  # a producer, not a worker
    assert server.verbs() == ["PUSH", "END"]
    assert capsys.readouterr().out == f"enqueued legacy job {pushed['jid']} to queue runner\n"


async def test_enqueue_from_stdin_into_a_batch(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    async with faktory_double() as server:
        server.batches.add("bid-1")
        monkeypatch.setenv("FAKTORY_URL", server.url())
        monkeypatch.setattr(sys, "stdin", io.StringIO("type: legacy\nbatch: bid-1\nargs: [{id: '9'}]\n"))
        assert await run_cli("enqueue", "-f", "-") == 0
        [raw] = server.pushed_raw
    assert [c.verb for c in server.commands] == ["BATCH", "PUSH", "END"]
    assert json.loads(raw)["custom"] == {"bid": "bid-1"} and raw.startswith(
        '{"retry":25,"custom":{"bid":"bid-1"}'
    )
    assert "to batch bid-1 on queue default" in capsys.readouterr().out


async def test_enqueue_bad_file_exits_2_listing_problems(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("queue: q\nretries: x\n")
    assert await run_cli("enqueue", "-f", str(path)) == 2
    err = capsys.readouterr().err
    assert f"{path}: invalid job description" in err
    assert "  - retries: expected a whole number" in err and "  - type: required" in err
    assert await run_cli("enqueue", "-f", str(tmp_path / "missing.yaml")) == 2
    assert "missing.yaml: invalid job description:\n  - file not found" in capsys.readouterr().err


async def test_enqueue_server_refusal_exits_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    path = tmp_path / "job.yaml"
    path.write_text("type: legacy\nbatch: nope\n")
    async with faktory_double(password="right") as server:
        monkeypatch.setenv("FAKTORY_URL", server.url("wrong"))
        assert await run_cli("enqueue", "-f", str(path)) == 1
        assert "Invalid password" in capsys.readouterr().err
        monkeypatch.setenv("FAKTORY_URL", server.url())
        assert await run_cli("enqueue", "-f", str(path)) == 1
        assert "No such batch nope" in capsys.readouterr().err
        assert server.pushed == []


async def test_enqueue_bad_url_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    path = tmp_path / "job.yaml"
    path.write_text("type: legacy\n")
    monkeypatch.setenv("FAKTORY_URL", "http://x")
    assert await run_cli("enqueue", "-f", str(path)) == 2
    assert "FAKTORY_URL: unsupported scheme 'http'" in capsys.readouterr().err


async def test_enqueue_unreachable_server_exits_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    path = tmp_path / "job.yaml"
    path.write_text("type: legacy\n")
    async with faktory_double() as server:
        url = server.url()
    monkeypatch.setenv("FAKTORY_URL", url)
    assert await run_cli("enqueue", "-f", str(path), "--faktory-timeout", "2") == 1
    assert "could not push to Faktory at tcp://127.0.0.1:" in capsys.readouterr().err
