"""Options and set-up shared by the subcommands."""

from __future__ import annotations

import argparse

from trunner import runlog
from trunner.config import SettingsSource, add_arguments, read_config_file
from trunner.runlog import RunnerLogSettings


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        default=None,
        help="YAML config file: any setting by its flag name, plus the 'kubernetes:' job pod section.",
    )
    add_arguments(parser, RunnerLogSettings)


def settings_source(args: argparse.Namespace) -> SettingsSource:
    """Read the config file, set up the runner log, and return the source of every setting."""
    data, name = read_config_file(args.config)
    source = SettingsSource(args=args, file=data, source_name=name)
    log_settings = source.get(RunnerLogSettings)
    runlog.setup(log_settings.log_level, log_settings.log_format)
    return source
