"""A job id never becomes a path component unsanitised, in either executor's script."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from tests.cli.support import trunner, write_job
from trunner.executors.script import job_directory, job_directory_name, phase_argv

ESCAPING = """\
id: ../../etc
commands:
  - pwd
  - touch made-here
"""


def test_a_job_id_with_dot_dots_stays_inside_the_given_workdir(tmp_path):
    workdir = tmp_path / "work" / "deep"
    workdir.mkdir(parents=True)
    result = trunner(
        "test",
        "--executor",
        "local",
        "-f",
        write_job(tmp_path / "job.yaml", ESCAPING),
        "--job-pod-workdir",
        str(workdir),
    )
    assert result.returncode == 0, result.stderr
    made = list(tmp_path.rglob("made-here"))
    assert len(made) == 1 and made[0].parent.parent.parent == workdir, made
    assert made[0].parent.parent.name.startswith("trunner-work-")
    assert made[0].parent.name.startswith("etc-")
    assert not (tmp_path / "etc").exists() and not (tmp_path / "work" / "etc").exists()


def test_a_job_id_with_dot_dots_stays_inside_the_temporary_workdir(tmp_path):
    result = trunner(
        "test", "--executor", "local", "-f", write_job(tmp_path / "job.yaml", ESCAPING), env=None
    )
    assert result.returncode == 0, result.stderr
    printed = [line for line in result.stdout.splitlines() if "/trunner-job-" in line and "+ " not in line]
    assert printed and "/work/etc-" in printed[0], result.stdout


@given(st.text(min_size=1, max_size=300))
def test_every_id_maps_to_one_plain_component(job_id):
    name = job_directory_name(job_id)
    assert name and "/" not in name and "\0" not in name and not name.startswith(".")
    assert name.isascii() and len(name) <= 100
    assert Path("/w", name).parent == Path("/w")


@given(st.text(min_size=1, max_size=40), st.text(min_size=1, max_size=40))
def test_distinct_ids_get_distinct_directories(a, b):
    if a != b:
        assert job_directory_name(a) != job_directory_name(b)


def test_plain_ids_are_kept_as_they_are():
    assert job_directory("/jobs", "42") == "/jobs/42"
    assert job_directory("/jobs/", "Z2lkOi8vb3BzbGV2ZWwvMTIz") == "/jobs/Z2lkOi8vb3BzbGV2ZWwvMTIz"


def test_the_pod_script_mkdirs_the_safe_name():
    argv = phase_argv("/bin/sh", "/jobs", "../../etc; rm -rf /", ["true"])
    script = argv[-1]
    assert "/jobs/etc_rm_-rf-" in script and ".." not in script and "; rm" not in script
