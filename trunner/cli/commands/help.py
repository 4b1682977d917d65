"""``trunner help [command]``: a command's help, as cobra's ``help <command>`` prints it."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from trunner.cli.commands.common import add_common_arguments
from trunner.cli.usage import did_you_mean
from trunner.process import exits


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "help",
        help="Help about any command.",
        description="Print the help of a command (trunner help run), or the list of commands.",
    )
    parser.add_argument("topic", nargs="*", metavar="COMMAND", help="The command to explain.")
    add_common_arguments(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    root: argparse.ArgumentParser = args.root_parser
    commands = next(a for a in root._actions if isinstance(a, argparse._SubParsersAction)).choices
    if not args.topic:
        root.print_help()
        return exits.OK
    # A Go root flag's value (``help --api-url URL run``) lands among the words: the command is the
    # first word that names one.
    topic = next((word for word in args.topic if word in commands), None)
    if topic is None:
        word = args.topic[0]
        print(f"trunner help: unknown command {word!r}{did_you_mean(word, commands)}", file=sys.stderr)
        print("Run 'trunner help' for the list of commands.", file=sys.stderr)
        return exits.USAGE
    commands[topic].print_help()
    return exits.OK
