"""The OpsLevel chart's example config sets ``workingDir: "/mount"``, where both runners mount the
helper's volume: ``trunner validate -c`` and the runner's startup warn about it."""

from __future__ import annotations

import pytest

from tests.cli.support import trunner
from trunner.executors.kubernetes.podspec import workdir_collision


@pytest.mark.parametrize(
    "workdir", ["/mount", "/mount/", "/mount/jobs", "//mount", "/", "/opslevel", "/opslevel/x"]
)
def test_a_workdir_on_or_around_a_pod_mount_collides(workdir: str) -> None:
    assert workdir_collision(workdir) is not None


@pytest.mark.parametrize("workdir", ["/jobs", "/mountain", "/mnt", "/workspace/mount", "/opslevel-jobs"])
def test_other_workdirs_do_not(workdir: str) -> None:
    assert workdir_collision(workdir) is None


def test_validate_warns_about_the_charts_example_workdir(tmp_path) -> None:
    config = tmp_path / "opslevel.yaml"
    config.write_text('kubernetes:\n  workingDir: "/mount"\n')
    result = trunner("validate", "-c", str(config))
    assert result.returncode == 0, result.stderr
    assert "workingDir '/mount' collides with /mount" in result.stderr and "level=warn" in result.stderr
    config.write_text("kubernetes:\n  workingDir: /jobs\n")
    assert "collides" not in trunner("validate", "-c", str(config)).stderr


def test_the_flag_form_is_warned_about_too(cli, tmp_path) -> None:
    config = tmp_path / "opslevel.yaml"
    config.write_text("job-pod-workdir: /opslevel/work\n")
    result = cli("validate", "-c", str(config))
    assert "collides with /opslevel" in result.stderr
