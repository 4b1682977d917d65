"""Command line entry point: ``trunner <command>``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from trunner import __version__
from trunner.cli import gocli, usage
from trunner.cli.commands import completion, enqueue, help, run, test, validate, version
from trunner.config import ConfigError
from trunner.observability import errorreport
from trunner.process import hardening

COMMANDS = {
    "test": test.register,
    "run": run.register,
    "validate": validate.register,
    "enqueue": enqueue.register,
    "completion": completion.register,
    "version": version.register,
    "help": help.register,
}


def build_parser() -> argparse.ArgumentParser:
    parser = usage.Parser(
        prog="trunner",
        usage="trunner <command> [flags]",
        description="Run OpsLevel jobs as Kubernetes pods (or locally) with bounded, masked log shipping.",
    )
    parser.add_argument("--version", action="version", version=f"trunner {__version__}")
    subparsers = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, title="commands", prog="trunner"
    )
    for register in COMMANDS.values():
        register(subparsers)
    usage.finish(parser, _commands(parser))
    parser.set_defaults(root_parser=parser)
    return parser


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _file_keys(commands: dict[str, argparse.ArgumentParser]) -> set[str]:
    """Every top-level key a config file may hold: the long flag names of every command, the Go
    runner's flags, and the ``kubernetes`` section."""
    flags = {*gocli.GO_PERSISTENT_FLAGS, *gocli.DEPRECATED_FLAGS}
    for command in commands.values():
        flags.update(o for a in command._actions for o in a.option_strings)
    return {flag[2:] for flag in flags if flag.startswith("--")} - {"help", "config"} | {"kubernetes"}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line as cobra would: global flags may come before the subcommand, and
    Go flags a subcommand does not use are set aside (in ``ignored_flags``) rather than refused."""
    parser = build_parser()
    commands = _commands(parser)
    given = list(sys.argv[1:] if argv is None else argv)
    args, extras = parser.parse_known_args(gocli.hoist_global_flags(given, commands))
    ignored, wrong = gocli.split_go_flags(extras)
    if wrong:
        command = commands.get(getattr(args, "command", ""), parser)
        command.error(f"unrecognized arguments: {' '.join(wrong)}")
    args.ignored_flags = ignored
    args.known_file_keys = _file_keys(commands)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    if not (sys.argv[1:] if argv is None else argv):
        usage.print_help_and_exit(build_parser())
    args = parse_args(argv)
    hardening.make_undumpable()
    try:
        code: int = args.handler(args)
    except ConfigError as exc:
        print(f"trunner: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        errorreport.report_crash(exc)
        raise
    finally:
        errorreport.close()
    return code
