from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.doubles.faktory import FaktoryDouble, faktory_double
from trunner.faktory.client import FaktoryClient, ServerLocation, WorkerIdentity, parse_server_url


@pytest.fixture
async def server() -> AsyncIterator[FaktoryDouble]:
    async with faktory_double() as double:
        yield double


def location_of(double: FaktoryDouble, password: str | None = None) -> ServerLocation:
    return parse_server_url(double.url(password), origin="test")


def worker_client(double: FaktoryDouble, *, max_connections: int = 6, timeout: float = 5.0) -> FaktoryClient:
    identity = WorkerIdentity(hostname="test-host", wid="testwid1", pid=4242, labels=("trunner",))
    return FaktoryClient(location_of(double), identity, timeout=timeout, max_connections=max_connections)
