"""Where a job's log batches and outcome go. One shipper (:mod:`trunner.logs.shipper`) drives
every sink; a sink only knows how to deliver one batch or one outcome."""

from __future__ import annotations

from typing import Protocol

from trunner.logs.batch import Batch
from trunner.models import JobOutcome


class ShipError(Exception):
    """Delivery failed. ``retryable`` tells the shipper whether another attempt may succeed
    (timeouts, connection errors, 429/5xx) or not (rejected payload, 4xx)."""

    def __init__(self, message: str, *, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


class Sink(Protocol):
    async def ship(self, batch: Batch) -> None:
        """Deliver one batch, in order. Raise :class:`ShipError` on failure."""
        ...

    async def report(self, outcome: JobOutcome) -> None:
        """Deliver the job's outcome, after the last batch. Raise :class:`ShipError` on failure."""
        ...
