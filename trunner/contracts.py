"""What passes between an executor and the job's log pipeline: the bytes a job prints, by stream."""

from __future__ import annotations

import enum
from typing import Protocol


class Stream(enum.IntEnum):
    """Output streams, numbered as the Kubernetes exec channels."""

    STDOUT = 1
    STDERR = 2


class OutputFeed(Protocol):
    """Where an executor puts what a job prints. ``feed`` and ``note`` are synchronous and never
    block; what they take waits for the reader's next ``wait_for_room()``, the send into the job
    log's bounded channel. A reader must await it after each ``feed`` before it reads more: that
    is how a slow sink holds back the job's output (back-pressure) instead of losing it."""

    def feed(self, stream: Stream, data: bytes) -> None:
        """Raw bytes as they arrive, in any chunking."""

    def note(self, text: str) -> None:
        """A line written by the runner itself into the job's log (e.g. what a pod waits for)."""

    async def wait_for_room(self) -> None:
        """Returns when the drain has taken what was fed (at once, unless it is busy or held)."""
