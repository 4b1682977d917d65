"""Job files as the Go runner's ``test -f`` reads them: viper decodes the YAML with mapstructure,
which matches keys case-insensitively, ignores unknown ones and converts scalars weakly.

:func:`go_job_view` turns such a document into the strict form trunner's job model takes: keys
renamed to the model's, a missing ``id`` made ``"1"`` (as ``test`` does), numbers and booleans
where text is expected written as Go writes them (``5``, ``1.5``, ``true`` -> ``"1"``), and
``sensitive`` given as text parsed as Go's ``strconv.ParseBool`` parses it. Each ignored key is
returned as a warning (Go ignores them silently). Anything else is left for the strict
structuring to judge.
"""

from __future__ import annotations

import decimal
import math
from collections.abc import Mapping
from typing import Any

DEFAULT_ID = "1"

_JOB_KEYS = (
    "id",
    "image",
    "commands",
    "variables",
    "files",
    "initCommands",
    "initImage",
    "outcome",
    "status",
)
_VARIABLE_KEYS = ("key", "value", "sensitive", "scope")
_FILE_KEYS = ("name", "contents")
_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_FALSE = {"0", "f", "F", "FALSE", "false", "False", ""}


def go_text(value: Any) -> Any:
    """A scalar as mapstructure's weak decoding writes it into a string field; other values as is."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "+Inf" if value > 0 else "-Inf"
        return format(decimal.Decimal(repr(value)).normalize(), "f")
    if value is None:
        return ""
    return value


def go_bool(value: Any) -> Any:
    """A value as mapstructure's weak decoding reads it into a bool field; other values as is."""
    if isinstance(value, str):
        if value in _TRUE:
            return True
        if value in _FALSE:
            return False
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value != 0
    if value is None:
        return False
    return value


def _rename(raw: Mapping[Any, Any], keys: tuple[str, ...], where: str, warnings: list[str]) -> dict[str, Any]:
    by_lower = {key.lower(): key for key in keys}
    renamed: dict[str, Any] = {}
    for key, value in raw.items():
        name = by_lower.get(str(key).lower())
        if name is None:
            warnings.append(f"{where}{key}: unknown key, ignored")
        else:
            renamed[name] = value
    return renamed


def go_job_view(data: Any) -> tuple[Any, list[str]]:
    """``data`` read as the Go runner reads a job file, and a warning per ignored key."""
    warnings: list[str] = []
    if not isinstance(data, Mapping):
        return data, warnings
    job = _rename(data, _JOB_KEYS, "", warnings)
    job["id"] = go_text(job.get("id", DEFAULT_ID)) or DEFAULT_ID
    for key in ("image", "initImage"):
        if key in job:
            job[key] = go_text(job[key])
    for key in ("commands", "initCommands"):
        if isinstance(job.get(key), list):
            job[key] = [go_text(item) for item in job[key]]
    if isinstance(job.get("variables"), list):
        variables = []
        for index, raw in enumerate(job["variables"]):
            if not isinstance(raw, Mapping):
                variables.append(raw)
                continue
            variable = _rename(raw, _VARIABLE_KEYS, f"variables[{index}].", warnings)
            for key in ("key", "value"):
                if key in variable:
                    variable[key] = go_text(variable[key])
            if "sensitive" in variable:
                variable["sensitive"] = go_bool(variable["sensitive"])
            variables.append(variable)
        job["variables"] = variables
    if isinstance(job.get("files"), list):
        job["files"] = [
            {k: go_text(v) for k, v in _rename(raw, _FILE_KEYS, f"files[{index}].", warnings).items()}
            if isinstance(raw, Mapping)
            else raw
            for index, raw in enumerate(job["files"])
        ]
    return job, warnings
