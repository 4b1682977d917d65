"""A test double of the OpsLevel GraphQL API on loopback HTTP.

It accepts exactly the operation texts that opslevel-go sends (copied here from the reference, not
imported from trunner, so a drifting text in trunner fails), type-checks the variables against the
declared GraphQL types as the server would, keeps a queue of pending jobs per runner queue, records
every call, and injects faults: delay, stall forever, an HTTP status (e.g. 503 with Retry-After or
401), payload errors, top-level GraphQL errors and connection reset, the last two also after
carrying the call out (a committed append whose answer is lost).
"""

from __future__ import annotations

import base64
import binascii
import functools
import itertools
import json
import re
import socket
import ssl
import struct
from collections import deque
from collections.abc import Callable
from typing import Any

import attrs
import h11
import trio

from tests.doubles.http11 import serve_requests

TOKEN_REJECTED = b'{"errors":[{"message":"Please provide a valid OpsLevel API token"}]}'

# --- the schema the runner uses ----------------------------------------------------------------

ACCOUNT_QUERY = "{account{id}}"
OPERATION_TEXTS = {
    "RunnerRegister": (
        "mutation RunnerRegister($queue:String){runnerRegister(queue: $queue){runner{id,status},"
        "errors{message,path}}}"
    ),
    "RunnerGetPendingJob": (
        "mutation RunnerGetPendingJob($id:ID!$token:ID){runnerGetPendingJob(runnerId: $id "
        "lastUpdateToken: $token){runnerJob{commands,id,image,outcome,status,variables{key,sensitive,"
        "value,scope},files{name,contents},initCommands,initImage},lastUpdateToken,errors{message,path}}}"
    ),
    "RunnerAppendJobLog": (
        "mutation RunnerAppendJobLog($input:RunnerAppendJobLogInput!){runnerAppendJobLog(input: $input)"
        "{errors{message,path}}}"
    ),
    "RunnerReportJobOutcome": (
        "mutation RunnerReportJobOutcome($input:RunnerReportJobOutcomeInput!){runnerReportJobOutcome("
        "input: $input){errors{message,path}}}"
    ),
    "RunnerUnregister": (
        "mutation RunnerUnregister($runnerId:ID!){runnerUnregister(runnerId: $runnerId){errors{message,path}}}"
    ),
    "RunnerScale": (
        "query RunnerScale($currentReplicaCount:Int!$jobConcurrency:Int!$runnerId:ID!){account{runnerScale("
        "runnerId: $runnerId, currentReplicaCount: $currentReplicaCount, jobConcurrency: $jobConcurrency)"
        "{recommendedReplicaCount}}}"
    ),
}
DECLARED_VARIABLES = {
    "RunnerRegister": {"queue": "String"},
    "RunnerGetPendingJob": {"id": "ID!", "token": "ID"},
    "RunnerAppendJobLog": {"input": "RunnerAppendJobLogInput!"},
    "RunnerReportJobOutcome": {"input": "RunnerReportJobOutcomeInput!"},
    "RunnerUnregister": {"runnerId": "ID!"},
    "RunnerScale": {"currentReplicaCount": "Int!", "jobConcurrency": "Int!", "runnerId": "ID!"},
}
INPUT_OBJECTS = {
    "RunnerAppendJobLogInput": {
        "runnerId": "ID!",
        "runnerJobId": "ID!",
        "sentAt": "ISO8601DateTime!",
        "logChunk": "[String!]!",
    },
    "RunnerReportJobOutcomeInput": {
        "runnerId": "ID!",
        "runnerJobId": "ID!",
        "outcome": "RunnerJobOutcomeEnum!",
        "outcomeVariables": "[RunnerJobOutcomeVariable!]",
    },
    "RunnerJobOutcomeVariable": {"key": "String!", "value": "String!"},
}
ENUMS = {
    "RunnerJobOutcomeEnum": {
        "unstarted",
        "canceled",
        "failed",
        "success",
        "queue_timeout",
        "execution_timeout",
        "pod_timeout",
    }
}
ISO8601 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})")
INTERNAL_ONLY = set(OPERATION_TEXTS) - {"RunnerScale"}


