"""Executors by name. Each executor module provides ``SETTINGS`` (its settings classes) and
``open_executor(source, *, runner_id, naming, metrics=None)``, an async context manager yielding
the executor; ``naming`` says which part of a job names what the executor creates, ``metrics``
receives what the executor measures (e.g. pod start latency)."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from trunner.config import ConfigError, SettingsSource
from trunner.executors import kubernetes, local
from trunner.executors.base import Executor, JobNaming
from trunner.metrics import RunnerMetrics


class ExecutorModule(Protocol):
    SETTINGS: tuple[type[Any], ...]

    def open_executor(
        self,
        source: SettingsSource,
        *,
        runner_id: str,
        naming: JobNaming = ...,
        metrics: RunnerMetrics | None = None,
    ) -> AbstractAsyncContextManager[Executor]: ...


EXECUTORS: dict[str, ExecutorModule] = {"local": local, "kubernetes": kubernetes}


def executor_module(name: str) -> ExecutorModule:
    if name not in EXECUTORS:
        raise ConfigError([f"--executor: unknown executor {name!r} (choose {', '.join(EXECUTORS)})"])
    return EXECUTORS[name]


def settings_classes() -> list[type[Any]]:
    """Settings of every executor, for ``--help``."""
    return [cls for module in EXECUTORS.values() for cls in module.SETTINGS]
