"""Masking the values of sensitive variables in a job's output.

Needles are the secret itself, each line of a multi-line secret, its URL-encoded forms and the
parts of its base64 encoding that do not depend on neighbouring bytes (at each of the three
byte alignments, so a secret inside a larger base64 blob is caught too). Masking runs over
complete lines only, and the line splitter never cuts inside a needle (:meth:`Masker.guard_cut`),
so a secret split across reads or across a long-line cut is still masked.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

from trunner.logs.markers import MASK

SHORT_SECRET = 6
"""Secrets shorter than this are masked but reported: they mask innocent text too."""

_MIN_ENCODED_NEEDLE = 6


def _base64_cores(raw: bytes) -> list[bytes]:
    cores = []
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + raw + b"\0\0")
        start = -(-8 * shift // 6)
        end = 8 * (shift + len(raw)) // 6
        core = encoded[start:end]
        cores.append(core)
        cores.append(core.replace(b"+", b"-").replace(b"/", b"_"))
    return cores


def needles_for(secret: str) -> set[bytes]:
    raw = secret.encode()
    needles = {raw}
    if "\n" in secret or "\r" in secret:
        needles.discard(raw)
        needles.update(line.strip().encode() for line in secret.splitlines() if line.strip())
    encoded = {quote(secret, safe="").encode(), quote_plus(secret).encode(), *_base64_cores(raw)}
    needles.update(n for n in encoded if len(n) >= _MIN_ENCODED_NEEDLE)
    return needles


class Masker:
    def __init__(self, secrets: Iterable[str]) -> None:
        values = sorted({s for s in secrets if s})
        self.short_secrets = sum(1 for s in values if len(s) < SHORT_SECRET)
        needles: set[bytes] = set()
        for value in values:
            needles |= needles_for(value)
        self.needles = sorted(needles, key=len, reverse=True)
        self.max_needle = len(self.needles[0]) if self.needles else 0

    def __bool__(self) -> bool:
        return bool(self.needles)

    def mask(self, block: bytes) -> bytes:
        for needle in self.needles:
            if needle in block:
                block = block.replace(needle, MASK)
        return block

    def mask_text(self, text: str) -> str:
        return self.mask(text.encode()).decode("utf-8", "replace") if self.needles else text

    def guard_cut(self, buf: bytes, cut: int) -> int:
        """The largest offset <= ``cut`` that does not fall inside an occurrence of a needle."""
        moved = True
        while moved and cut > 0:
            moved = False
            for needle in self.needles:
                start = buf.find(needle, max(0, cut - len(needle) + 1), cut + len(needle) - 1)
                if 0 <= start < cut:
                    cut = start
                    moved = True
        return cut
