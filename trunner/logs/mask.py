"""Masking sensitive values in everything trunner sends or logs.

The masker works on each output stream as it arrives, before lines are split or cut, so a cut
can never fall inside a secret: by the time the splitter sees the text, every secret in it is
already ``**********``. The needles are every form of every secret
(:mod:`trunner.logs.secret_forms`); one Aho-Corasick automaton (Rust, ``ahocorasick-rs``) finds
all of them, overlapping ones included, in one pass over each chunk, and the union of the
matched ranges is replaced (ranges that overlap or touch become one mask per line they touch,
their line breaks kept), so the result does not depend on the order of the needles, on hashing
or on where reads end, and masking never changes the number of lines.

A stream keeps back only the bytes that may begin a needle still being printed (the longest
suffix of what it has seen that is a proper prefix of a needle), so memory per stream is below
the longest needle, and ordinary text passes through at once.
"""

from __future__ import annotations

import codecs
import logging
import sys
import traceback
from collections.abc import Iterable
from operator import itemgetter
from typing import Any

import ahocorasick_rs

from trunner.logs.markers import MASK
from trunner.logs.secret_forms import MIN_PART, forms_of, raw_bytes, stream_bytes
from trunner.models import RunnerJob
from trunner.process import credentials

SHORT_SECRET = MIN_PART
"""Secrets shorter than this are masked, with a warning: they mask innocent text too."""

MAX_SECRET_BYTES = 1024 * 1024
"""The longest sensitive value a job may carry (UTF-8 bytes). Longer ones refuse the job: a
stream holds back up to one needle's length (some forms are up to 6 x the value), and Linux
cannot pass a single environment string above 128 KiB to a process in the first place."""

_HEAD = 8
"""Needles longer than this are found as possible partial matches by their first bytes."""

_DFA_MIN_PATTERNS = 64
_DFA_LIMIT = 32 * 1024
"""The automaton is a DFA (fastest to search, slow to build: about 500 bytes of tables and 1 us
of build per pattern byte, so at most 16 MB and 35 ms) for many patterns of at most this many
bytes in all; otherwise a contiguous NFA, whose search is as fast for few patterns (a SIMD
prefilter finds candidates) and which builds ten times faster."""

_SEARCH_PREFIX = 16
_FEW_SEARCH_PREFIX = 4096
"""Needles longer than this are searched by their first bytes and then compared whole. The
automaton is built holding the GIL, so its size bounds how long building a masker can stop
every other thread, the event loop's included: when the needles have at least
:data:`_DFA_MIN_PATTERNS` distinct first 16 bytes, those are the patterns (4 to 8 times fewer
bytes than whole forms; a random 16-byte prefix matches only where the secret begins). Fewer
patterns make a small automaton anyway, and are searched by their first 4 KiB: the prefilter
that makes searching for a few secrets fast can lose its effect on 16-byte patterns (measured
with 2 secrets: 0.13 x bare split instead of 0.36 x)."""

_DEFER_FLOOR = 4096
"""A stream holding back more than this rescans only once as much new data has arrived, so
short reads of a long secret cost linear time."""

_HEAD_WINDOW = 65536

_Interval = list[int]


def _merge(matches: list[tuple[int, int, int]], carry: int) -> list[_Interval]:
    """The union of matched ranges (and ``[0, carry)``), ranges that overlap or touch joined."""
    merged: list[_Interval] = [[0, carry]] if carry else []
    matches.sort(key=itemgetter(2))
    for _, start, end in matches:
        if merged and start <= merged[-1][1]:
            last = merged[-1]
            if end > last[1]:
                last[1] = end
            if start < last[0]:
                last[0] = start
                while len(merged) > 1 and start <= merged[-2][1]:
                    last[0] = min(last[0], merged.pop(-2)[0])
        else:
            merged.append([start, end])
    return merged


def _cover(covered: bytes, continuing: bool) -> bytes:
    """The mask for a matched range: one ``**********`` per line it touches, its line breaks
    kept, so that masking never joins lines (a value ending in a line break would otherwise
    glue the next line, an outcome variable's end directive say, to the mask). ``continuing``:
    the range goes on from a mask already released on the same line."""
    if b"\n" not in covered:
        return b"" if continuing else MASK
    lines = covered.split(b"\n")
    return b"\n".join(MASK if line and not (i == 0 and continuing) else b"" for i, line in enumerate(lines))


