from trunner.logs.lines import LineSplitter
from trunner.logs.markers import CONTINUED_PREFIX, CUT_SUFFIX


def lines_of(segments):
    return [line for block, _ in segments for line in block.split(b"\n")]


def test_complete_lines_leave_as_one_block_and_partial_waits():
    splitter = LineSplitter(100)
    assert splitter.feed(b"a\nb\npart") == [(b"a\nb", False)]
    assert splitter.feed(b"ial\n") == [(b"partial", False)]
    assert splitter.finish() == []


def test_trailing_line_without_newline_is_delivered_at_finish():
    splitter = LineSplitter(100)
    assert splitter.feed(b"no newline") == []
    assert splitter.finish() == [(b"no newline", False)]


def test_crlf_ends_a_line_even_split_across_chunks():
    splitter = LineSplitter(100)
    out = splitter.feed(b"one\r\ntwo\r")
    out += splitter.feed(b"\nthree\r\n")
    assert lines_of(out) == [b"one", b"two", b"three"]


def test_lone_carriage_return_stays_inside_the_line():
    splitter = LineSplitter(100)
    assert lines_of(splitter.feed(b"10%\r50%\r100%\n")) == [b"10%\r50%\r100%"]


def test_long_partial_line_is_cut_with_markers_and_memory_stays_bounded():
    splitter = LineSplitter(10)
    out = []
    for _ in range(100):
        out += splitter.feed(b"x" * 7)
        assert len(splitter._partial) <= 10
    out += splitter.feed(b"\nnext\n")
    lines = lines_of(out)
    assert lines[0] == b"x" * 10 + CUT_SUFFIX
    assert all(line.startswith(CONTINUED_PREFIX) for line in lines[1:-1])
    assert lines[-1] == b"next"
    rebuilt = b"".join(line.removeprefix(CONTINUED_PREFIX).removesuffix(CUT_SUFFIX) for line in lines[:-1])
    assert rebuilt == b"x" * 700


def test_long_complete_line_inside_a_block_is_cut_and_neighbours_untouched():
    splitter = LineSplitter(10)
    lines = lines_of(splitter.feed(b"short\n" + b"y" * 25 + b"\nafter\n"))
    assert lines == [
        b"short",
        b"y" * 10 + CUT_SUFFIX,
        CONTINUED_PREFIX + b"y" * 10 + CUT_SUFFIX,
        CONTINUED_PREFIX + b"y" * 5,
        b"after",
    ]


def test_cut_never_splits_a_utf8_character():
    splitter = LineSplitter(10)
    text = "ééééééééé".encode()  # 18 bytes, 2 per character
    lines = lines_of(splitter.feed(text + b"\n"))
    for line in lines:
        line.removeprefix(CONTINUED_PREFIX).removesuffix(CUT_SUFFIX).decode()
