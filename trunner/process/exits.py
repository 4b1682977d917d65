"""Process exit statuses shared by every command, as shells and CI tools read them."""

from __future__ import annotations

import signal

OK = 0
FAILED = 1
"""A job did not succeed, or the runner could not do its work."""
USAGE = 2
"""Bad flags, settings, config file or job file: nothing was run."""


def for_signal(signum: int) -> int:
    """``128 + n``, what a shell reports for a process stopped by signal ``n`` (130 SIGINT, 143 SIGTERM)."""
    return 128 + signum


SIGNALS_HELP = f"{for_signal(signal.SIGINT)} interrupted (SIGINT, Ctrl-C), {for_signal(signal.SIGTERM)} terminated (SIGTERM)"
