"""Building a job's masker: where the time goes, and how long the event loop stalls while jobs
with many or long secrets start.

Part 1, per case (one 1 MiB single-line secret; 500 random secrets of 32 to 64 characters; a
1 MiB certificate-bundle-like secret of 64-character lines): the whole build, the share spent
computing the secret forms in Python (which a worker thread interleaves with the event loop) and
the share spent building the Aho-Corasick automata in Rust (which holds the GIL, so it stalls the
loop wherever it runs).

Part 2: a ticker task sleeps 1 ms at a time on the real clock while jobs' logs start as
``run_job`` starts them (``build_masker``, then ``JobLog.running``); its largest lateness is the
longest stall of the event loop. Each case is run with the masker built inline (the thread
threshold raised out of reach) and as trunner builds it (in a worker thread above the
threshold), against the stall while two ordinary jobs (three short secrets each) start, measured
in the same run. Best of 3 rounds, interleaved.

Run: ``.venv/bin/python bench/bench_mask_build.py`` (or ``just bench``).
"""

from __future__ import annotations

import math
import random
import string
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import ahocorasick_rs
import trio

from trunner.contracts import Stream
from trunner.logs import job_log, mask
from trunner.logs.batch import Batch
from trunner.logs.job_log import JobLog, build_masker
from trunner.logs.mask import build_cost, masker_for
from trunner.logs.secret_forms import forms_of
from trunner.logs.settings import LogSettings
from trunner.models import JobOutcome, JobVariable, RunnerJob

ROUNDS = 3
TICK = 0.001
_ALPHABET = string.ascii_letters + string.digits


def token(rng: random.Random, length: int) -> str:
    return "".join(rng.choice(_ALPHABET) for _ in range(length))


def job_with(name: str, secrets: list[str]) -> RunnerJob:
    return RunnerJob(
        id=name,
        variables=tuple(JobVariable(f"S{i}", value, sensitive=True) for i, value in enumerate(secrets)),
    )


class DiscardingSink:
    async def ship(self, batch: Batch) -> None:
        pass

    async def report(self, outcome: JobOutcome) -> None:
        pass


@contextmanager
def automaton_timer() -> Iterator[list[float]]:
    """Seconds spent in each automaton build while inside."""
    spent: list[float] = []
    real: Callable[..., Any] = ahocorasick_rs.BytesAhoCorasick

    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            spent.append(time.perf_counter() - start)

    mask.ahocorasick_rs.BytesAhoCorasick = timed
    try:
        yield spent
    finally:
        mask.ahocorasick_rs.BytesAhoCorasick = real


def where_the_time_goes(job: RunnerJob) -> tuple[float, float, float, int]:
    """Best of 3: the whole build, the forms, the automata (seconds); the needles."""
    values = [v.value for v in job.variables]
    whole = forms = automata = math.inf
    needles = 0
    for _ in range(3):
        start = time.perf_counter()
        for value in values:
            forms_of(value)
        forms = min(forms, time.perf_counter() - start)
        with automaton_timer() as spent:
            start = time.perf_counter()
            needles = len(masker_for(job).needles)
            whole = min(whole, time.perf_counter() - start)
        automata = min(automata, sum(spent))
    return whole, forms, automata, needles


async def open_jobs(jobs: list[RunnerJob]) -> None:
    async def one(job: RunnerJob) -> None:
        masker = await build_masker(job)
        log = JobLog(job, DiscardingSink(), LogSettings(), masker=masker)

        async def read() -> None:
            log.feed(Stream.STDOUT, b"started\n")
            await log.wait_for_room()

        await log.run(read)

    async with trio.open_nursery() as nursery:
        for job in jobs:
            nursery.start_soon(one, job)


def longest_stall(jobs: list[RunnerJob], *, inline: bool) -> float:
    """The ticker's largest lateness (seconds) while ``jobs`` open."""
    threshold = job_log.OFF_LOOP_COST
    if inline:
        job_log.OFF_LOOP_COST = sys.maxsize

    async def main() -> float:
        worst = 0.0

        async def ticker() -> None:
            nonlocal worst
            while True:
                before = time.perf_counter()
                await trio.sleep(TICK)
                worst = max(worst, time.perf_counter() - before - TICK)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ticker)
            await trio.sleep(10 * TICK)
            await open_jobs(jobs)
            await trio.sleep(10 * TICK)
            nursery.cancel_scope.cancel()
        return worst

    try:
        return trio.run(main)
    finally:
        job_log.OFF_LOOP_COST = threshold


def main() -> None:
    rng = random.Random(7)
    huge = job_with("huge", [token(rng, 1024 * 1024)])
    many = job_with("many", [token(rng, rng.randint(32, 64)) for _ in range(500)])
    bundle = job_with("bundle", ["\n".join(token(rng, 64) for _ in range(1024 * 1024 // 65))])
    ordinary = [job_with(f"ordinary{i}", [token(rng, 40) for _ in range(3)]) for i in range(2)]

    print("part 1: building one masker (best of 3)")
    for label, job in (
        ("1 MiB secret, one line", huge),
        ("500 secrets of 32-64 characters", many),
        ("1 MiB bundle, 64-character lines", bundle),
    ):
        whole, forms, automata, needles = where_the_time_goes(job)
        print(
            f"  {label:<34} {whole * 1000:7.1f} ms, {needles:6d} needles: forms (Python) "
            f"{forms / whole:4.0%}, automata (Rust, GIL held) {automata * 1000:6.1f} ms = {automata / whole:4.0%}"
            f"   cost {build_cost(job):,}"
        )

    cases = {
        "1 MiB secret": [huge],
        "500 secrets": [many],
        "1 MiB secret + 500 secrets": [huge, many],
        "1 MiB bundle": [bundle],
    }
    best_baseline = math.inf
    best = {label: [math.inf, math.inf] for label in cases}
    for _ in range(ROUNDS):
        best_baseline = min(best_baseline, longest_stall(ordinary, inline=False))
        for label, jobs in cases.items():
            best[label][0] = min(best[label][0], longest_stall(jobs, inline=True))
            best[label][1] = min(best[label][1], longest_stall(jobs, inline=False))
    baseline = best_baseline
    print(f"part 2: longest event-loop stall while jobs open (best of {ROUNDS})")
    print(f"  baseline, 2 ordinary jobs: {baseline * 1000:.2f} ms")
    for label, (inline, off_loop) in best.items():
        print(
            f"  {label:<28} inline {inline * 1000:7.1f} ms ({inline / baseline:6.0f} x baseline)   "
            f"off the loop {off_loop * 1000:6.1f} ms ({off_loop / baseline:5.0f} x baseline) "
            f"= {off_loop / inline:.2f} x inline"
        )


if __name__ == "__main__":
    main()
