"""Decoding a ``legacy`` Faktory job into a RunnerJob, per the reference's custom-field table."""

from __future__ import annotations

from typing import Any

import pytest

from trunner.faktory.decode import JobDecodeError, decode_legacy_job
from trunner.faktory.protocol import Job
from trunner.models import JobFile, JobVariable, RunnerJob, VariableScope

ARGS0 = {
    "id": "Z2lkOi8vb3BzbGV2ZWwvUnVubmVyczo6Sm9iUnVuLzIyNQ",
    "image": "alpine:3",
    "commands": ["echo hi"],
    "variables": [{"key": "A", "value": "1", "sensitive": True, "scope": "main"}],
    "files": [{"name": "f.sh", "contents": "echo"}],
    "initCommands": ["git clone x"],
    "initImage": "git:1",
    "outcome": "unstarted",
    "status": "running",
}


def job_with(
    args0: Any = None, *, custom: dict[str, Any] | None = None, args: tuple[Any, ...] | None = None
) -> Job:
    return Job(
        jid="jid-00000001",
        jobtype="legacy",
        args=args if args is not None else (args0 or dict(ARGS0),),
        custom=custom or {},
    )


def decode(job: Job, environ: dict[str, str] | None = None) -> RunnerJob:
    return decode_legacy_job(job, environ or {}).job


def added(job: RunnerJob, count: int) -> list[tuple[str, str]]:
    return [(v.key, v.value) for v in job.variables[-count:]]


def test_args0_by_json_tags() -> None:
    job = decode(job_with())
    assert job.id == ARGS0["id"] and job.number() == "225"
    assert job.image == "alpine:3" and job.commands == ("echo hi",)
    assert job.init_commands == ("git clone x",) and job.init_image == "git:1"
    assert job.files == (JobFile("f.sh", "echo"),)
    assert job.variables[0] == JobVariable("A", "1", sensitive=True, scope=VariableScope.MAIN)
    assert added(job, 1) == [("RUNNER_JOB_ID", ARGS0["id"])]


def test_missing_id_is_empty_and_null_fields_are_zero_values() -> None:
    job = decode(job_with({"image": "alpine", "commands": None, "variables": None, "files": []}))
    assert job.id == "" and job.commands == () and added(job, 1) == [("RUNNER_JOB_ID", "")]


def test_enqueue_script_shape() -> None:
    # tests/enqueue-runner-jobs.sh: no id in args[0]; the id comes from custom.
    args0 = {
        "image": "alpine:latest",
        "commands": ["echo Hello"],
        "variables": [],
        "files": [{"name": "test.sh", "contents": "#!/bin/sh\necho"}],
    }
    job = decode(job_with(args0, custom={"opslevel-runner-job-id": "test-job-1-1700000000"}))
    assert job.id == "test-job-1-1700000000"
    assert added(job, 1) == [("RUNNER_JOB_ID", "test-job-1-1700000000")]


@pytest.mark.parametrize(
    ("value", "expected"),
    [("abc", "abc"), ("", ""), (225, "225"), (225.0, "225"), (225.9, "225"), (-3.5, "-3")],
)
def test_custom_job_id(value: Any, expected: str) -> None:
    job = decode(job_with(custom={"opslevel-runner-job-id": value}))
    assert job.id == expected
    assert added(job, 1) == [("RUNNER_JOB_ID", expected)]


@pytest.mark.parametrize("value", [True, None, ["1"], {"id": 1}])
def test_custom_job_id_of_another_type_is_zero_with_a_warning(value: Any) -> None:
    decoded = decode_legacy_job(job_with(custom={"opslevel-runner-job-id": value}), {})
    assert decoded.job.id == "0"
    assert len(decoded.warnings) == 1 and "unexpected type" in decoded.warnings[0]


def test_custom_image_replaces_and_null_clears() -> None:
    assert decode(job_with(custom={"opslevel-runner-image": "busybox"})).image == "busybox"
    assert decode(job_with(custom={"opslevel-runner-image": None})).image == ""
    assert decode(job_with()).image == "alpine:3"


def test_custom_commands_are_appended() -> None:
    job = decode(job_with(custom={"opslevel-runner-commands": ["echo 2", "echo 3"]}))
    assert job.commands == ("echo hi", "echo 2", "echo 3")
    assert decode(job_with(custom={"opslevel-runner-commands": None})).commands == ("echo hi",)


def test_custom_extra_vars_are_appended_without_scope() -> None:
    extra = [
        {"key": "TOKEN", "value": "s3", "sensitive": True, "scope": "init"},
        {"Key": "MIXED", "VALUE": "case"},
        {"key": "ONLY_KEY"},
    ]
    job = decode(job_with(custom={"opslevel-runner-extra-vars": extra}))
    assert job.variables[1:4] == (
        JobVariable("TOKEN", "s3", sensitive=True),
        JobVariable("MIXED", "case"),
        JobVariable("ONLY_KEY", ""),
    )
    assert all(v.scope is VariableScope.BOTH for v in job.variables[1:])
    assert "s3" in job.secrets()


