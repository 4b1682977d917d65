"""Options and set-up shared by the subcommands."""

from __future__ import annotations

import argparse
import contextlib
import logging

from trunner.cli import gocli
from trunner.config import (
    ConfigError,
    SettingsSource,
    add_arguments,
    find_key,
    read_config_file,
    unknown_keys,
)
from trunner.faktory.client import locate_server
from trunner.logs.mask import Masker
from trunner.observability import errorreport, runlog
from trunner.observability.runlog import RunnerLogSettings
from trunner.opslevel.settings import ApiSettings
from trunner.process import credentials

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
    register_credentials(source)
    runlog.setup(
        log_settings.log_level,
        log_settings.log_format,
        log_settings.log_timestamp,
        mask=Masker(credentials.registered()).mask_text,
    )
    errorreport.init(source.environ, secrets=[value for _, value in credentials.registered()])
    if data or name != "config file":
        log.info("read the config file %s", name)
    for flag in source.secrets_on_command_line(ApiSettings):
        log.warning(
            "%s is given on the command line, where every local user can read it (ps, /proc); "
            "give it in the environment or in a file (%s-file) instead",
            flag,
            flag,
        )
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


def register_credentials(source: SettingsSource) -> None:
    """The credentials the runner itself holds: the API token, the userinfo of the API URL, the
    Faktory URL's password and the Sentry DSN's key."""
    for secret in source.given_secrets(ApiSettings):
        credentials.register("the runner's OpsLevel API token", secret)
    given = vars(source.args) if source.args is not None else {}
    urls = [given.get("api_url"), source.file.get("api-url")]
    urls += [source.environ.get(name) for name in ("OPSLEVEL_API_URL", "OPSLEVEL_APP_URL")]
    for url in urls:
        if isinstance(url, str):
            credentials.register_url("the runner's OpsLevel API URL", url)
    with contextlib.suppress(ConfigError):
        location = locate_server(source.environ)
        credentials.register("the runner's Faktory password", location.password)
    for name in ("FAKTORY_URL", source.environ.get("FAKTORY_PROVIDER", "")):
        if name and name in source.environ:
            credentials.register_url("the runner's Faktory URL", source.environ[name])
    credentials.register_url("the runner's Sentry DSN", source.environ.get("SENTRY_DSN", ""))
