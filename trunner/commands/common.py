"""Options and set-up shared by the subcommands."""

from __future__ import annotations

import argparse
import contextlib
import logging

from trunner import errorreport, gocli, runlog
from trunner.config import (
    ConfigError,
    SettingsSource,
    add_arguments,
    find_key,
    read_config_file,
    unknown_keys,
)
from trunner.faktory.client import locate_server
from trunner.opslevel.settings import ApiSettings
from trunner.runlog import RunnerLogSettings

log = logging.getLogger("trunner.config")


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        default=None,
        help="YAML config file: any setting by its flag name, plus the 'kubernetes:' job pod section "
        "(default ./opslevel.yaml when it exists; '.' reads it from standard input).",
    )
    add_arguments(parser, RunnerLogSettings)


def settings_source(args: argparse.Namespace) -> SettingsSource:
    """Read the config file, set up the runner log, report what the command line and the config
    file hold that nothing reads, and return the source of every setting."""
    data, name = read_config_file(args.config)
    source = SettingsSource(args=args, file=data, source_name=name)
    log_settings = source.get(RunnerLogSettings)
    runlog.setup(log_settings.log_level, log_settings.log_format, log_settings.log_timestamp)
    errorreport.init(source.environ, secrets=_process_secrets(source))
    for ignored in getattr(args, "ignored_flags", ()):
        log.warning("%s", ignored.reason)
    known = getattr(args, "known_file_keys", None)
    if known is not None:
        for warning in unknown_keys(data, known):
            log.warning("%s: %s", name, warning)
    for flag, replacement in gocli.DEPRECATED_FLAGS.items():
        if find_key(data, flag[2:])[0]:
            log.warning(
                "%s: %s is deprecated and has no effect; %s sets what it describes",
                name,
                flag[2:],
                replacement[2:],
            )
    return source


def _process_secrets(source: SettingsSource) -> list[str]:
    """The credentials the runner itself holds: the API token and the Faktory password."""
    secrets = source.given_secrets(ApiSettings)
    with contextlib.suppress(ConfigError):
        secrets.append(locate_server(source.environ).password)
    return secrets
