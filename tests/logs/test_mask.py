import base64
from urllib.parse import quote

from trunner.logs.mask import Masker, needles_for

MASK = b"**********"


def test_plain_secret_masked_everywhere():
    masker = Masker(["World!"])
    assert masker.mask(b"Hello World! and World!") == b"Hello " + MASK + b" and " + MASK


def test_empty_values_are_not_secrets():
    assert not Masker(["", ""])


def test_base64_forms_at_every_alignment():
    secret = "hunter2-password"
    masker = Masker([secret])
    for prefix in (b"", b"a", b"ab", b"abc"):
        encoded = base64.b64encode(prefix + secret.encode() + b"tail")
        assert secret.encode() not in masker.mask(encoded)
        masked = masker.mask(encoded)
        assert MASK in masked, prefix


def test_url_encoded_form():
    secret = "p@ss word/with&chars"
    masker = Masker([secret])
    assert masker.mask(f"https://x/?p={quote(secret, safe='')}".encode()) == b"https://x/?p=" + MASK


def test_each_line_of_a_multiline_secret():
    masker = Masker(["first-line-secret\nsecond-line-secret\n"])
    out = masker.mask(b"first-line-secret\nnoise\nsecond-line-secret")
    assert out == MASK + b"\nnoise\n" + MASK


def test_longest_needle_wins_over_a_contained_shorter_one():
    masker = Masker(["abcdef", "abcdefghijkl"])
    assert masker.mask(b"xabcdefghijklx") == b"x" + MASK + b"x"


def test_short_secrets_are_masked_and_counted():
    masker = Masker(["ab", "longer-secret"])
    assert masker.short_secrets == 1
    assert masker.mask(b"cab") == b"c" + MASK


def test_mask_text_for_outcome_variables():
    assert Masker(["World!"]).mask_text("Hello World!") == "Hello **********"


def test_guard_cut_moves_before_any_occurrence_spanning_the_cut():
    masker = Masker(["SECRET"])
    buf = b"0123SECRET89"
    assert masker.guard_cut(buf, 6) == 4
    assert masker.guard_cut(buf, 4) == 4
    assert masker.guard_cut(buf, 10) == 10


def test_needles_do_not_include_tiny_encodings():
    assert all(len(n) >= 2 for n in needles_for("ab"))
