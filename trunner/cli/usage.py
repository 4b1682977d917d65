"""How the command line talks to a person, in the habits of kubectl, helm and cobra: a one-line
usage, typed flag values, the error first with a hint where to look, "did you mean" for a
mistyped flag, command or choice, and examples and exit statuses at the end of every help."""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from collections.abc import Iterable, Sequence
from typing import Any, NoReturn

from trunner.process import exits


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """``; did you mean X?`` for the closest candidate, or nothing."""
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=40, width=110)


_CHOICE = re.compile(
    r"argument (?P<arg>.+?): invalid choice: '(?P<value>.*?)' \(choose from (?P<choices>.*)\)"
)
_REQUIRED = re.compile(r"the following arguments are required: (?P<args>.*)")


class Parser(argparse.ArgumentParser):
    """Every trunner parser (subcommand parsers are made of the same class)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["formatter_class"] = HelpFormatter
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        if self.usage is None:
            self.usage = "%(prog)s [flags]"

    def options(self) -> list[str]:
        return [option for action in self._actions for option in action.option_strings]

    def error(self, message: str) -> NoReturn:
        self.exit(
            exits.USAGE, f"{self.prog}: error: {self.explain(message)}\nRun '{self.prog} --help' for usage.\n"
        )

    def explain(self, message: str) -> str:
        if message.startswith("unrecognized arguments: "):
            words = message.removeprefix("unrecognized arguments: ").split()
            flags = [word for word in words if word.startswith("-")]
            if flags:
                flag = flags[0].split("=", 1)[0]
                return f"unknown flag: {flag}{did_you_mean(flag, self.options())}"
            return f"unexpected argument: {words[0]}"
        if match := _CHOICE.fullmatch(message):
            choices = [c.strip().strip("'") for c in match["choices"].split(",")]
            what = "command" if match["arg"] in ("COMMAND", "command") else f"value for {match['arg']}"
            hint = did_you_mean(match["value"], choices)
            return f"unknown {what}: {match['value']!r}{hint or ' (choose ' + ', '.join(choices) + ')'}"
        if match := _REQUIRED.fullmatch(message):
            return f"required flag(s) not set: {match['args'].replace('/', ', ')}"
        return message


def epilog(examples: Sequence[tuple[str, str]], statuses: Sequence[tuple[int | str, str]]) -> str:
    """The end of a command's help: examples (description, command line) and exit statuses."""
    lines = ["examples:"]
    for description, command in examples:
        lines += [f"  # {description}", f"  {command}", ""]
    lines.append("exit status:")
    lines += [f"  {code:<8} {meaning}" for code, meaning in statuses]
    return "\n".join(lines)


USAGE_STATUS = (exits.USAGE, "bad flags, settings, config file or job file: nothing ran")
SIGNAL_STATUS = ("130, 143", "stopped by SIGINT (Ctrl-C) or SIGTERM")

EPILOGS = {
    "test": epilog(
        [
            ("run ./job.yaml as a pod through your kubeconfig", "trunner test"),
            ("read the job from standard input", "cat job.yaml | trunner test -f -"),
            (
                "run a job file on this machine, without a cluster",
                "trunner test -f examples/jobs/01-hello.yaml --executor local",
            ),
        ],
        [
            (exits.OK, "the job succeeded"),
            (
                exits.FAILED,
                "the job did not succeed (failed, timed out, could not start), or the cluster could not "
                "be reached",
            ),
            (
                exits.USAGE,
                "bad flags, settings, config or job file, or no usable cluster config (hint: "
                "--executor local): nothing ran",
            ),
            SIGNAL_STATUS,
        ],
    ),
    "run": epilog(
        [
            ("take jobs from OpsLevel", "OPSLEVEL_API_TOKEN=<token> trunner run --job-concurrency 5"),
            ("run every job file in a folder on this host", "trunner run --mode local --jobs examples/jobs"),
            ("consume jobs from Faktory", "FAKTORY_URL=tcp://localhost:7419 trunner run --mode faktory"),
        ],
        [
            (exits.OK, "shut down cleanly (--mode local: every job succeeded)"),
            (
                exits.FAILED,
                "could not start (API, executor, metrics port), or --mode local: a job did not succeed",
            ),
            USAGE_STATUS,
            ("130, 143", "--mode local stopped by SIGINT (Ctrl-C) or SIGTERM"),
        ],
    ),
    "enqueue": epilog(
        [
            (
                "push a job to the queue in FAKTORY_URL",
                "FAKTORY_URL=tcp://localhost:7419 trunner enqueue -f job.yaml",
            )
        ],
        [
            (exits.OK, "the job was pushed"),
            (exits.FAILED, "Faktory could not be reached or refused it"),
            USAGE_STATUS,
        ],
    ),
    "validate": epilog(
        [
            ("check a job file", "trunner validate -f examples/jobs/01-hello.yaml"),
            ("check a config file", "trunner validate -c examples/opslevel.yaml"),
            (
                "check both, and the settings in the environment",
                "trunner validate -f job.yaml -c opslevel.yaml",
            ),
        ],
        [
            (exits.OK, "everything given is valid"),
            (exits.FAILED, "a problem was found (each one is listed)"),
            USAGE_STATUS,
        ],
    ),
    "completion": epilog(
        [
            ("load completion into the current bash", "source <(trunner completion bash)"),
            ("install it for zsh", 'trunner completion zsh > "${fpath[1]}/_trunner"'),
            ("install it for fish", "trunner completion fish > ~/.config/fish/completions/trunner.fish"),
        ],
        [(exits.OK, "the script was printed"), USAGE_STATUS],
    ),
    "version": epilog([("print the version", "trunner version")], [(exits.OK, "always")]),
}


def finish(parser: argparse.ArgumentParser, commands: dict[str, argparse.ArgumentParser]) -> None:
    """Give every command its examples and exit statuses."""
    for name, command in commands.items():
        if name in EPILOGS:
            command.epilog = EPILOGS[name]
    parser.epilog = "Run 'trunner <command> --help' for a command's flags, examples and exit statuses."


def print_help_and_exit(parser: argparse.ArgumentParser) -> NoReturn:
    parser.print_help(sys.stdout)
    sys.exit(exits.OK)
