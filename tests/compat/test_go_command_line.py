"""The Go runner's command-line forms: global flags before the subcommand, repeatable and
space-separated lists, every flag from the environment, Go flags a subcommand ignores."""

from __future__ import annotations

import pytest

from trunner.cli.app import build_parser, parse_args
from trunner.cli.commands.run import ModeSettings
from trunner.cli.gocli import hoist_global_flags, split_go_flags
from trunner.config import SettingsSource, read_config_file, unknown_keys
from trunner.faktory.settings import FaktorySettings
from trunner.runner import RunSettings


def commands() -> dict:
    parser = build_parser()
    return next(a for a in parser._actions if hasattr(a, "choices") and a.choices).choices


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--log-level", "debug", "run"], ["run", "--log-level", "debug"]),
        (["--log-level=debug", "run", "--mode", "api"], ["run", "--log-level=debug", "--mode", "api"]),
        (["-c", "run.yaml", "test", "-f", "job.yaml"], ["test", "-c", "run.yaml", "-f", "job.yaml"]),
        (["--scaling-enabled", "run"], ["run", "--scaling-enabled"]),
        (["--scaling-enabled", "true", "run"], ["run", "--scaling-enabled", "true"]),
        (["--job-pod-exec-max-wait", "90", "run"], ["run", "--job-pod-exec-max-wait", "90"]),
        (["run", "--log-level", "debug"], ["run", "--log-level", "debug"]),
        (["--version"], ["--version"]),
        (["--log-level", "debug"], ["--log-level", "debug"]),
    ],
)
def test_global_flags_before_the_subcommand_move_behind_it(argv, expected):
    assert hoist_global_flags(argv, commands()) == expected


def test_a_value_that_looks_like_a_command_is_not_taken_for_one():
    assert hoist_global_flags(["--runner-deployment", "run", "test"], commands()) == [
        "test",
        "--runner-deployment",
        "run",
    ]


def test_go_flags_a_command_ignores_are_set_aside_with_their_values():
    ignored, wrong = split_go_flags(
        ["--api-url", "http://x", "--scaling-enabled", "--log-max-bytes=5", "--nope"]
    )
    assert [i.flag for i in ignored] == ["--api-url", "--scaling-enabled", "--log-max-bytes"]
    assert wrong == ["--nope"]
    assert "deprecated" in ignored[2].reason and "--job-pod-log-max-size" in ignored[2].reason


def test_parse_args_accepts_go_root_flags_on_every_command():
    args = parse_args(["--api-token", "t", "--job-pod-namespace", "ci", "enqueue", "-f", "job.yaml"])
    assert args.command == "enqueue" and args.file == "job.yaml"
    assert [i.flag for i in args.ignored_flags] == ["--api-token", "--job-pod-namespace"]


def test_parse_args_refuses_what_no_runner_knows(capsys):
    with pytest.raises(SystemExit) as info:
        parse_args(["run", "--no-such-flag"])
    assert info.value.code == 2
    assert "unknown flag: --no-such-flag" in capsys.readouterr().err


def test_queues_flag_is_repeatable():
    args = parse_args(["run", "--mode", "faktory", "--queues", "critical", "--queues", "runner"])
    assert SettingsSource(args=args, environ={}).get(FaktorySettings).queues == ("critical", "runner")


def test_queues_from_the_environment_are_space_separated():
    source = SettingsSource(args=parse_args(["run"]), environ={"OPSLEVEL_QUEUES": "critical  runner"})
    assert source.get(FaktorySettings).queues == ("critical", "runner")
    source = SettingsSource(args=parse_args(["run"]), environ={"OPSLEVEL_QUEUES": "a,b"})
    assert source.get(FaktorySettings).queues == ("a", "b")


def test_queues_in_the_config_file_as_a_list_or_text():
    for value in (["critical", "runner"], "critical runner"):
        source = SettingsSource(args=parse_args(["run"]), environ={}, file={"queues": value})
        assert source.get(FaktorySettings).queues == ("critical", "runner")


def test_mode_from_the_environment_as_the_go_runner_reads_it():
    source = SettingsSource(args=parse_args(["run"]), environ={"OPSLEVEL_MODE": "faktory"})
    assert source.get(ModeSettings).mode == "faktory"
    flagged = SettingsSource(args=parse_args(["run", "--mode", "api"]), environ={"OPSLEVEL_MODE": "faktory"})
    assert flagged.get(ModeSettings).mode == "api"


def test_viper_environment_names_with_dashes_are_read():
    source = SettingsSource(args=parse_args(["run"]), environ={"OPSLEVEL_JOB-CONCURRENCY": "7"})
    assert source.get(RunSettings).job_concurrency == 7
    both = {"OPSLEVEL_JOB-CONCURRENCY": "7", "OPSLEVEL_JOB_CONCURRENCY": "4"}
    assert SettingsSource(args=parse_args(["run"]), environ=both).get(RunSettings).job_concurrency == 4


def test_config_file_keys_match_case_insensitively():
    source = SettingsSource(args=parse_args(["run"]), environ={}, file={"Job-Concurrency": 6})
    assert source.get(RunSettings).job_concurrency == 6


def test_unknown_top_level_keys_are_warned_about_with_the_closest_key():
    args = parse_args(["run"])
    warnings = unknown_keys(
        {"job-concurency": 5, "kubernetes": {}, "log-max-bytes": 1, "zzz": 1}, args.known_file_keys
    )
    assert warnings == [
        "unknown key 'job-concurency' is ignored; did you mean 'job-concurrency'?",
        "unknown key 'zzz' is ignored",
    ]


def test_config_from_standard_input_with_dot():
    data, name = read_config_file(".", stdin=lambda: "job-concurrency: 2\n")
    assert data == {"job-concurrency": 2} and name == "<stdin>"


def test_default_config_file_is_read_when_present(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert read_config_file(None) == ({}, "config file")
    (tmp_path / "opslevel.yaml").write_text("job-concurrency: 9\n")
    assert read_config_file(None) == ({"job-concurrency": 9}, "opslevel.yaml")
