"""Faktory mode while the server is lost after start-up: the connection state in the metrics, an
outage shorter than ``--faktory-reconnect-max-time`` rides through (each outage counted from its
own start), SIGTERM during the reconnect backoff stops at once, and the max time is validated."""

from __future__ import annotations

import os
import signal

import pytest
import trio

from tests.doubles.executors import CountingExecutor
from tests.doubles.faktory import FaktoryDouble
from tests.faktory.test_mode import job_args, running_mode
from trunner.config import ConfigError, SettingsSource
from trunner.faktory.settings import FaktorySettings


def connected(handle: object) -> float | None:
    registry = handle.mode.metrics.registry  # type: ignore[attr-defined]
    value: float | None = registry.get_sample_value("trunner_faktory_connected", {"runner": "faktory"})
    return value


async def test_outages_shorter_than_the_max_time_ride_through_and_show_in_the_metrics(
    server: FaktoryDouble, autojump_clock: trio.testing.MockClock
) -> None:
    async with running_mode(server, CountingExecutor(), faktory_reconnect_max_time="120") as (handle, codes):
        await trio.sleep(20)
        assert connected(handle) == 1
        await server.stop()
        await trio.sleep(100)
        assert connected(handle) == 0
        await server.start()
        await trio.sleep(60)
        assert connected(handle) == 1
        jid = server.enqueue("legacy", job_args(1))
        await server.wait_for(lambda: server.acks == [jid])
        await server.stop()
        await trio.sleep(100)  # 200 s down in all, but no single outage reached 120 s
        assert not codes
        await server.start()
        await trio.sleep(60)
        assert connected(handle) == 1
        handle.runner.begin_shutdown()
    assert codes == [0]


async def test_sigterm_during_the_reconnect_backoff_stops_at_once(
    server: FaktoryDouble, autojump_clock: trio.testing.MockClock
) -> None:
    async with running_mode(server, CountingExecutor(), handle_signals=True) as (_handle, codes):
        await server.stop()
        await trio.sleep(45)
        os.kill(os.getpid(), signal.SIGTERM)
        stopping = trio.current_time()
    assert codes == [0]
    assert trio.current_time() - stopping < 5


@pytest.mark.parametrize("bad", ["0", "-1", "86401", "soon"])
def test_the_reconnect_max_time_is_validated(bad: str) -> None:
    with pytest.raises(ConfigError, match="FAKTORY_RECONNECT_MAX_TIME"):
        SettingsSource(environ={"OPSLEVEL_FAKTORY_RECONNECT_MAX_TIME": bad}).get(FaktorySettings)


def test_the_reconnect_max_time_defaults_to_five_minutes() -> None:
    assert SettingsSource(environ={}).get(FaktorySettings).faktory_reconnect_max_time == 300
