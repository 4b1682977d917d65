from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator, Iterator

import pytest
from prometheus_client import CollectorRegistry

from tests.doubles.opslevel import OpsLevelDouble
from tests.opslevel.scaling_support import api  # noqa: F401  (the scaling tests' cluster)
from trunner.net.retry import RetryPolicy
from trunner.opslevel.client import OpsLevelClient, graphql_endpoint
from trunner.opslevel.metrics import ApiMetrics


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def api_metrics(registry: CollectorRegistry) -> ApiMetrics:
    return ApiMetrics(registry, runner="test-runner")


@pytest.fixture
async def client(opslevel: OpsLevelDouble, api_metrics: ApiMetrics) -> AsyncIterator[OpsLevelClient]:
    async with OpsLevelClient(
        endpoint=graphql_endpoint(opslevel.url),
        token=opslevel.token,
        timeout=30.0,
        metrics=api_metrics,
        retry=RetryPolicy(max_retries=5, total=120.0),
        rng=random.Random(7),
    ) as opened:
        yield opened


class _ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(self.format(record) + " " + repr(vars(record)))


@pytest.fixture
def all_logs() -> Iterator[_ListHandler]:
    """Every log record of every logger at DEBUG, with its extra fields."""
    handler = _ListHandler()
    loggers = [logging.getLogger(), logging.getLogger("trunner")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(1)
    try:
        yield handler
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(handler)
            logger.setLevel(level)
