"""The Faktory Work Protocol (FWP) without I/O: RESP reply framing, command lines, and the JSON
payloads that travel in them.

Facts from the protocol specification and the Go client/server (faktory v1.9.4):

- The client sends one command per line: ``VERB`` or ``VERB <argument>``, ended by CRLF; the
  argument is JSON for HELLO/PUSH/ACK/FAIL/BEAT and plain words for FETCH and BATCH.
- The server answers every command with one RESP value: ``+simple``, ``-CODE message``,
  ``$<n>`` bulk (``$-1`` is null) or ``:<n>``; arrays are never used.
- The server greets with ``+HI {"v":2}``, plus ``"i"`` (iterations) and ``"s"`` (salt) when a
  password is required; the client proves the password with :func:`password_hash`.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import secrets
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import attrs
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn

from trunner.wire import WireConverter, WireError, structure

T = TypeVar("T")

PROTOCOL_VERSION = 2
DEFAULT_PORT = 7419
DEFAULT_RETRY = 25
"""``retry`` of a job built by the Go client's ``NewJob``."""
MAX_REPLY_BYTES = 64 * 1024 * 1024
"""Largest reply accepted; a fetched job carries its files inline, so this is generous, but a
server that streams without end must not exhaust memory."""


# --- errors -------------------------------------------------------------------------------------


class FaktoryError(Exception):
    """Anything that went wrong talking to Faktory."""


class ConnectionLost(FaktoryError):
    """The connection failed, timed out or was closed; it cannot be used again. Another
    connection may succeed. ``sent``: the command had been written in full before that, so the
    server may have carried it out."""

    def __init__(self, message: str, *, sent: bool = False) -> None:
        super().__init__(message)
        self.sent = sent


class ProtocolViolation(FaktoryError):
    """The server sent something the protocol does not allow; the connection is unusable."""


class ServerError(FaktoryError):
    """The server answered with an error reply (``-CODE message``). The connection stays usable."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"{code} {message}".strip())


class HandshakeRejected(ServerError):
    """The server refused the HELLO (wrong password, unsupported client)."""


# --- RESP replies -------------------------------------------------------------------------------


@attrs.frozen
class SimpleString:
    text: str


@attrs.frozen
class BulkString:
    data: bytes | None
    """``None`` for the null bulk string ``$-1``."""


@attrs.frozen
class Integer:
    value: int


@attrs.frozen
class ErrorReply:
    code: str
    message: str

    def error(self) -> ServerError:
        return ServerError(self.code, self.message)


Reply = SimpleString | BulkString | Integer | ErrorReply

_CRLF = b"\r\n"


class ReplyParser:
    """Incremental RESP reader: bytes go in as they arrive (any chunking), whole replies come out.

    Memory is bounded: a reply larger than ``max_size`` is a :class:`ProtocolViolation`."""

    def __init__(self, max_size: int = MAX_REPLY_BYTES) -> None:
        self._buffer = bytearray()
        self._max_size = max_size

    def feed(self, data: bytes | bytearray) -> None:
        self._buffer += data

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def next_reply(self) -> Reply | None:
        """The next complete reply, or ``None`` if more bytes are needed."""
        end = self._buffer.find(_CRLF)
        if end < 0:
            if len(self._buffer) > self._max_size:
                raise ProtocolViolation(f"reply line longer than {self._max_size} bytes")
            return None
        if end == 0:
            raise ProtocolViolation("empty reply line")
        kind = self._buffer[0:1]
        line = bytes(self._buffer[1:end])
        consumed = end + 2
        reply: Reply
        if kind == b"+":
            reply = SimpleString(_text(line))
        elif kind == b"-":
            code, _, message = _text(line).partition(" ")
            reply = ErrorReply(code, message)
        elif kind == b":":
            reply = Integer(_integer(line, "integer reply"))
        elif kind == b"$":
            size = _integer(line, "bulk string length")
            if size == -1:
                reply = BulkString(None)
            elif size < 0:
                raise ProtocolViolation(f"invalid bulk string length {size}")
            elif size > self._max_size:
                raise ProtocolViolation(f"bulk string of {size} bytes exceeds {self._max_size}")
            else:
                if len(self._buffer) < consumed + size + 2:
                    return None
                data = bytes(self._buffer[consumed : consumed + size])
                if self._buffer[consumed + size : consumed + size + 2] != _CRLF:
                    raise ProtocolViolation("bulk string not followed by CRLF")
                consumed += size + 2
                reply = BulkString(data)
        else:
            raise ProtocolViolation(f"unexpected reply type {bytes(kind)!r}")
        del self._buffer[:consumed]
        return reply


def _text(line: bytes) -> str:
    try:
        return line.decode()
    except UnicodeDecodeError:
        raise ProtocolViolation("reply is not valid UTF-8") from None


def _integer(line: bytes, what: str) -> int:
    try:
        return int(line.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise ProtocolViolation(f"invalid {what} {line[:40]!r}") from None


def reply_text(reply: Reply) -> str | None:
    """The text of a string reply (simple or bulk; ``None`` for null), as the Go client's
    ``readString`` sees it. Raises the server's error for an error reply."""
    if isinstance(reply, ErrorReply):
        raise reply.error()
    if isinstance(reply, SimpleString):
        return reply.text
    if isinstance(reply, BulkString):
        return None if reply.data is None else _text(reply.data)
    raise ProtocolViolation(f"expected a string reply, got integer {reply.value}")


