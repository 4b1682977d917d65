"""Command line entry point: ``trunner <command>``."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from trunner import __version__
from trunner.config import ConfigError

COMMANDS = ("test", "run", "enqueue", "version")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trunner",
        description="Run OpsLevel jobs as Kubernetes pods (or locally) with bounded, masked log shipping.",
    )
    parser.add_argument("--version", action="version", version=f"trunner {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"trunner.commands.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.handler(args)
    except ConfigError as exc:
        print(f"trunner: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code