def test_custom_files_are_appended() -> None:
    job = decode(job_with(custom={"opslevel-runner-files": [{"name": "g", "contents": "x"}, {"name": "h"}]}))
    assert job.files == (JobFile("f.sh", "echo"), JobFile("g", "x"), JobFile("h", ""))


def test_added_variables_in_order() -> None:
    environ = {"FAKTORY_PROVIDER": "MY_URL", "FAKTORY_URL": "tcp://:pw@f:7419", "OTHER": "x"}
    custom = {
        "bid": "b-42",
        "opslevel-runner-job-id": 7,
        "opslevel-runner-extra-vars": [{"key": "E", "value": "e"}],
    }
    job = decode(job_with(custom=custom), environ)
    assert added(job, 5) == [
        ("E", "e"),
        ("FAKTORY_BATCH_ID", "b-42"),
        ("FAKTORY_PROVIDER", "MY_URL"),
        ("FAKTORY_URL", "tcp://:pw@f:7419"),
        ("RUNNER_JOB_ID", "7"),
    ]
    assert all(v.scope is VariableScope.BOTH for v in job.variables[-4:])
    assert [v.key for v in job.variables[-4:] if v.sensitive] == ["FAKTORY_URL"]


def test_empty_bid_and_empty_environment_add_only_runner_job_id() -> None:
    job = decode(job_with(custom={"bid": ""}), {})
    assert added(job, 2) == [("A", "1"), ("RUNNER_JOB_ID", ARGS0["id"])]
    assert decode_legacy_job(job_with(custom={"bid": "b"}), {}).bid == "b"


def test_environment_variable_set_but_empty_is_still_added() -> None:
    job = decode(job_with(), {"FAKTORY_URL": ""})
    assert added(job, 2) == [("FAKTORY_URL", ""), ("RUNNER_JOB_ID", ARGS0["id"])]


@pytest.mark.parametrize(
    ("job", "problems"),
    [
        (job_with(args=()), ["args: expected the RunnerJob as args[0], but args is empty"]),
        (job_with(args=("text",)), ["args[0]: expected a JSON object (a RunnerJob), got a string"]),
        (job_with({"id": 225}), ["args[0].id: expected a string, got number"]),
        (job_with({"id": "1", "commands": "echo"}), ["args[0].commands: expected a list, got string"]),
        (
            job_with(custom={"opslevel-runner-image": 3}),
            ["custom.opslevel-runner-image: expected a string, got a number"],
        ),
        (
            job_with(custom={"opslevel-runner-commands": "echo"}),
            ["custom.opslevel-runner-commands: expected a list of strings, got a string"],
        ),
        (
            job_with(custom={"opslevel-runner-commands": ["ok", 5]}),
            ["custom.opslevel-runner-commands[1]: expected a string, got a number"],
        ),
        (
            job_with(custom={"opslevel-runner-extra-vars": {"key": "A"}}),
            ["custom.opslevel-runner-extra-vars: expected a list of objects, got an object"],
        ),
        (
            job_with(custom={"opslevel-runner-extra-vars": [{"key": "A", "value": 1}]}),
            ["custom.opslevel-runner-extra-vars[0].value: expected a string, got a number"],
        ),
        (
            job_with(custom={"opslevel-runner-extra-vars": [{"key": "A", "sensitive": "yes"}]}),
            ["custom.opslevel-runner-extra-vars[0].sensitive: expected true or false, got a string"],
        ),
        (
            job_with(custom={"opslevel-runner-files": ["f"]}),
            ["custom.opslevel-runner-files[0]: expected an object with name, contents, got a string"],
        ),
        (job_with(custom={"bid": 12}), ["custom.bid: expected a string (a batch id), got a number"]),
    ],
)
def test_problems_are_named(job: Job, problems: list[str]) -> None:
    with pytest.raises(JobDecodeError) as caught:
        decode_legacy_job(job, {})
    assert caught.value.problems == problems


def test_every_problem_is_reported_at_once() -> None:
    job = job_with(
        {"id": 1, "image": 2}, custom={"opslevel-runner-commands": "x", "opslevel-runner-files": 3}
    )
    with pytest.raises(JobDecodeError) as caught:
        decode_legacy_job(job, {})
    assert len(caught.value.problems) == 4


def test_outcome_and_status_are_ignored_even_if_unknown() -> None:
    job = decode(job_with({**ARGS0, "outcome": "weird", "status": 3}))
    assert job.outcome is None and job.status is None


def test_unknown_keys_in_args0_are_tolerated() -> None:
    assert decode(job_with({**ARGS0, "somethingNew": {"x": 1}})).image == "alpine:3"
