"""Property: whatever the chunking, caps and sink stalls, every shipped line is a real line, a
piece of one framed by cut markers, or a marker; gaps are always announced by a marker."""

from __future__ import annotations

import itertools
import re

import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fakes import Chunk, RecordingSink, ScriptedExecutor
from trunner.job import run_job
from trunner.logs.markers import CONTINUED_PREFIX, CUT_SUFFIX
from trunner.logs.settings import LogSettings
from trunner.models import RunnerJob
from trunner.retry import ShipError

MARKER = re.compile(r"\[trunner: \d+ lines \(\d+ bytes\) dropped: .*\]|\[trunner\] .*")
CONT = CONTINUED_PREFIX.decode()
CUT = CUT_SUFFIX.decode()

line_text = st.text(alphabet=st.sampled_from("abcxyz 0123é-"), max_size=3000)


def check(real: list[str], shipped: list[str]) -> int:
    """Returns how many real lines appeared (whole or in part)."""
    matched = 0
    position = 0  # index of the next real line that may appear
    gap_announced = True
    partial: str | None = None  # pieces of the current line so far
    orphan = False  # the current pieces follow a marker (earlier pieces were lost)

    def finish_line(text: str, complete: bool) -> None:
        nonlocal position, gap_announced, matched
        for index in range(position, len(real)):
            candidate = real[index]
            ok = (
                (candidate.endswith(text) if complete else text in candidate)
                if orphan
                else (candidate == text if complete else candidate.startswith(text))
            )
            if ok:
                assert index == position or gap_announced, f"silent gap before {text[:40]!r}"
                position = index + 1
                gap_announced = False
                matched += 1
                return
        raise AssertionError(f"fabricated line {text[:60]!r}")

    for line in shipped:
        if MARKER.fullmatch(line):
            if partial is not None:
                finish_line(partial, complete=False)
                partial = None
            gap_announced = True
            orphan = False
            continue
        continues = line.endswith(CUT)
        body = line.removesuffix(CUT) if continues else line
        if body.startswith(CONT):
            body = body.removeprefix(CONT)
            if partial is None:
                assert gap_announced, f"continuation piece without its start: {line[:60]!r}"
                orphan = True
                partial = ""
        else:
            assert partial is None, f"a new line began inside a cut line: {line[:60]!r}"
            partial = ""
            orphan = False
        partial += body
        if not continues:
            finish_line(partial, complete=True)
            partial = None
    if partial is not None:
        finish_line(partial, complete=False)
    return matched


def run(lines, cuts, max_line, max_size, delays, fail_every, retry_timeout, ship_delay):
    data = "".join(line + "\n" for line in lines).encode()
    bounds = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
    chunks = [
        Chunk(data[a:b], delay=delays[i % len(delays)]) for i, (a, b) in enumerate(itertools.pairwise(bounds))
    ]

    def fail(batch, attempt):
        if fail_every and attempt % fail_every == 0:
            return ShipError("injected", retryable=True)
        return None

    sink = RecordingSink(ship_delay=ship_delay, fail=fail)
    log_settings = LogSettings(
        job_pod_log_max_size=max_size,
        job_pod_log_max_interval=1.0,
        job_pod_log_max_line_length=max_line,
        log_flush_timeout=60.0,
        job_outcome_timeout=5.0,
        log_ship_retry_timeout=retry_timeout,
    )

    async def main():
        await run_job(RunnerJob(id="p"), executor=ScriptedExecutor(chunks), sink=sink, settings=log_settings)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    return sink


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lines=st.lists(line_text, min_size=1, max_size=60),
    cuts=st.lists(st.integers(min_value=0, max_value=200_000), max_size=40),
    max_line=st.integers(min_value=256, max_value=2048),
    max_size=st.integers(min_value=1024, max_value=8192),
    delays=st.lists(st.sampled_from([0.0, 0.0, 0.01, 0.5, 3.0]), min_size=1, max_size=5),
    fail_every=st.sampled_from([0, 0, 2, 3]),
    retry_timeout=st.sampled_from([0.5, 5.0, 60.0]),
    ship_delay=st.sampled_from([0.0, 0.01, 0.3, 2.0]),
)
def test_shipped_lines_are_real_pieces_or_markers(
    lines, cuts, max_line, max_size, delays, fail_every, retry_timeout, ship_delay
):
    sink = run(lines, cuts, max_line, max_size, delays, fail_every, retry_timeout, ship_delay)
    matched = check(lines, sink.bodies())
    if matched < len(lines):
        assert "could not be delivered" in sink.outcomes[0].message
    for batch in sink.batches:
        assert sum(len(line.encode()) + 1 for line in batch) <= max_size + 200


def test_checker_rejects_a_spliced_line():
    real = ["line1", "line2", "more"]
    try:
        check(real, ["line1", "limore"])
    except AssertionError:
        return
    raise AssertionError("the checker accepted a fabricated line")


def test_checker_rejects_a_silent_gap():
    try:
        check(["a", "b", "c"], ["a", "c"])
    except AssertionError:
        return
    raise AssertionError("the checker accepted a silent gap")
