from trunner.logs.markers import CONTINUED_PREFIX, CUT_SUFFIX
from trunner.logs.outcome_vars import OutcomeVarParser


def test_single_line_variable_consumed_and_recorded():
    parser = OutcomeVarParser()
    assert parser.filter(b"a\n::set-outcome-var hello-world=42\nb") == b"a\nb"
    assert parser.variables() == {"hello-world": "42"}


def test_value_may_contain_equals_and_spaces():
    parser = OutcomeVarParser()
    parser.filter(b"::set-outcome-var url=https://x/?a=b c")
    assert parser.variables() == {"url": "https://x/?a=b c"}


def test_set_x_lines_are_not_parsed():
    parser = OutcomeVarParser()
    assert parser.filter(b"+ echo ::set-outcome-var x=1") == b"+ echo ::set-outcome-var x=1"
    assert parser.variables() == {}


def test_multiline_variable_across_blocks():
    parser = OutcomeVarParser()
    assert parser.filter(b"before\n::start-multiline-outcome-var report\nline 1") == b"before"
    assert parser.filter(b"line 2\n\n::end-multiline-outcome-var\nafter") == b"after"
    assert parser.variables() == {"report": "line 1\nline 2"}


def test_block_made_only_of_directives_leaves_nothing():
    parser = OutcomeVarParser()
    assert parser.filter(b"::set-outcome-var a=1\n::set-outcome-var b=2") is None


def test_unterminated_multiline_is_kept_with_a_warning():
    parser = OutcomeVarParser()
    parser.filter(b"::start-multiline-outcome-var open\nx")
    parser.finish()
    assert parser.variables() == {"open": "x"}
    assert "not closed" in parser.warnings[0]


def test_total_size_is_bounded():
    parser = OutcomeVarParser(max_total_bytes=100)
    parser.filter(b"::set-outcome-var big=" + b"x" * 200)
    parser.filter(
        b"::start-multiline-outcome-var ml\n"
        + b"y" * 60
        + b"\n"
        + b"z" * 60
        + b"\n::end-multiline-outcome-var"
    )
    assert "big" not in parser.variables()
    assert parser.variables()["ml"] == "y" * 60
    assert len(parser.warnings) == 2


def test_invalid_key_characters_are_not_a_directive():
    parser = OutcomeVarParser()
    assert parser.filter(b"::set-outcome-var bad key=1") == b"::set-outcome-var bad key=1"


def test_blocks_without_directives_pass_through_untouched():
    parser = OutcomeVarParser()
    for block in (b"plain", b"url: http://x", b"a::set-outcome-var x=1", b"x\n :: not at the start"):
        assert parser.filter(block) is block
    assert parser.variables() == {}


def test_directive_on_the_first_line_or_after_colons_elsewhere():
    parser = OutcomeVarParser()
    assert parser.filter(b"::set-outcome-var a=1\ntime: 12:00") == b"time: 12:00"
    assert parser.filter(
        b"key: value\n::start-multiline-outcome-var m\nx: y\n::end-multiline-outcome-var"
    ) == (b"key: value")
    assert parser.variables() == {"a": "1", "m": "x: y"}


def test_keys_count_towards_the_total():
    parser = OutcomeVarParser(max_total_bytes=1000)
    for i in range(100):
        parser.filter(b"::set-outcome-var " + (b"k%03d" % i) * 40 + b"=v")
    assert sum(len(k) + len(v) for k, v in parser.variables().items()) <= 1000
    assert len(parser.variables()) == 6


def test_a_value_cut_into_pieces_is_joined_without_markers():
    parser = OutcomeVarParser()
    blocks = [
        b"::set-outcome-var long=" + b"a" * 10 + CUT_SUFFIX,
        CONTINUED_PREFIX + b"b" * 10 + CUT_SUFFIX,
        CONTINUED_PREFIX + b"c" * 5 + b"\nafter",
    ]
    kept = [parser.filter(block) for block in blocks]
    assert kept == [None, None, b"after"]
    assert parser.variables() == {"long": "a" * 10 + "b" * 10 + "c" * 5}


def test_a_long_line_of_a_multiline_value_is_joined_without_markers():
    parser = OutcomeVarParser()
    parser.filter(b"::start-multiline-outcome-var m\nfirst\nx" * 1 + b"y" * 5 + CUT_SUFFIX)
    parser.filter(CONTINUED_PREFIX + b"zzz\nlast\n::end-multiline-outcome-var\nshipped")
    assert parser.variables() == {"m": "first\nxyyyyyzzz\nlast"}


def test_a_cut_log_line_inside_a_multiline_trace_is_not_taken():
    parser = OutcomeVarParser()
    parser.filter(b"::start-multiline-outcome-var m\none")
    assert parser.filter(b"+ echo x" + CUT_SUFFIX) == b"+ echo x" + CUT_SUFFIX
    assert parser.filter(CONTINUED_PREFIX + b"rest\ntwo") == CONTINUED_PREFIX + b"rest"
    parser.filter(b"::end-multiline-outcome-var")
    assert parser.variables() == {"m": "one\ntwo"}


def test_a_long_value_that_cannot_fit_is_dropped_while_collected():
    parser = OutcomeVarParser(max_total_bytes=100)
    parser.filter(b"::set-outcome-var big=" + b"x" * 60 + CUT_SUFFIX)
    parser.filter(CONTINUED_PREFIX + b"y" * 60 + CUT_SUFFIX)
    assert parser._set_parts is None
    assert parser.filter(CONTINUED_PREFIX + b"z" * 60) is None
    assert parser.variables() == {}
    assert "dropped" in parser.warnings[0]


def test_a_key_cut_into_pieces_is_a_directive_once_its_equals_sign_arrives():
    parser = OutcomeVarParser()
    assert parser.filter(b"::set-outcome-var " + b"k" * 10 + CUT_SUFFIX) is None
    assert parser.filter(CONTINUED_PREFIX + b"k" * 5 + b"=va" + CUT_SUFFIX) is None
    assert parser.filter(CONTINUED_PREFIX + b"lue\nafter") == b"after"
    assert parser.variables() == {"k" * 15: "value"}


def test_pieces_that_turn_out_not_to_be_a_directive_are_shipped_as_they_were():
    parser = OutcomeVarParser()
    first = b"::set-outcome-var " + b"k" * 10 + CUT_SUFFIX
    second = CONTINUED_PREFIX + b"kk not a key" + CUT_SUFFIX
    assert parser.filter(first) is None
    assert parser.filter(second + b"\n") == first + b"\n" + second + b"\n"
    assert parser.variables() == {}


def test_a_multiline_value_of_short_lines_holds_about_its_size():
    """One object for the value, not one per line (20-byte lines would otherwise cost 3 x)."""
    import tracemalloc

    body = b"\n".join(b"v" * 19 for _ in range(45_000))
    parser = OutcomeVarParser()
    blocks = [
        b"::start-multiline-outcome-var big",
        *(body[i : i + 65536] for i in range(0, len(body), 65536)),
    ]
    tracemalloc.start()
    try:
        parser.filter(blocks[0])
        start = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        for block in blocks[1:]:
            parser.filter(block.strip(b"\n"))
        held = tracemalloc.get_traced_memory()[0] - start
    finally:
        tracemalloc.stop()
    assert held <= 1.5 * len(body), held / len(body)
