"""RESP framing, command lines and JSON payloads of the Faktory Work Protocol (no I/O)."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trunner.faktory import protocol
from trunner.faktory.protocol import (
    Ack,
    Beat,
    BulkString,
    ErrorReply,
    Fail,
    Hello,
    Integer,
    Job,
    JobFailure,
    ProtocolViolation,
    ReplyParser,
    ServerError,
    SimpleString,
)


def parse_all(data: bytes, *, chunk: int | None = None) -> list[protocol.Reply]:
    parser = ReplyParser()
    replies: list[protocol.Reply] = []
    pieces = [data] if chunk is None else [data[i : i + chunk] for i in range(0, len(data), chunk)]
    for piece in pieces:
        parser.feed(piece)
        while (reply := parser.next_reply()) is not None:
            replies.append(reply)
    assert parser.buffered == 0
    return replies


# --- replies --------------------------------------------------------------------------------------


def test_each_reply_type() -> None:
    data = b"+OK\r\n-ERR Invalid password\r\n-NOTUNIQUE Job not unique\r\n:42\r\n$-1\r\n$0\r\n\r\n$5\r\nhello\r\n"
    assert parse_all(data) == [
        SimpleString("OK"),
        ErrorReply("ERR", "Invalid password"),
        ErrorReply("NOTUNIQUE", "Job not unique"),
        Integer(42),
        BulkString(None),
        BulkString(b""),
        BulkString(b"hello"),
    ]


def test_bulk_string_may_contain_crlf_and_binary() -> None:
    payload = b'{"a":"x\r\ny"}\x00\xff'
    data = b"$" + str(len(payload)).encode() + b"\r\n" + payload + b"\r\n"
    assert parse_all(data) == [BulkString(payload)]


def test_partial_reads_at_every_split_point() -> None:
    data = b'+HI {"v":2,"i":4711,"s":"ab12"}\r\n$11\r\n{"jid":"x"}\r\n+OK\r\n'
    whole = parse_all(data)
    for split in range(1, len(data)):
        parser = ReplyParser()
        got: list[protocol.Reply] = []
        for piece in (data[:split], data[split:]):
            parser.feed(piece)
            while (reply := parser.next_reply()) is not None:
                got.append(reply)
        assert got == whole, split


def test_byte_at_a_time() -> None:
    data = b"$10\r\n0123456789\r\n-ERR boom\r\n"
    assert parse_all(data, chunk=1) == [BulkString(b"0123456789"), ErrorReply("ERR", "boom")]


def test_incomplete_reply_waits_for_more() -> None:
    parser = ReplyParser()
    parser.feed(b"$5\r\nhel")
    assert parser.next_reply() is None
    parser.feed(b"lo\r")
    assert parser.next_reply() is None
    parser.feed(b"\n")
    assert parser.next_reply() == BulkString(b"hello")


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"*1\r\n", "unexpected reply type"),
        (b"$abc\r\n", "invalid bulk string length"),
        (b"$-2\r\n", "invalid bulk string length"),
        (b"$3\r\nabcd\r\n", "not followed by CRLF"),
        (b":x\r\n", "invalid integer"),
        (b"\r\n", "empty reply line"),
        (b"+\xff\xfe\r\n", "UTF-8"),
    ],
)
def test_violations(data: bytes, problem: str) -> None:
    parser = ReplyParser()
    parser.feed(data)
    with pytest.raises(ProtocolViolation, match=problem):
        parser.next_reply()


def test_size_limit_bounds_memory() -> None:
    parser = ReplyParser(max_size=100)
    parser.feed(b"$101\r\n")
    with pytest.raises(ProtocolViolation, match="exceeds"):
        parser.next_reply()
    endless = ReplyParser(max_size=100)
    endless.feed(b"+" + b"x" * 200)
    with pytest.raises(ProtocolViolation, match="longer than"):
        endless.next_reply()


replies = st.one_of(
    st.text(alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",))).map(
        SimpleString
    ),
    st.binary().map(BulkString),
    st.just(BulkString(None)),
    st.integers(min_value=-(2**63), max_value=2**63).map(Integer),
)


def encode(reply: protocol.Reply) -> bytes:
    if isinstance(reply, SimpleString):
        return b"+" + reply.text.encode() + b"\r\n"
    if isinstance(reply, Integer):
        return b":" + str(reply.value).encode() + b"\r\n"
    assert isinstance(reply, BulkString)
    if reply.data is None:
        return b"$-1\r\n"
    return b"$" + str(len(reply.data)).encode() + b"\r\n" + reply.data + b"\r\n"


@given(st.lists(replies, max_size=8), st.integers(min_value=1, max_value=17))
def test_any_chunking_yields_the_same_replies(sequence: list[protocol.Reply], chunk: int) -> None:
    data = b"".join(encode(r) for r in sequence)
    assert parse_all(data, chunk=chunk) == sequence


def test_reply_text_and_ok() -> None:
    assert protocol.reply_text(SimpleString("abc")) == "abc"
    assert protocol.reply_text(BulkString(b"abc")) == "abc"
    assert protocol.reply_text(BulkString(None)) is None
    with pytest.raises(ServerError, match="ERR nope"):
        protocol.reply_text(ErrorReply("ERR", "nope"))
    with pytest.raises(ProtocolViolation):
        protocol.reply_text(Integer(1))
    protocol.expect_ok(SimpleString("OK"))
    with pytest.raises(ProtocolViolation, match="expected OK"):
        protocol.expect_ok(SimpleString("KO"))


# --- commands and payloads -----------------------------------------------------------------------


def test_command_lines() -> None:
    assert protocol.encode_command("END") == b"END\r\n"
    assert protocol.encode_command("FETCH", "critical default") == b"FETCH critical default\r\n"
    assert protocol.encode_command("ACK", protocol.to_json(Ack("abc"))) == b'ACK {"jid":"abc"}\r\n'
    with pytest.raises(ValueError, match="line break"):
        protocol.encode_command("PUSH", "{\n}")


def test_json_never_contains_a_raw_line_break() -> None:
    job = Job(jid="abcdefgh", jobtype="legacy", args=({"commands": ["echo a\necho b\r\n"]},))
    line = protocol.encode_command("PUSH", protocol.to_json(job))
    assert line.count(b"\n") == 1 and line.endswith(b"\r\n")


def test_password_hash_matches_the_go_client_vector() -> None:
    # client/client_test.go TestPasswordHashing (faktory v1.9.4)
    assert (
        protocol.password_hash("foobar", "55104dc76695721d", 1545)
        == "6d877f8e5544b1f2598768f817413ab8a357afffa924dedae99eb91472d4ec30"
    )


def test_password_hash_is_at_least_one_round() -> None:
    import hashlib

    once = hashlib.sha256(b"pwsalt").hexdigest()
    assert protocol.password_hash("pw", "salt", 1) == once
    assert protocol.password_hash("pw", "salt", 0) == once
    assert protocol.password_hash("pw", "salt", 2) == hashlib.sha256(bytes.fromhex(once)).hexdigest()


def test_hello_keys_in_go_client_order() -> None:
    hello = Hello(hostname="h", wid="w1", username="", pwdhash="", labels=("trunner",), pid=12)
    assert protocol.to_json(hello) == (
        '{"hostname":"h","wid":"w1","username":"","pwdhash":"","labels":["trunner"],"pid":12,"v":2}'
    )


def test_beat_leaves_out_current_state_while_running() -> None:
    assert protocol.to_json(Beat(current_state="", rss_kb=1024, wid="w1")) == '{"rss_kb":1024,"wid":"w1"}'
    assert (
        protocol.to_json(Beat(current_state="terminate", rss_kb=0, wid="w1"))
        == '{"current_state":"terminate","rss_kb":0,"wid":"w1"}'
    )


def test_fail_payload() -> None:
    fail = Fail(backtrace=("a", "b"), errtype="InvalidRunnerJob", jid="j1", message="bad")
    assert protocol.to_json(fail) == (
        '{"backtrace":["a","b"],"errtype":"InvalidRunnerJob","jid":"j1","message":"bad"}'
    )
    assert protocol.to_json(Fail(backtrace=(), errtype="x", jid="j", message="m")) == (
        '{"errtype":"x","jid":"j","message":"m"}'
    )


def test_job_json_field_order_and_omitempty() -> None:
    job = Job(
        jid="0123456789abcdef",
        jobtype="Runners::Faktory::AppendJobLog",
        queue="app",
        created_at="2026-01-02T03:04:05.5Z",
        args=({"runnerId": "faktory"},),
    )
    assert protocol.to_json(job) == (
        '{"retry":25,"jid":"0123456789abcdef","queue":"app","jobtype":"Runners::Faktory::AppendJobLog",'
        '"created_at":"2026-01-02T03:04:05.5Z","args":[{"runnerId":"faktory"}]}'
    )
    full = Job(
        jid="0123456789abcdef",
        jobtype="t",
        custom={"bid": "b1"},
        retry=None,
        at="2026-01-01T00:00:00Z",
        reserve_for=600,
        backtrace=5,
        failure=JobFailure(failed_at="x", retry_count=1),
    )
    assert protocol.to_json(full) == (
        '{"retry":null,"failure":{"failed_at":"x","retry_count":1,"remaining":0},"custom":{"bid":"b1"},'
        '"jid":"0123456789abcdef","queue":"default","jobtype":"t","at":"2026-01-01T00:00:00Z","args":[],'
        '"reserve_for":600,"backtrace":5}'
    )


def test_new_job_like_go_newjob() -> None:
    moment = dt.datetime(2026, 7, 1, 12, 0, 0, 123456, tzinfo=dt.UTC)
    job = protocol.new_job("legacy", ({"a": 1},), queue="app", now=moment)
    assert len(job.jid) == 16 and job.jid.isascii() and "=" not in job.jid
    assert job.retry == 25 and job.queue == "app" and job.created_at == "2026-07-01T12:00:00.123456Z"
    assert protocol.new_job("t", ()).jid != protocol.new_job("t", ()).jid


def test_fetched_job_round_trip_and_unknown_keys() -> None:
    raw = (
        '{"retry":3,"custom":{"bid":"b"},"jid":"abcdefgh","queue":"q","jobtype":"legacy","created_at":"c",'
        '"enqueued_at":"e","args":[{"id":"1"}],"reserve_for":60,"future_field":true}'
    )
    job = protocol.from_json(raw, Job, what="job")
    assert job.retry == 3 and job.custom == {"bid": "b"} and job.args == ({"id": "1"},)
    assert job.enqueued_at == "e" and job.reserve_for == 60
    assert job.custom_value("bid") == (True, "b")
    assert job.custom_value("nope") == (False, None)


def test_fetched_job_with_nulls() -> None:
    job = protocol.from_json(
        '{"jid":"abcdefgh","jobtype":"x","custom":null,"args":null,"retry":null}', Job, what="job"
    )
    assert job.custom == {} and job.args == () and job.retry is None


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("not json", "not valid JSON"),
        ("[1]", "expected a JSON object"),
        ('{"jobtype":"x"}', "jid: required field missing"),
        ('{"jid":5,"jobtype":"x"}', "jid: expected a string, got number"),
        ('{"jid":"abcdefgh","jobtype":"x","args":{}}', "args: expected an array"),
        ('{"jid":"abcdefgh","jobtype":"x","custom":[]}', "custom: expected a JSON object"),
        ('{"jid":"abcdefgh","jobtype":"x","retry":true}', "retry: expected a whole number"),
    ],
)
def test_malformed_jobs_are_named(raw: str, problem: str) -> None:
    with pytest.raises(ProtocolViolation, match=problem):
        protocol.from_json(raw, Job, what="job")


@pytest.mark.parametrize(
    ("moment", "text"),
    [
        (dt.datetime(2022, 7, 1, 1, 0, 0, tzinfo=dt.UTC), "2022-07-01T01:00:00Z"),
        (dt.datetime(2022, 7, 1, 1, 0, 0, 120000, tzinfo=dt.UTC), "2022-07-01T01:00:00.12Z"),
        (dt.datetime(2022, 7, 1, 1, 0, 0, 1, tzinfo=dt.UTC), "2022-07-01T01:00:00.000001Z"),
        (dt.datetime(2022, 7, 1, 3, 0, 0, tzinfo=dt.timezone(dt.timedelta(hours=2))), "2022-07-01T01:00:00Z"),
    ],
)
def test_rfc3339nano(moment: dt.datetime, text: str) -> None:
    assert protocol.format_time(moment) == text


def test_parse_time() -> None:
    assert protocol.parse_time("2026-01-02T15:04:05Z") == dt.datetime(2026, 1, 2, 15, 4, 5, tzinfo=dt.UTC)
    assert protocol.parse_time("2026-01-02T15:04:05.5+02:00").utcoffset() == dt.timedelta(hours=2)
    for bad, problem in [
        ("2026-01-02", "not an RFC3339"),
        ("tomorrow", "not an RFC3339"),
        ("2026-01-02T15:04:05", "no time zone"),
    ]:
        with pytest.raises(ValueError, match=problem):
            protocol.parse_time(bad)


def test_queue_names() -> None:
    assert protocol.check_queue_name("critical") is None
    assert protocol.check_queue_name("") is not None
    assert "whitespace" in (protocol.check_queue_name("a b") or "")


def test_hi_greeting_json() -> None:
    hi = protocol.from_json('{"v":2,"i":4711,"s":"5a1t"}', protocol.Hi, what="HI")
    assert (hi.v, hi.i, hi.s) == (2, 4711, "5a1t")
    assert protocol.from_json('{"v":2}', protocol.Hi, what="HI") == protocol.Hi(2)
    assert json.loads(protocol.to_json(Ack("x"))) == {"jid": "x"}
