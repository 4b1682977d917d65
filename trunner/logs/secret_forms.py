"""The forms in which a secret value can appear in a job's output: the needles the masker
searches for.

Each encoding is one function from a value to the texts it may print; :data:`ENCODINGS` lists
them in the order the README's coverage table documents. Every form becomes bytes the way the
stream does (UTF-8, anything that is not valid text replaced by U+FFFD), so a value holding a
lone surrogate still yields needles instead of an error.
"""

from __future__ import annotations

import base64
import html
import json
import re
from collections.abc import Callable, Iterable, Iterator

import attrs

MIN_PART = 6
"""A line of a multi-line value (or a piece between invalid characters) shorter than this is
not masked on its own: ``{``, ``}`` or ``--`` would mask every such text in the log."""

MIN_BASE64_CORE = 6
"""A base64 piece cut out of a larger blob must be this long: shorter ones match random base64."""

BASE64_WRAP = 76
"""The column at which the ``base64`` command wraps its output."""

_SURROGATE = re.compile("[\ud800-\udfff]")
_PRINTF_Q_ANYWHERE = frozenset(" !\"$&'()*,;<>?[\\]^`{|}")
_PRINTF_Q_FIRST = frozenset("#~")
_ANSI_C = {
    "\a": "\\a",
    "\b": "\\b",
    "\x1b": "\\E",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
    "\\": "\\\\",
    "'": "\\'",
}
_XML = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&apos;"}


def stream_bytes(text: str) -> bytes:
    """``text`` as the stream shows it once invalid UTF-8 is replaced: lone surrogates become
    U+FFFD, one per byte of their (invalid) UTF-8 encoding, as the stream's decoder does."""
    try:
        return text.encode("utf-8")  # fails only on a lone surrogate
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace").encode()


def raw_bytes(text: str) -> bytes:
    """The bytes a process holding ``text`` would see (lone surrogates encoded as they are)."""
    return text.encode("utf-8", "surrogatepass")


def _plain(value: str) -> Iterator[str | bytes]:
    yield value


def _trimmed(value: str) -> Iterator[str | bytes]:
    """``echo $X`` drops leading and trailing whitespace and squeezes runs of it to one space."""
    yield value.strip()
    yield " ".join(value.split())


