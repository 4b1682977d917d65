from __future__ import annotations

import argparse
import platform
from typing import Any

import trio

from trunner import __version__


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser("version", help="Print trunner's version.")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    print(f"trunner {__version__} (python {platform.python_version()}, trio {trio.__version__})")
    return 0
