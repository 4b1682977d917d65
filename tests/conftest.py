"""Shared test setup: job log spool file operations run inline, on the event loop.

In production they run in worker threads; under trio's MockClock(autojump_threshold=0) the
virtual clock would jump ahead while a thread works, so timeouts would fire at random. A test
marked ``spool_threads`` keeps the worker threads (and so must not use the virtual clock).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import trio

from trunner.logs import spool


async def _inline(fn: Callable[..., Any], *args: Any) -> Any:
    await trio.lowlevel.checkpoint()
    return fn(*args)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "spool_threads: run spool file I/O in worker threads")


@pytest.fixture(autouse=True)
def _spool_io_inline(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if request.node.get_closest_marker("spool_threads") is None:
        monkeypatch.setattr(spool, "offload", _inline)
