"""``trunner run --mode api``: the drop-in replacement for ``opslevel-runner run``.

Sequence: validate settings; serve /metrics, /healthz, /readyz; check the token with
``{account{id}}``; ``runnerRegister``; open the executor; run jobs from ``runnerGetPendingJob``
until SIGTERM/SIGINT; then ``runnerUnregister`` and exit 0.

Signals, the HTTP endpoints and the executor are the shared :mod:`trunner.service` lifecycle.
"""

from __future__ import annotations

import argparse
import logging
from contextlib import AsyncExitStack
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import trio
from prometheus_client import CollectorRegistry

from trunner.config import ConfigError, SettingsSource
from trunner.executors.base import Executor
from trunner.kube.client import KubeApiSettings
from trunner.logs.settings import LogSettings
from trunner.net.proxy import ProxyEnvironment, ProxyError
from trunner.net.retry import RetryPolicy
from trunner.observability.health import MetricsServerSettings
from trunner.observability.metrics import RunnerMetrics
from trunner.opslevel.client import OpsLevelClient
from trunner.opslevel.errors import ApiAuthenticationError, ApiError
from trunner.opslevel.metrics import ApiMetrics
from trunner.opslevel.operations import (
    RUNNER_REGISTER,
    RUNNER_UNREGISTER,
    RegisterVariables,
    UnregisterVariables,
)
from trunner.opslevel.scaling import ScalingSettings, check_scaling, run_scaling
from trunner.opslevel.settings import ApiSettings, PollSettings
from trunner.opslevel.source import PendingJobSource
from trunner.process import credentials
from trunner.runner import Runner, RunSettings
from trunner.service import EXIT_FAILED, EXIT_OK, OpenExecutor, Service, ServiceMode, check_settings

log = logging.getLogger("trunner.opslevel")

SETTINGS: tuple[type[Any], ...] = (ApiSettings, PollSettings, MetricsServerSettings, ScalingSettings)

UNREGISTER_TIMEOUT = 10.0
"""Seconds ``runnerUnregister`` may take (retries included; at most ``--api-timeout``) at exit: a
hung API must not keep a terminating pod alive past its grace period."""


async def serve(source: SettingsSource, args: argparse.Namespace, *, http_host: str | None = None) -> int:
    run_settings = check_settings(source, ApiSettings, PollSettings)
    check_scaling(source)
    warn_if_unencrypted(source.get(ApiSettings).api_url)
    mode = ApiMode(source, run_settings, http_host=http_host)
    return await mode.serve()


def warn_if_unencrypted(api_url: str) -> None:
    if urlsplit(api_url).scheme == "http":
        log.warning(
            "the OpsLevel API URL %s is http://: the API token and every job's log cross the network "
            "unencrypted; use https:// outside a test setup",
            credentials.redact_url(api_url),
        )


class ApiMode(ServiceMode):
    def __init__(
        self,
        source: SettingsSource,
        run_settings: RunSettings,
        *,
        http_host: str | None = None,
        open_executor: OpenExecutor | None = None,
    ) -> None:
        """``open_executor(runner_id)`` replaces the executor named by ``--executor``."""
        self._source = source
        self._run_settings = run_settings
        self._api = source.get(ApiSettings)
        try:
            ProxyEnvironment.from_environ(source.environ)
        except ProxyError as exc:
            raise ConfigError([str(exc)]) from None
        self._poll = source.get(PollSettings)
        self._log_settings = source.get(LogSettings)
        self.registry = CollectorRegistry()
        self.api_metrics = ApiMetrics(self.registry)
        self.runner_id: str | None = None
        self._service = Service(
            source,
            run_settings,
            self.registry,
            ready=lambda: self.ready,
            http_host=http_host,
            open_executor=open_executor,
        )

    @property
    def ready(self) -> bool:
        return self.runner is not None and self.runner.ready

    async def serve(self, *, task_status: trio.TaskStatus[ApiMode] = trio.TASK_STATUS_IGNORED) -> int:
        async with OpsLevelClient.from_settings(self._api, self.api_metrics) as client:
            return await self._service.serve(
                partial(self._run, client), started=partial(task_status.started, self)
            )

    async def _run(self, client: OpsLevelClient) -> int:
        runner_id: str | None = None
        executor: Executor | None = None
        async with AsyncExitStack() as stack:
            with self._service.shutdown.startup:
                try:
                    await client.check_token()
                except ApiAuthenticationError as exc:
                    log.error("%s", exc)
                    return EXIT_FAILED
                except ApiError as exc:
                    log.error("cannot use the OpsLevel API at %s: %s", client.shown_endpoint, exc)
                    return EXIT_FAILED
                runner_id = await self._register(client)
                if runner_id is None:
                    return EXIT_FAILED
                stack.push_async_callback(self._unregister, client, runner_id)
                metrics = RunnerMetrics(self.registry, runner_id)
                executor = await self._service.open_executor(stack, runner_id, metrics)
                if executor is None:
                    return EXIT_FAILED
            if runner_id is None or executor is None:
                return EXIT_OK
            runner = self._service.shutdown.attach(
                Runner(
                    source=PendingJobSource(
                        client,
                        runner_id=runner_id,
                        settings=self._poll,
                        metrics=self.api_metrics,
                        report_timeout=self._log_settings.job_outcome_timeout,
                    ),
                    executor=executor,
                    settings=self._run_settings,
                    log_settings=self._log_settings,
                    metrics=metrics,
                    runner_id=runner_id,
                )
            )
            async with trio.open_nursery() as scaling:
                scaling.start_soon(
                    partial(
                        run_scaling,
                        self._source.get(ScalingSettings),
                        kube_api=self._source.get(KubeApiSettings),
                        environ=self._source.environ,
                        pod_name=self._source.get(PollSettings).runner_pod_name,
                        job_concurrency=self._run_settings.job_concurrency,
                        opslevel=client,
                        runner_id=runner_id,
                        busy=lambda: runner.busy,
                        registry=self.registry,
                    )
                )
                await runner.serve()
                scaling.cancel_scope.cancel()
            log.info("runner %s stopped after %d job(s)", runner_id, runner.finished_jobs)
        return EXIT_OK

    async def _register(self, client: OpsLevelClient) -> str | None:
        queue = self._poll.queue or None
        try:
            payload = await client.call(RUNNER_REGISTER, RegisterVariables(queue))
        except ApiError as exc:
            log.error("could not register the runner: %s", exc)
            return None
        if payload.runner is None or not payload.runner.id:
            log.error("could not register the runner: the API returned no runner id")
            return None
        self.runner_id = payload.runner.id
        self.api_metrics.runner = payload.runner.id
        log.info(
            "registered runner %s",
            payload.runner.id,
            extra={"queue": queue or "(default)", "pod": self._poll.runner_pod_name or "(unknown)"},
        )
        return payload.runner.id

    async def _unregister(self, client: OpsLevelClient, runner_id: str) -> None:
        timeout = min(UNREGISTER_TIMEOUT, self._api.api_timeout)
        policy = RetryPolicy(max_retries=3, total=timeout, base=0.5, cap=2.0)
        with trio.CancelScope(shield=True, deadline=trio.current_time() + timeout) as scope:
            try:
                await client.call(RUNNER_UNREGISTER, UnregisterVariables(runner_id), retry=policy)
                log.info("unregistered runner %s", runner_id)
            except ApiError as exc:
                log.error("could not unregister runner %s: %s", runner_id, exc)
        if scope.cancelled_caught:
            log.error("could not unregister runner %s within %gs", runner_id, timeout)
