"""Job files for ``trunner test`` as the Go runner's ``test`` accepts them (viper + mapstructure):
no id, numeric ids, numeric and boolean values, sensitive as text, keys in any case, ``-f``
defaulting to ./job.yaml, and the one-line answer when there is no cluster to run a pod in."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from tests.cli.support import ROOT, clean_env, trunner
from trunner.local.gojob import go_bool, go_text
from trunner.local.jobfile import JobFileError, parse_job
from trunner.models import JobVariable
from trunner.process import exits

JOBS = Path(__file__).parent / "fixtures" / "jobs"


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (5, "5"),
        (-3, "-3"),
        (1.5, "1.5"),
        (1e3, "1000"),
        (0.1, "0.1"),
        (True, "1"),
        (False, "0"),
        (None, ""),
        ("x", "x"),
    ],
)
def test_scalars_become_text_as_mapstructure_writes_them(value, text) -> None:
    assert go_text(value) == text


@pytest.mark.parametrize(
    ("value", "flag"),
    [
        ("true", True),
        ("True", True),
        ("1", True),
        ("t", True),
        ("false", False),
        ("", False),
        (0, False),
        (2, True),
    ],
)
def test_sensitive_as_text_or_number_is_read_as_go_parses_it(value, flag) -> None:
    assert go_bool(value) is flag


def test_a_job_without_an_id_gets_the_go_runners_1() -> None:
    assert parse_job("commands: [echo hi]\n", "job.yaml").id == "1"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("42", "42"),
        ("'42'", "42"),
        ("Z2lkOi8vb3BzbGV2ZWwvUnVubmVySm9iLzU", "Z2lkOi8vb3BzbGV2ZWwvUnVubmVySm9iLzU"),
    ],
)
def test_numeric_and_text_ids(raw, expected) -> None:
    assert parse_job(f"id: {raw}\ncommands: [echo hi]\n", "job.yaml").id == expected


def test_loose_job_file_reads_as_the_go_runner_reads_it(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="trunner"):
        job = parse_job((JOBS / "loose.yaml").read_text(), "loose.yaml")
    assert job.id == "1" and job.image == "alpine"
    assert job.variables == (
        JobVariable("COUNT", "12"),
        JobVariable("RATIO", "0.25"),
        JobVariable("ENABLED", "1"),
        JobVariable("PASSWORD", "pw-771be2", sensitive=True),
    )
    assert [r.getMessage() for r in caplog.records] == ["loose.yaml: timeout: unknown key, ignored"]


def test_what_go_also_refuses_stays_an_error() -> None:
    with pytest.raises(JobFileError, match="sensitive"):
        parse_job("commands: [x]\nvariables: [{key: A, value: b, sensitive: maybe}]\n", "job.yaml")


def test_the_readme_style_job_runs_through_the_cli() -> None:
    result = trunner("test", "--executor", "local", "-f", str(JOBS / "readme-style.yaml"))
    assert result.returncode == 0, result.stderr
    assert "outcome variable answer=7" in result.stdout
    assert "script sees Lisbon" in result.stdout
    assert "tok-3f9a1c" not in result.stdout + result.stderr


def test_job_file_defaults_to_job_yaml_in_the_working_directory(tmp_path) -> None:
    shutil.copy(JOBS / "loose.yaml", tmp_path / "job.yaml")
    for argv in ((), ("-f", ".")):
        result = trunner(
            "test", "--executor", "local", *argv, cwd=tmp_path, env=clean_env(PYTHONPATH=str(ROOT))
        )
        assert result.returncode == 0, result.stderr
        assert "n=12 r=0.25 on=1" in result.stdout
        assert "timeout: unknown key, ignored" in result.stderr


@pytest.mark.parametrize("executor", [(), ("--executor", "kubernetes")], ids=["default", "kubernetes"])
def test_without_a_cluster_test_says_so_in_one_line(tmp_path, executor) -> None:
    env = clean_env(HOME=str(tmp_path), PYTHONPATH=str(ROOT))
    env.pop("KUBECONFIG", None)
    env.pop("KUBERNETES_SERVICE_HOST", None)
    result = trunner("test", *executor, "-f", str(JOBS / "loose.yaml"), env=env)
    assert result.returncode == exits.USAGE
    [line] = [line for line in result.stderr.splitlines() if "unknown key, ignored" not in line]
    assert line.startswith("trunner: no usable Kubernetes cluster config to run the job in a pod (")
    assert line.endswith("use --executor local to run it on this machine")
    assert result.stdout == ""


def test_the_help_documents_the_default_executor_and_the_status_without_a_cluster() -> None:
    result = trunner("test", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "(default kubernetes)" in text
    assert f"{exits.USAGE} bad flags, settings, config or job file, or no usable cluster config" in text
    assert "--executor local" in text
