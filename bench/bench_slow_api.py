"""A slow but steady API: every append takes 1, 5, 15 or 30 s and always succeeds.

One job prints 200,000 lines of 100 bytes (20 MB, 640 batches of 32 KiB: at 1 s per append
delivery alone takes over 10 minutes, at 30 s over 5 hours) through each executor:

- kubernetes: the Kubernetes executor under ``run_job`` against the API double on loopback (pod,
  watch, the exec WebSocket with its keepalive of 10 s pings and a 60 s timeout);
- local: the local executor running a real child process that writes the lines into a pipe
  enlarged to 1 MiB, so that the shell exits with up to 1 MiB still unread.

with the log buffer in memory (two batches; the reader is held almost all the time) and as a
1 MiB spool. Everything runs in virtual time (trio's MockClock), so hours of appends take
seconds. Per row: the fraction of the job's lines the sink received, whether the job ended with
its own exit status (not killed: ``success``), and the job's wall time (virtual) against the
least the sink allows (batches delivered x seconds per append), measured in the same run.
Target: every line, no killed job, wall time ratio about 1.

Run: ``.venv/bin/python bench/bench_slow_api.py [--delays 1,5,15,30] [--lines 200000]``.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import shlex
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs
import trio
import trio.lowlevel
import trio.testing

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.doubles.kube import serve_kube_api
from tests.doubles.kube_exec import ExecRequest, Exit, Script, Stdout
from trunner.executors import local
from trunner.executors.kubernetes import KubernetesExecutor
from trunner.executors.kubernetes.settings import JobPodConfig
from trunner.executors.local import LocalExecutor
from trunner.executors.settings import JobRunSettings
from trunner.job import run_job
from trunner.kube.auth import StaticAuth
from trunner.kube.client import KubeApiSettings, KubeClient
from trunner.kube.config import KubeConfig
from trunner.logs import spool
from trunner.logs.batch import Batch
from trunner.logs.settings import LogSettings
from trunner.models import JobOutcome, RunnerJob

NS = "bench"
WIDTH = 100
BATCH = 32 * 1024
LOOPBACK_THRESHOLD = 0.005
"""Real seconds of idleness before the virtual clock jumps when loopback sockets are involved (as
the tests' clock): with 0 it could jump while data is still in the kernel."""


async def _inline(fn: Callable[..., Any], *args: Any) -> Any:
    await trio.lowlevel.checkpoint()
    return fn(*args)


# Spool file operations run in worker threads in production; under a virtual clock the clock
# would jump ahead while a thread works (firing the stall timeout at random), so they run inline
# here, as in the tests.
spool.offload = _inline


def line(i: int) -> bytes:
    return b"%09d " % i + b"x" * (WIDTH - 11) + b"\n"


class SteadySink:
    """Every append takes ``delay`` virtual seconds and succeeds; counts the job's lines."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.seen: set[int] = set()
        self.batches = 0
        self.outcome: JobOutcome | None = None

    async def ship(self, batch: Batch) -> None:
        await trio.sleep(self.delay)
        self.batches += 1
        for text in batch.lines():
            body = text.split(b"] ", 1)[-1]
            if body[:9].isdigit() and len(body) == WIDTH - 1:
                self.seen.add(int(body[:9]))

    async def report(self, outcome: JobOutcome) -> None:
        self.outcome = outcome


@attrs.frozen
class Row:
    executor: str
    buffer: str
    delay: float
    flush_timeout: float
    delivered: float
    outcome: str
    wall: float
    floor: float
    seconds: float


def log_settings(buffer: str, spool_dir: str, flush_timeout: float) -> LogSettings:
    return LogSettings(
        job_pod_log_max_size=BATCH,
        job_log_buffer=buffer,
        job_log_spool_dir=spool_dir,
        job_log_spool_size=1024 * 1024,
        log_flush_timeout=flush_timeout,
        log_flush_max_time=1e7,
    )


async def kubernetes_job(lines: int, sink: SteadySink, settings: LogSettings) -> JobOutcome:
    data = b"".join(line(i) for i in range(lines))
    steps = tuple(Stdout(data[i : i + 1024 * 1024]) for i in range(0, len(data), 1024 * 1024))

    def plan(_: ExecRequest) -> Script:
        return Script((*steps, Exit(0)))

    async with serve_kube_api() as api:
        api.exec_plan = plan
        config = KubeConfig(server=api.url, namespace=NS, auth=StaticAuth("bench"), source="bench")
        async with KubeClient.open(config, KubeApiSettings(), rng=random.Random(1)) as client:
            # A lifetime beyond reach: at 30 s per append the job is held for hours (virtual).
            # The double plays one scripted exec stream: the single-stream exec, not the durable stage.
            pod_config = JobPodConfig(
                namespace=NS, owner="runner-bench", helper_image=None, lifetime=1e7, durable=False
            )
            executor = KubernetesExecutor(client, pod_config, runner_id="bench")
            job = RunnerJob(id="slow-api", image="bench", commands=("print lines",))
            return await run_job(job, executor=executor, sink=sink, settings=settings)


async def local_job(lines: int, sink: SteadySink, settings: LogSettings) -> JobOutcome:
    program = (
        "import fcntl, sys; fcntl.fcntl(1, 1031, 1 << 20); "
        f"sys.stdout.buffer.write(b''.join(b'%09d ' % i + b'x' * {WIDTH - 11} + b'\\n' for i in range({lines})))"
    )
    command = f"{shlex.quote(sys.executable)} -c {shlex.quote(program)}"
    with tempfile.TemporaryDirectory(prefix="bench-slow-api-") as workdir:
        run_settings = JobRunSettings(
            job_pod_shell="/bin/sh", job_pod_workdir=workdir, job_pod_max_lifetime=math.inf
        )
        # Probing for a PID namespace runs a process under a 10 s limit, which virtual time cuts
        # short; the job's child runs in the namespace where the host allows one, as in production.
        local_probe = local._probe_isolation

        async def probe_on_the_real_clock(wrapper: list[str]) -> str | None:
            return await trio.to_thread.run_sync(lambda: trio.run(local_probe, wrapper))

        local._probe_isolation = probe_on_the_real_clock
        executor = LocalExecutor(run_settings, base_env={"PATH": os.environ["PATH"]})
        return await run_job(
            RunnerJob(id="slow-api", commands=(command,)), executor=executor, sink=sink, settings=settings
        )


JOBS: dict[str, tuple[Callable[[int, SteadySink, LogSettings], Awaitable[JobOutcome]], float]] = {
    "kubernetes": (kubernetes_job, LOOPBACK_THRESHOLD),
    "local": (local_job, 0.0),
}


def measure(executor: str, buffer: str, delay: float, lines: int, flush_timeout: float) -> Row:
    job, threshold = JOBS[executor]
    sink = SteadySink(delay)
    with tempfile.TemporaryDirectory(prefix="bench-slow-api-spool-") as spool_dir:
        settings = log_settings(buffer, spool_dir, flush_timeout)

        async def main() -> tuple[JobOutcome, float]:
            started = trio.current_time()
            outcome = await job(lines, sink, settings)
            return outcome, trio.current_time() - started

        real = time.perf_counter()
        outcome, wall = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=threshold))
        real = time.perf_counter() - real
    return Row(
        executor,
        buffer,
        delay,
        flush_timeout,
        len(sink.seen) / lines,
        outcome.outcome.value + (f" ({outcome.message})" if outcome.message else ""),
        wall,
        sink.batches * delay,
        real,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--delays", default="1,5,15,30")
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--executors", default="kubernetes,local")
    parser.add_argument("--buffers", default="memory,spool")
    args = parser.parse_args()
    delays = [float(d) for d in args.delays.split(",")]
    print(
        f"slow but steady API: {args.lines:,} lines of {WIDTH} bytes, batches of {BATCH // 1024} KiB, "
        "every append succeeding after a fixed delay (virtual time)"
    )
    print(
        f"{'executor':<11} {'buffer':<7} {'s/append':>8} {'flush-timeout':>13} {'delivered':>9} "
        f"{'wall (virtual)':>15} {'x floor':>7} {'real s':>6}  outcome"
    )
    for executor in args.executors.split(","):
        for buffer in args.buffers.split(","):
            for delay in delays:
                # The final flush gives up after --log-flush-timeout (30 s) without a delivery: an
                # append as slow as that needs it raised (as it needs --api-timeout raised).
                for flush_timeout in [30.0] if delay < 30 else [30.0, 2 * delay]:
                    row = measure(executor, buffer, delay, args.lines, flush_timeout)
                    ratio = row.wall / row.floor if row.floor else float("nan")
                    print(
                        f"{row.executor:<11} {row.buffer:<7} {row.delay:>8g} {row.flush_timeout:>13g} "
                        f"{row.delivered:>9.4f} {row.wall:>13.0f} s {ratio:>7.3f} {row.seconds:>6.1f}  "
                        f"{row.outcome[:90]}",
                        flush=True,
                    )
    print(
        "floor: batches delivered x seconds per append (the least the sink allows); "
        "target: delivered 1.0000, success"
    )


if __name__ == "__main__":
    main()
