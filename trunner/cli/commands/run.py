"""``trunner run``: take jobs from a source (OpsLevel API, Faktory, or local files) and run them."""

from __future__ import annotations

import argparse
from typing import Any, Protocol

import attrs
import trio

from trunner.cli.commands.common import add_common_arguments, settings_source
from trunner.config import SettingsSource, add_settings_arguments, one_of, setting
from trunner.executors import registry
from trunner.executors.settings import JobRunSettings
from trunner.faktory import mode as faktory_mode
from trunner.local import mode as local_mode
from trunner.logs.settings import LogSettings
from trunner.opslevel import mode as opslevel_mode
from trunner.runner import RunSettings


class Mode(Protocol):
    SETTINGS: tuple[type[Any], ...]

    async def serve(self, source: SettingsSource, args: argparse.Namespace) -> int: ...


MODES: dict[str, Mode] = {"api": opslevel_mode, "faktory": faktory_mode, "local": local_mode}


@attrs.frozen
class ModeSettings:
    """Job source"""

    mode: str = setting("api", help="Where jobs come from: api, faktory or local.", checks=[one_of(*MODES)])


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "run",
        help="Run jobs from the OpsLevel API (default), Faktory, or a folder of job files.",
    )
    parser.add_argument("--jobs", metavar="DIR", help="With --mode local: the folder of job files to run.")
    add_common_arguments(parser)
    add_settings_arguments(parser, setting_groups())
    parser.set_defaults(handler=run)


def setting_groups() -> list[type[Any]]:
    """Every settings group ``run`` takes, whichever mode and executor are chosen."""
    groups: list[type[Any]] = [
        ModeSettings,
        RunSettings,
        LogSettings,
        JobRunSettings,
        *registry.settings_classes(),
    ]
    for module in MODES.values():
        groups.extend(module.SETTINGS)
    return list(dict.fromkeys(groups))


def run(args: argparse.Namespace) -> int:
    source = settings_source(args)
    source.check_given(*setting_groups())
    mode = source.get(ModeSettings).mode
    code: int = trio.run(MODES[mode].serve, source, args)
    return code
