"""Property: whatever the secrets (any length up to past the line limit, any characters), their
neighbours, the form they are printed in, the read boundaries and the line limit, nothing
trunner ships, reports or logs holds any form of a secret, and the shipped text is exactly the
output with the union of all matched ranges masked."""

from __future__ import annotations

import itertools
import logging
import random
import re

import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.doubles.executors import Chunk, RecordingSink, ScriptedExecutor
from trunner.contracts import Stream
from trunner.executors.base import ExitKind, ExitResult
from trunner.job import run_job
from trunner.logs.markers import CONTINUED_PREFIX, CUT_SUFFIX, MASK
from trunner.logs.mask import Masker
from trunner.logs.secret_forms import forms_of
from trunner.logs.settings import LogSettings
from trunner.models import JobVariable, RunnerJob

CONT = CONTINUED_PREFIX.decode()
CUT = CUT_SUFFIX.decode()
DIRECTIVE = re.compile(rb"::set-outcome-var\s([\w-]+)=")

# Quotes, backslashes, whitespace, multi-byte UTF-8 (2, 3 and 4 bytes) and newlines; never
# ``*`` (a needle made of mask characters could reappear inside a mask) nor ``\r``.
ALPHABET = "abcXYZ019 '\"\\\t\n=-_/+%&;$é€😀"
secret_text = st.text(alphabet=st.sampled_from([*ALPHABET, "\ud800", "\udfff"]), min_size=1, max_size=320)
neighbour = st.text(alphabet=st.sampled_from(ALPHABET), max_size=40)


def reference_mask(data: bytes, needles: set[bytes]) -> bytes:
    """Union of every occurrence of every needle (touching ranges joined), found naively; each
    line a range touches gets one mask, and its line breaks are kept."""
    covered = [False] * len(data)
    for needle in needles:
        start = data.find(needle)
        while start >= 0:
            covered[start : start + len(needle)] = [True] * len(needle)
            start = data.find(needle, start + 1)
    out = bytearray()
    for masked, group in itertools.groupby(range(len(data)), key=covered.__getitem__):
        indexes = list(group)
        text = data[indexes[0] : indexes[-1] + 1]
        out += b"\n".join(MASK if line else b"" for line in text.split(b"\n")) if masked else text
    return bytes(out)


def reconstruct(bodies: list[str]) -> list[str]:
    """Shipped log lines with cut pieces joined again (notes left out)."""
    lines: list[str] = []
    partial: str | None = None
    for body in bodies:
        if body.startswith("[trunner]"):  # a note (its spaces may be masked too)
            continue
        continues = body.endswith(CUT)
        body = body.removesuffix(CUT)
        if partial is not None:
            assert body.startswith(CONT), body
            partial += body.removeprefix(CONT)
        else:
            partial = body
        if not continues:
            lines.append(partial)
            partial = None
    assert partial is None
    return lines


@st.composite
def scenarios(draw):
    secrets = draw(st.lists(secret_text, min_size=1, max_size=3))
    forms = [sorted(forms_of(value).needles) for value in secrets]
    pieces: list[bytes] = []
    for _ in range(draw(st.integers(min_value=1, max_value=8))):
        pieces.append(draw(neighbour).encode())
        which = draw(st.integers(min_value=0, max_value=len(secrets) - 1))
        pieces.append(draw(st.sampled_from(forms[which])))
    pieces.append(draw(neighbour).encode())
    body = b"".join(pieces)
    # outcome variables: a value holding a secret, and a secret as the key
    key_secret = draw(st.text(alphabet=st.sampled_from("abcXYZ019_-"), min_size=6, max_size=20))
    directives = b"::set-outcome-var VALUE=" + draw(st.sampled_from(forms[0])).replace(b"\n", b" ") + b"\n"
    directives += b"::set-outcome-var " + key_secret.encode() + b"=1\n"
    data = body + b"\n" + directives + draw(neighbour).encode() + b"\n"
    bounds = draw(st.lists(st.integers(min_value=0, max_value=len(data)), max_size=30))
    max_line = draw(st.integers(min_value=64, max_value=200))
    stream = draw(st.sampled_from([Stream.STDOUT, Stream.STDERR]))
    return [*secrets, key_secret], data, sorted({0, len(data), *bounds}), max_line, stream


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.texts.append(self.format(record))


