"""``trunner version`` prints the Go runner's JSON shape, with the OpsLevel API's version from
``GET /api/ping`` (against the OpsLevel double, through the real CLI)."""

from __future__ import annotations

import json
import subprocess
import sys

import trio

from tests.cli.support import ROOT, clean_env
from tests.doubles.opslevel import OpsLevelDouble
from trunner import __version__
from trunner.cli.commands.version import ping_url


async def version(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    done = await trio.run_process(
        [sys.executable, "-m", "trunner", *args],
        cwd=ROOT,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        env=clean_env(**(env or {})),
    )
    return subprocess.CompletedProcess(done.args, done.returncode, done.stdout.decode(), done.stderr.decode())


def test_ping_url_from_any_form_of_the_api_url() -> None:
    assert ping_url("https://api.opslevel.com") == "https://api.opslevel.com/api/ping"
    assert ping_url("https://api.opslevel-staging.com/graphql") == "https://api.opslevel-staging.com/api/ping"
    assert ping_url("http://opslevel:3000/") == "http://opslevel:3000/api/ping"


async def test_version_prints_the_go_runners_json_with_the_apis_version(opslevel: OpsLevelDouble) -> None:
    result = await version("version", "--api-url", opslevel.url)
    assert result.returncode == 0, result.stderr
    build = json.loads(result.stdout)
    assert list(build) == ["version", "git", "go", "opslevel"]
    assert build["version"] == __version__ and build["git"] == "none"
    assert list(build["go"]) == ["version", "compiler", "os", "arch"]
    assert build["opslevel"] == {
        "app_commit": "4f1c2a9e8b7d",
        "app_date": "2026-11-20T10:00:00Z",
        "app_version": "v2026.11.20",
    }
    assert result.stdout.startswith('{\n    "version": ')  # indented as Go's MarshalIndent(.., "", "    ")
    assert [c.operation for c in opslevel.calls] == ["ping"]


async def test_global_flags_and_env_reach_version(opslevel: OpsLevelDouble) -> None:
    result = await version("--api-url", opslevel.url + "/graphql", "version")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["opslevel"]["app_version"] == "v2026.11.20"
    result = await version("version", env={"OPSLEVEL_API_URL": opslevel.url})
    assert json.loads(result.stdout)["opslevel"]["app_version"] == "v2026.11.20"


async def test_an_unreachable_api_still_prints_the_shape_with_a_warning(opslevel: OpsLevelDouble) -> None:
    opslevel.ping = None
    result = await version("version", "--api-url", opslevel.url)
    assert result.returncode == 0
    assert json.loads(result.stdout)["opslevel"] == {"app_date": "unknown"}
    assert "cannot read the OpsLevel API's version" in result.stderr


async def test_short_prints_one_line_without_asking_the_api() -> None:
    result = await version("version", "--short", env={"OPSLEVEL_API_URL": "http://127.0.0.1:9"})
    assert result.returncode == 0 and result.stdout.startswith(f"trunner {__version__} (python ")
