import argparse

import attrs
import pytest

from trunner.config import (
    ConfigError,
    SettingsSource,
    add_arguments,
    load,
    positive,
    read_config_file,
    setting,
)
from trunner.logs.settings import LogSettings


@attrs.frozen
class Sample:
    """Sample settings"""

    job_concurrency: int = setting(3, help="jobs", checks=[positive])
    api_url: str = setting(
        "https://api.opslevel.com", help="url", env=("OPSLEVEL_API_URL", "OPSLEVEL_APP_URL")
    )
    enabled: bool = setting(False, help="flag")
    ratio: float = setting(1.5, help="ratio")
    queues: tuple[str, ...] = setting(("default",), help="queues")
    nested: str = setting("x", help="from a section", file_key="kubernetes.namespace")


def parse(argv):
    parser = argparse.ArgumentParser()
    add_arguments(parser, Sample)
    return parser.parse_args(argv)


def test_defaults_and_derived_names():
    assert load(Sample, environ={}) == Sample()
    help_text = argparse.ArgumentParser()
    add_arguments(help_text, Sample)
    text = help_text.format_help()
    assert "--job-concurrency" in text and "OPSLEVEL_JOB_CONCURRENCY" in text and "default 3" in text


def test_precedence_flag_over_env_over_file_over_default():
    file = {"job-concurrency": 7, "kubernetes": {"namespace": "ci"}}
    env = {"OPSLEVEL_JOB_CONCURRENCY": "5"}
    assert load(Sample, args=parse([]), environ={}, file=file).job_concurrency == 7
    assert load(Sample, args=parse([]), environ=env, file=file).job_concurrency == 5
    assert load(Sample, args=parse(["--job-concurrency", "9"]), environ=env, file=file).job_concurrency == 9
    assert load(Sample, environ={}, file=file).nested == "ci"


def test_alternative_env_names_in_order():
    assert load(Sample, environ={"OPSLEVEL_APP_URL": "https://b"}).api_url == "https://b"
    both = {"OPSLEVEL_APP_URL": "https://b", "OPSLEVEL_API_URL": "https://a"}
    assert load(Sample, environ=both).api_url == "https://a"


def test_types_parse_from_text():
    env = {"OPSLEVEL_ENABLED": "true", "OPSLEVEL_RATIO": "2.5", "OPSLEVEL_QUEUES": "a, b,,c"}
    loaded = load(Sample, environ=env)
    assert (loaded.enabled, loaded.ratio, loaded.queues) == (True, 2.5, ("a", "b", "c"))
    assert load(Sample, args=parse(["--enabled"]), environ={}).enabled is True


def test_every_problem_is_reported_at_once():
    env = {"OPSLEVEL_JOB_CONCURRENCY": "0", "OPSLEVEL_RATIO": "fast", "OPSLEVEL_ENABLED": "maybe"}
    with pytest.raises(ConfigError) as info:
        load(Sample, environ=env)
    text = str(info.value)
    assert "OPSLEVEL_RATIO: expected a number, got 'fast'" in text
    assert "OPSLEVEL_ENABLED: expected true or false" in text
    assert "must be greater than 0, got 0" in text
    assert len(info.value.problems) == 3


def test_check_failures_name_flag_and_env():
    with pytest.raises(ConfigError) as info:
        load(Sample, environ={"OPSLEVEL_JOB_CONCURRENCY": "-1"})
    assert "--job-concurrency (OPSLEVEL_JOB_CONCURRENCY): must be greater than 0, got -1" in str(info.value)


def test_file_values_are_type_checked():
    with pytest.raises(ConfigError, match="job-concurrency in cfg.yaml: expected a whole number"):
        load(Sample, environ={}, file={"job-concurrency": [1]}, source_name="cfg.yaml")


def test_config_file_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        read_config_file(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [unclosed")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        read_config_file(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just text")
    with pytest.raises(ConfigError, match="expected a mapping"):
        read_config_file(scalar)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert read_config_file(empty) == ({}, str(empty))


def test_settings_source_collects_problems_of_several_groups():
    source = SettingsSource(environ={"OPSLEVEL_JOB_POD_LOG_MAX_SIZE": "0", "OPSLEVEL_JOB_CONCURRENCY": "0"})
    with pytest.raises(ConfigError) as info:
        source.check(LogSettings, Sample)
    assert len(info.value.problems) == 2


def test_go_runner_environment_names_for_log_settings():
    env = {"OPSLEVEL_JOB_POD_LOG_MAX_SIZE": "2048", "OPSLEVEL_JOB_POD_LOG_MAX_INTERVAL": "5"}
    loaded = load(LogSettings, environ=env)
    assert (loaded.job_pod_log_max_size, loaded.job_pod_log_max_interval) == (2048, 5.0)


def test_the_example_config_file_resolves():
    from pathlib import Path

    from trunner.executors.registry import job_pod_config
    from trunner.runner import RunSettings

    data, name = read_config_file(Path(__file__).parent.parent / "examples" / "opslevel.yaml")
    source = SettingsSource(environ={}, file=data, source_name=name)
    pod = job_pod_config(source)
    assert (pod.namespace, pod.lifetime, pod.resources.limits["memory"]) == ("opslevel-jobs", 1800.0, "2Gi")
    assert source.get(RunSettings).job_concurrency == 5
    assert source.get(LogSettings).job_pod_log_max_size == 500_000
    # The section wins over the environment, as in the Go runner.
    overridden = SettingsSource(environ={"OPSLEVEL_JOB_POD_NAMESPACE": "other"}, file=data, source_name=name)
    assert job_pod_config(overridden).namespace == "opslevel-jobs"
