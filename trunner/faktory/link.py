"""The worker's connection to Faktory as one state: up, or down since a moment, with one task
reconnecting.

Every user of the connection (FETCH, BEAT, ACK/FAIL, the sinks' PUSH) reports a transport
failure with :meth:`Link.lost` and a success with :meth:`Link.restored`; while the link is down
they wait in :meth:`Link.wait_up` instead of retrying on their own. :meth:`Link.supervise`
makes the reconnect attempts: waits from :data:`RECONNECT_BASE` s doubling to
:data:`RECONNECT_CAP` s, jittered, each attempt a fresh connection and HELLO bounded by the
client's timeout. After ``max_down`` seconds of continuous failure it gives up: waiters are
released with False and ``on_give_up`` runs (the mode shuts down and exits 1).

What is logged: one warning when the connection is lost (with the reason), at most one warning
per :data:`REPORT_EVERY` s while it stays down (how long, the attempt, the next delay), one info
line when it is back (how long it was down), one error when giving up.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable

import trio

from trunner.faktory.client import FaktoryClient
from trunner.faktory.metrics import FaktoryMetrics
from trunner.faktory.protocol import ConnectionLost, FaktoryError, HandshakeRejected, ProtocolViolation
from trunner.net.retry import RetryPolicy

log = logging.getLogger("trunner.faktory")

RECONNECT_BASE = 1.0
RECONNECT_CAP = 30.0
REPORT_EVERY = 60.0
"""Seconds between the "still disconnected" warnings of one outage."""


def is_link_failure(exc: FaktoryError) -> bool:
    """A failure of the connection itself (transport, timeout, garbage, a refused HELLO after a
    restart), as opposed to an error reply to one command on a working connection."""
    return isinstance(exc, (ConnectionLost, ProtocolViolation, HandshakeRejected))


def reconnect_policy(max_down: float) -> RetryPolicy:
    """Retries spread over ``max_down`` seconds: no more than the waits of at least half the
    base each can fit."""
    return RetryPolicy(
        max_retries=math.ceil(max_down / (RECONNECT_BASE / 2)) + 1,
        total=max_down,
        base=RECONNECT_BASE,
        cap=RECONNECT_CAP,
    )


class Link:
    def __init__(
        self,
        client: FaktoryClient,
        *,
        max_down: float,
        metrics: FaktoryMetrics | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._client = client
        self.max_down = max_down
        self._policy = reconnect_policy(max_down)
        self._metrics = metrics or FaktoryMetrics()
        self._rng = rng or random.Random()
        self.up = True
        self.gave_up = False
        self.down_since = 0.0
        self.last_error = ""
        self._changed = trio.Event()
        self._metrics.set_connected(True)

    def lost(self, exc: FaktoryError) -> None:
        """A command failed because the connection did; the first report of an outage logs it."""
        self.last_error = str(exc)
        if not self.up or self.gave_up:
            return
        self.up = False
        self.down_since = trio.current_time()
        self._metrics.set_connected(False)
        log.warning(
            "lost the connection to Faktory at %s: %s; reconnecting (giving up after %gs)",
            self._client.location.describe(),
            exc,
            self.max_down,
        )
        self._signal()

    def restored(self) -> None:
        if self.up or self.gave_up:
            return
        self.up = True
        self._metrics.set_connected(True)
        log.info(
            "reconnected to Faktory at %s after %.1fs",
            self._client.location.describe(),
            trio.current_time() - self.down_since,
        )
        self._signal()

    def _signal(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_up(self, *, patient: bool = True) -> bool:
        """True once the link is up; False if it was given up (or, unless ``patient``, is down)."""
        while not self.up:
            if self.gave_up or not patient:
                return False
            await self._changed.wait()
        return True

    async def supervise(self, on_give_up: Callable[[], None] = lambda: None) -> None:
        """Reconnect whenever the link goes down, until cancelled or given up."""
        while not self.gave_up:
            while self.up:
                await self._changed.wait()
            await self._reconnect(on_give_up)

    async def _reconnect(self, on_give_up: Callable[[], None]) -> None:
        await self._client.discard_idle()
        give_up_at = self.down_since + self.max_down
        next_report = self.down_since + REPORT_EVERY
        retry = 0
        while not self.up:
            now = trio.current_time()
            if now >= give_up_at or retry > self._policy.max_retries:
                self._give_up(on_give_up)
                return
            delay = min(self._policy.backoff(retry, self._rng), give_up_at - now)
            retry += 1
            if now >= next_report:
                next_report = now + REPORT_EVERY
                log.warning(
                    "still disconnected from Faktory at %s for %.0fs (attempt %d failed: %s); next attempt "
                    "in %.1fs, giving up after %gs",
                    self._client.location.describe(),
                    now - self.down_since,
                    retry - 1,
                    self.last_error,
                    delay,
                    self.max_down,
                )
            else:
                log.debug("reconnect attempt %d to Faktory in %.1fs", retry, delay)
            await trio.sleep(delay)
            if self.up:
                return
            self._metrics.reconnect_attempted()
            try:
                async with self._client.connection(fresh=True):
                    pass
            except FaktoryError as exc:
                self.last_error = str(exc)
                continue
            self.restored()

    def _give_up(self, on_give_up: Callable[[], None]) -> None:
        self.gave_up = True
        log.error(
            "Faktory at %s has been unreachable for %.0fs (last error: %s); giving up "
            "(--faktory-reconnect-max-time %gs): stopping so the runner can be restarted",
            self._client.location.describe(),
            trio.current_time() - self.down_since,
            self.last_error,
            self.max_down,
        )
        self._signal()
        on_give_up()