def expect_ok(reply: Reply) -> None:
    text = reply_text(reply)
    if text != "OK":
        raise ProtocolViolation(f"expected OK, got {text!r}")


# --- commands -----------------------------------------------------------------------------------


def encode_command(verb: str, argument: str | None = None) -> bytes:
    """One command line. The argument must not contain a line break (JSON from :func:`dump_json`
    never does: ``json`` escapes control characters)."""
    line = verb if argument is None else f"{verb} {argument}"
    if "\r" in line or "\n" in line:
        raise ValueError(f"{verb}: a command cannot contain a line break")
    return line.encode() + _CRLF


def dump_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def check_queue_name(name: str) -> str | None:
    """A problem with a queue name, or None. FETCH separates queue names by spaces."""
    if not name:
        return "a queue name cannot be empty"
    if any(ch.isspace() for ch in name):
        return f"queue name {name!r} contains whitespace"
    return None


MAX_HASH_ITERATIONS = 100_000
"""Most password hash rounds a greeting may ask for. A Faktory server asks for 4,000-8,095; more
would only let a server (or whoever answers in its place) make the client hash for as long as it
likes (about 0.1 s per 100,000 rounds)."""


def password_hash(password: str, salt: str, iterations: int) -> str:
    """``hex(sha256^iterations(password + salt))``; at least one round, as the server computes it."""
    digest = hashlib.sha256((password + salt).encode()).digest()
    for _ in range(1, iterations):
        digest = hashlib.sha256(digest).digest()
    return digest.hex()


def random_jid() -> str:
    """12 random bytes as unpadded base64url: 16 characters, like the Go client's ``RandomJid``."""
    return base64.urlsafe_b64encode(secrets.token_bytes(12)).decode().rstrip("=")


def format_time(moment: dt.datetime) -> str:
    """Go's RFC3339Nano: UTC as ``Z``, fraction without trailing zeros (none if zero)."""
    moment = moment.astimezone(dt.UTC) if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond:
        text += f".{moment.microsecond:06d}".rstrip("0")
    return text + "Z"


def parse_time(text: str) -> dt.datetime:
    """An RFC3339 timestamp with a zone (``Z`` or an offset); raises ValueError otherwise."""
    problem = f"{text!r} is not an RFC3339 timestamp (expected e.g. 2026-01-02T15:04:05Z)"
    if "T" not in text:
        raise ValueError(problem)
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(problem) from None
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone (add Z or an offset such as +02:00)")
    return moment


# --- payloads -----------------------------------------------------------------------------------


@attrs.frozen
class Hi:
    """The server's greeting. ``i``/``s`` are present only when a password is required."""

    v: int
    i: int = 0
    s: str = ""


@attrs.frozen
class Hello:
    """The client's HELLO, keys in the Go client's order. A producer leaves ``wid`` empty."""

    hostname: str
    wid: str
    username: str
    pwdhash: str
    labels: tuple[str, ...]
    pid: int
    v: int = PROTOCOL_VERSION


@attrs.frozen
class Beat:
    """BEAT argument. ``current_state`` (``quiet``/``terminate``) tells the server what this
    process is doing on its own; it is left out while running."""

    current_state: str
    rss_kb: int
    wid: str


@attrs.frozen
class BeatReply:
    state: str = ""


@attrs.frozen
class Ack:
    jid: str


@attrs.frozen
class Fail:
    """FAIL argument. The server keeps at most 100 characters of ``errtype``, 1000 of
    ``message`` and 50 backtrace lines."""

    backtrace: tuple[str, ...]
    errtype: str
    jid: str
    message: str


@attrs.frozen(kw_only=True)
class JobFailure:
    failed_at: str = ""
    next_at: str = ""
    message: str = ""
    errtype: str = ""
    backtrace: tuple[str, ...] = ()
    retry_count: int = 0
    remaining: int = 0


