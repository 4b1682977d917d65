"""``trunner run --mode faktory``: a Faktory worker process that runs ``legacy`` jobs through
the shared runner, reporting to the ``app`` queue.

Shutdown is the runner's: SIGTERM/SIGINT, or a ``terminate`` heartbeat reply, stops fetching at
once, running jobs get ``--shutdown-grace`` and are then cancelled (each reports ``canceled``);
every finished job is ACKed. A ``quiet`` reply only stops fetching. Jobs claimed but never run
are FAILed on the way out so Faktory retries them without waiting for their reservation.
"""

from __future__ import annotations

import argparse
import logging
import ssl
from functools import partial
from typing import Any

import attrs
import trio

from trunner.config import SettingsSource
from trunner.executors import registry
from trunner.executors.base import Executor
from trunner.faktory.client import FaktoryClient, WorkerIdentity, locate_server
from trunner.faktory.metrics import FaktoryMetrics
from trunner.faktory.protocol import FaktoryError, HandshakeRejected
from trunner.faktory.settings import FaktorySettings
from trunner.faktory.sink import RUNNER_ID
from trunner.faktory.worker import FaktoryWorker
from trunner.logs.settings import LogSettings
from trunner.metrics import RunnerMetrics
from trunner.runner import Runner, RunSettings

log = logging.getLogger("trunner.faktory")

SETTINGS: tuple[type[Any], ...] = (FaktorySettings,)

_CONNECTION_SLACK = 3
"""Pool connections beyond one per job slot: the FETCH, the heartbeat, and one spare."""


@attrs.frozen
class Running:
    """Handed to ``task_status`` once the runner is claiming (for tests and embedding)."""

    worker: FaktoryWorker
    runner: Runner
    client: FaktoryClient
    metrics: RunnerMetrics


async def serve(source: SettingsSource, args: argparse.Namespace) -> int:
    settings = source.get(RunSettings)
    executor_name = "kubernetes" if settings.executor == "auto" else settings.executor
    module = registry.executor_module(executor_name)
    source.check(LogSettings, FaktorySettings, *module.SETTINGS)
    locate_server(source.environ)
    async with module.open_executor(source, runner_id=RUNNER_ID) as executor:
        return await run_faktory(source, executor)


async def run_faktory(
    source: SettingsSource,
    executor: Executor,
    *,
    ssl_context: ssl.SSLContext | None = None,
    handle_signals: bool = True,
    task_status: trio.TaskStatus[Running] = trio.TASK_STATUS_IGNORED,
) -> int:
    """Run the worker until shutdown; 0 after a clean shutdown, 1 if Faktory refuses us."""
    settings = source.get(RunSettings)
    faktory = source.get(FaktorySettings)
    location = locate_server(source.environ)
    identity = WorkerIdentity.consumer(faktory.faktory_labels)
    metrics = RunnerMetrics(runner_id=RUNNER_ID)
    faktory_metrics = FaktoryMetrics(metrics.registry, RUNNER_ID)
    async with FaktoryClient(
        location,
        identity,
        timeout=faktory.faktory_timeout,
        max_connections=settings.job_concurrency + _CONNECTION_SLACK,
        ssl_context=ssl_context,
    ) as client:
        try:
            async with client.connection():
                pass
        except HandshakeRejected as exc:
            log.error("Faktory at %s refused this worker: %s", location.describe(), exc)
            return 1
        except FaktoryError as exc:
            log.warning("Faktory at %s is not reachable yet, will keep trying: %s", location.describe(), exc)
        worker = FaktoryWorker(
            client,
            queues=faktory.queues,
            environ=source.environ,
            heartbeat_interval=faktory.faktory_heartbeat_interval,
            metrics=faktory_metrics,
        )
        runner = Runner(
            source=worker,
            executor=executor,
            settings=settings,
            log_settings=source.get(LogSettings),
            metrics=metrics,
            runner_id=RUNNER_ID,
        )
        log.info(
            "Faktory worker %s on %s: fetching from %s, %d job(s) at a time, %s executor",
            identity.wid, location.describe(), ", ".join(faktory.queues), settings.job_concurrency,
            executor.name,
        )
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(worker.heartbeat, runner.begin_shutdown, lambda: runner.shutting_down)
                async with trio.open_nursery() as serving:
                    await serving.start(partial(runner.serve, handle_signals=handle_signals))
                    task_status.started(Running(worker, runner, client, metrics))
                nursery.cancel_scope.cancel()
        finally:
            await worker.release_unfinished()
    log.info("Faktory worker %s stopped", identity.wid)
    return 0
