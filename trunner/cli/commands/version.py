"""``trunner version``: the Go runner's JSON (``{version, git, go, opslevel}``) with trunner's own
values and the OpsLevel API's version from ``GET /api/ping``, so that scripts parsing the Go
runner's output keep working; ``--short`` prints one line instead."""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
from typing import Any

import attrs
import httpx
import trio

from trunner import __version__
from trunner.cli.commands.common import add_common_arguments, settings_source
from trunner.config import add_arguments, setting
from trunner.net.proxy import httpx_proxy, proxy_for
from trunner.net.tls import system_trust_context

log = logging.getLogger("trunner.version")

GIT_COMMIT = "none"
"""The Go runner's value when its build did not stamp a commit; trunner's builds stamp none."""
BUILD_DATE = "unknown"
PING_TIMEOUT = 10.0
_ARCH = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "i686": "386",
    "armv7l": "arm",
}


@attrs.frozen
class VersionSettings:
    """OpsLevel API"""

    api_url: str = setting(
        "https://api.opslevel.com",
        help="OpsLevel API URL whose /api/ping gives the app's version.",
        env=("OPSLEVEL_API_URL", "OPSLEVEL_APP_URL"),
    )


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "version", help="Print version information as JSON (the Go runner's shape), or one line with --short."
    )
    parser.add_argument(
        "--short", action="store_true", help="Print one line and do not ask the OpsLevel API."
    )
    add_common_arguments(parser)
    add_arguments(parser, VersionSettings)
    parser.set_defaults(handler=run)


def ping_url(api_url: str) -> str:
    """``<api-url>/api/ping``; an API URL given with its ``/graphql`` path is taken back to its root."""
    root = api_url.rstrip("/").removesuffix("/graphql")
    return root + "/api/ping"


def api_version(api_url: str, *, timeout: float = PING_TIMEOUT) -> dict[str, str]:
    """What ``GET /api/ping`` says of the OpsLevel app: ``app_commit`` (first 12 characters),
    ``app_date`` and ``app_version``, each only when given. Raises httpx.HTTPError or ValueError."""
    proxy = httpx_proxy(proxy_for(ping_url(api_url)), system_trust_context())
    with httpx.Client(timeout=timeout, verify=system_trust_context(), trust_env=False, proxy=proxy) as client:
        response = client.get(ping_url(api_url), headers={"Accept": "application/json"})
        response.raise_for_status()
        body = response.json()
    if not isinstance(body, dict):
        raise ValueError(f"expected a JSON object, got {type(body).__name__}")
    found = {
        key: body[key]
        for key in ("app_commit", "app_date", "app_version")
        if isinstance(body.get(key), str) and body[key]
    }
    if "app_commit" in found:
        found["app_commit"] = found["app_commit"][:12]
    return found


def build_info(opslevel: dict[str, str]) -> dict[str, Any]:
    """The Go runner's ``Build`` document with trunner's values (empty fields left out, as Go's
    omitempty does)."""
    merged = {"app_date": BUILD_DATE, **opslevel}
    machine = platform.machine().lower()
    runtime = {
        "version": f"python{platform.python_version()} trio{trio.__version__}",
        "compiler": platform.python_implementation(),
        "os": sys.platform if sys.platform != "win32" else "windows",
        "arch": _ARCH.get(machine, machine),
    }
    return {
        "version": __version__,
        "git": GIT_COMMIT[:12],
        "go": {k: v for k, v in runtime.items() if v},
        "opslevel": {key: merged[key] for key in ("app_commit", "app_date", "app_version") if key in merged},
    }


def run(args: argparse.Namespace) -> int:
    if args.short:
        print(f"trunner {__version__} (python {platform.python_version()}, trio {trio.__version__})")
        return 0
    source = settings_source(args)
    settings = source.get(VersionSettings)
    try:
        opslevel = api_version(settings.api_url)
    except (httpx.HTTPError, ValueError) as exc:
        log.warning("cannot read the OpsLevel API's version from %s: %s", ping_url(settings.api_url), exc)
        opslevel = {}
    print(json.dumps(build_info(opslevel), indent=4))
    return 0
