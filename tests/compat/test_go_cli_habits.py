"""cobra's command-line habits through trunner's real command line: ``help <command>`` and
``completion powershell`` (next to bash, zsh and fish)."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from tests.cli.support import trunner
from trunner.cli.app import build_parser
from trunner.cli.commands.completion import describe


@pytest.mark.parametrize("command", ["run", "test", "validate", "enqueue", "version", "completion"])
def test_help_command_prints_what_command_help_prints(cli, command: str) -> None:
    via_help = cli("help", command)
    via_flag = cli(command, "--help")
    assert via_help.returncode == 0 and via_flag.returncode == 0
    assert via_help.stdout == via_flag.stdout and via_help.stdout.startswith(f"usage: trunner {command}")


def test_help_run_through_the_installed_command() -> None:
    result = trunner("help", "run")
    assert result.returncode == 0 and result.stdout.startswith("usage: trunner run")


def test_help_alone_lists_the_commands_and_an_unknown_topic_is_a_usage_error(cli) -> None:
    listed = cli("help")
    assert listed.returncode == 0 and all(c in listed.stdout for c in ("run", "test", "help", "completion"))
    wrong = cli("help", "rnu")
    assert wrong.returncode == 2 and "did you mean run?" in wrong.stderr
    assert cli("--log-level", "debug", "help", "run").stdout.startswith("usage: trunner run")
    assert cli("help", "--api-url", "http://x", "run").stdout.startswith("usage: trunner run")


def test_completion_powershell_registers_every_command_and_flag(cli) -> None:
    result = cli("completion", "powershell")
    assert result.returncode == 0
    script = result.stdout
    assert "Register-ArgumentCompleter -Native -CommandName trunner" in script
    for command in describe(build_parser()):
        block = script.split(f"    '{command.name}' = @{{", 1)[1].split("\n    }\n", 1)[0]
        keys = re.findall(r"^            '([^']+)' = @\{", block, re.MULTILINE)
        assert keys == [n for f in command.flags for n in f.names]
        assert len({k.lower() for k in keys}) == len(keys), "PowerShell hashtable keys are case-insensitive"
    assert "'--executor' = @{" in script and "Values = @('kubernetes', 'local')" in script
    assert script.count("{") == script.count("}")


def test_the_powershell_script_runs_in_pwsh() -> None:
    pwsh = shutil.which("pwsh")
    if pwsh is None:
        pytest.skip("PowerShell (pwsh) is not installed on this machine")
    script = trunner("completion", "powershell").stdout
    check = (
        script
        + "\nTabExpansion2 -inputScript 'trunner ru' -cursorColumn 10 | % { $_.CompletionMatches.CompletionText }"
    )
    done = subprocess.run(
        [pwsh, "-NoProfile", "-Command", "-"], input=check, capture_output=True, text=True, timeout=60
    )
    assert "run" in done.stdout.split()


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_the_other_shells_offer_powershell_as_a_completion_shell(cli, shell: str) -> None:
    assert "powershell" in cli("completion", shell).stdout