def _coerce(type_: str, value: Any, path: str) -> list[str]:
    """Problems with ``value`` as GraphQL input of ``type_``, named the way graphql-ruby names them."""
    if type_.endswith("!"):
        if value is None:
            return [f"{path or 'value'}: Expected value to not be null"]
        type_ = type_[:-1]
    elif value is None:
        return []
    if type_.startswith("["):
        inner = type_[1:-1]
        items = value if isinstance(value, list) else [value]
        if inner == "String!" and all(isinstance(item, str) for item in items):
            return []
        return [p for i, item in enumerate(items) for p in _coerce(inner, item, f"{path}.{i}".lstrip("."))]
    if type_ in INPUT_OBJECTS:
        if not isinstance(value, dict):
            return [f"{path or 'value'}: Expected {type_} to be a key-value object"]
        fields = INPUT_OBJECTS[type_]
        problems = [
            f"{path}.{k}".lstrip(".") + f": Field is not defined on {type_}" for k in value if k not in fields
        ]
        for name, field_type in fields.items():
            problems += _coerce(field_type, value.get(name), f"{path}.{name}".lstrip("."))
        return problems
    if type_ in ENUMS:
        ok = isinstance(value, str) and value in ENUMS[type_]
        return (
            []
            if ok
            else [f"{path}: Expected {json.dumps(value)} to be one of: {', '.join(sorted(ENUMS[type_]))}"]
        )
    checks: dict[str, Callable[[Any], bool]] = {
        "String": lambda v: isinstance(v, str),
        "ID": lambda v: isinstance(v, str) or (isinstance(v, int) and not isinstance(v, bool)),
        "Int": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "ISO8601DateTime": lambda v: isinstance(v, str) and ISO8601.fullmatch(v) is not None,
    }
    if checks[type_](value):
        return []
    return [f"{path or 'value'}: Could not coerce value {json.dumps(value)} to {type_}"]


def job_payload(
    job_id: str,
    commands: list[str],
    *,
    image: str = "public.ecr.aws/opslevel/cli:v2022.02.25",
    variables: list[dict[str, Any]] | None = None,
    files: list[dict[str, str]] | None = None,
    init_commands: list[str] | None = None,
    init_image: str = "",
) -> dict[str, Any]:
    """A runnerJob object with every selected field, as the API returns it."""
    return {
        "commands": commands,
        "id": job_id,
        "image": image,
        "outcome": "unstarted",
        "status": "pending",
        "variables": variables or [],
        "files": files or [],
        "initCommands": init_commands or [],
        "initImage": init_image,
    }


# --- faults -------------------------------------------------------------------------------------


@attrs.frozen
class Delay:
    seconds: float


@attrs.frozen
class Stall:
    """Read the request, never answer."""


@attrs.frozen
class HttpStatus:
    status: int
    retry_after: str | None = None
    body: bytes = b""


UNAUTHORIZED = HttpStatus(401, body=TOKEN_REJECTED)


@attrs.frozen
class PayloadErrors:
    errors: tuple[tuple[str, tuple[str, ...]], ...] = (("Something went wrong", ("base",)),)


@attrs.frozen
class GraphQLErrors:
    messages: tuple[str, ...] = ("Internal server error",)


@attrs.frozen
class Reset:
    """Abort the connection (RST) without answering."""


@attrs.frozen
class StallAfterCommit:
    """Carry the call out, then never answer (the answer lost on its way back)."""


@attrs.frozen
class ResetAfterCommit:
    """Carry the call out, then abort the connection (RST) without answering."""


Fault = (
    Delay | Stall | HttpStatus | PayloadErrors | GraphQLErrors | Reset | StallAfterCommit | ResetAfterCommit
)


@attrs.define
class _Rule:
    fault: Fault
    operation: str | None
    remaining: int | None


# --- records ------------------------------------------------------------------------------------


@attrs.frozen
class Call:
    operation: str
    """An operation name, ``account`` for the token check, ``ping`` for GET /api/ping, or ``unknown``."""
    variables: Any
    headers: dict[str, str]
    body: bytes
    at: float
    fault: Fault | None


@attrs.frozen
class Outcome:
    runner_id: str
    outcome: str
    variables: tuple[tuple[str, str], ...]
    after_lines: int
    """How many log lines of the job had arrived when the outcome was reported."""


@attrs.define
class Runner:
    id: str
    queue: str
    registered: bool = True


