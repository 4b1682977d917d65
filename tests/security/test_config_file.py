"""The config file says where the API token goes: one another user may write is refused (as ssh
refuses such keys), and the runner log names the file it read."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.support import ROOT, clean_env
from tests.security.other_user import as_other, needs_other_user, other_uid, shared_directory
from trunner.cli import app
from trunner.cli.commands.common import settings_source
from trunner.config import ConfigError, read_config_file


def test_a_config_file_other_users_may_write_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "opslevel.yaml"
    path.write_text("api-url: https://127.0.0.1:9\n")
    for mode in (0o664, 0o646):
        path.chmod(mode)
        with pytest.raises(ConfigError, match=f"other users may write the config file \\(mode {mode:04o}\\)"):
            read_config_file(path)
    path.chmod(0o644)
    assert read_config_file(path)[0] == {"api-url": "https://127.0.0.1:9"}


def test_a_config_file_planted_by_another_user_in_the_working_directory_is_refused() -> None:
    needs_other_user()
    with shared_directory() as shared:
        planted = shared / "opslevel.yaml"
        made = as_other(["sh", "-c", f"echo 'api-url: https://127.0.0.1:9' > {planted}"])
        assert made.returncode == 0, made.stderr
        result = subprocess.run(
            [sys.executable, "-m", "trunner", "run", "--mode", "api", "--api-max-retries", "0"],
            cwd=shared,
            capture_output=True,
            text=True,
            timeout=60,
            env=clean_env(OPSLEVEL_API_TOKEN="victim-token-123", PYTHONPATH=str(ROOT)),
        )
    assert result.returncode == 2, result.stderr
    assert f"belongs to another user (uid {other_uid()})" in result.stderr
    assert "victim-token-123" not in result.stderr


@pytest.fixture
def runner_log() -> Iterator[None]:
    """The runner log as the test found it, after ``settings_source`` set it up."""
    logger = logging.getLogger("trunner")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved


def test_the_runner_log_names_the_config_file_it_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], runner_log: None
) -> None:
    path = tmp_path / "runner.yaml"
    path.write_text("log-level: INFO\n")
    settings_source(app.parse_args(["validate", "-c", str(path)]))
    assert f"read the config file {path}" in capsys.readouterr().err