class Masker:
    """The needles of one job's secrets. ``secrets``: (variable name, value) pairs."""

    def __init__(self, secrets: Iterable[tuple[str, str]]) -> None:
        self.warnings: list[str] = []
        """Over-masking and coverage warnings; they name variables, never values."""
        self.refused: list[str] = []
        """Why the job cannot run: sensitive values too long to mask."""
        needles: set[bytes] = set()
        for name, value in sorted(set(secrets)):
            if not value:
                continue
            size = len(raw_bytes(value))
            if size > MAX_SECRET_BYTES:
                self.refused.append(
                    f"sensitive variable {name} is {size} bytes long; trunner masks values of at most "
                    f"{MAX_SECRET_BYTES} bytes"
                )
                continue
            forms = forms_of(value)
            if len(value.strip()) < SHORT_SECRET:
                self.warnings.append(
                    f"sensitive variable {name} is shorter than {SHORT_SECRET} characters: it is masked, "
                    "but so is any matching text in the log"
                )
            if forms.short_parts:
                parts = "lines or parts around invalid characters" if forms.invalid else "lines"
                self.warnings.append(
                    f"sensitive variable {name}: {forms.short_parts} of its {parts} are shorter than "
                    f"{MIN_PART} characters and are not masked on their own (only as part of the whole value)"
                )
            needles |= forms.needles
        self.needles = sorted(needles)
        self.max_needle = max(map(len, self.needles), default=0)
        self._automaton: ahocorasick_rs.BytesAhoCorasick | None = None
        self._wholes: list[list[bytes]] = []
        self._has_long = False
        self._prefixes: set[bytes] = set()
        self._heads: ahocorasick_rs.BytesAhoCorasick | None = None
        self._by_head: list[list[bytes]] = []
        if self.needles:
            self._build()

    def _build(self) -> None:
        prefix = _SEARCH_PREFIX
        by_pattern = self._by_search_pattern(prefix)
        if len(by_pattern) < _DFA_MIN_PATTERNS:
            prefix = _FEW_SEARCH_PREFIX
            by_pattern = self._by_search_pattern(prefix)
        patterns = sorted(by_pattern)
        self._wholes = [by_pattern[pattern] for pattern in patterns]
        self._has_long = self.max_needle > prefix
        implementation = (
            ahocorasick_rs.Implementation.DFA
            if len(patterns) >= _DFA_MIN_PATTERNS and sum(map(len, patterns)) <= _DFA_LIMIT
            else ahocorasick_rs.Implementation.ContiguousNFA
        )
        self._automaton = ahocorasick_rs.BytesAhoCorasick(patterns, implementation=implementation)
        by_head: dict[bytes, list[bytes]] = {}
        for needle in self.needles:
            if len(needle) > _HEAD:
                by_head.setdefault(needle[:_HEAD], []).append(needle)
        for start in {needle[:_HEAD] for needle in self.needles}:
            self._prefixes.update(start[:k] for k in range(1, min(len(start), _HEAD)))
        if by_head:
            heads = sorted(by_head)
            self._heads = ahocorasick_rs.BytesAhoCorasick(heads)
            self._by_head = [by_head[head] for head in heads]

    def _by_search_pattern(self, prefix: int) -> dict[bytes, list[bytes]]:
        by_pattern: dict[bytes, list[bytes]] = {}
        for needle in self.needles:
            by_pattern.setdefault(needle[:prefix], []).append(needle)
        return by_pattern

    def __bool__(self) -> bool:
        return self._automaton is not None

    def mask(self, block: bytes) -> bytes:
        """``block`` with every matched range masked (a whole text, not a stream)."""
        if self._automaton is None:
            return block
        out, _, _ = self._release(block, len(block), 0, False)
        return out

    def mask_text(self, text: str) -> str:
        if self._automaton is None:
            return text
        return self.mask(stream_bytes(text)).decode("utf-8", "replace")

    def stream(self) -> StreamMasker:
        return StreamMasker(self)

    def hold(self, buf: bytes) -> int:
        """The earliest offset from which ``buf`` may be the start of a needle that continues
        past its end (``len(buf)`` when none)."""
        size = len(buf)
        if self._heads is not None and size >= _HEAD:
            view = memoryview(buf)
            low = max(0, size - self.max_needle + 1)
            while low <= size - _HEAD:
                high = min(size, low + _HEAD_WINDOW + _HEAD - 1)
                for head, start, _ in self._heads.find_matches_as_indexes(view[low:high], overlapping=True):
                    position = low + start
                    rest = size - position
                    for needle in self._by_head[head]:
                        if len(needle) > rest and needle.startswith(view[position:]):
                            return position
                low = high - _HEAD + 1
        for rest in range(min(_HEAD - 1, size), 0, -1):
            if buf[size - rest :] in self._prefixes:
                return size - rest
        return size

    def _whole_matches(self, buf: bytes, matches: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
        """Matches of the needles behind each matched search pattern (a long needle's prefix)."""
        found = []
        for index, start, end in matches:
            for needle in self._wholes[index]:
                if len(needle) == end - start:
                    found.append((index, start, end))
                elif buf.startswith(needle, start):
                    found.append((index, start, start + len(needle)))
        return found

    def _release(self, buf: bytes, hold: int, carry: int, open_: bool) -> tuple[bytes, int, bool]:
        """Masked ``buf[:hold]``; the bytes of a masked range that continue past ``hold``; and
        whether the released text ends inside a mask that a range starting at ``hold`` continues."""
        assert self._automaton is not None
        matches = self._automaton.find_matches_as_indexes(buf, overlapping=True)
        if self._has_long and matches:
            matches = self._whole_matches(buf, matches)
        if not matches and not carry:
            return (buf if hold == len(buf) else buf[:hold]), 0, False
        pieces: list[bytes] = []
        position = 0
        next_carry = 0
        ends_masked = False
        for start, end in _merge(matches, carry):
            if start >= hold:
                break
            pieces.append(buf[position:start])
            covered = buf[start : min(end, hold)]
            pieces.append(_cover(covered, start == 0 and open_))
            if end >= hold:
                next_carry = end - hold
                ends_masked = not covered.endswith(b"\n")
                position = hold
                break
            position = end
        pieces.append(buf[position:hold])
        return b"".join(pieces), next_carry, ends_masked


class StreamMasker:
    """One output stream: invalid UTF-8 replaced, then masked, releasing all it safely can.

    Memory held: the longest needle, plus as much again while a long partial match waits
    (rescans are deferred, see :data:`_DEFER_FLOOR`)."""

    def __init__(self, masker: Masker) -> None:
        self._masker = masker
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._pending = b""
        self._fresh = 0
        self._carry = 0
        self._open = False

    def feed(self, data: bytes) -> bytes:
        data = self._valid(data, final=False)
        if not self._masker:
            return data
        buf = self._pending + data if self._pending else data
        self._fresh += len(data)
        if len(buf) - self._fresh > _DEFER_FLOOR and self._fresh < len(buf) - self._fresh:
            self._pending = buf
            return b""
        return self._scan(buf, self._masker.hold(buf))

    def finish(self) -> bytes:
        """What is left at the end of the stream."""
        tail = self._valid(b"", final=True)
        if not self._masker:
            return tail
        buf = self._pending + tail
        return self._scan(buf, len(buf)) if buf else b""

    def _scan(self, buf: bytes, hold: int) -> bytes:
        self._fresh = 0
        if hold == 0:
            self._pending = buf
            return b""
        out, self._carry, self._open = self._masker._release(buf, hold, self._carry, self._open)
        self._pending = buf[hold:]
        return out

    def _valid(self, data: bytes, *, final: bool) -> bytes:
        if not final and data.isascii() and not self._decoder.getstate()[0]:
            return data
        return self._decoder.decode(data, final).encode()


class MaskedLog(logging.LoggerAdapter[logging.Logger]):
    """A job's view of the runner's log: each message (with its arguments and any traceback)
    is formatted here and masked before it reaches a handler."""

    def __init__(self, log: logging.Logger | logging.LoggerAdapter[logging.Logger], masker: Masker) -> None:
        logger = log.logger if isinstance(log, logging.LoggerAdapter) else log
        extra = dict(log.extra or {}) if isinstance(log, logging.LoggerAdapter) else {}
        super().__init__(logger, extra)
        self._masker = masker

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if not self._masker or not self.isEnabledFor(level):
            super().log(level, msg, *args, **kwargs)
            return
        text = str(msg) % args if args else str(msg)
        exc_info = kwargs.pop("exc_info", None)
        if exc_info:
            if isinstance(exc_info, BaseException):
                exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
            elif not isinstance(exc_info, tuple):
                exc_info = sys.exc_info()
            if exc_info[0] is not None:
                text += "\n" + "".join(traceback.format_exception(*exc_info)).rstrip("\n")
        kwargs.pop("stack_info", None)
        super().log(level, "%s", self._masker.mask_text(text), **kwargs)


def masker_for(job: RunnerJob) -> Masker:
    """The masker of ``job``'s sensitive variables and of the runner's own credentials."""
    return Masker([*((v.key, v.value) for v in job.variables if v.sensitive), *credentials.registered()])


OFF_LOOP_COST = 256 * 1024
"""A masker whose :func:`build_cost` is at least this (about 25 ms of build on the development
machine) is built in a worker thread; below it, on the event loop with no thread hop, as the few
short secrets of an ordinary job are (0.2 ms for one, 3 ms for sixteen). Jobs run in virtual
time stay below it (a task waiting for a thread lets a virtual clock jump): the largest values
the masking properties generate, three of 320 characters in lines of 6, cost about 220,000."""

_PART_COST = 1536
"""What one line of a value costs to build, in bytes of a single-line value: each line of at
least :data:`MIN_PART` characters gets every encoding of its own."""


def build_cost(job: RunnerJob) -> int:
    """About how long building ``job``'s masker takes, in units of about 100 ns: the bytes of its
    sensitive values plus :data:`_PART_COST` per part masked on its own, counted from line breaks
    (at most one per ``MIN_PART + 1`` characters, and that many for a value with invalid
    characters, which split it too). Values refused for their length cost nothing: they are not
    built."""
    cost = 0
    for variable in job.variables:
        value = variable.value
        if not variable.sensitive or not value or len(value) > MAX_SECRET_BYTES:
            continue
        most = len(value) // (MIN_PART + 1) + 1
        try:
            size = len(value.encode())
        except UnicodeEncodeError:
            size, parts = len(raw_bytes(value)), most
        else:
            lines = len(value.splitlines())
            parts = 1 if lines <= 1 else min(lines + 1, most)
        cost += size + _PART_COST * parts
    return cost
