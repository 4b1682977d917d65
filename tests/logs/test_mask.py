import base64
import json
import os
import subprocess
import sys
import urllib.parse

import pytest

from trunner.logs.mask import MAX_SECRET_BYTES, Masker
from trunner.logs.secret_forms import forms_by_encoding, forms_of

MASK = b"**********"


def masker(*values: str) -> Masker:
    return Masker((f"VAR{i}", value) for i, value in enumerate(values))


def streamed(m: Masker, data: bytes, size: int) -> bytes:
    stream = m.stream()
    out = [stream.feed(data[i : i + size]) for i in range(0, len(data), size)]
    return b"".join(out) + stream.finish()


def _run(argv: list[str], value: str) -> bytes:
    return subprocess.run(argv, env={"V": value, "LANG": "C.UTF-8"}, capture_output=True, check=True).stdout


def _stderr(argv: list[str], value: str) -> bytes:
    return subprocess.run(argv, env={"V": value, "LANG": "C.UTF-8"}, capture_output=True, check=True).stderr


# What real tools print for a value: (name, value, printer). Each printed text must come out
# with no trace of the value's forms: only the framing the tool adds around it survives.
TOOLS = [
    ("plain", "hunter2-secret", lambda v: v.encode()),
    (
        "trailing whitespace, printed unquoted",
        "spaced-secret  \t",
        lambda v: _run(["sh", "-c", "echo $V"], v),
    ),
    ("base64 command", "hunter2-secret", lambda v: _run(["sh", "-c", 'printf %s "$V" | base64'], v)),
    ("base64 of echo", "hunter2-secret", lambda v: _run(["sh", "-c", 'echo "$V" | base64'], v)),
    (
        "base64 wrapped at 76",
        "w" * 100 + "-long-secret",
        lambda v: _run(["sh", "-c", 'printf %s "$V" | base64'], v),
    ),
    ("base64, 1 byte", "k", lambda v: _run(["sh", "-c", 'printf %s "$V" | base64'], v)),
    ("base64, 4 bytes", "k3y!", lambda v: _run(["sh", "-c", 'printf %s "$V" | base64 -w0'], v)),
    ("base64 url-safe", "??>>secret<<??", lambda v: base64.urlsafe_b64encode(v.encode())),
    ("url upper", "p@ss word/&=é", lambda v: urllib.parse.quote(v, safe="").encode()),
    ("url lower", "p@ss word/&=é", lambda v: urllib.parse.quote(v, safe="").lower().encode()),
    ("url plus", "p@ss word/&=é", lambda v: urllib.parse.quote_plus(v).encode()),
    ("url keeps /", "p@ss word/&=é", lambda v: urllib.parse.quote(v).encode()),
    ("url, JavaScript encodeURIComponent", "p@ss/w rd!(x)", lambda v: b"p%40ss%2Fw%20rd!(x)"),
    (
        "url, JavaScript encodeURIComponent, every kept mark",
        "it's (a) p@ss~word!* é",
        lambda v: urllib.parse.quote(v, safe="-_.!~*'()").encode(),
    ),
    (
        "url, JavaScript encodeURI",
        "p@ss word/&=é#?[x]",
        lambda v: urllib.parse.quote(v, safe="-_.!~*'();,/?:@&=+$#").encode(),
    ),
    (
        "url, PHP urlencode",
        "p@ss wo~rd/é",
        lambda v: urllib.parse.quote_plus(v, safe="").replace("~", "%7E").encode(),
    ),
    ("url, HTML form", "p@ss wo*rd/é", lambda v: urllib.parse.quote_plus(v, safe="*").encode()),
    ("json (jq)", 'q"uo\\te\tsecret', lambda v: _run(["jq", "-n", "env.V"], v)),
    ("json ascii", 'naïve "secret"', lambda v: json.dumps(v).encode()),
    ("json unicode", 'naïve "secret"', lambda v: json.dumps(v, ensure_ascii=False).encode()),
    ("bash set -x", "it's a secret", lambda v: _stderr(["bash", "-xc", ': "$V"'], v)),
    ("dash set -x", "it's a secret", lambda v: _stderr(["dash", "-xc", ': "$V"'], v)),
    ("bash set -x, control char", "esc\x1bsecret", lambda v: _stderr(["bash", "-xc", ': "$V"'], v)),
    ("printf %q", "it's a $ecret; (really)", lambda v: _run(["bash", "-c", 'printf %q "$V"'], v)),
    ("printf %q, newline", "two\nlines 'q'", lambda v: _run(["bash", "-c", 'printf %q "$V"'], v)),
    (
        "printf %q, C locale",
        "naïve\nsecret",
        lambda v: _run(["env", "LANG=C", "bash", "-c", 'printf %q "$V"'], v),
    ),
    (
        "xml",
        "<a href='x'>&secret</a>",
        lambda v: (
            v.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("'", "&apos;").encode()
        ),
    ),
    (
        "multi-line, echoed unquoted",
        "line-one-secret\nline-two-secret",
        lambda v: _run(["sh", "-c", "echo $V"], v),
    ),
    ("multi-line, each line alone", "line-one-secret\n{\nline-two-secret", lambda v: b"x line-two-secret y"),
]


