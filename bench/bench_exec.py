"""Exec streaming figures from one run.

200 MB of 100-byte lines leave the Kubernetes API double's exec WebSocket (v5 channel framing,
~32 KiB messages, as the apiserver's translator writes them) on loopback, and are taken three ways:

1. raw: a bare trio-websocket client with the same socket settings, discarding the messages
   (the baseline, measured in the same run);
2. exec reader: ``trunner.kube.exec.exec_stream`` feeding an OutputFeed that only counts;
3. end to end: the Kubernetes executor (pod, ConfigMap, PDB, watch, exec) under ``run_job``
   with the log pipeline and a sink that accepts every batch at once.

The ratios to the raw rate are the figures (target for end to end: >= 0.5). The double and the
client share one process, so the double's framing cost is inside every figure; CPU seconds
(``process_time``) are printed next to wall seconds because the wall clock also counts other
load on the machine. Each figure is the best of a few interleaved rounds.
Run: ``.venv/bin/python bench/bench_exec.py``.
"""

from __future__ import annotations

import gc
import random
import sys
import time
from pathlib import Path

import trio
import trio_websocket

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.doubles.kube import KubeApiDouble, serve_kube_api
from tests.doubles.kube_exec import ExecRequest, Exit, Repeat, Script
from trunner.contracts import Stream
from trunner.executors.kubernetes import KubernetesExecutor
from trunner.executors.kubernetes.exec import MAX_MESSAGE_SIZE, RECEIVE_BUFFER_SIZE, SUBPROTOCOLS, exec_stream
from trunner.executors.kubernetes.settings import JobPodConfig
from trunner.job import run_job
from trunner.kube.auth import StaticAuth
from trunner.kube.client import KubeApiSettings, KubeClient
from trunner.kube.config import KubeConfig
from trunner.logs.batch import Batch
from trunner.logs.settings import LogSettings
from trunner.models import JobOutcome, RunnerJob

NS = "bench"
TOTAL_BYTES = 200 * 1024 * 1024
LINE = b"0123456789" * 9 + b"abcdefghi\n"  # 100 bytes with its newline
LINES = TOTAL_BYTES // len(LINE)
PAYLOAD = LINES * len(LINE)
ROUNDS = 3
POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "bench"},
    "spec": {"containers": [{"name": "job", "image": "bench", "command": ["sleep", "3600"]}]},
}


def firehose(_: ExecRequest) -> Script:
    return Script((Repeat(LINE, LINES), Exit(0)))


class CountingFeed:
    def __init__(self) -> None:
        self.bytes = 0

    def feed(self, stream: Stream, data: bytes) -> None:
        self.bytes += len(data)

    def note(self, text: str) -> None:
        return None

    async def wait_for_room(self) -> None:
        return None


class FastSink:
    def __init__(self) -> None:
        self.lines = 0
        self.outcome: JobOutcome | None = None

    async def ship(self, batch: Batch) -> None:
        self.lines += batch.line_count

    async def report(self, outcome: JobOutcome) -> None:
        self.outcome = outcome


Timing = tuple[float, float]
"""(wall seconds, CPU seconds)"""


def clocks() -> Timing:
    """Start of a measurement: garbage from the previous one is collected first."""
    gc.collect()
    return time.perf_counter(), time.process_time()


def elapsed(start: Timing) -> Timing:
    wall, cpu = clocks()
    return wall - start[0], cpu - start[1]


async def raw_rate(api: KubeApiDouble, pod: str) -> Timing:
    url = f"ws://127.0.0.1:{api.port}/api/v1/namespaces/{NS}/pods/{pod}/exec?command=cat&container=job&stdout=true"
    received = 0
    start = clocks()
    async with trio_websocket.open_websocket_url(
        url,
        subprotocols=list(SUBPROTOCOLS),
        max_message_size=MAX_MESSAGE_SIZE,
        receive_buffer_size=RECEIVE_BUFFER_SIZE,
    ) as ws:
        try:
            while True:
                message = await ws.get_message()
                if message and message[0] == 1:
                    received += len(message) - 1
        except trio_websocket.ConnectionClosed:
            pass
    seconds = elapsed(start)
    assert received == PAYLOAD, received
    return seconds


async def reader_rate(client: KubeClient, pod: str) -> Timing:
    feed = CountingFeed()
    start = clocks()
    result = await exec_stream(client, NS, pod, "job", ["cat"], feed)
    seconds = elapsed(start)
    assert result.exit_code == 0 and feed.bytes == PAYLOAD, (result, feed.bytes)
    return seconds


async def end_to_end_rate(client: KubeClient, round_: int) -> Timing:
    config = JobPodConfig(namespace=NS, owner="runner-bench", helper_image=None, durable=False)
    executor = KubernetesExecutor(client, config, runner_id="bench")
    sink = FastSink()
    job = RunnerJob(id=f"bench-{round_}", image="bench", commands=("cat big.log",))
    start = clocks()
    outcome = await run_job(job, executor=executor, sink=sink, settings=LogSettings())
    seconds = elapsed(start)
    assert outcome.outcome.value == "success", outcome
    assert sink.lines >= LINES, sink.lines
    return seconds


async def main() -> None:
    async with serve_kube_api() as api:
        api.exec_plan = firehose
        config = KubeConfig(server=api.url, namespace=NS, auth=StaticAuth("bench"), source="bench")
        async with KubeClient.open(config, KubeApiSettings(), rng=random.Random(1)) as client:
            await client.request("POST", f"/api/v1/namespaces/{NS}/pods", json=POD)
            async with client.watch(f"/api/v1/namespaces/{NS}/pods") as events:
                async for event in events:
                    if event.object["status"].get("phase") == "Running":
                        break
            raw: list[Timing] = []
            reader: list[Timing] = []
            end_to_end: list[Timing] = []
            for round_ in range(ROUNDS):
                raw.append(await raw_rate(api, "bench"))
                reader.append(await reader_rate(client, "bench"))
                end_to_end.append(await end_to_end_rate(client, round_))
    megabytes = PAYLOAD / 1e6
    print(
        f"payload: {megabytes:.0f} MB, {LINES:,} lines of 100 bytes, ~32 KiB v5 messages from the API double (loopback)"
    )
    best_raw = best(raw)
    for label, runs in (
        ("raw trio-websocket receive (baseline)", raw),
        ("exec reader -> counting feed", reader),
        ("end to end: executor + run_job + pipeline + fast sink", end_to_end),
    ):
        wall, cpu = best(runs)
        print(
            f"{label:<54} wall {megabytes / wall:6.0f} MB/s  ratio {best_raw[0] / wall:.2f}   "
            f"cpu {megabytes / cpu:6.0f} MB/s  ratio {best_raw[1] / cpu:.2f}"
        )
    print("target: end to end >= 0.50 of raw")


def best(runs: list[Timing]) -> Timing:
    return min(w for w, _ in runs), min(c for _, c in runs)


if __name__ == "__main__":
    trio.run(main)
