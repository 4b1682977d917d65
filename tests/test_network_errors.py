"""One description of a network error for every client: the cause chain's messages, each once."""

from __future__ import annotations

import errno
import itertools
import ssl

import h11
import httpx
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from trunner.net.errors import describe_network_error


def chained(*errors: BaseException) -> BaseException:
    """``errors[0]`` raised from ``errors[1]``, raised from ``errors[2]``..."""
    for outer, inner in itertools.pairwise(errors):
        outer.__cause__ = inner
    return errors[0]


def test_the_messages_along_the_cause_chain_outermost_first() -> None:
    exc = chained(
        httpx.ConnectError("All connection attempts failed"),
        OSError("all attempts to connect to 127.0.0.1:1 failed"),
        ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"),
    )
    assert describe_network_error(exc) == (
        "All connection attempts failed: all attempts to connect to 127.0.0.1:1 failed: Connection refused"
    )


def test_an_os_error_is_its_strerror_without_the_errno_number() -> None:
    assert describe_network_error(ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")) == (
        "Connection reset by peer"
    )


def test_a_tls_error_is_named_with_its_reason_and_why_the_certificate_was_refused() -> None:
    context = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = context.wrap_bio(incoming, outgoing, server_hostname="example.invalid")
    with pytest.raises(ssl.SSLError) as caught:
        client.do_handshake()  # no server answer: SSLWantReadError, a real SSLError
    text = describe_network_error(chained(trio.BrokenResourceError(), caught.value))
    assert text.startswith("TLS: ") and "_ssl.c" not in text, text

    refused = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
    refused.reason = "CERTIFICATE_VERIFY_FAILED"
    refused.verify_message = "self-signed certificate"
    assert describe_network_error(refused) == "TLS: CERTIFICATE_VERIFY_FAILED (self-signed certificate)"


def test_a_group_of_one_gives_its_member_and_no_count() -> None:
    group = ExceptionGroup(
        "all attempts failed", [ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")]
    )
    text = describe_network_error(chained(OSError("connect failed"), group))
    assert text == "connect failed: all attempts failed: Connection refused"
    assert "sub-exception" not in text


def test_a_group_of_several_gives_its_message() -> None:
    group = ExceptionGroup("two addresses", [OSError("a"), OSError("b")])
    assert describe_network_error(group) == "two addresses"


def test_the_context_counts_when_there_is_no_cause_even_after_from_none() -> None:
    try:
        try:
            raise OSError(errno.EPIPE, "Broken pipe")
        except OSError:
            raise trio.BrokenResourceError("the server closed the connection") from None
    except trio.BrokenResourceError as exc:
        suppressed = exc
    assert describe_network_error(suppressed) == "the server closed the connection: Broken pipe"
    try:
        try:
            raise OSError(errno.EPIPE, "Broken pipe")
        except OSError:
            raise trio.BrokenResourceError("send failed")  # noqa: B904
    except trio.BrokenResourceError as exc:
        implicit = exc
    assert describe_network_error(implicit) == "send failed: Broken pipe"


def test_a_message_said_twice_is_said_once_and_nothing_at_all_is_the_type() -> None:
    assert (
        describe_network_error(chained(httpx.ReadError("timed out"), TimeoutError("timed out")))
        == "timed out"
    )
    assert describe_network_error(httpx.RemoteProtocolError("")) == "RemoteProtocolError"


def test_a_cycle_in_the_chain_ends() -> None:
    a, b = OSError("a"), OSError("b")
    a.__cause__, b.__cause__ = b, a
    assert describe_network_error(a) == "a: b"


@given(st.lists(st.text(min_size=0, max_size=8), min_size=1, max_size=6))
def test_every_distinct_message_appears_once_in_chain_order(messages: list[str]) -> None:
    exc = chained(*(RuntimeError(m) for m in messages))
    expected: list[str] = []
    for m in messages:
        if m.strip() and m.strip() not in expected:
            expected.append(m.strip())
    assert describe_network_error(exc) == (": ".join(expected) or "RuntimeError")


def test_a_request_refused_as_malformed_is_described_without_what_it_quotes() -> None:
    """h11 quotes the header it refuses; that header may be ``Authorization: Bearer <token>``."""
    with pytest.raises(h11.LocalProtocolError) as refused:
        h11.Request(
            method="GET", target="/", headers=[("Host", "a"), ("Authorization", "Bearer se\ncret-77")]
        )
    assert "cret-77" in str(refused.value)
    wrapped = chained(httpx.LocalProtocolError(str(refused.value)), refused.value)
    for exc in (wrapped, refused.value, chained(OSError("outer"), wrapped)):
        text = describe_network_error(exc)
        assert "cret-77" not in text and text.endswith(
            "the request could not be sent (a header value is not valid)"
        )
