"""Masking never changes a log's line structure: a secret spanning or ending in line breaks is
masked line by line with its line breaks kept, so an outcome variable's directives after it
still parse."""

from __future__ import annotations

import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.doubles.executors import Chunk, RecordingSink, ScriptedExecutor
from trunner.job import run_job
from trunner.logs.mask import Masker
from trunner.logs.settings import LogSettings
from trunner.models import JobVariable, RunnerJob

MASK = b"**********"
PEM = (
    "-----BEGIN CERTIFICATE-----\n"
    "MIIBszCCAVmgAwIBAgIUQ2VydGlmaWNhdGUgZm9yIHRlc3RzMAoGCCqGSM49BAMC\n"
    "MBQxEjAQBgNVBAMMCXRydW5uZXItY2EwHhcNMjYwMTAxMDAwMDAwWhcNMzYwMTAx\n"
    "-----END CERTIFICATE-----\n"
)


def streamed(masker: Masker, data: bytes, size: int) -> bytes:
    stream = masker.stream()
    out = [stream.feed(data[i : i + size]) for i in range(0, len(data), size)]
    return b"".join(out) + stream.finish()


def test_a_value_ending_in_a_line_break_keeps_it_at_every_read_size():
    masker = Masker([("CERT", PEM)])
    data = (
        b"::start-multiline-outcome-var cert\n" + PEM.encode() + b"::end-multiline-outcome-var\n"
        b"::set-outcome-var next=1\n"
    )
    expected = (
        b"::start-multiline-outcome-var cert\n" + b"\n".join([MASK] * 4) + b"\n"
        b"::end-multiline-outcome-var\n::set-outcome-var next=1\n"
    )
    assert masker.mask(data) == expected
    for size in range(1, 80):
        assert streamed(masker, data, size) == expected, size


async def test_a_certificate_in_a_multiline_outcome_variable_leaves_its_end_and_the_next_variable(
    autojump_clock: trio.testing.MockClock,
):
    job = RunnerJob(
        id="8",
        commands=("true",),
        variables=(JobVariable("CERT", PEM, sensitive=True),),
    )
    printed = (
        b"::start-multiline-outcome-var cert\n" + PEM.encode() + b"::end-multiline-outcome-var\n"
        b"::set-outcome-var next=after the certificate\n"
        b"still in the log\n"
    )
    sink = RecordingSink()
    executor = ScriptedExecutor([Chunk(printed[i : i + 7]) for i in range(0, len(printed), 7)])
    outcome = await run_job(job, executor=executor, sink=sink, settings=LogSettings())
    variables = {variable.key: variable.value for variable in outcome.outcome_variables}
    assert variables == {"cert": "\n".join([MASK.decode()] * 4), "next": "after the certificate"}
    assert sink.bodies()[-1] == "still in the log"


line_text = st.text(alphabet=st.sampled_from("ab\n \r-é"), max_size=30)


@settings(max_examples=300, deadline=None)
@given(
    secrets=st.lists(line_text.filter(str.strip), min_size=1, max_size=3),
    pieces=st.lists(st.one_of(line_text, st.sampled_from(["SECRET0", "SECRET1", "SECRET2"])), max_size=12),
    size=st.integers(min_value=1, max_value=64),
)
def test_masking_never_changes_the_number_of_line_breaks(secrets, pieces, size):
    masker = Masker((f"S{i}", value) for i, value in enumerate(secrets))
    text = "".join(
        secrets[int(piece[-1]) % len(secrets)] if piece.startswith("SECRET") else piece for piece in pieces
    )
    data = text.encode()
    assert masker.mask(data).count(b"\n") == data.count(b"\n")
    assert streamed(masker, data, size).count(b"\n") == data.count(b"\n")
    assert streamed(masker, data, size) == masker.mask(data)
