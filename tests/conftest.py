"""Shared test setup: the virtual clock, job log spool file operations run inline, and the
OpsLevel double (``opslevel``, serving on loopback in the test's nursery).

``autojump_clock``: tests run in virtual time. A test that talks to a double over loopback
sockets gets a clock that jumps only after a short real idle spell (``LOOPBACK_THRESHOLD``): with
a threshold of 0 the clock can jump while loopback data is still in the kernel (softirq work is
deferred when the CPU is busy), firing timeouts no real client would see. In-process tests keep
the immediate jump.

Spool file operations run in worker threads in production; under a virtual clock the clock would
jump ahead while a thread works, so timeouts would fire at random. A test marked
``spool_threads`` keeps the worker threads (and so must not use the virtual clock).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from tests.doubles.opslevel import OpsLevelDouble
from trunner.logs import spool
from trunner.observability import errorreport
from trunner.process import credentials


async def _inline(fn: Callable[..., Any], *args: Any) -> Any:
    await trio.lowlevel.checkpoint()
    return fn(*args)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "spool_threads: run spool file I/O in worker threads")


@pytest.fixture(autouse=True)
def _spool_io_inline(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if request.node.get_closest_marker("spool_threads") is None:
        monkeypatch.setattr(spool, "offload", _inline)


@pytest.fixture(autouse=True)
def _no_runner_credentials() -> Iterator[None]:
    """Credentials a test's runner registers are masked in the jobs of that test only."""
    yield
    credentials.forget_all()


@pytest.fixture(autouse=True)
def _no_error_reporting(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test reports to a Sentry named in the developer's environment, and reporting a test
    starts ends with it."""
    for name in ("SENTRY_DSN", "SENTRY_ENVIRONMENT", "SENTRY_RELEASE"):
        monkeypatch.delenv(name, raising=False)
    yield
    errorreport.close(timeout=0)


LOOPBACK_THRESHOLD = 0.005
_TESTS = Path(__file__).parent
_LOOPBACK = ("kube", "faktory", "opslevel", "executors/kubernetes", "compat", "test_end_to_end.py")


def _uses_loopback(path: Path) -> bool:
    relative = path.relative_to(_TESTS).as_posix()
    return any(relative == part or relative.startswith(part + "/") for part in _LOOPBACK)


@pytest.fixture
def autojump_clock(request: pytest.FixtureRequest) -> trio.testing.MockClock:
    threshold = LOOPBACK_THRESHOLD if _uses_loopback(request.path) else 0
    return trio.testing.MockClock(autojump_threshold=threshold)


@pytest.fixture
async def opslevel(nursery: trio.Nursery) -> OpsLevelDouble:
    started: OpsLevelDouble = await nursery.start(OpsLevelDouble().serve)
    return started