@pytest.mark.parametrize(("name", "value", "printer"), TOOLS, ids=[t[0] for t in TOOLS])
def test_each_encoding_as_a_real_tool_prints_it(name, value, printer):
    printed = printer(value)
    text = b"before " + printed + b" after"
    m = masker(value)
    masked = m.mask(text)
    assert MASK in masked, name
    assert masked.startswith(b"before ") and masked.endswith(b" after")
    for needle in forms_of(value).needles:
        if len(needle) >= 6:
            assert needle not in masked, (name, needle)
    assert streamed(m, text, 3) == masked


def test_the_coverage_table_lists_every_encoding():
    with open(os.path.join(os.path.dirname(__file__), "..", "..", "README.md"), encoding="utf-8") as readme:
        text = readme.read()
    for encoding in forms_by_encoding("x"):
        assert f"| {encoding} |" in text, encoding


def test_base64_inside_a_larger_blob_at_every_alignment():
    secret = b"hunter2-password"
    m = masker(secret.decode())
    for prefix in (b"", b"a", b"ab", b"abc"):
        for suffix in (b"", b"z", b"zz"):
            encoded = base64.b64encode(prefix + secret + suffix)
            masked = m.mask(encoded)
            assert MASK in masked, (prefix, suffix)
            # what survives is only the characters that mix neighbouring bytes in
            assert len(masked.replace(MASK, b"")) <= 8


def test_union_of_overlapping_secrets():
    # the end of one is the start of the other: neither leaves a piece behind
    m = masker("abcdef123", "123xyz789")
    assert m.mask(b"<abcdef123xyz789>") == b"<" + MASK + b">"
    # nested and equal length: one mask, whatever the order the secrets came in
    for order in (("secret-one", "cret-o", "ecret-onX"), ("ecret-onX", "cret-o", "secret-one")):
        assert masker(*order).mask(b"(secret-onX)") == b"(s" + MASK + b")"
        assert masker(*order).mask(b"(secret-onX secret-one)") == b"(s" + MASK + b" " + MASK + b")"


def test_touching_matches_become_one_mask():
    assert masker("s3cret").mask(b"s3crets3crets3cret!") == MASK + b"!"


def test_self_overlapping_secret():
    m = masker("abababab")
    assert m.mask(b"x" + b"ab" * 50 + b"y") == b"x" + MASK + b"y"
    assert m.mask(b"abababa") == b"abababa"
    assert streamed(m, b"x" + b"ab" * 50 + b"y", 1) == b"x" + MASK + b"y"


