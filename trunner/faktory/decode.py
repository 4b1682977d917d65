"""Decoding a ``legacy`` Faktory job as the Go runner's ``legacyJobHandler`` does (``cmd/faktory.go``):

1. ``args[0]`` is a RunnerJob by its json tags (``id`` must be a string; when missing it is "").
2. Custom fields, in this order: ``opslevel-runner-job-id`` (string, or a number printed as an
   integer; any other type gives "0"), ``opslevel-runner-image`` (replaces the image),
   ``opslevel-runner-commands`` (appended), ``opslevel-runner-extra-vars`` (``{key, value,
   sensitive}``, appended without scope), ``opslevel-runner-files`` (appended).
3. Added variables for both containers: ``FAKTORY_BATCH_ID`` (when ``custom.bid`` is set),
   ``FAKTORY_PROVIDER`` and ``FAKTORY_URL`` (when set in the runner's environment), ``RUNNER_JOB_ID``
   (always). ``FAKTORY_URL`` holds the server's password and is sensitive (masked in the job's log,
   a Secret in a pod); ``FAKTORY_PROVIDER`` holds the name of a variable, not a credential.

Every problem is collected; a job with problems is refused with all of them named.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from trunner import wire
from trunner.faktory.protocol import Job
from trunner.models import JobFile, JobVariable, RunnerJob

CUSTOM_JOB_ID = "opslevel-runner-job-id"
CUSTOM_IMAGE = "opslevel-runner-image"
CUSTOM_COMMANDS = "opslevel-runner-commands"
CUSTOM_EXTRA_VARS = "opslevel-runner-extra-vars"
CUSTOM_FILES = "opslevel-runner-files"


class JobDecodeError(Exception):
    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


@attrs.frozen
class DecodedJob:
    job: RunnerJob
    bid: str
    warnings: tuple[str, ...] = ()


def decode_legacy_job(job: Job, environ: Mapping[str, str]) -> DecodedJob:
    """The RunnerJob a ``legacy`` Faktory job describes; raises :class:`JobDecodeError`."""
    problems: list[str] = []
    warnings: list[str] = []
    runner_job = _decode_args(job.args, problems)
    bid = _bid(job, problems)

    found, raw_id = job.custom_value(CUSTOM_JOB_ID)
    job_id = runner_job.id if runner_job is not None else ""
    if found:
        if isinstance(raw_id, str):
            job_id = raw_id
        elif isinstance(raw_id, int | float) and not isinstance(raw_id, bool):
            job_id = _go_int_text(raw_id, problems)
        else:
            job_id = "0"
            warnings.append(
                f"custom.{CUSTOM_JOB_ID} has unexpected type {_json_type(raw_id)} (value {raw_id!r}); using id 0"
            )

    image: str | None = None
    found, raw_image = job.custom_value(CUSTOM_IMAGE)
    if found:
        # mapstructure decodes null as the zero value, so null clears the image as in the Go runner.
        image = "" if raw_image is None else _string(raw_image, f"custom.{CUSTOM_IMAGE}", problems)
    commands = _string_list(job, CUSTOM_COMMANDS, problems)
    extra_vars = _records(job, CUSTOM_EXTRA_VARS, ("key", "value", "sensitive"), problems)
    files = _records(job, CUSTOM_FILES, ("name", "contents"), problems)

    if problems or runner_job is None:
        raise JobDecodeError(problems)

    variables = list(runner_job.variables)
    variables += [
        JobVariable(
            key=str(v.get("key", "")), value=str(v.get("value", "")), sensitive=bool(v.get("sensitive"))
        )
        for v in extra_vars
    ]
    if bid:
        variables.append(JobVariable("FAKTORY_BATCH_ID", bid))
    for name in ("FAKTORY_PROVIDER", "FAKTORY_URL"):
        if name in environ:
            variables.append(JobVariable(name, environ[name], sensitive=name == "FAKTORY_URL"))
    variables.append(JobVariable("RUNNER_JOB_ID", job_id))
    decoded = attrs.evolve(
        runner_job,
        id=job_id,
        image=runner_job.image if image is None else image,
        commands=runner_job.commands + tuple(commands),
        variables=tuple(variables),
        files=runner_job.files
        + tuple(JobFile(str(f.get("name", "")), str(f.get("contents", ""))) for f in files),
    )
    return DecodedJob(decoded, bid, tuple(warnings))


def _decode_args(args: tuple[Any, ...], problems: list[str]) -> RunnerJob | None:
    if not args:
        problems.append("args: expected the RunnerJob as args[0], but args is empty")
        return None
    payload = args[0]
    if not isinstance(payload, dict):
        problems.append(f"args[0]: expected a JSON object (a RunnerJob), got {_json_type(payload)}")
        return None
    # JSON null decodes to the zero value in Go; outcome/status are server-side state, unused here.
    cleaned = {k: v for k, v in payload.items() if v is not None and k not in ("outcome", "status")}
    cleaned.setdefault("id", "")
    try:
        return wire.structure(cleaned, RunnerJob, what="args[0]")
    except wire.WireError as exc:
        problems.extend(f"args[0].{p}" for p in exc.problems)
        return None


def _bid(job: Job, problems: list[str]) -> str:
    found, bid = job.custom_value("bid")
    if not found or bid is None:
        return ""
    if not isinstance(bid, str):
        problems.append(f"custom.bid: expected a string (a batch id), got {_json_type(bid)}")
        return ""
    return bid


def _go_int_text(number: float, problems: list[str]) -> str:
    try:
        return str(int(number))
    except (OverflowError, ValueError):
        problems.append(f"custom.{CUSTOM_JOB_ID}: {number!r} is not a usable job id")
        return "0"


def _string(value: Any, where: str, problems: list[str]) -> str:
    if not isinstance(value, str):
        problems.append(f"{where}: expected a string, got {_json_type(value)}")
        return ""
    return value


def _custom_list(job: Job, key: str, items: str, problems: list[str]) -> list[Any]:
    """``custom[key]`` as a list of ``items``: absent or null is empty; anything else is a problem."""
    found, raw = job.custom_value(key)
    if not found or raw is None:
        return []
    if not isinstance(raw, list):
        problems.append(f"custom.{key}: expected a list of {items}, got {_json_type(raw)}")
        return []
    return raw


def _string_list(job: Job, key: str, problems: list[str]) -> list[str]:
    raw = _custom_list(job, key, "strings", problems)
    return [_string(item, f"custom.{key}[{index}]", problems) for index, item in enumerate(raw)]


_FIELD_TYPES: dict[str, tuple[type[Any], str]] = {
    "key": (str, "a string"),
    "value": (str, "a string"),
    "name": (str, "a string"),
    "contents": (str, "a string"),
    "sensitive": (bool, "true or false"),
}


def _records(job: Job, key: str, fields: tuple[str, ...], problems: list[str]) -> list[dict[str, Any]]:
    """A list of objects decoded as mapstructure does: field names match case-insensitively,
    other keys are ignored, missing fields are zero values, types must match exactly."""
    records: list[dict[str, Any]] = []
    for index, item in enumerate(_custom_list(job, key, "objects", problems)):
        where = f"custom.{key}[{index}]"
        if not isinstance(item, dict):
            problems.append(f"{where}: expected an object with {', '.join(fields)}, got {_json_type(item)}")
            continue
        record: dict[str, Any] = {}
        for field in fields:
            present, value = _field(item, field)
            if not present or value is None:
                continue
            kind, label = _FIELD_TYPES[field]
            if not isinstance(value, kind):
                problems.append(f"{where}.{field}: expected {label}, got {_json_type(value)}")
                continue
            record[field] = value
        records.append(record)
    return records


def _field(item: Mapping[str, Any], name: str) -> tuple[bool, Any]:
    if name in item:
        return True, item[name]
    for key, value in item.items():
        if isinstance(key, str) and key.lower() == name:
            return True, value
    return False, None


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