def _base64_cores(raw: bytes) -> Iterator[bytes]:
    """The base64 characters that depend only on ``raw``, at each of the 3 byte alignments it
    can have inside a larger blob, in the standard and URL-safe alphabets."""
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + raw + b"\0\0")
        core = encoded[-(-8 * shift // 6) : 8 * (shift + len(raw)) // 6]
        if len(core) >= MIN_BASE64_CORE:
            yield core
            yield core.translate(_URLSAFE)


_URLSAFE = bytes.maketrans(b"+/", b"-_")


def _wrapped(encoded: bytes) -> bytes:
    return b"\n".join(encoded[i : i + BASE64_WRAP] for i in range(0, len(encoded), BASE64_WRAP))


def _base64(value: str) -> Iterator[str | bytes]:
    raw = raw_bytes(value)
    yield from _base64_cores(raw)
    for whole in (raw, raw + b"\n"):
        # The value encoded alone (``printf %s "$X" | base64``, ``echo "$X" | base64``): padding
        # included, so even the 4 characters of a one-byte value are distinctive enough.
        encoded = base64.b64encode(whole)
        yield encoded
        yield encoded.translate(_URLSAFE)
        yield encoded.rstrip(b"=").translate(_URLSAFE)
        if len(encoded) > BASE64_WRAP:
            yield _wrapped(encoded)


_ALNUM = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _percent_table(unreserved: bytes, plus: bool, hex_format: str) -> list[str]:
    table = [chr(byte) if byte in unreserved else hex_format % byte for byte in range(256)]
    if plus:
        table[0x20] = "+"
    return table


_URL_SAFE: tuple[tuple[bytes, tuple[bool, ...]], ...] = (
    (b"-._~", (False, True)),  # RFC 3986; Python quote(safe=""), quote_plus; Go QueryEscape
    (b"-._~/", (False, True)),  # Python quote() (safe="/")
    (b"-._*", (False, True)),  # HTML form encoding (URLSearchParams), Java URLEncoder
    (b"-._", (False, True)),  # PHP urlencode (space as +)
    (b"-._~!*'()", (False, True)),  # JavaScript encodeURIComponent
    (b"-._~!*'();,/?:@&=+$#", (False,)),  # JavaScript encodeURI
)

_PERCENT_TABLES = [
    (_ALNUM + safe, _percent_table(_ALNUM + safe, plus, hex_format))
    for safe, pluses in _URL_SAFE
    for plus in pluses
    for hex_format in ("%%%02X", "%%%02x")
]

_URL_SLICE = 65536
"""Long values are escaped a slice at a time: a slice with nothing to escape is copied as it
is, and no single call holds the GIL for long while a worker thread builds a masker."""


def _url(value: str) -> Iterator[str | bytes]:
    """Percent-encoding as the common tools do it (:data:`_URL_SAFE`: which characters each
    keeps, and whether space may be ``+``), each with upper- and lower-case hex."""
    raw = raw_bytes(value)
    slices = [raw[i : i + _URL_SLICE] for i in range(0, len(raw), _URL_SLICE)]
    special = sorted(set(raw.translate(None, _ALNUM)))
    done: set[tuple[str, ...]] = set()
    for unreserved, table in _PERCENT_TABLES:
        # Tables that treat the value's own characters alike give the same text: made once.
        key = tuple(table[byte] for byte in special)
        if key in done:
            continue
        done.add(key)
        yield "".join(
            [
                piece.decode("ascii")
                if not piece.translate(None, unreserved)
                else "".join(map(table.__getitem__, piece))
                for piece in slices
            ]
        )


def _json(value: str) -> Iterator[str | bytes]:
    yield json.dumps(value)[1:-1]
    yield json.dumps(value, ensure_ascii=False)[1:-1]
    yield json.dumps(value)[1:-1].replace("/", "\\/")


def _ansi_c_table(ascii_only: bool) -> list[str]:
    table = [chr(byte) for byte in range(256)]
    for byte in (*range(0x20), 0x7F, *(range(0x80, 0x100) if ascii_only else ())):
        table[byte] = f"\\{byte:03o}"
    for char, escape in _ANSI_C.items():
        table[ord(char)] = escape
    return table


_ANSI_C_BYTES = _ansi_c_table(ascii_only=True)
_ANSI_C_CHARS = dict(enumerate(_ansi_c_table(ascii_only=False)[:0x80]))
_CONTROL = re.compile("[\x00-\x1f\x7f]")
_PRINTF_Q = {ord(char): "\\" + char for char in _PRINTF_Q_ANYWHERE}
_XML_TABLE = {ord(char): escape for char, escape in _XML.items()}


def _shell(value: str) -> Iterator[str | bytes]:
    """What ``set -x`` (bash) and ``printf %q`` print for the value, without the outer quotes.

    A value with control characters is printed ``$'...'`` with C escapes (octal for the rest, and
    in the C locale for each byte of a non-ASCII character). dash's ``set -x`` prints words
    unquoted: the plain form."""
    yield value.replace("'", "'\\''")
    yield value.replace("'", "'\"'\"'")
    if _CONTROL.search(value):
        yield value.translate(_ANSI_C_CHARS)
        yield "".join(map(_ANSI_C_BYTES.__getitem__, raw_bytes(value)))
    quoted = value.translate(_PRINTF_Q)
    yield "\\" + quoted if quoted[:1] in _PRINTF_Q_FIRST else quoted


def _xml(value: str) -> Iterator[str | bytes]:
    yield value.translate(_XML_TABLE)
    yield html.escape(value, quote=True)


Encoding = Callable[[str], Iterable[str | bytes]]

ENCODINGS: dict[str, Encoding] = {
    "plain": _plain,
    "trimmed": _trimmed,
    "base64": _base64,
    "url": _url,
    "json": _json,
    "shell": _shell,
    "xml": _xml,
}


@attrs.frozen
class SecretForms:
    needles: frozenset[bytes]
    short_parts: int
    """Lines (or pieces between invalid characters) shorter than :data:`MIN_PART`, not masked alone."""
    invalid: bool
    """Whether the value holds characters that are not valid text (lone surrogates)."""


def parts(value: str) -> list[str]:
    """The pieces of a value masked on their own: each line of a multi-line value and each
    stretch between invalid characters, trimmed."""
    pieces = value.splitlines() if ("\n" in value or "\r" in value) else [value]
    if _SURROGATE.search(value):
        pieces = [piece for line in pieces for piece in _SURROGATE.split(line)]
    return [piece.strip() for piece in pieces if piece.strip()]


def forms_of(value: str) -> SecretForms:
    """Every needle for ``value``: each encoding of the whole value and of each long part."""
    texts = [value]
    short = 0
    pieces = parts(value)
    if pieces != [value]:
        short = sum(len(piece) < MIN_PART for piece in pieces)
        texts += dict.fromkeys(piece for piece in pieces if len(piece) >= MIN_PART)
    needles: set[bytes] = set()
    for text in texts:
        for encoding in ENCODINGS.values():
            for form in encoding(text):
                needle = form if isinstance(form, bytes) else stream_bytes(form)
                if needle:
                    needles.add(needle)
    return SecretForms(frozenset(needles), short, bool(_SURROGATE.search(value)))


def forms_by_encoding(value: str) -> dict[str, set[bytes]]:
    """The needles of the whole value, per encoding (for the coverage table and its tests)."""
    return {
        name: {form if isinstance(form, bytes) else stream_bytes(form) for form in encoding(value)} - {b""}
        for name, encoding in ENCODINGS.items()
    }
