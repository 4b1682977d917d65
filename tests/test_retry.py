"""The Retry-After header and the delivery loop every sink call goes through."""

from __future__ import annotations

import email.utils
import itertools
import logging

import pytest
import trio
import trio.testing

from trunner.net.retry import ShipError, deliver, parse_retry_after

log = logging.getLogger("tests.retry")


def test_retry_after_delay_seconds() -> None:
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(" 0 ") == 0.0
    assert parse_retry_after("-2") == 0.0


def test_retry_after_http_date() -> None:
    now = 1_000_000.0
    assert parse_retry_after(email.utils.formatdate(now + 30, usegmt=True), now=now) == 30.0
    assert parse_retry_after(email.utils.formatdate(now - 30, usegmt=True), now=now) == 0.0


def test_retry_after_anything_else_is_ignored() -> None:
    assert parse_retry_after("soon") is None
    assert parse_retry_after("") is None
    assert parse_retry_after("1.5") is None
    assert parse_retry_after(None) is None


async def test_deliver_retries_until_success_waiting_retry_after(
    autojump_clock: trio.testing.MockClock,
) -> None:
    attempts: list[float] = []

    async def send() -> None:
        attempts.append(trio.current_time())
        if len(attempts) < 3:
            raise ShipError("busy", retryable=True, retry_after=2.0)

    failed: list[None] = []
    assert (
        await deliver(send, timeout=60, what="test", log=log, on_failed_attempt=lambda: failed.append(None))
        is None
    )
    assert [b - a for a, b in itertools.pairwise(attempts)] == [2.0, 2.0]
    assert len(failed) == 2


async def test_deliver_stops_at_a_permanent_failure(autojump_clock: trio.testing.MockClock) -> None:
    calls = 0

    async def send() -> None:
        nonlocal calls
        calls += 1
        raise ShipError("rejected", retryable=False)

    assert await deliver(send, timeout=60, what="test", log=log) == "rejected"
    assert calls == 1


async def test_deliver_gives_up_before_a_wait_would_pass_the_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def send() -> None:
        raise ShipError("busy", retryable=True, retry_after=7.0)

    start = trio.current_time()
    assert await deliver(send, timeout=20, what="test", log=log) == "busy"
    assert trio.current_time() - start == 14.0


async def test_deliver_reports_an_unexpected_exception(autojump_clock: trio.testing.MockClock) -> None:
    async def send() -> None:
        raise RuntimeError("boom")

    assert await deliver(send, timeout=20, what="test", log=log) == "sink error: RuntimeError('boom')"


async def test_deliver_bounds_a_stalled_attempt(autojump_clock: trio.testing.MockClock) -> None:
    async def send() -> None:
        await trio.sleep_forever()

    assert await deliver(send, timeout=5, what="batch 3", log=log) == "batch 3 took longer than 5s"
    assert trio.current_time() == 5.0


async def test_deliver_warns_once_then_once_a_minute_while_failing(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    started = trio.current_time()
    attempts = 0

    async def send() -> None:
        nonlocal attempts
        attempts += 1
        if trio.current_time() - started < 600:
            raise ShipError("503 Service Unavailable", retryable=True)

    with caplog.at_level(logging.DEBUG, logger=log.name):
        assert await deliver(send, timeout=900, what="log batch 7 delivery", log=log) is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    debug = [r for r in caplog.records if r.levelno == logging.DEBUG]
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert warnings[0].startswith("log batch 7 delivery failed, retrying in ")
    assert 9 <= len(warnings) <= 11, warnings
    assert all("still failing after" in w and "503 Service Unavailable" in w for w in warnings[1:])
    assert len(warnings) + len(debug) == attempts - 1
    assert len(infos) == 1 and infos[0].startswith(
        f"log batch 7 delivery succeeded at attempt {attempts}, after 6"
    )


async def test_deliver_that_succeeds_at_once_logs_nothing(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    async def send() -> None:
        return None

    with caplog.at_level(logging.DEBUG, logger=log.name):
        assert await deliver(send, timeout=60, what="outcome report", log=log) is None
    assert caplog.records == []


async def test_deliver_says_which_failures_may_have_been_carried_out(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = logging.getLogger("test")

    async def count(send, timeout: float = 30.0) -> tuple[str | None, int]:
        unknown = 0

        def seen() -> None:
            nonlocal unknown
            unknown += 1

        failure = await deliver(send, timeout=timeout, what="x", log=log, on_unknown_result=seen)
        return failure, unknown

    async def refused() -> None:
        raise ShipError("503", retryable=True)

    async def unanswered() -> None:
        raise ShipError("no answer", retryable=True, maybe_delivered=True)

    async def hangs() -> None:
        await trio.sleep_forever()

    async def crashes() -> None:
        raise RuntimeError("bug")

    failure, unknown = await count(refused)
    assert failure == "503" and unknown == 0
    failure, unknown = await count(unanswered, timeout=5.0)
    assert failure == "no answer" and unknown > 1
    failure, unknown = await count(hangs, timeout=5.0)
    assert failure == "x took longer than 5s" and unknown == 1
    failure, unknown = await count(crashes)
    assert failure == "sink error: RuntimeError('bug')" and unknown == 1