def test_masking_does_not_depend_on_hash_seed():
    code = (
        "from trunner.logs.mask import Masker;"
        "m = Masker([('A', 'abcdefgh'), ('B', 'efghijkl'), ('C', 'ghij'), ('D', 'xabcdefghijklx')]);"
        "print(m.mask(b'-abcdefghijkl- -xabcdefghijklx- ghij efgh').decode())"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("0", "1", "4242")
    }
    assert outputs == {"-**********- -**********- ********** efgh\n"}


# --- over-masking rules ---


def test_short_lines_of_a_multiline_secret_are_not_masked_alone_and_warned():
    m = Masker([("JSON_KEY", '{\n  "k": "long-private-value"\n}')])
    assert m.mask(b"if (x) { y }") == b"if (x) { y }"
    assert m.mask(b'"k": "long-private-value"') == MASK
    assert m.mask(b'{\n  "k": "long-private-value"\n}') == b"\n".join([MASK] * 3)
    assert m.warnings == [
        "sensitive variable JSON_KEY: 2 of its lines are shorter than 6 characters and are not masked "
        "on their own (only as part of the whole value)"
    ]


def test_short_secret_is_masked_and_warned_without_its_value():
    m = Masker([("PIN", "4711"), ("LONG", "longer-secret")])
    assert m.mask(b"pin 4711") == b"pin " + MASK
    assert len(m.warnings) == 1
    assert "PIN" in m.warnings[0] and "4711" not in m.warnings[0]


def test_one_char_secret_run_is_one_mask():
    m = Masker([("C", "a")])
    assert m.mask(b"baaaaaaaaaaaaaaaaaaaab") == b"b" + MASK + b"b"


def test_empty_values_are_not_secrets():
    assert not masker("", "")


def test_too_long_secret_refuses_the_job_naming_the_variable():
    m = Masker([("BIG", "x" * (MAX_SECRET_BYTES + 1)), ("OK", "fine-secret")])
    assert m.refused == [
        f"sensitive variable BIG is {MAX_SECRET_BYTES + 1} bytes long; trunner masks values of at most {MAX_SECRET_BYTES} bytes"
    ]
    assert m.mask(b"fine-secret") == MASK


# --- text that is not valid ---


def test_lone_surrogate_in_a_secret():
    m = Masker([("S", "pre-\ud800-post-secret")])
    # the stream shows a lone surrogate's bytes as replacement characters
    printed = "pre-\ud800-post-secret".encode("utf-8", "surrogatepass")
    assert streamed(m, printed, 2) == MASK
    assert m.mask(b"the -post-secret part") == b"the " + MASK + b" part"
    assert m.mask(b'"pre-\\ud800-post-secret"') == b'"' + MASK + b'"'
    assert m.mask_text("x pre-\ud800-post-secret") == "x **********"


def test_invalid_utf8_is_replaced_across_reads():
    m = masker()
    data = "é-ok-".encode() + b"\xff\xfe-" + "ü".encode()
    for size in range(1, 5):
        assert streamed(m, data, size) == "é-ok-\ufffd\ufffd-ü".encode()
    m = masker("é-secret")
    assert streamed(m, "xé-secret".encode(), 1) == b"x" + MASK


# --- streaming ---


def test_a_secret_split_across_reads_at_every_boundary():
    m = masker("split-secret")
    data = b"head split-secret tail split-secre"
    for size in range(1, len(data) + 1):
        assert streamed(m, data, size) == b"head " + MASK + b" tail split-secre"


def test_only_a_possible_start_of_a_secret_is_held_back():
    m = masker("hold-me-back")
    stream = m.stream()
    assert stream.feed(b"line one\nhold-me") == b"line one\n"
    assert stream.feed(b" no\n") == b"hold-me no\n"
    assert stream.finish() == b""


def test_huge_secret_with_short_reads():
    secret = ("0123456789abcdef" * 65536)[:1_000_000]
    m = masker(secret)
    data = b"start " + secret.encode() + b" end " + secret[:500_000].encode() + b" done"
    out = streamed(m, data, 4096)
    assert out == b"start " + MASK + b" end " + secret[:500_000].encode() + b" done"
