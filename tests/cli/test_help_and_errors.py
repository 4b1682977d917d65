"""Help, usage errors, completion and validate, in the habits of kubectl/helm/cobra."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.cli.support import ROOT, trunner, write_job

COMMANDS = ("test", "run", "validate", "enqueue", "completion", "version")


def test_bare_trunner_prints_help_and_succeeds():
    result = trunner()
    assert result.returncode == 0 and result.stderr == ""
    assert result.stdout.startswith("usage: trunner <command> [flags]")
    for command in COMMANDS:
        assert f"    {command}" in result.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_every_help_has_examples_exit_statuses_and_no_python(command):
    result = trunner(command, "--help")
    assert result.returncode == 0
    out = result.stdout
    assert out.startswith(f"usage: trunner {command} [flags]")
    assert "examples:\n  # " in out and "exit status:\n  0 " in out
    for python in ("None", "NoneType", "True", "False", "<class", "argparse"):
        assert python not in out, python


def test_flags_show_their_value_types():
    out = trunner("run", "--help").stdout
    assert "--job-concurrency int " in out
    assert "--shutdown-grace seconds " in out
    assert "--job-pod-namespace string " in out
    assert "--job-agent-mode [bool] " in out


def test_run_help_lists_exit_codes_including_signals():
    out = trunner("run", "--help").stdout
    assert "  1        could not start" in out and "130, 143" in out


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["tset"], "trunner: error: unknown command: 'tset'; did you mean test?"),
        (
            ["run", "--job-concurency", "3"],
            "trunner run: error: unknown flag: --job-concurency; did you mean --job-concurrency?",
        ),
        (
            ["test", "-f", "x", "--executor", "kubernets"],
            "trunner test: error: unknown value for --executor: 'kubernets'; did you mean kubernetes?",
        ),
        (
            ["completion", "tcsh"],
            "trunner completion: error: unknown value for bash|zsh|fish: 'tcsh' (choose bash, zsh, fish)",
        ),
    ],
)
def test_a_usage_error_is_the_error_first_then_one_hint(argv, error):
    result = trunner(*argv)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    command = " ".join(["trunner", *argv[:1]]) if argv[0] in COMMANDS else "trunner"
    assert lines == [error, f"Run '{command} --help' for usage."]


def test_a_mistyped_choice_setting_suggests_the_closest():
    result = trunner("run", "--mode", "lcal")
    assert result.returncode == 2
    assert "--mode (OPSLEVEL_MODE): must be one of api, faktory, local (did you mean local?)" in result.stderr


def test_flags_are_not_abbreviated():
    result = trunner("run", "--job-conc", "3")
    assert result.returncode == 2 and "unknown flag: --job-conc" in result.stderr


@pytest.mark.parametrize("port", ["99999", "-1"])
def test_ports_are_validated_in_every_mode(tmp_path, port):
    (tmp_path / "jobs").mkdir()
    result = trunner("run", "--mode", "local", "--jobs", str(tmp_path / "jobs"), "--metrics-port", port)
    assert result.returncode == 2
    assert "--metrics-port (OPSLEVEL_METRICS_PORT): must be a TCP port (0-65535)" in result.stderr


@pytest.mark.parametrize(
    ("job", "problem"),
    [
        ("id: '1'\ncommands: echo hi\n", "commands: expected a list, got string"),
        ('id: "1"\ncommands: null\n', "commands: expected a list, got null"),
    ],
)
def test_a_bad_job_file_is_one_line_in_yaml_words_without_traceback(job, problem):
    result = trunner("test", "-f", "-", stdin=job)
    assert result.returncode == 2
    assert result.stderr.strip() == f"trunner: <stdin>: {problem}"


# --- validate ------------------------------------------------------------------------------------


def test_validate_accepts_the_examples_without_running_them():
    result = trunner(
        "validate",
        "-f",
        "examples/jobs/01-hello.yaml",
        "-f",
        "examples/failing.yaml",
        "-c",
        "examples/opslevel.yaml",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "examples/opslevel.yaml: valid configuration",
        "examples/jobs/01-hello.yaml: valid job 1 (5 commands, 1 file, 2 variables)",
        "examples/failing.yaml: valid job 5 (4 commands, 0 files, 0 variables)",
    ]
    assert "about to fail" not in result.stdout


def test_validate_lists_every_problem_of_a_config_file(tmp_path):
    config = write_job(tmp_path / "opslevel.yaml", "job-concurrency: 0\nmetrics-port: 99999\nmode: lcal\n")
    result = trunner("validate", "-c", config)
    assert result.returncode == 1
    assert f"{config}: invalid configuration:" in result.stderr
    for problem in ("--job-concurrency", "--metrics-port", "did you mean local?"):
        assert problem in result.stderr


def test_validate_names_the_bad_field_of_a_job_file(tmp_path):
    job = write_job(
        tmp_path / "job.yaml", "id: 1\ncommands: [true]\nvariables: [{key: A, value: b, sensitive: maybe}]\n"
    )
    result = trunner("validate", "-f", job)
    assert result.returncode == 1
    assert f"{job}: variables[0].sensitive: expected true or false, got 'maybe'" in result.stderr


def test_validate_checks_the_chosen_executor(tmp_path):
    job = write_job(tmp_path / "job.yaml", 'id: "1"\ncommands: [echo hi]\n')
    assert trunner("validate", "-f", job).returncode == 0
    result = trunner("validate", "-f", job, "--executor", "kubernetes")
    assert result.returncode == 1 and "cannot run on the kubernetes executor" in result.stderr


def test_validate_with_nothing_to_check_is_a_usage_error():
    result = trunner("validate")
    assert result.returncode == 2 and "give -f JOB_FILE and/or -c CONFIG_FILE" in result.stderr


# --- large job files -------------------------------------------------------------------------------


def test_a_huge_job_file_is_refused_before_parsing(tmp_path):
    path = tmp_path / "huge.yaml"
    with path.open("w") as handle:
        handle.write('id: "1"\ncommands:\n')
        line = "  - echo " + "x" * 1000 + "\n"
        handle.write(line * (5 * 1024))
    result = trunner("test", "-f", str(path), timeout=30)
    assert result.returncode == 2
    assert result.stderr.strip() == f"trunner: {path}: job file is larger than 4 MiB"


def test_a_script_too_long_for_one_argument_fails_with_a_reason(tmp_path):
    commands = "".join(f"  - echo {'y' * 1000}\n" for _ in range(200))
    job = write_job(tmp_path / "long.yaml", f'id: "1"\ncommands:\n{commands}')
    result = trunner("test", "--executor", "local", "-f", job, timeout=30)
    assert result.returncode == 1
    assert "Argument list too long" not in result.stdout
    assert "a command line argument is limited to 127 KiB" in result.stdout


# --- completion ------------------------------------------------------------------------------------


def _bash_complete(words: str) -> list[str]:
    script = trunner("completion", "bash").stdout
    line = f"{script}\nCOMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}}-1)); _trunner; printf '%s\\n' \"${{COMPREPLY[@]}}\""
    result = subprocess.run(["bash", "-c", line], capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_bash_completes_commands_flags_and_values():
    assert _bash_complete("trunner te") == ["test"]
    assert "--job-concurrency" in _bash_complete("trunner run --job-con")
    assert _bash_complete("trunner run --mode ''") == ["api", "faktory", "local"]
    assert _bash_complete("trunner test --executor k") == ["kubernetes"]
    assert _bash_complete("trunner completion ''") == ["bash", "zsh", "fish"] or "bash" in _bash_complete(
        "trunner completion ''"
    )


@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_zsh_and_fish_scripts_parse(shell):
    script = trunner("completion", shell)
    assert script.returncode == 0 and "trunner" in script.stdout
    if shutil.which(shell) is None:
        pytest.skip(f"{shell} is not installed here")
    check = (
        ["zsh", "-n", "-c", script.stdout]
        if shell == "zsh"
        else ["fish", "--no-execute", "-c", script.stdout]
    )
    assert subprocess.run(check, capture_output=True, timeout=30).returncode == 0


def test_validate_reports_container_security_settings_that_would_be_dropped_or_refused(tmp_path):
    config = write_job(
        tmp_path / "opslevel.yaml",
        "kubernetes:\n  securityContext: {allowPrivilegeEscalation: false}\n"
        "  containerSecurityContext: {seccompProfile: {type: Default}}\n",
    )
    result = trunner("validate", "-c", config)
    assert result.returncode == 1
    assert "kubernetes.securityContext.allowPrivilegeEscalation: a container setting" in result.stderr
    assert "kubernetes.containerSecurityContext.seccompProfile.type: must be one of" in result.stderr