class OpsLevelDouble:
    def __init__(
        self,
        *,
        token: str = "test-token",
        account_id: str = "Z2lkOi8vb3BzbGV2ZWwvQWNjb3VudC8x",
        record_bodies: bool = True,
        keep_lines: bool = True,
        on_append: Callable[[str, list[str]], None] | None = None,
        decode_lines: bool = True,
    ) -> None:
        """``on_append(job_id, lines)`` sees every accepted log chunk, decoded. ``decode_lines=False``
        (benchmarks) only counts log lines, so the double is not the bottleneck."""
        self.token = token
        self.account_id = account_id
        self.record_bodies = record_bodies
        self.keep_lines = keep_lines
        self.on_append = on_append
        self.decode_lines = decode_lines
        self.calls: list[Call] = []
        self.runners: dict[str, Runner] = {}
        self.pending: dict[str, deque[dict[str, Any]]] = {}
        self.assigned: dict[str, str] = {}
        """job id -> runner id"""
        self.lines: dict[str, list[str]] = {}
        self.line_counts: dict[str, int] = {}
        self.outcomes: dict[str, list[Outcome]] = {}
        self.ping: dict[str, Any] | None = {
            "app_commit": "4f1c2a9e8b7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b",
            "app_date": "2026-11-20T10:00:00Z",
            "app_version": "v2026.11.20",
        }
        """The body of ``GET /api/ping`` (the fields the Go runner's ``version`` reads); None: 503."""
        self.recommended_replicas: int | None = None
        """What ``runnerScale`` recommends; None recommends the caller's ``currentReplicaCount``."""
        self.port = 0
        self.tls = False
        self._rules: list[_Rule] = []
        self._runner_ids = itertools.count(1)
        self._tokens = itertools.count(1)
        self._changed = trio.Event()
        self._connections = 0

    # --- set-up -----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    async def serve(
        self,
        *,
        tls: ssl.SSLContext | None = None,
        task_status: trio.TaskStatus[OpsLevelDouble] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve on 127.0.0.1 (an ephemeral port); ``tls`` is a server-side context for HTTPS."""
        listeners: list[Any] = list(await trio.open_tcp_listeners(0, host="127.0.0.1"))
        self.port = listeners[0].socket.getsockname()[1]
        if tls is not None:
            self.tls = True
            listeners = [trio.SSLListener(listener, tls, https_compatible=True) for listener in listeners]
        task_status.started(self)
        await trio.serve_listeners(self._connection, listeners)

    def add_job(self, job: dict[str, Any], *, queue: str = "") -> str:
        self.pending.setdefault(queue, deque()).append(job)
        self._notify()
        return str(job.get("id"))

    def inject(self, fault: Fault, *, operation: str | None = None, times: int | None = 1) -> None:
        """Apply ``fault`` to the next ``times`` calls of ``operation`` (any when None; forever when
        ``times`` is None). Rules apply in the order they were added."""
        self._rules.append(_Rule(fault, operation, times))

    def clear_faults(self) -> None:
        self._rules.clear()

    # --- inspection -------------------------------------------------------------------------

    def calls_to(self, operation: str) -> list[Call]:
        return [c for c in self.calls if c.operation == operation]

    def job_lines(self, job_id: str) -> list[str]:
        return self.lines.get(job_id, [])

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    # --- HTTP ---------------------------------------------------------------------------------

    async def _connection(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)
        try:
            await serve_requests(conn, stream, functools.partial(self._respond, stream, conn))
        finally:
            await trio.aclose_forcefully(stream)

    async def _send(
        self,
        stream: trio.SocketStream,
        conn: h11.Connection,
        status: int,
        body: bytes,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        all_headers = [
            ("Content-Type", "application/json; charset=utf-8"),
            ("Content-Length", str(len(body))),
        ]
        all_headers += headers or []
        await stream.send_all(conn.send(h11.Response(status_code=status, headers=all_headers)))
        await stream.send_all(conn.send(h11.Data(data=body)))
        await stream.send_all(conn.send(h11.EndOfMessage()))

    async def _respond(
        self, stream: trio.SocketStream, conn: h11.Connection, head: h11.Request, body: bytes
    ) -> bool:
        """Answer one request; False when the connection must end (reset or stalled)."""
        headers = {k.decode().lower(): v.decode() for k, v in head.headers}
        if head.method == b"GET" and head.target.split(b"?")[0] == b"/api/ping":
            self.calls.append(Call("ping", None, headers, body, trio.current_time(), None))
            if self.ping is None:
                await self._send(stream, conn, 503, b'{"error":"unavailable"}')
            else:
                await self._send(stream, conn, 200, json.dumps(self.ping).encode())
            return True
        if head.method != b"POST" or head.target.split(b"?")[0] != b"/graphql":
            await self._send(stream, conn, 404, b'{"error":"not found"}')
            return True
        document, operation, problem = self._parse(headers, body)
        fault = self._take_fault(operation)
        self.calls.append(
            Call(
                operation,
                document.get("variables") if isinstance(document, dict) else None,
                headers,
                body if self.record_bodies else b"",
                trio.current_time(),
                fault,
            )
        )
        self._notify()
        if isinstance(fault, Delay):
            await trio.sleep(fault.seconds)
        elif isinstance(fault, Stall):
            await trio.sleep_forever()
        elif isinstance(fault, Reset):
            stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            await stream.aclose()
            return False
        elif isinstance(fault, HttpStatus):
            extra = [("Retry-After", fault.retry_after)] if fault.retry_after is not None else []
            await self._send(stream, conn, fault.status, fault.body, extra)
            return True
        elif isinstance(fault, GraphQLErrors):
            await self._send(stream, conn, 200, _errors_document(list(fault.messages)))
            return True
        if headers.get("authorization") != f"Bearer {self.token}":
            await self._send(stream, conn, 401, TOKEN_REJECTED)
            return True
        if problem is not None:
            await self._send(stream, conn, 200, _errors_document([problem]))
            return True
        assert isinstance(document, dict)
        if operation in INTERNAL_ONLY and headers.get("graphql-visibility") != "internal":
            kind = "Query" if OPERATION_TEXTS[operation].startswith("query") else "Mutation"
            field = OPERATION_TEXTS[operation].split("{", 2)[1].split("(")[0]
            await self._send(
                stream, conn, 200, _errors_document([f"Field '{field}' doesn't exist on type '{kind}'"])
            )
            return True
        if isinstance(fault, PayloadErrors):
            data = _refused(operation, [{"message": m, "path": list(p)} for m, p in fault.errors])
        else:
            data = self._execute(operation, document.get("variables") or {})
        self._notify()
        if isinstance(fault, StallAfterCommit):
            await trio.sleep_forever()
        elif isinstance(fault, ResetAfterCommit):
            stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            await stream.aclose()
            return False
        await self._send(stream, conn, 200, json.dumps({"data": data}).encode())
        return True

    def _take_fault(self, operation: str) -> Fault | None:
        for rule in self._rules:
            if rule.operation not in (None, operation) or rule.remaining == 0:
                continue
            if rule.remaining is not None:
                rule.remaining -= 1
            return rule.fault
        return None

    def _parse(self, headers: dict[str, str], body: bytes) -> tuple[Any, str, str | None]:
        """(document, operation, problem): what the request asks for, or why GraphQL refuses it."""
        if not headers.get("content-type", "").startswith("application/json"):
            return None, "unknown", "No query string was present"
        try:
            document = json.loads(body)
        except ValueError as exc:
            return None, "unknown", f"Invalid JSON in the request body: {exc}"
        if not isinstance(document, dict) or not isinstance(document.get("query"), str):
            return document, "unknown", "No query string was present"
        query = document["query"]
        name = document.get("operationName")
        if query == ACCOUNT_QUERY:
            operation = "account"
            declared: dict[str, str] = {}
        else:
            operation = next((op for op, text in OPERATION_TEXTS.items() if text == query), "unknown")
            if operation == "unknown":
                return document, operation, f"Unknown operation text: {query[:120]}"
            declared = DECLARED_VARIABLES[operation]
        if name is not None and name != (None if operation == "account" else operation):
            return document, operation, f'No operation named "{name}"'
        variables = document.get("variables")
        if variables is not None and not isinstance(variables, dict):
            return document, operation, "Variables must be a JSON object"
        for var, type_ in declared.items():
            problems = _coerce(type_, (variables or {}).get(var), "")
            if problems:
                return (
                    document,
                    operation,
                    (f"Variable ${var} of type {type_} was provided invalid value: {'; '.join(problems)}"),
                )
        return document, operation, None

    # --- resolvers ---------------------------------------------------------------------------

    def _execute(self, operation: str, variables: dict[str, Any]) -> dict[str, Any]:
        if operation == "account":
            return {"account": {"id": self.account_id}}
        if operation == "RunnerRegister":
            runner = Runner(f"runner-{next(self._runner_ids)}", variables.get("queue") or "")
            self.runners[runner.id] = runner
            return {"runnerRegister": {"runner": {"id": runner.id, "status": "registered"}, "errors": []}}
        if operation == "RunnerScale":
            recommended = self.recommended_replicas
            if recommended is None:
                recommended = variables["currentReplicaCount"]
            return {"account": {"runnerScale": {"recommendedReplicaCount": recommended}}}
        if operation == "RunnerUnregister":
            runner_id = str(variables["runnerId"])
            if runner_id not in self.runners:
                return _payload_errors("runnerUnregister", "Runner not found")
            self.runners[runner_id].registered = False
            return {"runnerUnregister": {"errors": []}}
        if operation == "RunnerGetPendingJob":
            return {"runnerGetPendingJob": self._get_pending_job(str(variables["id"]))}
        field = "runnerAppendJobLog" if operation == "RunnerAppendJobLog" else "runnerReportJobOutcome"
        data = variables["input"]
        runner = self.runners.get(str(data["runnerId"]))
        job_id = str(data["runnerJobId"])
        if runner is None or not runner.registered:
            return _payload_errors(field, "Runner not found")
        if self.assigned.get(job_id) != runner.id:
            return _payload_errors(field, "Job not found", ["input", "runnerJobId"])
        if operation == "RunnerAppendJobLog":
            return self._append(job_id, data["logChunk"])
        variables_reported = tuple((v["key"], v["value"]) for v in data.get("outcomeVariables") or [])
        self.outcomes.setdefault(job_id, []).append(
            Outcome(runner.id, data["outcome"], variables_reported, self.line_counts.get(job_id, 0))
        )
        return {"runnerReportJobOutcome": {"errors": []}}

    def _get_pending_job(self, runner_id: str) -> dict[str, Any]:
        token = str(next(self._tokens))
        runner = self.runners.get(runner_id)
        if runner is None or not runner.registered:
            return {
                "runnerJob": None,
                "lastUpdateToken": token,
                "errors": [{"message": "Runner not found", "path": ["base"]}],
            }
        queue = self.pending.get(runner.queue)
        if not queue:
            return {"runnerJob": None, "lastUpdateToken": token, "errors": []}
        job = queue.popleft()
        self.assigned[str(job.get("id"))] = runner_id
        job = {**job, "status": "running"} if isinstance(job, dict) and "status" in job else job
        return {"runnerJob": job, "lastUpdateToken": token, "errors": []}

    def _append(self, job_id: str, chunk: list[str]) -> dict[str, Any]:
        if not self.decode_lines:
            self.line_counts[job_id] = self.line_counts.get(job_id, 0) + len(chunk)
            return {"runnerAppendJobLog": {"errors": []}}
        decoded: list[str] = []
        for index, entry in enumerate(chunk):
            try:
                decoded.append(base64.b64decode(entry, validate=True).decode())
            except (binascii.Error, UnicodeDecodeError):
                return _payload_errors(
                    "runnerAppendJobLog", "is not base64 of UTF-8 text", ["input", "logChunk", str(index)]
                )
        self.line_counts[job_id] = self.line_counts.get(job_id, 0) + len(decoded)
        if self.keep_lines:
            self.lines.setdefault(job_id, []).extend(decoded)
        if self.on_append is not None:
            self.on_append(job_id, decoded)
        return {"runnerAppendJobLog": {"errors": []}}


def _errors_document(messages: list[str]) -> bytes:
    return json.dumps(
        {"errors": [{"message": m, "locations": [{"line": 1, "column": 1}]} for m in messages]}
    ).encode()


def _payload_errors(field: str, message: str, path: list[str] | None = None) -> dict[str, Any]:
    return {field: {"errors": [{"message": message, "path": path or ["base"]}]}}


def _refused(operation: str, errors: list[dict[str, Any]]) -> dict[str, Any]:
    """A payload that reports ``errors`` and nothing else, as when the server refuses the mutation."""
    if operation == "RunnerRegister":
        return {"runnerRegister": {"runner": None, "errors": errors}}
    if operation == "RunnerGetPendingJob":
        return {"runnerGetPendingJob": {"runnerJob": None, "lastUpdateToken": None, "errors": errors}}
    field = operation[0].lower() + operation[1:]
    return {field: {"errors": errors}}
