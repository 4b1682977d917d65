"""The operation texts and variable encodings, byte for byte as opslevel-go sends them."""

from __future__ import annotations

import json

import pytest

from tests.doubles import opslevel as double_module
from trunner.models import Outcome, OutcomeVariable
from trunner.opslevel.client import encode_body
from trunner.opslevel.operations import (
    ACCOUNT,
    OPERATIONS,
    RUNNER_APPEND_JOB_LOG,
    RUNNER_GET_PENDING_JOB,
    RUNNER_REGISTER,
    RUNNER_REPORT_JOB_OUTCOME,
    RUNNER_SCALE,
    RUNNER_UNREGISTER,
    AppendJobLogVariables,
    GetPendingJobVariables,
    RegisterVariables,
    ReportJobOutcomeVariables,
    RunnerAppendJobLogInput,
    RunnerReportJobOutcomeInput,
    RunnerScaleVariables,
    UnregisterVariables,
    rfc3339_nano,
    structure_payload,
)

# Copied from the opslevel-go tests (job_test.go) via the reference; see
# shared/reference/opslevel_api.md section 2.
REFERENCE_TEXTS = {
    "RunnerRegister": "mutation RunnerRegister($queue:String){runnerRegister(queue: $queue){runner{id,status},errors{message,path}}}",
    "RunnerGetPendingJob": "mutation RunnerGetPendingJob($id:ID!$token:ID){runnerGetPendingJob(runnerId: $id lastUpdateToken: $token){runnerJob{commands,id,image,outcome,status,variables{key,sensitive,value,scope},files{name,contents},initCommands,initImage},lastUpdateToken,errors{message,path}}}",
    "RunnerAppendJobLog": "mutation RunnerAppendJobLog($input:RunnerAppendJobLogInput!){runnerAppendJobLog(input: $input){errors{message,path}}}",
    "RunnerReportJobOutcome": "mutation RunnerReportJobOutcome($input:RunnerReportJobOutcomeInput!){runnerReportJobOutcome(input: $input){errors{message,path}}}",
    "RunnerUnregister": "mutation RunnerUnregister($runnerId:ID!){runnerUnregister(runnerId: $runnerId){errors{message,path}}}",
    "RunnerScale": "query RunnerScale($currentReplicaCount:Int!$jobConcurrency:Int!$runnerId:ID!){account{runnerScale(runnerId: $runnerId, currentReplicaCount: $currentReplicaCount, jobConcurrency: $jobConcurrency){recommendedReplicaCount}}}",
}


@pytest.mark.parametrize("name", sorted(REFERENCE_TEXTS))
def test_operation_texts_are_exactly_the_reference(name: str) -> None:
    [operation] = [op for op in OPERATIONS if op.name == name]
    assert operation.text == REFERENCE_TEXTS[name]
    assert double_module.OPERATION_TEXTS[name] == REFERENCE_TEXTS[name]


def test_the_token_check_is_the_anonymous_account_query() -> None:
    assert encode_body(ACCOUNT, None) == b'{"query":"{account{id}}"}\n'


def test_register_without_a_queue_sends_null() -> None:
    body = json.loads(encode_body(RUNNER_REGISTER, RegisterVariables(None)))
    assert body == {
        "query": REFERENCE_TEXTS["RunnerRegister"],
        "variables": {"queue": None},
        "operationName": "RunnerRegister",
    }
    assert json.loads(encode_body(RUNNER_REGISTER, RegisterVariables("gpu")))["variables"] == {"queue": "gpu"}


def test_the_first_poll_sends_token_null() -> None:
    first = encode_body(RUNNER_GET_PENDING_JOB, GetPendingJobVariables("1234", None))
    assert b'"variables":{"id":"1234","token":null}' in first
    later = encode_body(RUNNER_GET_PENDING_JOB, GetPendingJobVariables("1234", "12344321"))
    assert b'"variables":{"id":"1234","token":"12344321"}' in later


