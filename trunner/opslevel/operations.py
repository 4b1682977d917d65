"""The GraphQL operations the runner sends, byte for byte as opslevel-go sends them, with attrs
models of their variables and payloads and the cattrs converter between those and JSON."""

from __future__ import annotations

import time
from typing import Any, Generic, TypeVar

import attrs
from cattrs.gen import override

from trunner.models import Outcome, OutcomeVariable
from trunner.opslevel.errors import GraphQLProblem
from trunner.wire import WireConverter, structure

V = TypeVar("V")
P = TypeVar("P")


# --- variables ----------------------------------------------------------------------------------


@attrs.frozen
class RunnerAppendJobLogInput:
    runner_id: str
    runner_job_id: str
    sent_at: str
    """RFC3339Nano, as Go's ``time.Time`` marshals it (see :func:`rfc3339_nano`)."""
    log_chunk: tuple[str, ...]
    """Each element is the standard, padded base64 of one log line."""


@attrs.frozen
class RunnerReportJobOutcomeInput:
    runner_id: str
    runner_job_id: str
    outcome: Outcome
    outcome_variables: tuple[OutcomeVariable, ...] = ()
    """Left out of the JSON when empty, as Go's ``omitempty`` does."""


@attrs.frozen
class RegisterVariables:
    queue: str | None
    """``null`` when the runner serves the default queue."""


@attrs.frozen
class GetPendingJobVariables:
    id: str
    token: str | None
    """The previous call's ``lastUpdateToken``; ``null`` on the first call (Go sends ``*ID("")`` as null)."""


@attrs.frozen
class AppendJobLogVariables:
    input: RunnerAppendJobLogInput


@attrs.frozen
class ReportJobOutcomeVariables:
    input: RunnerReportJobOutcomeInput


@attrs.frozen
class UnregisterVariables:
    runner_id: str


@attrs.frozen
class RunnerScaleVariables:
    current_replica_count: int
    job_concurrency: int
    runner_id: str


# --- payloads -----------------------------------------------------------------------------------


@attrs.frozen
class Account:
    id: str


@attrs.frozen
class RegisteredRunner:
    id: str
    status: str = ""


@attrs.frozen
class RunnerRegisterPayload:
    runner: RegisteredRunner | None = None
    errors: tuple[GraphQLProblem, ...] = ()


@attrs.frozen
class RunnerGetPendingJobPayload:
    runner_job: Any = None
    """The job exactly as received; :mod:`trunner.opslevel.source` structures it so that a
    malformed job can still be reported as failed instead of failing the whole poll."""
    last_update_token: str | None = None
    errors: tuple[GraphQLProblem, ...] = ()


@attrs.frozen
class ErrorsPayload:
    errors: tuple[GraphQLProblem, ...] = ()


@attrs.frozen
class RunnerScale:
    recommended_replica_count: int


# --- operations ---------------------------------------------------------------------------------


@attrs.frozen
class Operation(Generic[V, P]):
    name: str | None
    """The ``operationName`` sent; None for the anonymous ``{account{id}}`` check."""
    text: str
    field: str
    """The key under ``data`` that holds the payload."""
    payload: type[P]

    @property
    def label(self) -> str:
        """How metrics and errors name the operation."""
        return self.name or self.field


ACCOUNT: Operation[None, Account] = Operation(None, "{account{id}}", "account", Account)

RUNNER_REGISTER: Operation[RegisterVariables, RunnerRegisterPayload] = Operation(
    "RunnerRegister",
    "mutation RunnerRegister($queue:String){runnerRegister(queue: $queue){runner{id,status},"
    "errors{message,path}}}",
    "runnerRegister",
    RunnerRegisterPayload,
)

RUNNER_GET_PENDING_JOB: Operation[GetPendingJobVariables, RunnerGetPendingJobPayload] = Operation(
    "RunnerGetPendingJob",
    "mutation RunnerGetPendingJob($id:ID!$token:ID){runnerGetPendingJob(runnerId: $id lastUpdateToken: "
    "$token){runnerJob{commands,id,image,outcome,status,variables{key,sensitive,value,scope},"
    "files{name,contents},initCommands,initImage},lastUpdateToken,errors{message,path}}}",
    "runnerGetPendingJob",
    RunnerGetPendingJobPayload,
)

RUNNER_APPEND_JOB_LOG: Operation[AppendJobLogVariables, ErrorsPayload] = Operation(
    "RunnerAppendJobLog",
    "mutation RunnerAppendJobLog($input:RunnerAppendJobLogInput!){runnerAppendJobLog(input: $input)"
    "{errors{message,path}}}",
    "runnerAppendJobLog",
    ErrorsPayload,
)

