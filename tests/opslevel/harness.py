"""Runs API mode in-process against the OpsLevel double, with any executor."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
import trio

from tests.doubles.opslevel import OpsLevelDouble
from trunner.config import SettingsSource
from trunner.executors.base import Executor
from trunner.opslevel.mode import ApiMode
from trunner.runner import RunSettings


def settings_source(double: OpsLevelDouble, **env: str) -> SettingsSource:
    environ = {
        "OPSLEVEL_API_URL": double.url,
        "OPSLEVEL_API_TOKEN": double.token,
        "OPSLEVEL_METRICS_PORT": "0",
        **env,
    }
    return SettingsSource(environ=environ)


@attrs.define
class RunningMode:
    mode: ApiMode
    done: trio.Event = attrs.Factory(trio.Event)
    code: int | None = None
    ended_at: float | None = None

    async def wait(self) -> int:
        await self.done.wait()
        assert self.code is not None
        return self.code

    async def stop(self) -> int:
        """Stop the mode as a first signal would; returns its exit code once it has ended."""
        self.mode.stop()
        return await self.wait()

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.mode.http_port}"


async def start_mode(
    nursery: trio.Nursery, double: OpsLevelDouble, executor: Executor | None = None, **env: str
) -> RunningMode:
    """Start ``ApiMode.serve`` in ``nursery``; returns once its HTTP server is up."""
    source = settings_source(double, **env)

    @asynccontextmanager
    async def open_executor(runner_id: str) -> AsyncIterator[Executor]:
        assert executor is not None
        yield executor

    mode = ApiMode(
        source,
        source.get(RunSettings),
        http_host="127.0.0.1",
        open_executor=open_executor if executor is not None else None,
    )
    running = RunningMode(mode)

    async def serve(task_status: trio.TaskStatus[None]) -> None:
        try:
            running.code = await mode.serve(task_status=task_status)
        finally:
            running.ended_at = trio.current_time()
            running.done.set()

    await nursery.start(serve)
    return running


def body_lines(double: OpsLevelDouble, job_id: str) -> list[str]:
    """The job's delivered lines without the ``<time> [<worker>] `` prefix."""
    return [line.split("] ", 1)[1] if "] " in line else line for line in double.job_lines(job_id)]


def job_output(double: OpsLevelDouble, job_id: str) -> list[str]:
    """Delivered lines the job printed itself (runner notes left out)."""
    return [line for line in body_lines(double, job_id) if not line.startswith("[trunner")]