def test_append_input_uses_the_go_json_keys_in_order() -> None:
    variables = AppendJobLogVariables(
        RunnerAppendJobLogInput("1234", "5678", "2022-07-01T01:00:00Z", ("Log1", "Log2"))
    )
    body = encode_body(RUNNER_APPEND_JOB_LOG, variables)
    assert (
        b'"variables":{"input":{"runnerId":"1234","runnerJobId":"5678","sentAt":"2022-07-01T01:00:00Z",'
        b'"logChunk":["Log1","Log2"]}},"operationName":"RunnerAppendJobLog"}\n'
    ) in body


def test_outcome_variables_are_omitted_when_empty() -> None:
    bare = RunnerReportJobOutcomeInput("1234567890", "job", Outcome.EXECUTION_TIMEOUT)
    body = json.loads(encode_body(RUNNER_REPORT_JOB_OUTCOME, ReportJobOutcomeVariables(bare)))
    assert body["variables"] == {
        "input": {"runnerId": "1234567890", "runnerJobId": "job", "outcome": "execution_timeout"}
    }
    full = RunnerReportJobOutcomeInput(
        "1", "job", Outcome.SUCCESS, (OutcomeVariable("k", "v"), OutcomeVariable("a", "b\nc"))
    )
    body = json.loads(encode_body(RUNNER_REPORT_JOB_OUTCOME, ReportJobOutcomeVariables(full)))
    assert body["variables"]["input"]["outcomeVariables"] == [
        {"key": "k", "value": "v"},
        {"key": "a", "value": "b\nc"},
    ]


def test_unregister_and_scale_variables() -> None:
    assert json.loads(encode_body(RUNNER_UNREGISTER, UnregisterVariables("1234")))["variables"] == {
        "runnerId": "1234"
    }
    scale = json.loads(encode_body(RUNNER_SCALE, RunnerScaleVariables(2, 3, "1234567890")))
    assert scale["variables"] == {"currentReplicaCount": 2, "jobConcurrency": 3, "runnerId": "1234567890"}
    assert (
        structure_payload(
            RUNNER_SCALE, {"account": {"runnerScale": {"recommendedReplicaCount": 6}}}
        ).recommended_replica_count
        == 6
    )


@pytest.mark.parametrize(
    ("ns", "text"),
    [
        (1_656_637_200_000_000_000, "2022-07-01T01:00:00Z"),
        (1_656_637_200_123_456_789, "2022-07-01T01:00:00.123456789Z"),
        (1_656_637_200_120_000_000, "2022-07-01T01:00:00.12Z"),
        (1_656_637_200_000_000_001, "2022-07-01T01:00:00.000000001Z"),
    ],
)
def test_sent_at_is_rfc3339_nano_utc(ns: int, text: str) -> None:
    assert rfc3339_nano(ns) == text


def test_pending_job_payload_keeps_the_job_raw_and_reads_errors() -> None:
    payload = structure_payload(
        RUNNER_GET_PENDING_JOB,
        {
            "runnerGetPendingJob": {
                "runnerJob": {"id": "x", "commands": "odd"},
                "lastUpdateToken": "7",
                "errors": None,
            }
        },
    )
    assert payload.runner_job == {"id": "x", "commands": "odd"}
    assert payload.last_update_token == "7"
    assert payload.errors == ()


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (None, "the response has no 'data' object"),
        ({}, "the response has no 'data.runnerRegister' object"),
        (
            {"runnerRegister": {"runner": {"id": 5}}},
            "data.runnerRegister.runner.id: expected a string, got number",
        ),
        (
            {"runnerRegister": {"errors": "bad"}},
            "data.runnerRegister.errors: expected a list of errors, got str",
        ),
    ],
)
def test_malformed_payloads_name_the_field(data: object, problem: str) -> None:
    with pytest.raises(ValueError) as caught:
        structure_payload(RUNNER_REGISTER, data)
    assert str(caught.value) == problem
