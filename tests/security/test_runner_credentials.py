"""The runner's credentials (API token, Faktory password, Sentry DSN key) never reach a job's
environment, cannot be read from the runner process by a job, and are masked wherever a job
prints them; the token can come from a file, and giving it on the command line is warned about."""

from __future__ import annotations

import base64
import logging
import os
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.cli.support import ROOT, clean_env, trunner
from tests.security.other_user import OTHER, needs_other_user, other_uid, shared_directory
from trunner.cli import app
from trunner.cli.commands.common import settings_source
from trunner.config import ConfigError, SettingsSource
from trunner.opslevel.errors import TOKEN_HINT
from trunner.opslevel.settings import ApiSettings
from trunner.process import credentials, hardening

TOKEN = "opslevel-token-0a1b2c3d4e5f"
FAKTORY_PASSWORD = "faktory-pass-9z8y7x"
SENTRY_KEY = "0123456789abcdef0123456789abcdef"
CLOUD_KEY = "cloud-secret-access-key-777"


def job_file(tmp_path: Path, commands: list[str]) -> str:
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump({"id": "7", "commands": commands}, width=1000))
    return str(path)


def runner_env() -> dict[str, str]:
    return clean_env(
        OPSLEVEL_API_TOKEN=TOKEN,
        FAKTORY_URL=f"tcp://:{FAKTORY_PASSWORD}@127.0.0.1:7419",
        # loopback only, and no event is sent: the job succeeds
        SENTRY_DSN=f"http://{SENTRY_KEY}@127.0.0.1:9/1",
        AWS_SECRET_ACCESS_KEY=CLOUD_KEY,
    )


def test_a_local_job_gets_an_allow_listed_environment_only(tmp_path: Path) -> None:
    commands = ["echo \"NAMES: $(env | cut -d= -f1 | sort | tr '\\n' ' ')\""]
    result = trunner("test", "--executor", "local", "-f", job_file(tmp_path, commands), env=runner_env())
    assert result.returncode == 0, result.stdout + result.stderr
    names = next(line for line in result.stdout.splitlines() if "] NAMES: " in line)
    assert "PATH" in names
    for name in ("OPSLEVEL_API_TOKEN", "FAKTORY_URL", "SENTRY_DSN", "AWS_SECRET_ACCESS_KEY"):
        assert name not in names, names


def test_every_runner_credential_is_masked_in_the_job_log_and_outcome(tmp_path: Path) -> None:
    encoded = base64.b64encode(TOKEN.encode()).decode()
    commands = [
        f"echo token={TOKEN}",
        f"echo base64={encoded}",
        f"echo faktory={FAKTORY_PASSWORD}",
        f"echo sentry={SENTRY_KEY}",
        f"echo '::set-outcome-var leaked={TOKEN}'",
    ]
    result = trunner("test", "--executor", "local", "-f", job_file(tmp_path, commands), env=runner_env())
    assert result.returncode == 0, result.stdout + result.stderr
    everything = result.stdout + result.stderr
    for secret in (TOKEN, encoded, FAKTORY_PASSWORD, SENTRY_KEY):
        assert secret not in everything, everything
    assert "token=**********" in result.stdout
    assert "outcome variable leaked=**********" in result.stdout.splitlines()


@pytest.fixture
def runner_log() -> Iterator[None]:
    """The runner log as the test found it, after ``settings_source`` set it up."""
    logger = logging.getLogger("trunner")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved


def test_the_runner_log_masks_its_credentials(capsys: pytest.CaptureFixture[str], runner_log: None) -> None:
    env = {k: v for k, v in runner_env().items() if k != "SENTRY_DSN"}
    settings_source_with(app.parse_args(["validate"]), env)
    log = logging.getLogger("trunner.test")
    log.error("a proxy echoed: Authorization: Bearer %s", TOKEN)
    log.error("faktory said %s", FAKTORY_PASSWORD, extra={"detail": f"x {TOKEN}"})
    err = capsys.readouterr().err
    assert TOKEN not in err and FAKTORY_PASSWORD not in err
    assert "Bearer **********" in err and 'detail="x **********"' in err


def settings_source_with(args: object, env: dict[str, str]) -> SettingsSource:
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        return settings_source(args)  # type: ignore[arg-type]
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_the_token_on_the_command_line_is_warned_about_and_not_shown(
    capsys: pytest.CaptureFixture[str], runner_log: None
) -> None:
    args = app.parse_args(["run", "--api-token", TOKEN])
    settings_source_with(args, clean_env())
    err = capsys.readouterr().err
    assert "--api-token is given on the command line, where every local user can read it" in err
    assert "--api-token-file" in err and TOKEN not in err
    assert "--api-token=" not in TOKEN_HINT and "--api-token-file" in TOKEN_HINT


