"""The Go runner's command line, as trunner accepts it.

cobra lets the root command's persistent flags stand before the subcommand
(``opslevel-runner --log-level debug run``) and accepts every one of them on every subcommand, used
or not. :func:`hoist_global_flags` moves options written before the subcommand behind it, so that
argparse's subcommand parsers see them; :func:`split_go_flags` sorts out of argparse's leftovers the
Go flags a subcommand has no use for, so that they are reported as ignored instead of refused.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Sequence

import attrs

GO_PERSISTENT_FLAGS: dict[str, bool] = {
    "--config": True,
    "-c": True,
    "--api-url": True,
    "--api-token": True,
    "--log-format": True,
    "--log-level": True,
    "--scaling-enabled": False,
    "--job-pod-max-wait": True,
    "--job-pod-exec-max-wait": True,
    "--job-pod-max-lifetime": True,
    "--job-pod-namespace": True,
    "--job-pod-requests-cpu": True,
    "--job-pod-requests-memory": True,
    "--job-pod-requests-ephemeral-storage": True,
    "--job-pod-limits-cpu": True,
    "--job-pod-limits-memory": True,
    "--job-pod-limits-ephemeral-storage": True,
    "--job-pod-shell": True,
    "--job-pod-workdir": True,
    "--job-pod-log-max-interval": True,
    "--job-pod-log-max-size": True,
    "--job-agent-mode": False,
    "--job-pod-helper-image": True,
    "--queue": True,
    "--k8s-api-qps": True,
    "--k8s-api-burst": True,
    "--runner-pod-name": True,
    "--runner-pod-namespace": True,
    "--runner-deployment": True,
    "--runner-min-replicas": True,
    "--runner-max-replicas": True,
}
"""Flags of the Go runner's root command (``src/cmd/root.go``), and whether each takes a value."""

DEPRECATED_FLAGS: dict[str, str] = {
    "--log-max-bytes": "--job-pod-log-max-size",
    "--log-max-time": "--job-pod-log-max-interval",
}
"""Flags of the Go runner's ``run`` that it never read, and the flag that does the job."""

_BOOL_WORDS = frozenset({"true", "false", "1", "0", "yes", "no", "on", "off", "t", "f"})


@attrs.frozen
class IgnoredFlag:
    flag: str
    reason: str


def _option_arity(parsers: Iterable[argparse.ArgumentParser]) -> dict[str, int | str | None]:
    """Every option string of ``parsers`` with its nargs (None: exactly one value; 0: none)."""
    arity: dict[str, int | str | None] = {}
    for parser in parsers:
        for action in parser._actions:
            for option in action.option_strings:
                arity.setdefault(option, action.nargs)
    return arity


def hoist_global_flags(argv: Sequence[str], commands: dict[str, argparse.ArgumentParser]) -> list[str]:
    """``argv`` with the options before the subcommand moved right behind it. Without a
    recognisable subcommand ``argv`` is returned unchanged, for argparse to report."""
    arity = _option_arity(commands.values())
    for flag, takes_value in {**GO_PERSISTENT_FLAGS, **dict.fromkeys(DEPRECATED_FLAGS, True)}.items():
        arity.setdefault(flag, None if takes_value else 0)
    index = 0
    while index < len(argv):
        token = argv[index]
        if token in commands:
            if index == 0:
                return list(argv)
            return [token, *argv[:index], *argv[index + 1 :]]
        if not token.startswith("-") or token in ("-", "--"):
            return list(argv)
        name, has_value, _ = token.partition("=")
        nargs = arity.get(name, 0)
        following = argv[index + 1] if index + 1 < len(argv) else None
        if has_value or (not name.startswith("--") and len(name) > 2):
            index += 1
        elif nargs is None or (nargs == "?" and following is not None and following.lower() in _BOOL_WORDS):
            index += 2
        else:
            index += 1
    return list(argv)


def split_go_flags(extras: Sequence[str]) -> tuple[list[IgnoredFlag], list[str]]:
    """Sort argparse's unrecognised arguments into Go flags this subcommand ignores (with their
    values) and arguments that are simply wrong."""
    ignored: list[IgnoredFlag] = []
    wrong: list[str] = []
    index = 0
    while index < len(extras):
        token = extras[index]
        name, has_value, _ = token.partition("=")
        if name in GO_PERSISTENT_FLAGS or name in DEPRECATED_FLAGS:
            takes_value = GO_PERSISTENT_FLAGS.get(name, True)
            if takes_value and not has_value:
                index += 1
            if name in DEPRECATED_FLAGS:
                reason = (
                    f"{name} is deprecated and has no effect (the Go runner never used it either); "
                    f"{DEPRECATED_FLAGS[name]} sets what it describes"
                )
            else:
                reason = f"{name} has no effect on this command (accepted as the Go runner accepts it)"
            ignored.append(IgnoredFlag(name, reason))
        else:
            wrong.append(token)
        index += 1
    return ignored, wrong
