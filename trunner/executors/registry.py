"""Executors by name, and the one step that turns the process's settings into the typed settings
an executor is opened with: :func:`load_settings` reads flags, environment and config file once;
:func:`open_executor` takes only what it returns. ``naming`` says which part of a job names what
the executor creates, ``metrics`` receives what the executor measures (e.g. pod start latency)."""

from __future__ import annotations

import logging
import socket
from contextlib import AbstractAsyncContextManager
from typing import Any

from trunner.config import ConfigError, SettingsSource
from trunner.executors import kubernetes, local
from trunner.executors.base import Executor, JobNaming
from trunner.executors.kubernetes import podspec
from trunner.executors.kubernetes.settings import (
    JobPodConfig,
    KubeJobSettings,
    KubernetesSection,
    KubernetesSettings,
    read_section_with_warnings,
    resolve,
    section_overrides,
)
from trunner.executors.settings import JobRunSettings
from trunner.kube.client import KubeApiSettings
from trunner.kube.config import load_config
from trunner.observability.metrics import RunnerMetrics

log = logging.getLogger("trunner.kubernetes")

SETTINGS_BY_EXECUTOR: dict[str, tuple[type[Any], ...]] = {
    "local": local.SETTINGS,
    "kubernetes": kubernetes.SETTINGS,
}
"""Each executor's settings groups, by executor name."""

ExecutorSettings = JobRunSettings | KubernetesSettings
"""What :func:`open_executor` takes: the local executor's :class:`JobRunSettings` or the
Kubernetes executor's :class:`KubernetesSettings`."""


def executor_settings(name: str) -> tuple[type[Any], ...]:
    """The settings groups of executor ``name``."""
    if name not in SETTINGS_BY_EXECUTOR:
        raise ConfigError(
            [f"--executor: unknown executor {name!r} (choose {', '.join(SETTINGS_BY_EXECUTOR)})"]
        )
    return SETTINGS_BY_EXECUTOR[name]


def settings_classes() -> list[type[Any]]:
    """Settings of every executor, for ``--help``."""
    return [cls for classes in SETTINGS_BY_EXECUTOR.values() for cls in classes]


def job_pod_config(source: SettingsSource) -> JobPodConfig:
    """The Kubernetes job-pod config; every problem of the ``kubernetes:`` section and of the
    job-pod settings is reported together in one ConfigError. The section's warnings and each key
    where it overrides an explicitly given setting are logged."""
    problems: list[str] = []
    warnings: list[str] = []
    try:
        section, warnings = read_section_with_warnings(source.file, source.source_name)
    except ConfigError as exc:
        problems.extend(exc.problems)
        section = KubernetesSection()
    try:
        source.check(JobRunSettings, KubeJobSettings)
    except ConfigError as exc:
        problems.extend(exc.problems)
    if problems:
        raise ConfigError(problems)
    run, pods = source.get(JobRunSettings), source.get(KubeJobSettings)
    for warning in warnings:
        log.warning("%s", warning)
    origins = {**source.origins(JobRunSettings), **source.origins(KubeJobSettings)}
    for line in section_overrides(run, pods, section, origins=origins, source_name=source.source_name):
        log.warning("%s", line)
    config = resolve(run, pods, section, hostname=socket.gethostname())
    if (collision := podspec.workdir_collision(config.workdir)) is not None:
        log.warning("%s: %s", source.source_name, collision)
    return config


def load_settings(name: str, source: SettingsSource) -> ExecutorSettings:
    """The settings executor ``name`` is opened with. The Kubernetes executor's include the
    cluster: a kubeconfig that cannot be used raises :class:`~trunner.kube.errors.KubeConfigError`
    (a ConfigError)."""
    executor_settings(name)
    if name == "local":
        return source.get(JobRunSettings)
    pods = job_pod_config(source)
    api = source.get(KubeApiSettings)
    cluster = load_config(source.environ, context=api.k8s_context or None)
    return KubernetesSettings(pods=pods, api=api, cluster=cluster)


def open_executor(
    settings: ExecutorSettings,
    *,
    runner_id: str,
    naming: JobNaming = JobNaming.NUMBER,
    metrics: RunnerMetrics | None = None,
) -> AbstractAsyncContextManager[Executor]:
    """The executor ``settings`` belong to, as an async context manager that closes it."""
    if isinstance(settings, KubernetesSettings):
        return kubernetes.open_executor(settings, runner_id=runner_id, naming=naming, metrics=metrics)
    return local.open_executor(settings)