RUNNER_REPORT_JOB_OUTCOME: Operation[ReportJobOutcomeVariables, ErrorsPayload] = Operation(
    "RunnerReportJobOutcome",
    "mutation RunnerReportJobOutcome($input:RunnerReportJobOutcomeInput!){runnerReportJobOutcome("
    "input: $input){errors{message,path}}}",
    "runnerReportJobOutcome",
    ErrorsPayload,
)

RUNNER_UNREGISTER: Operation[UnregisterVariables, ErrorsPayload] = Operation(
    "RunnerUnregister",
    "mutation RunnerUnregister($runnerId:ID!){runnerUnregister(runnerId: $runnerId){errors{message,path}}}",
    "runnerUnregister",
    ErrorsPayload,
)

RUNNER_SCALE: Operation[RunnerScaleVariables, RunnerScale] = Operation(
    "RunnerScale",
    "query RunnerScale($currentReplicaCount:Int!$jobConcurrency:Int!$runnerId:ID!){account{runnerScale("
    "runnerId: $runnerId, currentReplicaCount: $currentReplicaCount, jobConcurrency: $jobConcurrency)"
    "{recommendedReplicaCount}}}",
    "account",
    RunnerScale,
)
"""A query under ``account``: the payload is ``data.account.runnerScale``, see :func:`structure_payload`."""

OPERATIONS: tuple[Operation[Any, Any], ...] = (
    ACCOUNT,
    RUNNER_REGISTER,
    RUNNER_GET_PENDING_JOB,
    RUNNER_APPEND_JOB_LOG,
    RUNNER_REPORT_JOB_OUTCOME,
    RUNNER_UNREGISTER,
    RUNNER_SCALE,
)


# --- JSON conversion ----------------------------------------------------------------------------


def problems_from_json(value: Any, _: Any = None) -> tuple[GraphQLProblem, ...]:
    """GraphQL ``errors`` (top-level or a payload's) as problems; ``null`` means none."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise TypeError(f"expected a list of errors, got {type(value).__name__}")
    problems: list[GraphQLProblem] = []
    for entry in value:
        if not isinstance(entry, dict):
            raise TypeError(f"expected an error object, got {type(entry).__name__}")
        message = entry.get("message")
        path = entry.get("path") or []
        problems.append(
            GraphQLProblem(
                str(message) if message is not None else "(no message)",
                tuple(str(part) for part in path) if isinstance(path, list) else (str(path),),
            )
        )
    return tuple(problems)


def _make_converter() -> WireConverter:
    conv = WireConverter(forbid_extra_keys=False)
    conv.register_structure_hook_func(lambda t: t == tuple[GraphQLProblem, ...], problems_from_json)
    # An outcome without variables sends no outcomeVariables key.
    omit_empty = {"outcome_variables": override(rename="outcomeVariables", omit_if_default=True)}
    conv.register_unstructure_hook(
        RunnerReportJobOutcomeInput, conv.camel_unstructure_fn(RunnerReportJobOutcomeInput, **omit_empty)
    )
    return conv


converter = _make_converter()


def unstructure_variables(variables: Any) -> dict[str, Any] | None:
    if variables is None:
        return None
    data: dict[str, Any] = converter.unstructure(variables)
    return data


def request_body(operation: Operation[V, Any], variables: V) -> dict[str, Any]:
    """``{"query", "variables", "operationName"}`` with empty members left out, as hasura sends it."""
    body: dict[str, Any] = {"query": operation.text}
    encoded = unstructure_variables(variables)
    if encoded:
        body["variables"] = encoded
    if operation.name:
        body["operationName"] = operation.name
    return body


def structure_payload(operation: Operation[Any, P], data: Any) -> P:
    """The operation's payload out of the response's ``data`` member; raises ``ValueError``
    naming what is missing or malformed."""
    if not isinstance(data, dict):
        raise ValueError("the response has no 'data' object")
    payload = data.get(operation.field)
    if operation is RUNNER_SCALE:
        payload = payload.get("runnerScale") if isinstance(payload, dict) else None
    if not isinstance(payload, dict):
        raise ValueError(f"the response has no 'data.{operation.field}' object")
    return structure(payload, operation.payload, root=f"data.{operation.field}", converter=converter)


def rfc3339_nano(ns: int | None = None) -> str:
    """UTC time as Go's ``time.RFC3339Nano`` formats it: fractional seconds without trailing zeros."""
    ns = time.time_ns() if ns is None else ns
    seconds, fraction = divmod(ns, 1_000_000_000)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    digits = f"{fraction:09d}".rstrip("0")
    return f"{text}.{digits}Z" if digits else f"{text}Z"
