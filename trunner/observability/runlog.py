"""The runner's own log (not a job's log): text or JSON lines on stderr, Go runner level names."""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import re
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import attrs

from trunner.config import one_of, setting

TRACE = 5
logging.addLevelName(TRACE, "TRACE")

LEVELS = {
    "TRACE": TRACE,
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARN": logging.WARNING,
    "WARNING": logging.WARNING,
    "ERROR": logging.ERROR,
}
FORMATS = ("TEXT", "JSON")
TIMESTAMPS = ("RFC3339", "UNIX")


@attrs.frozen
class RunnerLogSettings:
    """Runner log"""

    log_level: str = setting(
        "INFO",
        help="Runner log level: TRACE, DEBUG, INFO, WARN or ERROR.",
        checks=[lambda v: one_of(*LEVELS)(v.upper())],
    )
    log_format: str = setting(
        "TEXT", help="Runner log format: TEXT or JSON.", checks=[lambda v: one_of(*FORMATS)(v.upper())]
    )
    log_timestamp: str = setting(
        "RFC3339",
        help="The time of --log-format JSON records: RFC3339 (UTC, milliseconds) or UNIX (whole seconds, "
        "as the Go runner's zerolog writes them).",
        checks=[lambda v: one_of(*TIMESTAMPS)(v.upper())],
    )


_JOB_FIELDS: contextvars.ContextVar[Mapping[str, str | int] | None] = contextvars.ContextVar(
    "trunner_job_fields", default=None
)


def _bound() -> Mapping[str, str | int]:
    return _JOB_FIELDS.get() or {}


def bind_job(job: str, worker: int | str) -> None:
    """From here on, records the current task logs (and those of the tasks it starts) carry ``job``
    and ``worker``: trio runs each task in its own copy of the context, so the binding ends with
    the task."""
    _JOB_FIELDS.set({**_bound(), "job": job, "worker": worker})


@contextlib.contextmanager
def job_fields(job: str | None, **fields: str | None) -> Iterator[None]:
    """Records logged inside the block (by any module, and by the tasks it starts) carry ``job``
    and ``fields``, for work on one job outside the task that runs it: claiming, rejecting,
    handing back, acknowledging. A field given as None is left out."""
    given = {"job": job, **fields}
    token = _JOB_FIELDS.set({**_bound(), **{k: v for k, v in given.items() if v is not None}})
    try:
        yield
    finally:
        _JOB_FIELDS.reset(token)


class _JobFields(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _bound().items():
            record.__dict__.setdefault(key, value)
        return True


_STANDARD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS and not k.startswith("_")}


Mask = Callable[[str], str]


def _unmasked(text: str) -> str:
    return text


def _masked(value: Any, mask: Mask) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    return mask(str(value))


ZEROLOG_LEVELS = {
    TRACE: "trace",
    logging.DEBUG: "debug",
    logging.INFO: "info",
    logging.WARNING: "warn",
    logging.ERROR: "error",
    logging.CRITICAL: "fatal",
}
"""zerolog's level names, which log queries written for the Go runner match (``level=warn``)."""


class JsonFormatter(logging.Formatter):
    """zerolog's record: ``level``, the record's fields, ``error``, ``time``, ``message``, in its
    order and with its level names; no logger name (zerolog has none)."""

    def __init__(self, *, unix_time: bool = False, mask: Mask = _unmasked) -> None:
        super().__init__()
        self.unix_time = unix_time
        self.mask = mask

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "level": ZEROLOG_LEVELS.get(record.levelno, record.levelname.lower()),
            **_extras(record),
        }
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        entry["time"] = (
            int(record.created)
            if self.unix_time
            else time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z"
        )
        entry["message"] = record.getMessage()
        return json.dumps({key: _masked(value, self.mask) for key, value in entry.items()}, default=str)


_NEEDS_QUOTES = re.compile(r'[\s="\\]|[^\x21-\x7e]')
_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"})
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """``text`` with terminal control characters (ESC, CR, backspace, C1 controls...) shown as
    ``\\xNN``, so job output cannot move the cursor, erase a line or fake a line a terminal or a
    text log shows; tabs and newlines stay."""
    return _CONTROL.sub(lambda match: f"\\x{ord(match.group()):02x}", text)


def logfmt_value(value: Any) -> str:
    """One logfmt value: numbers rounded to 3 decimals, text quoted when it holds spaces, ``=``,
    quotes or control characters, with newlines escaped so a record stays on one line."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".") if value == value else "NaN"
    text = "" if value is None else str(value)
    if text and not _NEEDS_QUOTES.search(text):
        return text
    return '"' + printable(text.translate(_ESCAPES)) + '"'


class TextFormatter(logging.Formatter):
    """One logfmt line per record: ``time=… level=… msg=… key=value …`` (a traceback is the
    ``error`` field)."""

    def __init__(self, *, mask: Mask = _unmasked) -> None:
        super().__init__()
        self.mask = mask

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        fields: dict[str, Any] = {
            "time": stamp,
            "level": "warn" if record.levelno == logging.WARNING else record.levelname.lower(),
            "msg": record.getMessage(),
            **_extras(record),
        }
        if record.exc_info:
            fields["error"] = self.formatException(record.exc_info)
        return " ".join(f"{key}={logfmt_value(_masked(value, self.mask))}" for key, value in fields.items())


def setup(
    level: str = "INFO", fmt: str = "TEXT", timestamp: str = "RFC3339", *, mask: Mask = _unmasked
) -> None:
    """``mask``: applied to every text field of every record (the runner's credentials)."""
    handler = logging.StreamHandler(sys.stderr)
    unix_time = timestamp.upper() == "UNIX"
    handler.setFormatter(
        JsonFormatter(unix_time=unix_time, mask=mask) if fmt.upper() == "JSON" else TextFormatter(mask=mask)
    )
    handler.addFilter(_JobFields())
    root = logging.getLogger("trunner")
    root.handlers[:] = [handler]
    root.setLevel(LEVELS[level.upper()])
    root.propagate = False
