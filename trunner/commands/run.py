"""``trunner run``: take jobs from a source (OpsLevel API, Faktory, or local files) and run them."""

from __future__ import annotations

import argparse
import importlib
from types import ModuleType
from typing import Any, Protocol, cast

import attrs
import trio

from trunner.commands.common import add_common_arguments, settings_source
from trunner.config import ConfigError, SettingsSource, add_settings_arguments, one_of, setting
from trunner.executors import registry
from trunner.executors.settings import JobRunSettings
from trunner.logs.settings import LogSettings
from trunner.runner import RunSettings

MODES = {"api": "trunner.opslevel.mode", "faktory": "trunner.faktory.mode", "local": "trunner.local.mode"}


@attrs.frozen
class ModeSettings:
    """Job source"""

    mode: str = setting("api", help="Where jobs come from: api, faktory or local.", checks=[one_of(*MODES)])


class Mode(Protocol):
    SETTINGS: tuple[type[Any], ...]

    async def serve(self, source: SettingsSource, args: argparse.Namespace) -> int: ...


def _mode_module(name: str) -> Mode | None:
    try:
        module: ModuleType = importlib.import_module(MODES[name])
    except ModuleNotFoundError:
        return None
    return cast(Mode, module)


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
    for name in MODES:
        module = _mode_module(name)
        if module is not None:
            groups.extend(module.SETTINGS)
    return list(dict.fromkeys(groups))


def run(args: argparse.Namespace) -> int:
    source = settings_source(args)
    source.check_given(*setting_groups())
    mode = source.get(ModeSettings).mode
    args.mode = mode  # resolved from flag, OPSLEVEL_MODE or the file, for what reads the namespace
    module = _mode_module(mode)
    if module is None:
        raise ConfigError([f"--mode: {mode} mode is not available in this build"])
    code: int = trio.run(module.serve, source, args)
    return code
