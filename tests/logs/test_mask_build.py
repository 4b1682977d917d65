"""Building a job's masker: inline for an ordinary job, in a worker thread when it is expensive,
with the event loop running meanwhile (real clock: a task waiting for a thread would let a
virtual clock jump) and the job's output masked exactly as with a masker built inline."""

from __future__ import annotations

import base64
import random
import string
import threading
import urllib.parse

import trio

from tests.doubles.executors import Chunk, RecordingSink, ScriptedExecutor
from trunner.job import run_job
from trunner.logs import job_log
from trunner.logs.job_log import build_masker
from trunner.logs.mask import MAX_SECRET_BYTES, OFF_LOOP_COST, Masker, build_cost, masker_for
from trunner.logs.settings import LogSettings
from trunner.models import JobVariable, RunnerJob

_ALPHABET = string.ascii_letters + string.digits


def job_of(*values: str, sensitive: bool = True) -> RunnerJob:
    return RunnerJob(
        id="7",
        variables=tuple(JobVariable(f"S{i}", value, sensitive=sensitive) for i, value in enumerate(values)),
    )


def tokens(count: int, length: int = 48, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(_ALPHABET) for _ in range(length)) for _ in range(count)]


EXPENSIVE = job_of(*tokens(200))


def test_ordinary_jobs_cost_less_than_the_thread_threshold_and_large_ones_more():
    assert build_cost(job_of(*tokens(16))) < OFF_LOOP_COST
    assert build_cost(job_of(*tokens(16_000, 64))) < build_cost(job_of("\n".join(tokens(16_000, 64))))
    assert build_cost(EXPENSIVE) >= OFF_LOOP_COST
    assert build_cost(job_of("x" * 300_000)) >= OFF_LOOP_COST
    assert build_cost(job_of("\n".join(tokens(200, 64)))) >= OFF_LOOP_COST
    # neither refused values nor values that are not sensitive are built
    assert build_cost(job_of("x" * (MAX_SECRET_BYTES + 1), "y" * 10**6, sensitive=False)) == 0
    assert build_cost(job_of("h" * (MAX_SECRET_BYTES + 1))) == 0


def test_the_largest_values_of_the_masking_properties_build_inline():
    # test_mask_property runs jobs of up to three values of 320 characters and a 20-character
    # key in virtual time, where a task waiting for a thread would let the clock jump.
    most_parts = ("😀" * 6 + "\ud800") * 46
    most_bytes = "😀" * 320
    for value in (most_parts[:320], most_bytes):
        assert build_cost(job_of(value, value, value, "k" * 20)) < OFF_LOOP_COST


class Ticker:
    """A task that counts its checkpoints and, once a build has begun, signals the building
    thread after it has run a few more times."""

    def __init__(self) -> None:
        self.ticks = 0
        self.building = threading.Event()
        self.ran_while_building = threading.Event()

    async def run(self) -> None:
        during = 0
        while True:
            await trio.lowlevel.checkpoint()
            self.ticks += 1
            if self.building.is_set():
                during += 1
                if during >= 3:
                    self.ran_while_building.set()


async def test_ordinary_jobs_build_inline_without_yielding(nursery):
    ticker = Ticker()
    nursery.start_soon(ticker.run)
    await trio.lowlevel.checkpoint()
    before = ticker.ticks
    masker = await build_masker(job_of(*tokens(3)))
    assert ticker.ticks == before
    assert masker.needles == masker_for(job_of(*tokens(3))).needles


async def test_other_tasks_run_while_an_expensive_masker_builds(nursery, monkeypatch):
    ticker = Ticker()
    saw_the_loop_run: list[bool] = []

    def build_when_the_loop_has_run(job: RunnerJob) -> Masker:
        ticker.building.set()
        saw_the_loop_run.append(ticker.ran_while_building.wait(timeout=10))
        return masker_for(job)

    monkeypatch.setattr(job_log, "masker_for", build_when_the_loop_has_run)
    nursery.start_soon(ticker.run)
    masker = await build_masker(EXPENSIVE)
    assert saw_the_loop_run == [True]
    assert masker.needles == Masker((v.key, v.value) for v in EXPENSIVE.variables).needles


async def test_a_cancel_during_the_build_waits_for_it(monkeypatch):
    finished: list[bool] = []

    def build_canceled(job: RunnerJob) -> Masker:
        trio.from_thread.run_sync(scope.cancel)
        masker = masker_for(job)
        finished.append(True)
        return masker

    monkeypatch.setattr(job_log, "masker_for", build_canceled)
    with trio.CancelScope() as scope:
        await build_masker(EXPENSIVE)
        await trio.lowlevel.checkpoint()
    assert scope.cancelled_caught
    assert finished == [True]


async def test_a_job_masked_by_a_masker_built_off_the_loop_ships_what_an_inline_one_does(monkeypatch):
    secrets = tokens(200)
    job = job_of(*secrets)
    assert build_cost(job) >= OFF_LOOP_COST
    rng = random.Random(5)
    lines = []
    for i in range(300):
        secret = rng.choice(secrets)
        form = rng.choice(
            [secret, base64.b64encode(secret.encode()).decode(), urllib.parse.quote(secret), secret[:20]]
        )
        lines.append(f"line {i} {form} tail\n".encode())
    data = b"".join(lines)
    chunks = [Chunk(data[i : i + 700]) for i in range(0, len(data), 700)]
    settings = LogSettings(job_pod_log_max_size=8192)

    async def shipped() -> tuple[list[str], str]:
        sink = RecordingSink()
        outcome = await run_job(job, executor=ScriptedExecutor(chunks), sink=sink, settings=settings)
        return sink.bodies(), outcome.message

    threads: list[object] = []
    run_sync = trio.to_thread.run_sync

    async def counted(*args, **kwargs):
        threads.append(args[0])
        return await run_sync(*args, **kwargs)

    monkeypatch.setattr(job_log.trio.to_thread, "run_sync", counted)
    off_loop = await shipped()
    monkeypatch.setattr(job_log, "OFF_LOOP_COST", 10**12)
    inline = await shipped()
    assert threads == [masker_for]
    assert off_loop == inline
    expected = Masker((v.key, v.value) for v in job.variables).mask(data).decode().splitlines()
    assert off_loop[0] == expected
    assert sum("**********" in body for body in expected) > 200
