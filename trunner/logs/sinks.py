"""Where a job's log batches and outcome go. One shipper (:mod:`trunner.logs.shipper`) drives
every sink; a sink only knows how to deliver one batch or one outcome."""

from __future__ import annotations

from typing import Protocol

from trunner.logs.batch import Batch
from trunner.models import JobOutcome


class Sink(Protocol):
    async def ship(self, batch: Batch) -> None:
        """Deliver one batch, in order. Raise :class:`~trunner.net.retry.ShipError` on failure."""
        ...

    async def report(self, outcome: JobOutcome) -> None:
        """Deliver the job's outcome, after the last batch. Raise :class:`~trunner.net.retry.ShipError` on failure."""
        ...
