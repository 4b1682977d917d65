"""Executors by name. Each executor module provides ``SETTINGS`` (its settings classes) and
``open_executor(source, *, runner_id, metrics=None)``, an async context manager yielding the
executor; ``metrics`` receives what the executor measures (e.g. pod start latency)."""

from __future__ import annotations

import importlib
from contextlib import AbstractAsyncContextManager
from types import ModuleType
from typing import Any, Protocol, cast

from trunner.config import ConfigError, SettingsSource
from trunner.executors.base import Executor
from trunner.metrics import RunnerMetrics

EXECUTORS = {"local": "trunner.executors.local", "kubernetes": "trunner.executors.kubernetes"}


class ExecutorModule(Protocol):
    SETTINGS: tuple[type[Any], ...]

    def open_executor(
        self, source: SettingsSource, *, runner_id: str, metrics: RunnerMetrics | None = None
    ) -> AbstractAsyncContextManager[Executor]: ...


def executor_module(name: str) -> ExecutorModule:
    if name not in EXECUTORS:
        raise ConfigError([f"--executor: unknown executor {name!r} (choose {', '.join(EXECUTORS)})"])
    try:
        module: ModuleType = importlib.import_module(EXECUTORS[name])
    except ModuleNotFoundError:
        raise ConfigError([f"--executor: the {name} executor is not available in this build"]) from None
    return cast(ExecutorModule, module)


def settings_classes() -> list[type[Any]]:
    """Settings of every available executor, for ``--help``."""
    classes: list[type[Any]] = []
    for name in EXECUTORS:
        try:
            classes.extend(executor_module(name).SETTINGS)
        except ConfigError:
            continue
    return classes
