"""Property: whatever the chunking, caps, budgets and sink stalls or failures, every shipped line
is a real line, a piece of one framed by cut markers, or a marker; every gap is announced by a
marker where it is, in its own stream; the counts announced are exact; and with a sink that
keeps accepting, nothing is lost at all."""

from __future__ import annotations

import itertools
import re

import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.doubles.executors import Chunk, RecordingSink, ScriptedExecutor
from trunner.contracts import Stream
from trunner.job import run_job
from trunner.logs.markers import CONTINUED_PREFIX, CUT_SUFFIX
from trunner.logs.settings import LogSettings
from trunner.models import RunnerJob
from trunner.retry import ShipError

GAP = re.compile(r"\[trunner: \d+ lines \(\d+ bytes\)(?: of (\w+))? dropped: .*\]")
MARKER = re.compile(GAP.pattern + r"|\[trunner\] .*")
CONT = CONTINUED_PREFIX.decode()
CUT = CUT_SUFFIX.decode()

OUT_ALPHABET = "abcxyz 0123é-"
ERR_ALPHABET = "QRSTUVW789ü+"
"""Disjoint, so that each shipped piece tells which stream it came from."""


def check(real: list[str], shipped: list[str]) -> int:
    """Returns how many real lines appeared (whole or in part)."""
    matched = 0
    position = 0  # index of the next real line that may appear
    gap_announced = True
    partial: str | None = None  # pieces of the current line so far
    orphan = False  # the current pieces follow a marker (earlier pieces were lost)
    reopened: int | None = None  # a line whose start was shown before the gap: orphans may end it

    def finish_line(text: str, complete: bool) -> None:
        nonlocal position, gap_announced, matched, reopened
        start = reopened if orphan and reopened is not None else position
        for index in range(start, len(real)):
            candidate = real[index]
            ok = (
                (candidate.endswith(text) if complete else text in candidate)
                if orphan
                else (candidate == text if complete else candidate.startswith(text))
            )
            if ok:
                assert index >= position - 1 and (index in (position, reopened) or gap_announced), (
                    f"silent gap before {text[:40]!r}"
                )
                if index >= position:
                    matched += 1
                position = index + 1
                gap_announced = False
                reopened = None if complete else index
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
            reopened = None
        partial += body
        if not continues:
            finish_line(partial, complete=True)
            partial = None
    if partial is not None:
        finish_line(partial, complete=False)
    return matched


def split_streams(shipped: list[str]) -> dict[str, list[str]]:
    """Each stream's shipped lines; a marker without a stream (a lost batch, a note) is in both."""
    streams: dict[str, list[str]] = {"stdout": [], "stderr": []}
    for line in shipped:
        match = MARKER.fullmatch(line)
        if match:
            for name in [match[1]] if match[1] else streams:
                streams[name].append(line)
            continue
        body = line.removeprefix(CONT)
        streams["stderr" if body[:1] in ERR_ALPHABET else "stdout"].append(line)
    return streams


def lost_count(message: str) -> int:
    found = re.search(r"(\d+) log lines could not be delivered", message)
    return int(found[1]) if found else 0


def build_chunks(out_lines, err_lines, cuts, delays):
    streams = []
    for stream, lines in ((Stream.STDOUT, out_lines), (Stream.STDERR, err_lines)):
        data = "".join(line + "\n" for line in lines).encode()
        bounds = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
        streams.append([(stream, data[a:b]) for a, b in itertools.pairwise(bounds)])
    chunks = []
    for i, pair in enumerate(itertools.zip_longest(*streams)):
        for item in pair:
            if item is not None:
                chunks.append(Chunk(item[1], item[0], delay=delays[i % len(delays)]))
    return chunks


def run_once(chunks, log_settings, sink):
    async def main():
        return await run_job(
            RunnerJob(id="p"), executor=ScriptedExecutor(chunks), sink=sink, settings=log_settings
        )

    return trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_shipped_lines_are_real_pieces_or_markers_and_nothing_is_lost_while_the_sink_accepts(data, tmp_path):
    max_line = data.draw(st.integers(min_value=256, max_value=1500), label="max_line")
    lengths = st.one_of(
        st.integers(min_value=1, max_value=80),
        st.sampled_from([max_line - 1, max_line, max_line + 1, 2 * max_line, 2 * max_line + 1]),
        st.integers(min_value=1, max_value=4000),
    )

    def lines_of(alphabet):
        return st.lists(
            lengths.flatmap(lambda n: st.text(alphabet=st.sampled_from(alphabet), min_size=n, max_size=n)),
            max_size=40,
        )

    out_lines = data.draw(lines_of(OUT_ALPHABET), label="stdout")
    err_lines = data.draw(lines_of(ERR_ALPHABET), label="stderr")
    cuts = data.draw(st.lists(st.integers(min_value=0, max_value=100_000), max_size=30), label="cuts")
    delays = data.draw(st.lists(st.sampled_from([0.0, 0.0, 0.01, 0.5, 3.0]), min_size=1, max_size=4))
    max_size = data.draw(st.integers(min_value=1024, max_value=8192), label="max_size")
    buffer = data.draw(st.sampled_from(["spool", "spool", "memory"]), label="buffer")
    spool_size = data.draw(st.integers(min_value=1024, max_value=40_000), label="spool_size")
    stall = data.draw(st.sampled_from([5.0, 60.0]), label="stall_timeout")
    ship_delay = data.draw(st.sampled_from([0.0, 0.01, 0.3, 2.0, 10.0]), label="ship_delay")
    fail_every = data.draw(st.sampled_from([0, 0, 0, 2, 3]), label="fail_every")
    retry_timeout = data.draw(st.sampled_from([0.5, 5.0, 60.0]), label="retry_timeout")

    log_settings = LogSettings(
        job_pod_log_max_size=max_size,
        job_pod_log_max_interval=1.0,
        job_pod_log_max_line_length=max_line,
        job_log_buffer=buffer,
        job_log_spool_size=spool_size,
        job_log_spool_dir=str(tmp_path),
        log_stall_timeout=stall,
        log_flush_timeout=60.0,
        log_flush_max_time=1e6,
        job_outcome_timeout=5.0,
        log_ship_retry_timeout=retry_timeout,
    )
    chunks = build_chunks(out_lines, err_lines, cuts, delays)

    def fail(batch, attempt):
        if fail_every and attempt % fail_every == 0:
            return ShipError("injected", retryable=True)
        return None

    sink = RecordingSink(ship_delay=ship_delay, fail=fail)
    outcome = run_once(chunks, log_settings, sink)
    shipped = split_streams(sink.bodies())
    matched = check(out_lines, shipped["stdout"]) + check(err_lines, shipped["stderr"])
    for batch in sink.batches:
        assert sum(len(line.encode()) + 1 for line in batch) <= max_size + 200

    reference = RecordingSink()
    run_once(chunks, log_settings, reference)
    pieces = [line for line in reference.bodies() if not GAP.fullmatch(line)]
    assert check(out_lines, split_streams(reference.bodies())["stdout"]) == len(out_lines)
    delivered = [line for line in sink.bodies() if not GAP.fullmatch(line)]
    assert len(delivered) + lost_count(outcome.message) == len(pieces), "drops not counted exactly"

    keeps_accepting = fail_every == 0 and ship_delay < min(stall, retry_timeout)
    if keeps_accepting:
        assert delivered == pieces, "lines were lost although the sink kept accepting"
        assert matched == len(out_lines) + len(err_lines)
    elif matched < len(out_lines) + len(err_lines):
        assert "could not be delivered" in outcome.message
    assert not any(tmp_path.iterdir()), "a spool was left behind"


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
