"""The process lifecycle every ``trunner run`` mode shares: signals, the metrics and health HTTP
server, opening the executor, and the exit codes. A mode keeps only its own job source.

Signals are handled for the whole life of a long-running process (a PID 1 ignores SIGTERM unless a
handler is installed): during start-up the first SIGTERM/SIGINT abandons start-up; once a runner is
attached it starts the graceful shutdown, and any later one skips the rest of the grace period.
This is the only place the runner installs signal handlers; :class:`~trunner.runner.Runner` itself
only offers ``begin_shutdown`` and ``shutdown_now``.
"""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from functools import partial
from typing import Any

import trio
from prometheus_client import CollectorRegistry, ProcessCollector

from trunner.config import ConfigError, SettingsSource
from trunner.executors import registry as executors
from trunner.executors.base import Executor, ExecutorUnavailable, JobNaming
from trunner.logs.settings import LogSettings
from trunner.observability import errorreport
from trunner.observability.health import MetricsServerSettings, serve_http
from trunner.observability.metrics import RunnerMetrics
from trunner.process import exits
from trunner.runner import JobRecord, Runner, RunSettings

log = logging.getLogger("trunner.service")

EXIT_OK = exits.OK
EXIT_FAILED = exits.FAILED

OpenExecutor = Callable[[str], AbstractAsyncContextManager[Executor]]
"""``open_executor(runner_id)``: replaces the executor named by ``--executor`` (tests, benchmarks)."""


def executor_name(configured: str, *, auto: str = "kubernetes") -> str:
    return auto if configured == "auto" else configured


def check_settings(source: SettingsSource, *groups: type[Any]) -> RunSettings:
    """Check a long-running mode's own settings ``groups`` together with the ones every such mode
    uses (metrics server, logs, the chosen executor's), all problems reported at once."""
    run_settings = source.get(RunSettings)
    executor_groups = executors.executor_settings(executor_name(run_settings.executor))
    source.check(*groups, MetricsServerSettings, LogSettings, *executor_groups)
    return run_settings


class Shutdown:
    """What SIGTERM/SIGINT do: before a runner is attached, cancel :attr:`startup`; then the first
    request begins the runner's graceful shutdown and any later one cancels its jobs at once."""

    def __init__(self) -> None:
        self.startup = trio.CancelScope()
        self.runner: Runner | None = None
        self.requests = 0
        self.first_signal: int | None = None

    def attach(self, runner: Runner) -> Runner:
        """Hand shutdown requests to ``runner`` from now on; one already made applies at once."""
        self.runner = runner
        if self.requests:
            runner.begin_shutdown()
        return runner

    def request(self) -> None:
        """What a first signal does; calling it again is what a second signal does."""
        self.requests += 1
        if self.runner is None:
            if self.requests == 1:
                log.info("shutting down during start-up")
            self.startup.cancel()
        elif self.requests == 1:
            self.runner.begin_shutdown()
        else:
            self.runner.shutdown_now()

    async def watch_signals(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            task_status.started()
            async for signum in signals:
                log.info("received %s", signal.Signals(signum).name)
                if self.first_signal is None:
                    self.first_signal = signum
                self.request()


async def serve_until_signalled(
    runner: Runner,
    *,
    shutdown: Shutdown | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> list[JobRecord]:
    """``runner.serve()`` with SIGTERM/SIGINT handled while it runs, for a process whose only
    work is this runner; ``shutdown`` tells the caller which signal arrived."""
    shutdown = shutdown or Shutdown()
    shutdown.attach(runner)
    async with trio.open_nursery() as signals:
        await signals.start(shutdown.watch_signals)
        records = await runner.serve(task_status=task_status)
        signals.cancel_scope.cancel()
    return records


def serve_process_metrics(registry: CollectorRegistry) -> None:
    """The ``process_*`` series (CPU, memory, file descriptors, start time), as the Go runner
    serves them from its process collector. Its Go runtime collector has no counterpart here."""
    with contextlib.suppress(ValueError):  # already served by this registry
        ProcessCollector(registry=registry)


class Service:
    """A long-running mode's process: signals (see :class:`Shutdown`) and the HTTP endpoints for
    its whole life, and the executor it runs jobs with."""

    def __init__(
        self,
        source: SettingsSource,
        run_settings: RunSettings,
        registry: CollectorRegistry,
        *,
        ready: Callable[[], bool],
        http_host: str | None = None,
        open_executor: OpenExecutor | None = None,
        naming: JobNaming = JobNaming.NUMBER,
        handle_signals: bool = True,
    ) -> None:
        self._source = source
        self._run_settings = run_settings
        self._registry = registry
        serve_process_metrics(registry)
        self._ready = ready
        self._http = source.get(MetricsServerSettings)
        self._http_host = http_host
        self._open_executor_override = open_executor
        self._naming = naming
        self._handle_signals = handle_signals
        self.shutdown = Shutdown()
        self.http_port: int | None = None

    async def serve(self, work: Callable[[], Awaitable[int]], *, started: Callable[[], None]) -> int:
        """Serve the HTTP endpoints, call ``started()``, then return ``work()``'s exit code;
        ``EXIT_FAILED`` without calling either if the metrics port cannot be bound. A failure
        before a runner is attached is reported as fatal."""
        code = await self._serve(work, started)
        if code != EXIT_OK and self.shutdown.runner is None:
            errorreport.report_fatal("trunner could not start")
        return code

    async def _serve(self, work: Callable[[], Awaitable[int]], started: Callable[[], None]) -> int:
        async with trio.open_nursery() as background:
            if self._handle_signals:
                await background.start(self.shutdown.watch_signals)
            try:
                self.http_port = await background.start(
                    partial(
                        serve_http,
                        self._registry,
                        port=self._http.metrics_port,
                        ready=self._ready,
                        host=self._http_host or self._http.metrics_bind_address or None,
                    )
                )
            except OSError as exc:
                log.error("cannot serve metrics on port %d: %s", self._http.metrics_port, exc.strerror or exc)
                background.cancel_scope.cancel()
                return EXIT_FAILED
            started()
            code = await work()
            background.cancel_scope.cancel()
        return code

    async def open_executor(
        self, stack: AsyncExitStack, runner_id: str, metrics: RunnerMetrics
    ) -> Executor | None:
        """The executor, closed with ``stack``; None (the reason logged) if it cannot start."""
        name = executor_name(self._run_settings.executor)
        try:
            if self._open_executor_override is not None:
                opening = self._open_executor_override(runner_id)
            else:
                settings = executors.load_settings(name, self._source)
                opening = executors.open_executor(
                    settings, runner_id=runner_id, naming=self._naming, metrics=metrics
                )
            executor: Executor = await stack.enter_async_context(opening)
        except (ConfigError, OSError, ExecutorUnavailable) as exc:
            log.error("cannot start the %s executor: %s", name, exc)
            return None
        return executor


class ServiceMode:
    """What a long-running mode exposes from its :class:`Service`: the runner once start-up is
    over, the bound metrics port, and :meth:`stop`."""

    _service: Service

    @property
    def runner(self) -> Runner | None:
        return self._service.shutdown.runner

    @property
    def http_port(self) -> int | None:
        return self._service.http_port

    def stop(self) -> None:
        """What a first SIGTERM/SIGINT does; calling it again is what a second signal does."""
        self._service.shutdown.request()