def test_the_token_file_is_read_once_and_its_newline_dropped(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    for args, environ, file in (
        (app.parse_args(["run", "--api-token-file", str(path)]), {}, {}),
        (app.parse_args(["run"]), {"OPSLEVEL_API_TOKEN_FILE": str(path)}, {}),
        (app.parse_args(["run"]), {}, {"api-token-file": str(path)}),
    ):
        source = SettingsSource(args=args, environ=environ, file=file)
        assert source.get(ApiSettings).api_token == TOKEN
        path.write_text("changed later\n")
        assert source.given_secrets(ApiSettings) == [TOKEN]
        path.write_text(TOKEN + "\n")


def test_a_token_with_a_trailing_newline_loses_it() -> None:
    source = SettingsSource(args=app.parse_args(["run"]), environ={"OPSLEVEL_API_TOKEN": TOKEN + "\r\n"})
    assert source.get(ApiSettings).api_token == TOKEN


def test_an_unreadable_token_file_is_a_clear_error(tmp_path: Path) -> None:
    source = SettingsSource(args=app.parse_args(["run", "--api-token-file", str(tmp_path / "missing")]))
    with pytest.raises(Exception, match=r"--api-token-file: cannot read .*missing: No such file"):
        source.get(ApiSettings)


def test_credentials_of_urls_are_registered_raw_and_decoded() -> None:
    credentials.register_url("x", "tcp://user:p%40ss-word-1@host:1")
    values = [value for _, value in credentials.registered()]
    assert "p%40ss-word-1" in values and "p@ss-word-1" in values


def _python_for_other() -> list[str] | None:
    site = sysconfig.get_paths()["purelib"]
    env = [
        f"PYTHONPATH={ROOT}:{site}",
        "HOME=/tmp",
        "PATH=" + os.environ["PATH"],
        f"OPSLEVEL_API_TOKEN={TOKEN}",
    ]
    for python in (sys.executable, f"/usr/bin/python{sys.version_info[0]}.{sys.version_info[1]}"):
        command = ["runuser", "-u", OTHER, "--", "env", "-i", *env, python]
        probe = subprocess.run([*command, "-c", "import trunner"], capture_output=True, cwd="/", timeout=60)
        if probe.returncode == 0:
            return command
    return None


def test_a_job_of_the_same_user_cannot_read_the_runners_environment() -> None:
    needs_other_user()
    python = _python_for_other()
    if python is None:
        pytest.skip(f"{OTHER} cannot run this Python with trunner importable")
    commands = [
        "tr '\\0' '\\n' < /proc/$PPID/environ | grep -c OPSLEVEL_API_TOKEN && echo READABLE || echo DENIED",
        "head -c 1 /proc/$PPID/mem >/dev/null 2>&1 && echo MEM-READABLE || echo MEM-DENIED",
        'echo "uid=$(id -u)"',
    ]
    with shared_directory() as shared:
        path = shared / "job.yaml"
        path.write_text(yaml.safe_dump({"id": "1", "commands": commands}))
        path.chmod(0o644)
        result = subprocess.run(
            [*python, "-m", "trunner", "test", "--executor", "local", "-f", str(path)],
            capture_output=True,
            text=True,
            cwd="/",
            timeout=120,
        )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if "+ " not in line and "echo" not in line]
    assert any(line.endswith("DENIED") for line in lines), result.stdout
    assert not any(line.endswith("] READABLE") for line in lines), result.stdout
    assert TOKEN not in result.stdout + result.stderr
    assert any(line.endswith(f"] uid={other_uid()}") for line in lines), result.stdout


def test_the_runner_process_is_not_dumpable() -> None:
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "from trunner.process import hardening as h; h.make_undumpable(); print(h.is_dumpable())",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    if hardening.is_dumpable() is None:
        pytest.skip("no prctl on this platform")
    assert probe.stdout.strip() == "False", probe.stderr


def test_a_token_a_header_cannot_carry_is_refused_without_showing_it() -> None:
    source = SettingsSource(args=app.parse_args(["run"]), environ={"OPSLEVEL_API_TOKEN": "tok en\x01-abc"})
    with pytest.raises(ConfigError) as caught:
        source.get(ApiSettings)
    assert "which an HTTP header cannot carry" in str(caught.value)
    assert "tok en" not in str(caught.value) and "-abc" not in str(caught.value)
