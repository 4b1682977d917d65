"""The scaling tests' cluster (tests/opslevel/scaling_support.py), for the chart Role's scaling
tests, and ``cli``: trunner's command line run in this process (its ``main``, as ``python -m
trunner`` runs it), for checks that need no process of their own."""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Callable, Iterator

import pytest

from tests.opslevel.scaling_support import api
from trunner.cli.app import main

__all__ = ["api", "cli"]

Cli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Cli]:
    logger = logging.getLogger("trunner")
    saved = (logger.handlers[:], logger.level, logger.propagate)

    def run(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        for key, value in (env or {}).items():
            monkeypatch.setenv(key, value)
        capsys.readouterr()
        try:
            code = main(list(argv))
        except SystemExit as exc:
            code = int(exc.code or 0)
        finally:
            logger.handlers[:], logger.level, logger.propagate = saved
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(list(argv), code, out, err)

    yield run
    logger.handlers[:], logger.level, logger.propagate = saved
