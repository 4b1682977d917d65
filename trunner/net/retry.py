"""Retrying, in one place: the delay formula, the policy of a client's call, the ``Retry-After``
header, and the delivery loop every sink call goes through."""

from __future__ import annotations

import email.utils
import logging
import random
import time
from collections.abc import Awaitable, Callable

import attrs
import trio

_MAX_DOUBLINGS = 32


def exponential_backoff(retry: int, *, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Seconds to wait before retry ``retry`` (0-based): ``base`` doubling per retry up to ``cap``,
    jittered to 50-100 % so that many clients failing together do not retry together."""
    ceiling = min(cap, base * 2.0 ** min(retry, _MAX_DOUBLINGS))
    return (rng or random).uniform(ceiling / 2, ceiling)


@attrs.frozen
class RetryPolicy:
    """How a client retries one call: at most ``max_retries`` retries after the first attempt,
    waits doubling from ``base`` up to ``cap`` (unless the server says how long)."""

    max_retries: int
    total: float
    """Seconds the call may spend retrying: a retry whose wait would end later is not made."""
    base: float = 1.0
    cap: float = 30.0

    def backoff(self, retry: int, rng: random.Random | None = None) -> float:
        """Wait before retry number ``retry`` (0-based), jittered as :func:`exponential_backoff`."""
        return exponential_backoff(retry, base=self.base, cap=self.cap, rng=rng)


NO_RETRIES = RetryPolicy(max_retries=0, total=0.0)


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delay seconds (a negative delay is no wait)
    or an HTTP date; anything else is ignored."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        return float(max(int(value), 0))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    now = time.time() if now is None else now
    return max(0.0, when.timestamp() - now)


class ShipError(Exception):
    """Delivery failed. ``retryable`` tells :func:`deliver` whether another attempt may succeed
    (timeouts, connection errors, 429/5xx) or not (rejected payload, 4xx). ``maybe_delivered``:
    the whole request reached the receiver and no answer said it was refused (no answer in time,
    the connection dropped, a gateway timeout), so it may have been carried out."""

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        retry_after: float | None = None,
        maybe_delivered: bool = False,
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after
        self.maybe_delivered = maybe_delivered


RETRY_WARNING_INTERVAL = 60.0
"""Seconds between warnings about one delivery that keeps failing: its first failure warns, then
at most one warning a minute (each attempt is still logged at debug level and counted)."""

_DELIVERY_BASE = 0.5
_DELIVERY_CAP = 10.0


def backoff(attempt: int, retry_after: float | None) -> float:
    """Seconds to wait before attempt ``attempt + 1``: the server's Retry-After if given,
    else jittered exponential from 0.5 s, capped at 10 s."""
    if retry_after is not None:
        return max(retry_after, 0.0)
    return exponential_backoff(attempt - 1, base=_DELIVERY_BASE, cap=_DELIVERY_CAP)


async def deliver(
    send: Callable[[], Awaitable[None]],
    *,
    timeout: float,
    what: str,
    log: logging.Logger | logging.LoggerAdapter[logging.Logger],
    on_failed_attempt: Callable[[], None] = lambda: None,
    on_unknown_result: Callable[[], None] = lambda: None,
) -> str | None:
    """Call ``send`` until it succeeds, fails with a :class:`ShipError` that is not retryable,
    or ``timeout`` seconds would pass; waits between attempts follow :func:`backoff`.
    Returns None on success, else why it gave up. A delivery that failed and then succeeded says
    so once, at info level. ``on_unknown_result`` is called for each failed attempt that may
    have been carried out all the same: ``maybe_delivered``, the sink raising something else,
    or the timeout cutting an attempt off."""
    started = trio.current_time()
    deadline = started + timeout
    attempt = 0
    warned_at: float | None = None
    with trio.move_on_at(deadline) as limit:
        while True:
            attempt += 1
            try:
                try:
                    await send()
                except trio.Cancelled:
                    if limit.cancel_called:
                        on_unknown_result()
                    raise
                if warned_at is not None:
                    log.info(
                        "%s succeeded at attempt %d, after %.0fs",
                        what,
                        attempt,
                        trio.current_time() - started,
                    )
                return None
            except ShipError as exc:
                on_failed_attempt()
                if exc.maybe_delivered:
                    on_unknown_result()
                now = trio.current_time()
                wait = backoff(attempt, exc.retry_after)
                if not exc.retryable or now + wait >= deadline:
                    return str(exc)
                if warned_at is None:
                    log.warning("%s failed, retrying in %.1fs: %s", what, wait, exc)
                    warned_at = now
                elif now - warned_at >= RETRY_WARNING_INTERVAL:
                    log.warning(
                        "%s still failing after %d attempts in %.0fs, retrying in %.1fs: %s",
                        what,
                        attempt,
                        now - started,
                        wait,
                        exc,
                    )
                    warned_at = now
                else:
                    log.debug("%s failed (attempt %d), retrying in %.1fs: %s", what, attempt, wait, exc)
                await trio.sleep(wait)
            except Exception as exc:
                on_unknown_result()
                log.exception("%s: the sink raised unexpectedly", what)
                return f"sink error: {exc!r}"
    return f"{what} took longer than {timeout:g}s"
