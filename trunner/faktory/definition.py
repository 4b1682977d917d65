"""A Faktory job described in YAML, as ``trunner enqueue`` reads it.

Keys: ``type`` (required), ``queue`` (default ``default``), ``args`` (a list; default empty),
``custom`` (a mapping), ``retries``, ``at`` (RFC3339 with a zone), ``reserve_for``, ``backtrace``,
``unique_for``, ``unique_until`` (``success``/``start``), ``expires_in`` (seconds), ``batch`` (a bid
to push into: BATCH OPEN, then PUSH with ``custom.bid``).

The Go command decodes with yaml.v3, which ignores its json tags, so there the multi-word keys
only work run together (``reservefor``) and ``reserve_for`` is silently dropped. Both spellings
are accepted here; the documented snake_case is the one to write. Unknown keys are an error, so
a typo is never silently dropped. ``retries`` is applied as given, 0 included (the Go command
ignores 0 and keeps 25).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import yaml

from trunner import wire
from trunner.faktory import protocol
from trunner.faktory.protocol import Job

_ALIASES = {
    "reservefor": "reserve_for",
    "uniquefor": "unique_for",
    "uniqueuntil": "unique_until",
    "expiresin": "expires_in",
}
_KEYS = (
    "type",
    "queue",
    "args",
    "custom",
    "retries",
    "at",
    "reserve_for",
    "backtrace",
    "unique_for",
    "unique_until",
    "expires_in",
    "batch",
)
MAX_RESERVE_FOR = 86400


class JobDefinitionError(ValueError):
    def __init__(self, origin: str, problems: list[str]) -> None:
        self.origin = origin
        self.problems = problems
        super().__init__(f"{origin}: " + "; ".join(problems))


@attrs.frozen
class JobDefinition:
    type: str
    queue: str = "default"
    args: tuple[Any, ...] = ()
    custom: Mapping[str, Any] = attrs.field(factory=dict)
    retries: int | None = None
    at: str = ""
    reserve_for: int = 0
    backtrace: int = 0
    unique_for: int = 0
    unique_until: str = ""
    expires_in: int = 0
    batch: str = ""

    def build(self, now: dt.datetime) -> Job:
        """The job to PUSH, built as the Go command builds it (custom keys applied last)."""
        custom: dict[str, Any] = {}
        if self.unique_for:
            custom["unique_for"] = self.unique_for
        if self.unique_until:
            custom["unique_until"] = self.unique_until
        if self.expires_in:
            custom["expires_at"] = protocol.format_time(now + dt.timedelta(seconds=self.expires_in))
        custom.update(self.custom)
        return Job(
            jid=protocol.random_jid(),
            jobtype=self.type,
            queue=self.queue,
            args=self.args,
            created_at=protocol.format_time(now),
            retry=protocol.DEFAULT_RETRY if self.retries is None else self.retries,
            at=self.at,
            reserve_for=self.reserve_for,
            backtrace=self.backtrace,
            custom=custom,
        )


def parse_job_definition(text: str, origin: str) -> JobDefinition:
    """Validate a YAML job description; every problem is collected into one error."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise JobDefinitionError(origin, [f"not valid YAML: {exc}"]) from None
    if not isinstance(data, dict):
        found = "an empty file" if data is None else f"a {wire.type_name(data)}"
        raise JobDefinitionError(origin, [f"expected a mapping of job fields, got {found}"])
    problems: list[str] = []
    fields: dict[str, Any] = {}
    for raw_key, value in data.items():
        key = _ALIASES.get(str(raw_key), str(raw_key))
        if key not in _KEYS:
            problems.append(f"unknown key {raw_key!r} (known: {', '.join(_KEYS)})")
        elif key in fields:
            problems.append(f"{key!r} is given twice (as {raw_key!r} too); keep one")
        else:
            fields[key] = value
    checked: dict[str, Any] = {}
    for key, value in fields.items():
        check = _CHECKS[key]
        try:
            checked[key] = check(value)
        except ValueError as exc:
            problems.append(f"{key}: {exc}")
    if "type" not in fields:
        problems.append("type: required (the Faktory job type, e.g. legacy)")
    if problems:
        raise JobDefinitionError(origin, problems)
    return JobDefinition(**checked)


def _text(what: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if not isinstance(value, str) or not value:
            raise ValueError(f"expected a non-empty string ({what}), got {value!r}")
        return value

    return check


def _queue(value: Any) -> str:
    name = _text("a queue name")(value)
    problem = protocol.check_queue_name(name)
    if problem:
        raise ValueError(problem)
    return name


def _whole(low: int, high: int | None = None, *, zero_ok: bool = False) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected a whole number, got {value!r}")
        if zero_ok and value == 0:
            return value
        if value < low or (high is not None and value > high):
            bounds = f"at least {low}" if high is None else f"between {low} and {high}"
            raise ValueError(
                f"must be {bounds}" + (" (or 0 for the default)" if zero_ok else "") + f", got {value}"
            )
        return value

    return check


def _args(value: Any) -> tuple[Any, ...]:
    if not isinstance(value, list):
        raise ValueError(f"expected a list of job arguments, got {wire.type_name(value)}")
    return tuple(_json_safe(item, f"args[{index}]") for index, item in enumerate(value))


def _custom(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"expected a mapping, got {wire.type_name(value)}")
    bad = [repr(k) for k in value if not isinstance(k, str)]
    if bad:
        raise ValueError(f"keys must be strings, got {', '.join(bad)}")
    return {k: _json_safe(v, f"custom.{k}") for k, v in value.items()}


def _json_safe(value: Any, where: str) -> Any:
    """YAML can hold values JSON cannot (dates, non-string keys, binary); reject those clearly."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, list):
        return [_json_safe(item, f"{where}[{index}]") for index, item in enumerate(value)]
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise ValueError(f"{where}: keys must be strings, got {key!r}")
        return {k: _json_safe(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, dt.date):
        raise ValueError(f"{where}: YAML read {value!r} as a date; quote it to pass it as text")
    raise ValueError(f"{where}: {wire.type_name(value)} cannot be sent as JSON")


def _at(value: Any) -> str:
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise ValueError(f"{value.isoformat()} has no time zone (add Z or an offset such as +02:00)")
        return protocol.format_time(value)
    if isinstance(value, dt.date):
        raise ValueError(
            f"{value.isoformat()} is a date; give a time too, e.g. {value.isoformat()}T09:00:00Z"
        )
    if not isinstance(value, str):
        raise ValueError(f"expected an RFC3339 timestamp, got {value!r}")
    if not value:
        return value
    protocol.parse_time(value)
    return value


def _unique_until(value: Any) -> str:
    if value not in ("success", "start"):
        raise ValueError(f"must be success or start, got {value!r}")
    return str(value)


_CHECKS: dict[str, Callable[[Any], Any]] = {
    "type": _text("the job type"),
    "queue": _queue,
    "args": _args,
    "custom": _custom,
    "retries": _whole(-1),
    "at": _at,
    "reserve_for": _whole(60, MAX_RESERVE_FOR, zero_ok=True),
    "backtrace": _whole(0),
    "unique_for": _whole(1),
    "unique_until": _unique_until,
    "expires_in": _whole(1),
    "batch": _text("a batch id"),
}
