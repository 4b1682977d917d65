"""The Go runner's timeouts as trunner's defaults, as ``trunner run --help`` states them and as the
clients are built: 60 s per OpsLevel API request (opslevel-go ``SetTimeout(60s)``) and 60 s per
Kubernetes API call (client-go ``rest.Config.Timeout`` from ``--job-pod-exec-max-wait``, 60)."""

from __future__ import annotations

import re

from prometheus_client import CollectorRegistry

from tests.cli.support import trunner
from trunner.config import SettingsSource
from trunner.kube.client import KubeApiSettings
from trunner.opslevel.client import OpsLevelClient
from trunner.opslevel.metrics import ApiMetrics
from trunner.opslevel.settings import ApiSettings


def test_run_help_states_the_go_timeouts() -> None:
    text = " ".join(trunner("run", "--help").stdout.split())
    for flag in ("--api-timeout", "--k8s-api-timeout", "--job-pod-exec-max-wait"):
        assert re.search(re.escape(flag) + r" [^\[]*\[env [^;]*; default 60\]", text), flag


async def test_the_clients_are_built_with_them() -> None:
    source = SettingsSource(environ={"OPSLEVEL_API_TOKEN": "t"})
    client = OpsLevelClient.from_settings(
        source.get(ApiSettings), ApiMetrics(CollectorRegistry(), runner="r")
    )
    async with client:
        assert client.timeout == 60
    assert source.get(KubeApiSettings).k8s_api_timeout == 60
