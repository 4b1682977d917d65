"""Client-side request rate limit: a token bucket refilled at ``qps`` holding up to ``burst``."""

from __future__ import annotations

import trio


class TokenBucket:
    """Each :meth:`acquire` takes one token, waiting for the refill when the bucket is empty.
    Waiters are served in arrival order (a trio.Lock is fair), so no caller starves."""

    def __init__(self, qps: float, burst: int) -> None:
        if qps <= 0 or burst < 1:
            raise ValueError("qps must be > 0 and burst >= 1")
        self.qps = qps
        self.burst = burst
        self._tokens = float(burst)
        self._updated: float | None = None
        self._lock = trio.Lock()

    def _refill(self, now: float) -> None:
        if self._updated is not None:
            self._tokens = min(float(self.burst), self._tokens + (now - self._updated) * self.qps)
        self._updated = now

    async def acquire(self) -> None:
        async with self._lock:
            self._refill(trio.current_time())
            if self._tokens < 1.0:
                await trio.sleep((1.0 - self._tokens) / self.qps)
                self._refill(trio.current_time())
            self._tokens -= 1.0
