"""Property: whatever the chunking, caps, budgets and sink stalls or failures, every shipped line
is a real line, a piece of one framed by cut markers, or a marker; every gap is announced by a
marker where it is, in its own stream; the lines and bytes each stream's markers announce are
exactly that stream's missing ones; and with a sink that keeps accepting, nothing is lost at all."""

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
from trunner.logs.spool import DIR_PREFIX
from trunner.models import RunnerJob
from trunner.net.retry import ShipError

GAP = re.compile(
    r"\[trunner: (\d+) lines \((\d+) bytes\)(?: of (\w+))? (dropped|not confirmed, may have been delivered): .*\]"
)
MARKER = re.compile(GAP.pattern + r"|\[trunner\] .*")
CONT = CONTINUED_PREFIX.decode()
CUT = CUT_SUFFIX.decode()

OUT_ALPHABET = "abcxyz 0123é-"
ERR_ALPHABET = "QRSTUVW789ü+"
"""Disjoint, so that each shipped piece tells which stream it came from."""


def check(real: list[str], shipped: list[str]) -> int:
    """Returns how many real lines appeared (whole or in part). After a gap a piece may belong
    to more than one real line (equal lines, equal endings): every reading is tried, and the
    shipped lines pass if one reading explains them all."""
    # state: (next shipped index, next real index that may appear, gap announced, pieces of the
    # current line so far, the pieces follow a marker, a line whose start was shown before the
    # gap (orphans may end it), real lines matched)
    State = tuple[int, int, bool, str | None, bool, int | None, int]
    stack: list[State] = [(0, 0, True, None, False, None, 0)]
    seen: set[tuple[object, ...]] = set()
    failure = "no shipped line"

    def endings(state: State, text: str, complete: bool) -> list[State]:
        nonlocal failure
        i, position, gap_announced, _, orphan, reopened, matched = state
        start = reopened if orphan and reopened is not None else position
        found = []
        for index in range(start, len(real)):
            candidate = real[index]
            ok = (
                (candidate.endswith(text) if complete else text in candidate)
                if orphan
                else (candidate == text if complete else candidate.startswith(text))
            )
            if not ok:
                continue
            if not (index >= position - 1 and (index in (position, reopened) or gap_announced)):
                failure = f"silent gap before {text[:40]!r}"
                continue
            found.append(
                (
                    i,
                    max(position, index + 1),
                    False,
                    None,
                    False,
                    None if complete else index,
                    matched + (index >= position),
                )
            )
        if not found and not failure.startswith("silent gap"):
            failure = f"fabricated line {text[:60]!r}"
        return found

    while stack:
        state = stack.pop()
        key = state[:6]
        if key in seen:
            continue
        seen.add(key)
        i, position, gap_announced, partial, orphan, reopened, matched = state
        if i == len(shipped):
            if partial is None:
                return matched
            stack.extend(reversed(endings(state, partial, complete=False)))
            continue
        line = shipped[i]
        if MARKER.fullmatch(line):
            nexts = endings(state, partial, complete=False) if partial is not None else [state]
            stack.extend(reversed([(i + 1, n[1], True, None, False, n[5], n[6]) for n in nexts]))
            continue
        continues = line.endswith(CUT)
        body = line.removesuffix(CUT) if continues else line
        if body.startswith(CONT):
            body = body.removeprefix(CONT)
            if partial is None:
                if not gap_announced:
                    failure = f"continuation piece without its start: {line[:60]!r}"
                    continue
                orphan = True
                partial = ""
        else:
            if partial is not None:
                failure = f"a new line began inside a cut line: {line[:60]!r}"
                continue
            partial = ""
            orphan = False
            reopened = None
        partial += body
        state = (i + 1, position, gap_announced, partial, orphan, reopened, matched)
        if continues:
            stack.append(state)
        else:
            stack.extend(
                reversed([(n[0], n[1], n[2], None, False, n[5], n[6]) for n in endings(state, partial, True)])
            )
    raise AssertionError(failure)


def source_of(line: str) -> str:
    """Whose line a shipped (unprefixed) line is: a gap marker names its stream."""
    gap = GAP.fullmatch(line)
    if gap:
        assert gap[3] in ("stdout", "stderr", "runner"), f"a gap marker names no stream: {line!r}"
        return gap[3]
    if MARKER.fullmatch(line):
        return "runner"
    return "stderr" if line.removeprefix(CONT)[:1] in ERR_ALPHABET else "stdout"


def split_streams(shipped: list[str]) -> dict[str, list[str]]:
    """Each stream's shipped lines and its gap markers; trunner's own lines are in both."""
    streams: dict[str, list[str]] = {"stdout": [], "stderr": []}
    for line in shipped:
        source = source_of(line)
        for name in [source] if source in streams else streams:
            streams[name].append(line)
    return streams


