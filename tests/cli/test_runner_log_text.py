"""The runner's text log: one logfmt line per record."""

from __future__ import annotations

import logging
import re

from hypothesis import given
from hypothesis import strategies as st

from tests.cli.support import trunner, write_job
from trunner.observability.runlog import TextFormatter, logfmt_value

PAIR = re.compile(r'([a-z_]+)=("(?:[^"\\]|\\.)*"|[^\s"]*)(?: |$)')


def _unescape(match: re.Match[str]) -> str:
    escaped = match[1]
    if escaped.startswith("x") and len(escaped) == 3:
        return chr(int(escaped[1:], 16))
    return {"n": "\n", "r": "\r", "t": "\t"}.get(escaped, escaped)


def parse_logfmt(line: str) -> dict[str, str]:
    fields, position = {}, 0
    while position < len(line):
        match = PAIR.match(line, position)
        assert match, f"not logfmt at {position}: {line!r}"
        key, raw = match.groups()
        if raw.startswith('"'):
            raw = re.sub(r"\\(x[0-9a-f]{2}|.)", _unescape, raw[1:-1])
        fields[key] = raw
        position = match.end()
    return fields


@given(st.text())
def test_any_text_round_trips_on_one_line(text):
    shown = logfmt_value(text)
    assert "\n" not in shown and "\r" not in shown and "\x1b" not in shown
    assert parse_logfmt(f"msg={shown}")["msg"] == text


def test_numbers_are_rounded():
    assert logfmt_value(0.123456789) == "0.123"
    assert logfmt_value(2.0) == "2"
    assert logfmt_value(17) == "17"
    assert logfmt_value(True) == "true"


def test_a_traceback_is_one_field():
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        record = logging.LogRecord(
            "trunner.x", logging.ERROR, __file__, 1, "it broke", None, __import__("sys").exc_info()
        )
    line = TextFormatter().format(record)
    assert "\n" not in line
    fields = parse_logfmt(line)
    assert fields["level"] == "error" and fields["msg"] == "it broke"
    assert fields["error"].startswith("Traceback") and "ValueError: boom\nsecond line" in fields["error"]


def test_a_failing_job_logs_one_line_per_record_through_the_cli(tmp_path):
    job = write_job(tmp_path / "job.yaml", 'id: "5"\ncommands:\n  - echo "about to fail"\n  - exit 3\n')
    result = trunner("test", "--executor", "local", "-f", job, "--log-level", "debug")
    assert result.returncode == 1
    records = [parse_logfmt(line) for line in result.stderr.splitlines()]
    [ended] = [r for r in records if r["msg"].startswith("job ended failed")]
    assert ended["level"] == "warn" and ended["job"] == "5"
    assert "last lines:\n" in ended["msg"] and "about to fail" in ended["msg"]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", r["time"]) for r in records)