def run(secrets, data, bounds, max_line, stream):
    job = RunnerJob(
        id="p",
        variables=tuple(JobVariable(f"S{i}", value, sensitive=True) for i, value in enumerate(secrets)),
    )
    chunks = [Chunk(data[a:b], stream=stream, delay=0.01) for a, b in itertools.pairwise(bounds)]
    message = "exit message: " + data[:300].decode(errors="replace")
    executor = ScriptedExecutor(chunks, result=ExitResult(ExitKind.EXITED, 3, message))
    sink = RecordingSink()
    log_settings = LogSettings(
        job_pod_log_max_size=8192,
        job_pod_log_max_interval=1.0,
        job_pod_log_max_line_length=max_line,
        log_flush_timeout=60.0,
        job_outcome_timeout=5.0,
        log_ship_retry_timeout=60.0,
    )
    records = Records()
    root = logging.getLogger("trunner")
    root.addHandler(records)
    level = root.level
    root.setLevel(logging.DEBUG)
    try:

        async def main():
            await run_job(job, executor=executor, sink=sink, settings=log_settings)

        trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    finally:
        root.removeHandler(records)
        root.setLevel(level)
    return sink, records.texts


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(scenarios())
def test_no_form_of_a_secret_leaves_trunner(scenario):
    secrets, data, bounds, max_line, stream = scenario
    needles = set().union(*(forms_of(value).needles for value in secrets))
    sink, log_texts = run(secrets, data, bounds, max_line, stream)

    bodies = sink.bodies()
    outcome = sink.outcomes[0]
    # Text from the job: every needle. Text trunner composes around it (notes, messages, its own
    # log) holds trunner's words, where a needle of a few characters occurs by chance.
    from_job = [
        *(body.removesuffix(CUT).removeprefix(CONT) for body in bodies if not body.startswith("[trunner]")),
        *(v.key for v in outcome.outcome_variables),
        *(v.value for v in outcome.outcome_variables),
    ]
    composed = [*(body for body in bodies if body.startswith("[trunner]")), outcome.message, *log_texts]
    for texts, shortest in ((from_job, 1), (composed, 8)):
        for text in texts:
            encoded = text.encode()
            for needle in needles:
                assert len(needle) < shortest or needle not in encoded, (needle, text[:200])

    # Exactly the output, masked: nothing else changed, nothing over-masked.
    masked = reference_mask(data, needles)
    masked_lines = masked.removesuffix(b"\n").split(b"\n")
    # a directive line on stdout is consumed, also when it is longer than the line limit
    directives = [DIRECTIVE.match(line) if stream is Stream.STDOUT else None for line in masked_lines]
    expected = [line for line, directive in zip(masked_lines, directives, strict=True) if not directive]
    assert reconstruct(bodies) == [line.decode() for line in expected]
    # a directive survives unless a (short) secret masked part of it
    keys = {match[1].decode() for match in directives if match}
    assert {v.key for v in outcome.outcome_variables} == keys


@st.composite
def long_scenarios(draw):
    """Secrets of 4 to 6 thousand characters (some made of a repeated unit, so they
    overlap themselves), printed whole, cut short, or repeated, in random reads."""
    unit = draw(st.text(alphabet=st.sampled_from("ab'\\\n é"), min_size=1, max_size=7))
    length = draw(st.integers(min_value=4000, max_value=6000))
    repeated = (unit * (length // len(unit) + 1))[:length]
    rng = random.Random(draw(st.integers(min_value=0, max_value=2**32)))
    single_line = ALPHABET.replace("\n", "")
    other = "".join(rng.choice(single_line) for _ in range(draw(st.integers(min_value=4090, max_value=4200))))
    secrets = [repeated, other]
    longest_forms = [sorted(forms_of(value).needles, key=len)[-4:] for value in secrets]
    pieces = []
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        form = draw(st.sampled_from(longest_forms[draw(st.integers(min_value=0, max_value=1))]))
        cut = draw(st.sampled_from([len(form), len(form) - 1, len(form) // 2]))
        pieces += [draw(neighbour).encode(), form[:cut]]
    data = b"".join(pieces) + draw(neighbour).encode()
    bounds = sorted(
        {0, len(data), *draw(st.lists(st.integers(min_value=0, max_value=len(data)), max_size=40))}
    )
    return secrets, data, bounds


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)
@given(long_scenarios())
def test_long_secrets_stream_like_the_whole_text(scenario):
    secrets, data, bounds = scenario
    masker = Masker((f"S{i}", value) for i, value in enumerate(secrets))
    stream = masker.stream()
    out = b"".join(stream.feed(data[a:b]) for a, b in itertools.pairwise(bounds)) + stream.finish()
    # A form cut inside a multi-byte character leaves invalid UTF-8, which the stream repairs first.
    repaired = data.decode("utf-8", "replace").encode()
    assert out == reference_mask(repaired, set(masker.needles))
