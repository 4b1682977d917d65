"""Durable-stage figures from one run: what reading a job by byte offset costs, and what ten cut
exec streams add.

A 200,000-line job (``awk`` in a real local shell; the Kubernetes API double runs each exec as a
subprocess) runs through the Kubernetes executor under ``run_job`` with the log pipeline and a
sink that accepts every batch at once, three ways:

1. single stream (the baseline, measured in the same run): one exec carries the commands;
2. durable stage: launched detached, read by offset, no cuts;
3. durable stage with its reader's exec stream cut (TCP reset) ten times, each after 64 KiB.

Every run checks that the sink got each line once. The ratios to the baseline's wall time are the
figures. Each figure is the best of a few interleaved rounds; CPU seconds count this process only
(the shells run outside it). Run: ``.venv/bin/python bench/bench_durable.py``.
"""

from __future__ import annotations

import gc
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import attrs
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.doubles.kube import KubeApiDouble, serve_kube_api
from trunner.executors.kubernetes import KubernetesExecutor
from trunner.executors.kubernetes.durable import ResumePolicy
from trunner.executors.kubernetes.settings import JobPodConfig
from trunner.job import run_job
from trunner.kube.auth import StaticAuth
from trunner.kube.client import KubeApiSettings, KubeClient
from trunner.kube.config import KubeConfig
from trunner.logs.batch import Batch
from trunner.logs.settings import LogSettings
from trunner.models import JobOutcome, RunnerJob

NS = "bench"
LINES = 200_000
CUTS = 10
ROUNDS = 3
SHELL = shutil.which("dash") or "/bin/sh"
COMMAND = f"awk 'BEGIN {{ for (i = 0; i < {LINES}; i++) print \"line-\" i }}'"


class CheckingSink:
    def __init__(self) -> None:
        self.next = 0
        self.outcome: JobOutcome | None = None

    async def ship(self, batch: Batch) -> None:
        for line in batch.text_lines():
            text = line.split("] ", 1)[-1]
            if text.startswith("line-"):
                assert text == f"line-{self.next}", (text, self.next)
                self.next += 1

    async def report(self, outcome: JobOutcome) -> None:
        self.outcome = outcome


Timing = tuple[float, float]


def clocks() -> Timing:
    gc.collect()
    return time.perf_counter(), time.process_time()


async def one_run(
    api: KubeApiDouble, client: KubeClient, config: JobPodConfig, name: str, cuts: int
) -> Timing:
    if cuts:
        api.cut_exec(cuts, after_bytes=64 * 1024)
    executor = KubernetesExecutor(
        client, config, runner_id="bench", resume_policy=ResumePolicy(base=0.05, cap=0.4)
    )
    sink = CheckingSink()
    job = RunnerJob(id=name, image="bench", commands=(COMMAND,))
    wall, cpu = clocks()
    outcome = await run_job(job, executor=executor, sink=sink, settings=LogSettings())
    wall2, cpu2 = clocks()
    assert outcome.outcome.value == "success", outcome
    assert sink.next == LINES, sink.next
    assert api.exec_cuts is None or api.exec_cuts.times == 0
    return wall2 - wall, cpu2 - cpu


async def main() -> None:
    with tempfile.TemporaryDirectory() as workdir:
        async with serve_kube_api() as api:
            kube = KubeConfig(server=api.url, namespace=NS, auth=StaticAuth("bench"), source="bench")
            base = JobPodConfig(
                namespace=NS, owner="runner-bench", helper_image=None, workdir=workdir, shell=SHELL
            )
            runs: dict[str, list[Timing]] = {"stream": [], "durable": [], "cut": []}
            async with KubeClient.open(kube, KubeApiSettings(), rng=random.Random(1)) as client:
                for round_ in range(ROUNDS):
                    runs["stream"].append(
                        await one_run(api, client, attrs.evolve(base, durable=False), f"s{round_}", 0)
                    )
                    runs["durable"].append(await one_run(api, client, base, f"d{round_}", 0))
                    runs["cut"].append(await one_run(api, client, base, f"c{round_}", CUTS))
    baseline = min(w for w, _ in runs["stream"])
    print(f"{LINES:,} lines from awk in {SHELL} through the Kubernetes double, run_job and a checking sink")
    for key, label in (
        ("stream", "single exec stream (baseline)"),
        ("durable", "durable stage, no cuts"),
        ("cut", f"durable stage, {CUTS} cuts (resume backoff 0.05-0.4 s)"),
    ):
        wall = min(w for w, _ in runs[key])
        cpu = min(c for _, c in runs[key])
        print(f"{label:<52} wall {wall:6.2f} s  ratio {wall / baseline:.2f}   cpu {cpu:6.2f} s")


if __name__ == "__main__":
    trio.run(main)