def per_source(prefixed: list[str]) -> dict[str, list[int]]:
    """Per source: [lines, bytes] shipped (as printed, each with its line break and without
    trunner's prefix, as markers count bytes), and [lines, bytes] its gap markers announce."""
    totals = {name: [0, 0, 0, 0] for name in ("stdout", "stderr", "runner")}
    for line in prefixed:
        body = line.split("] ", 1)[1] if "] " in line else line
        total = totals[source_of(body)]
        gap = GAP.fullmatch(body)
        if gap:
            total[2] += int(gap[1])
            total[3] += int(gap[2])
        else:
            total[0] += 1
            total[1] += len(body.encode()) + 1
    return totals


def lost_count(message: str) -> int:
    """Lines the outcome message counts as not delivered: lost, or not confirmed (a recording
    sink records nothing of an attempt cut off, so those are missing from it too)."""
    found = re.search(r"(\d+) log lines could not be delivered", message)
    unconfirmed = re.search(r"(\d+) log lines were not confirmed", message)
    return (int(found[1]) if found else 0) + (int(unconfirmed[1]) if unconfirmed else 0)


class LastAttemptSink(RecordingSink):
    last_attempt_delivered = True

    async def ship(self, batch):
        self.last_attempt_delivered = False
        await super().ship(batch)
        self.last_attempt_delivered = True


def unflushed_count(message: str) -> int:
    found = re.search(r"\((\d+) left when the final flush ended", message)
    return int(found[1]) if found else 0


def assert_within_max_size(batch: list[str], max_size: int) -> None:
    """A batch holds at most ``max_size`` bytes of lines, plus the markers of lost and of
    unconfirmed batches put in front of it: at most one of each per stream, each under 300 bytes
    of text."""
    bodies = [line.split("] ", 1)[1] for line in batch]
    front = list(
        itertools.takewhile(lambda body: bool(GAP.fullmatch(body)) and "log delivery failed" in body, bodies)
    )
    kinds = {(source_of(body), GAP.fullmatch(body)[4]) for body in front}  # type: ignore[index]
    assert len(kinds) == len(front) <= 6, front
    assert all(len(body.encode()) < 300 for body in front), front
    assert sum(len(line.encode()) + 1 for line in batch[len(front) :]) <= max_size


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
    reject_every = data.draw(st.sampled_from([0, 0, 0, 2, 3]), label="reject_every")
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
        if reject_every and batch.seq % reject_every == 1:
            return ShipError("rejected", retryable=False)
        if fail_every and attempt % fail_every == 0:
            return ShipError("injected", retryable=True)
        return None

    sink = LastAttemptSink(ship_delay=ship_delay, fail=fail)
    outcome = run_once(chunks, log_settings, sink)
    shipped = split_streams(sink.bodies())
    matched = check(out_lines, shipped["stdout"]) + check(err_lines, shipped["stderr"])
    for batch in sink.batches:
        assert_within_max_size(batch, max_size)

    reference = RecordingSink()
    run_once(chunks, log_settings, reference)
    pieces = [line for line in reference.bodies() if not GAP.fullmatch(line)]
    assert check(out_lines, split_streams(reference.bodies())["stdout"]) == len(out_lines)
    delivered = [line for line in sink.bodies() if not GAP.fullmatch(line)]
    assert len(delivered) + lost_count(outcome.message) == len(pieces), "drops not counted exactly"
    got, want = per_source(sink.lines), per_source(reference.lines)
    for name, (lines, size, announced_lines, announced_size) in got.items():
        # Each stream's markers state that stream's own gap: what is shipped plus what is
        # announced is that stream's output, exactly, unless the final flush left some behind.
        # (lines lost after the last delivered batch are announced only if a later attempt succeeds)
        exact = unflushed_count(outcome.message) == 0 and sink.last_attempt_delivered
        assert want[name][2] == 0
        if exact:
            assert (lines + announced_lines, size + announced_size) == tuple(want[name][:2]), name
        else:
            assert lines + announced_lines <= want[name][0], name

    keeps_accepting = fail_every == reject_every == 0 and ship_delay < min(stall, retry_timeout)
    if keeps_accepting:
        assert delivered == pieces, "lines were lost although the sink kept accepting"
        assert matched == len(out_lines) + len(err_lines)
    elif matched < len(out_lines) + len(err_lines):
        assert "could not be delivered" in outcome.message or "were not confirmed" in outcome.message
    assert not list(tmp_path.glob(f"*/{DIR_PREFIX}*")), "a spool was left behind"


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
