"""``trunner run --mode faktory``: a Faktory worker process that runs ``legacy`` jobs through
the shared runner and reports to the ``app`` queue.

Sequence: validate settings; serve /metrics, /healthz, /readyz (as the Go runner does in this
mode too); connect once to check the server accepts us (refused or unreachable: exit 1); open
the executor; run jobs until shut down. A connection lost later is reconnected
(:mod:`trunner.faktory.link`); lost for ``--faktory-reconnect-max-time``, the worker shuts down
gracefully and exits 1.

Shutdown: SIGTERM/SIGINT (handled by the shared :mod:`trunner.service` lifecycle) or a ``terminate``
heartbeat reply stops fetching at once; running jobs get ``--shutdown-grace`` and are then
cancelled, each left unreported and unanswered so that Faktory delivers it again when its
reservation expires (as the Go runner leaves them); a second signal skips the rest of the grace.
A ``quiet`` reply only stops fetching. Every job that ran to an outcome is ACKed after the outcome
was reported; jobs claimed but never run are FAILed on the way out so Faktory retries them at once.
"""

from __future__ import annotations

import argparse
import logging
import ssl
from contextlib import AsyncExitStack
from functools import partial
from typing import Any

import trio

from trunner.config import SettingsSource
from trunner.executors.base import Executor, JobNaming
from trunner.faktory.client import FaktoryClient, WorkerIdentity, locate_server
from trunner.faktory.link import Link
from trunner.faktory.metrics import FaktoryMetrics
from trunner.faktory.protocol import FaktoryError, HandshakeRejected
from trunner.faktory.settings import FaktorySettings
from trunner.faktory.sink import RUNNER_ID
from trunner.faktory.worker import FaktoryWorker
from trunner.logs.settings import LogSettings
from trunner.observability.health import MetricsServerSettings
from trunner.observability.metrics import RunnerMetrics
from trunner.runner import Runner, RunSettings
from trunner.service import EXIT_FAILED, EXIT_OK, OpenExecutor, Service, ServiceMode, check_settings

log = logging.getLogger("trunner.faktory")

SETTINGS: tuple[type[Any], ...] = (FaktorySettings, MetricsServerSettings)

_CONNECTION_SLACK = 3
"""Pool connections beyond one per job slot: the FETCH, the heartbeat, and one spare."""


async def serve(source: SettingsSource, args: argparse.Namespace) -> int:
    check_settings(source, FaktorySettings)
    locate_server(source.environ)
    return await FaktoryMode(source).serve()


class FaktoryMode(ServiceMode):
    def __init__(
        self,
        source: SettingsSource,
        *,
        open_executor: OpenExecutor | None = None,
        ssl_context: ssl.SSLContext | None = None,
        http_host: str | None = None,
        handle_signals: bool = True,
    ) -> None:
        """``open_executor(runner_id)`` replaces the executor named by ``--executor``;
        ``ssl_context`` replaces the default trust for ``tcp+tls://``."""
        self._source = source
        self._ssl_context = ssl_context
        self._run_settings = source.get(RunSettings)
        self._settings = source.get(FaktorySettings)
        self._log_settings = source.get(LogSettings)
        self.location = locate_server(source.environ)
        self.identity = WorkerIdentity.consumer(self._settings.faktory_labels)
        self.metrics = RunnerMetrics(runner_id=RUNNER_ID)
        self.faktory_metrics = FaktoryMetrics(self.metrics.registry, RUNNER_ID, go=self.metrics.go)
        self.worker: FaktoryWorker | None = None
        self.running = trio.Event()
        """Set once the runner is claiming jobs."""
        self._service = Service(
            source,
            self._run_settings,
            self.metrics.registry,
            ready=lambda: self.ready,
            http_host=http_host,
            open_executor=open_executor,
            naming=JobNaming.ID,
            handle_signals=handle_signals,
        )

    @property
    def ready(self) -> bool:
        """Taking jobs: the runner claims and Faktory has not quieted this worker."""
        return (
            self.runner is not None
            and self.runner.ready
            and self.worker is not None
            and not self.worker.state
        )

    async def serve(self, *, task_status: trio.TaskStatus[FaktoryMode] = trio.TASK_STATUS_IGNORED) -> int:
        return await self._service.serve(self._run, started=partial(task_status.started, self))

    async def _run(self) -> int:
        async with AsyncExitStack() as stack:
            code = await self._start_and_work(stack)
        return code

    async def _start_and_work(self, stack: AsyncExitStack) -> int:
        client = await stack.enter_async_context(
            FaktoryClient(
                self.location,
                self.identity,
                timeout=self._settings.faktory_timeout,
                max_connections=self._run_settings.job_concurrency + _CONNECTION_SLACK,
                ssl_context=self._ssl_context,
            )
        )
        executor: Executor | None = None
        with self._service.shutdown.startup:
            if not await self._check_server(client):
                return EXIT_FAILED
            executor = await self._service.open_executor(stack, RUNNER_ID, self.metrics)
            if executor is None:
                return EXIT_FAILED
        if executor is None:
            return EXIT_OK
        return await self._work(client, executor)

    async def _check_server(self, client: FaktoryClient) -> bool:
        try:
            async with client.connection():
                pass
        except HandshakeRejected as exc:
            log.error("Faktory at %s refused this worker: %s", self.location.describe(), exc)
            return False
        except FaktoryError as exc:
            log.error(
                "Faktory at %s cannot be reached: %s; check FAKTORY_URL (or FAKTORY_PROVIDER) and that the "
                "server is up",
                self.location.describe(),
                exc,
            )
            return False
        return True

    async def _work(self, client: FaktoryClient, executor: Executor) -> int:
        link = Link(client, max_down=self._settings.faktory_reconnect_max_time, metrics=self.faktory_metrics)
        worker = self.worker = FaktoryWorker(
            client,
            queues=self._settings.queues,
            environ=self._source.environ,
            heartbeat_interval=self._settings.faktory_heartbeat_interval,
            metrics=self.faktory_metrics,
            link=link,
        )
        runner = self._service.shutdown.attach(
            Runner(
                source=worker,
                executor=executor,
                settings=self._run_settings,
                log_settings=self._log_settings,
                metrics=self.metrics,
                runner_id=RUNNER_ID,
            )
        )
        log.info(
            "Faktory worker %s on %s: fetching from %s, %d job(s) at a time, %s executor",
            self.identity.wid,
            self.location.describe(),
            ", ".join(self._settings.queues),
            self._run_settings.job_concurrency,
            executor.name,
        )
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(worker.heartbeat, runner.begin_shutdown, lambda: runner.shutting_down)
                nursery.start_soon(link.supervise, runner.begin_shutdown)
                async with trio.open_nursery() as serving:
                    await serving.start(runner.serve)
                    self.running.set()
                nursery.cancel_scope.cancel()
        finally:
            await worker.release_unfinished()
        if link.gave_up:
            log.error(
                "Faktory worker %s stopped: Faktory at %s unreachable for %gs; exiting %d",
                self.identity.wid,
                self.location.describe(),
                link.max_down,
                EXIT_FAILED,
            )
            return EXIT_FAILED
        log.info("Faktory worker %s stopped", self.identity.wid)
        return EXIT_OK
