"""The Go runner's documented invocations through trunner's command line and settings: the OpsLevel
Helm chart's rendered args, environment and config file, the Go README's and the Go repo's scripts'
command lines, and configuration from the environment alone."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import yaml

from trunner.cli.app import parse_args
from trunner.cli.commands.run import ModeSettings
from trunner.config import SettingsSource
from trunner.executors.registry import job_pod_config
from trunner.faktory.definition import parse_job_definition
from trunner.faktory.settings import FaktorySettings
from trunner.observability.runlog import RunnerLogSettings
from trunner.opslevel.scaling import ScalingSettings, check_scaling
from trunner.opslevel.settings import ApiSettings, PollSettings
from trunner.runner import RunSettings

CHART = yaml.safe_load((Path(__file__).parent / "fixtures" / "opslevel_chart.yaml").read_text())


def source_for(argv: list[str], env: dict[str, str], file: dict[str, Any] | None = None) -> SettingsSource:
    args = parse_args(argv)
    assert args.ignored_flags == [], args.ignored_flags
    return SettingsSource(args=args, environ=env, file=file or {}, source_name="/opslevel/opslevel.yaml")


def test_the_chart_api_mode_deployment(caplog) -> None:
    file = yaml.safe_load(CHART["config"])
    source = source_for(CHART["api_mode_args"], CHART["env"], file)
    assert source.get(ModeSettings).mode == "api"
    assert source.get(ApiSettings).api_url == "http://10.96.12.7:80"
    assert source.get(ApiSettings).api_token == "chart-secret-token"
    scaling = source.get(ScalingSettings)
    assert scaling.scaling_enabled and scaling.runner_deployment == "opslevel-runner"
    assert scaling.runner_max_replicas == 3 and scaling.runner_pod_namespace == "opslevel-self-hosted"
    assert source.get(PollSettings).runner_pod_name == "opslevel-runner-6f7c9d-x2k4p"
    check_scaling(source)
    with caplog.at_level(logging.WARNING, logger="trunner"):
        pods = job_pod_config(source)
    # The chart's flags and section do not disagree; its example workingDir is warned about.
    [warning] = [r.getMessage() for r in caplog.records]
    assert "workingDir '/mount' collides with /mount" in warning
    assert pods.namespace == "opslevel-self-hosted" and pods.max_wait == 300
    assert pods.workdir == "/mount" and pods.service_account_name == "opslevel-runner-jobs"
    assert pods.security_context is not None and pods.security_context.run_as_user == 1000
    assert pods.annotations == {"podpreset.admission.kubernetes.io/allow-database": "resource version"}
    assert pods.resources is not None
    assert pods.resources.requests == {"cpu": "300m", "memory": "512Mi", "ephemeral-storage": "64Mi"}
    assert pods.resources.limits == {"cpu": "1000m", "memory": "2048Mi", "ephemeral-storage": "26624Mi"}


def test_the_chart_faktory_mode_deployment() -> None:
    source = source_for(CHART["faktory_mode_args"], CHART["env"], yaml.safe_load(CHART["config"]))
    assert source.get(ModeSettings).mode == "faktory"
    assert source.get(FaktorySettings).queues == ("runner",)
    assert source.get(ScalingSettings).scaling_enabled is False


def test_a_section_that_sets_what_the_chart_flags_set_wins_with_a_line_each(caplog) -> None:
    file = {"kubernetes": {"namespace": "jobs", "resources": {"limits": {"memory": "4Gi"}}}}
    source = source_for(CHART["api_mode_args"], CHART["env"], file)
    with caplog.at_level(logging.WARNING, logger="trunner"):
        pods = job_pod_config(source)
    assert pods.namespace == "jobs"
    assert pods.resources is not None and pods.resources.limits is not None
    assert pods.resources.limits["memory"] == "4Gi"
    assert len(caplog.records) == 2
    assert "--job-pod-namespace" in caplog.records[0].getMessage()
    assert "--job-pod-limits-memory" in caplog.records[1].getMessage()


@pytest.mark.parametrize(
    "argv",
    [
        ["run"],
        ["run", "--api-url=https://api.opslevel-staging.com/graphql"],
        ["test", "-f", "job.yaml"],
        ["test", "-f", "-"],
    ],
)
def test_the_go_readme_command_lines_parse(argv: list[str]) -> None:
    source = source_for(argv, {"OPSLEVEL_API_TOKEN": "XXXXX"})
    assert source.get(RunnerLogSettings).log_level == "INFO"


def test_the_go_repo_run_runner_script() -> None:
    argv = [
        "--log-level", "TRACE", "--log-format", "TEXT",
        "--job-pod-helper-image", "localhost/opslevel-runner:dev",
        "--job-pod-requests-cpu", "50", "--job-pod-requests-memory", "32",
        "--queue", "coding-agent", "--job-agent-mode=true",
        "run", "--mode", "faktory", "--queues", "runner", "--runner-pod-namespace", "default",
    ]  # fmt: skip
    source = source_for(argv, {"FAKTORY_URL": "tcp://localhost:7419"})
    assert source.get(RunnerLogSettings).log_level == "TRACE"
    assert source.get(FaktorySettings).queues == ("runner",)
    pods = job_pod_config(source)
    assert pods.agent_mode is True and pods.helper_image == "localhost/opslevel-runner:dev"
    assert pods.resources is not None and pods.resources.requests is not None
    assert pods.resources.requests["cpu"] == "50m" and pods.resources.requests["memory"] == "32Mi"


def test_the_go_repo_hot_reload_script() -> None:
    argv = [
        "run", "--mode=faktory", "--queues=runner", "--job-pod-max-wait=900", "--runner-pod-namespace=default",
        "--job-pod-helper-image=localhost/opslevel-runner:dev", "--job-pod-requests-cpu=50",
        "--job-pod-requests-memory=32", "--job-pod-requests-ephemeral-storage=32",
    ]  # fmt: skip
    pods = job_pod_config(source_for(argv, {}))
    assert pods.max_wait == 900
    assert pods.resources is not None and pods.resources.requests is not None
    assert pods.resources.requests["ephemeral-storage"] == "32Mi"


def test_the_go_repo_enqueue_script() -> None:
    args = parse_args(["--log-level", "DEBUG", "enqueue", "-f", "/tmp/job.yaml"])
    assert args.command == "enqueue" and args.file == "/tmp/job.yaml"
    job_file = Path(__file__).parent / "fixtures" / "enqueue-runner-job.yaml"
    definition = parse_job_definition(job_file.read_text(), "job.yaml")
    assert definition.queue == "runner" and definition.reserve_for == 300 and definition.retries == 0
    assert definition.custom == {"opslevel-runner-job-id": "test-job-1-1764600000"}


def test_configuration_from_the_environment_alone() -> None:
    env = {
        "OPSLEVEL_MODE": "faktory",
        "OPSLEVEL_QUEUES": "critical runner",
        "OPSLEVEL_JOB-CONCURRENCY": "6",
        "OPSLEVEL_JOB_POD_NAMESPACE": "ci-jobs",
        "OPSLEVEL_JOB_POD_MAX_LIFETIME": "1800",
        "OPSLEVEL_LOG_LEVEL": "debug",
        "SCALING_ENABLED": "true",
        "RUNNER_DEPLOYMENT": "runner-pool",
        "RUNNER_POD_NAME": "runner-pool-1",
        "RUNNER_MAX_REPLICAS": "8",
        "OPSLEVEL_API_TOKEN": "t",
    }
    source = source_for(["run"], env)
    assert source.get(ModeSettings).mode == "faktory"
    assert source.get(FaktorySettings).queues == ("critical", "runner")
    assert source.get(RunSettings).job_concurrency == 6
    scaling = source.get(ScalingSettings)
    assert (
        scaling.scaling_enabled
        and scaling.runner_deployment == "runner-pool"
        and scaling.runner_max_replicas == 8
    )
    pods = job_pod_config(source)
    assert pods.namespace == "ci-jobs" and pods.lifetime == 1800
