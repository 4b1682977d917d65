"""Values the Go runner starts with and trunner refuses (exit 2): ``trunner validate -c`` names
each, with what the Go runner would have done, so an upgrade does not crash-loop unannounced."""

from __future__ import annotations

import pytest

from tests.cli.support import clean_env, trunner

CASES = [
    ("job-concurrency: 0", "--job-concurrency", "runs 1 job at a time"),
    ("log-level: verbose", "--log-level", "logs at INFO"),
    ("log-format: pretty", "--log-format", "writes JSON"),
    ("poll-interval: 0", "--poll-interval", "polls without pause"),
    ("job-pod-log-max-size: 0", "--job-pod-log-max-size", "ships every line on its own"),
]


@pytest.mark.parametrize(("line", "flag", "go_does"), CASES, ids=[c[1] for c in CASES])
def test_validate_names_the_value_and_what_go_did_and_run_refuses_it(
    cli, tmp_path, line, flag, go_does
) -> None:
    config = tmp_path / "opslevel.yaml"
    config.write_text(f"{line}\napi-token: t\n")
    checked = cli("validate", "-c", str(config))
    assert checked.returncode == 1
    [named] = [p for p in checked.stderr.splitlines() if p.startswith(f"  - {flag} ")]
    assert go_does in named and "trunner refuses to start" in named
    started = trunner(
        "run", "-c", str(config), "--metrics-port", "0", env=clean_env(OPSLEVEL_API_URL="http://127.0.0.1:9")
    )
    assert started.returncode == 2 and flag in started.stderr


def test_the_environment_form_is_named_too(cli, tmp_path) -> None:
    config = tmp_path / "opslevel.yaml"
    config.write_text("api-token: t\n")
    checked = cli("validate", "-c", str(config), env={"OPSLEVEL_JOB_CONCURRENCY": "0"})
    assert checked.returncode == 1 and "OPSLEVEL_JOB_CONCURRENCY" in checked.stderr
    assert "runs 1 job at a time" in checked.stderr


def test_a_missing_config_file_is_named_with_what_go_would_do(tmp_path) -> None:
    """Through the installed command: validate names it, run refuses it."""
    missing = tmp_path / "absent.yaml"
    checked = trunner("validate", "-c", str(missing))
    assert checked.returncode == 1 and "creates it empty and starts with defaults" in checked.stderr
    assert not missing.exists(), "trunner never writes a file it was asked to read"
    started = trunner("run", "-c", str(missing), env=clean_env(OPSLEVEL_API_TOKEN="t"))
    assert started.returncode == 2 and "config file not found" in started.stderr