@attrs.frozen(kw_only=True)
class Job:
    """A work unit, fields in the Go client's ``Job`` order (faktory v1.9.4 json tags).
    ``args`` and ``custom`` hold arbitrary JSON, as the protocol defines them."""

    retry: int | None = DEFAULT_RETRY
    failure: JobFailure | None = None
    custom: Mapping[str, Any] = attrs.field(factory=dict)
    jid: str
    queue: str = "default"
    jobtype: str
    created_at: str = ""
    enqueued_at: str = ""
    at: str = ""
    args: tuple[Any, ...] = ()
    reserve_for: int = 0
    backtrace: int = 0

    def custom_value(self, key: str) -> tuple[bool, Any]:
        if key in self.custom:
            return True, self.custom[key]
        return False, None


def new_job(
    jobtype: str, args: tuple[Any, ...], *, queue: str = "default", now: dt.datetime | None = None
) -> Job:
    """A job as the Go client's ``NewJob`` builds it: random jid, retry 25, created_at now."""
    moment = now if now is not None else dt.datetime.now(dt.UTC)
    return Job(jid=random_jid(), jobtype=jobtype, queue=queue, args=args, created_at=format_time(moment))


# Go's encoding/json leaves these out when empty ("omitempty").
_JOB_OMITEMPTY = ("failure", "custom", "created_at", "enqueued_at", "at", "reserve_for", "backtrace")
_FAILURE_OMITEMPTY = ("next_at", "message", "errtype", "backtrace")


def _make_converter() -> WireConverter:
    # The Go client's json tags are the attribute names; only a wrong type is an error.
    conv = WireConverter(forbid_extra_keys=False, camel_case=False)

    def tuple_of_any(value: Any, _: Any) -> tuple[Any, ...]:
        if value is None:
            return ()
        if not isinstance(value, list | tuple):
            raise TypeError(f"expected an array, got {type(value).__name__}")
        return tuple(value)

    def custom_map(value: Any, _: Any) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise TypeError(f"expected a JSON object, got {type(value).__name__}")
        return dict(value)

    def str_tuple(value: Any, _: Any) -> tuple[str, ...]:
        items = tuple_of_any(value, None)
        if not all(isinstance(item, str) for item in items):
            raise TypeError("expected an array of strings")
        return items

    hooks: list[tuple[Any, Callable[[Any, Any], Any]]] = [
        (tuple[Any, ...], tuple_of_any),
        (tuple[str, ...], str_tuple),
        (Mapping[str, Any], custom_map),
    ]
    for exact, structure_hook in hooks:
        conv.register_structure_hook_func(_is(exact), structure_hook)
    conv.register_unstructure_hook_func(lambda t: t == Mapping[str, Any], dict)

    for cls, omitted in ((JobFailure, _FAILURE_OMITEMPTY), (Job, _JOB_OMITEMPTY), (Beat, ("current_state",))):
        conv.register_unstructure_hook(cls, _omitting_empty(make_dict_unstructure_fn(cls, conv), omitted))
        conv.register_structure_hook(cls, make_dict_structure_fn(cls, conv))
    conv.register_unstructure_hook(Fail, _unstructure_fail)
    return conv


def _is(exact: Any) -> Callable[[Any], bool]:
    return lambda type_: bool(type_ == exact)


def _omitting_empty(
    unstructure: Callable[[Any], dict[str, Any]], omitted: tuple[str, ...]
) -> Callable[[Any], dict[str, Any]]:
    """Go's ``omitempty``: leave out a listed key whose value is empty, keeping the field order."""

    def hook(obj: Any) -> dict[str, Any]:
        return {
            key: value
            for key, value in unstructure(obj).items()
            if not (key in omitted and value in (None, "", 0, {}, [], ()))
        }

    return hook


def _unstructure_fail(fail: Fail) -> dict[str, Any]:
    # The Go client builds FAIL from a map (keys sorted) and adds "backtrace" only when it has one.
    payload: dict[str, Any] = {}
    if fail.backtrace:
        payload["backtrace"] = list(fail.backtrace)
    payload.update(errtype=fail.errtype, jid=fail.jid, message=fail.message)
    return payload


_converter = _make_converter()


def to_json(payload: Hello | Beat | Ack | Fail | Job) -> str:
    return dump_json(_converter.unstructure(payload))


def from_json(data: bytes | str, cls: type[T], *, what: str) -> T:
    """Parse and structure a JSON payload; a :class:`ProtocolViolation` names what is wrong."""
    try:
        raw = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolViolation(f"{what}: not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise ProtocolViolation(f"{what}: expected a JSON object, got {type(raw).__name__}")
    try:
        return structure(raw, cls, what=what, converter=_converter)
    except WireError as exc:
        raise ProtocolViolation(str(exc)) from None
