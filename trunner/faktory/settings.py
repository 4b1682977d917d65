"""Settings of Faktory mode. The server itself comes from ``FAKTORY_URL`` /
``FAKTORY_PROVIDER`` in the environment, as with every Faktory client."""

from __future__ import annotations

import attrs

from trunner.config import at_most, positive, setting
from trunner.faktory.protocol import check_queue_name


def _queues(value: tuple[str, ...]) -> str | None:
    if not value:
        return "must name at least one queue"
    problems = [p for p in (check_queue_name(name) for name in value) if p]
    if len(set(value)) != len(value):
        problems.append("lists a queue twice")
    return "; ".join(problems) or None


def _labels(value: tuple[str, ...]) -> str | None:
    return None if all(label.strip() for label in value) else "labels cannot be empty"


def _heartbeat(value: float) -> str | None:
    # The protocol: not more often than every 5 s, at least every 60 s.
    return None if 5 <= value <= 60 else "must be between 5 and 60 seconds (the Faktory protocol's bounds)"


@attrs.frozen
class FaktorySettings:
    """Faktory mode"""

    queues: tuple[str, ...] = setting(
        ("default",),
        help="Faktory queue to fetch jobs from; repeat the flag (or separate names by commas, or by "
        "spaces in the environment) for several, in strict priority order.",
        checks=[_queues],
        words=True,
    )
    faktory_labels: tuple[str, ...] = setting(
        ("trunner",), help="Labels of this worker process, shown in the Faktory Web UI.", checks=[_labels]
    )
    faktory_timeout: float = setting(
        5.0,
        help="Seconds connecting and each Faktory command may take (FETCH waits up to 2 s longer).",
        checks=[positive, at_most(300)],
    )
    faktory_heartbeat_interval: float = setting(
        15.0, help="Seconds between heartbeats (BEAT) to the Faktory server.", checks=[_heartbeat]
    )
    faktory_reconnect_max_time: float = setting(
        300.0,
        help="Seconds the worker keeps reconnecting (1 s doubling to 30 s, jittered) after losing its Faktory "
        "connection; after that long without one it stops fetching, gives running jobs --shutdown-grace and "
        "exits 1 so that it is restarted.",
        checks=[positive, at_most(86400)],
    )
