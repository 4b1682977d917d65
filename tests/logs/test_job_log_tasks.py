"""The job log's shape: the reader, the drain, the spool stage and the shipper are tasks of one
nursery joined by trio memory channels; batches reach the shipper by reference; the drain never
waits for the sink; no task outlives the job, whatever ends it."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import trio

from tests.doubles.executors import Chunk, RecordingSink, ScriptedExecutor
from tests.logs.support import job_log_settings
from trunner.contracts import Stream
from trunner.executors.base import ExitKind, ExitResult
from trunner.job import run_job
from trunner.logs import batcher as batcher_module
from trunner.logs import shipper as shipper_module
from trunner.logs import spool as spool_module
from trunner.logs.batch import Batch
from trunner.logs.job_log import HANDOFF_CAPACITY, JobLog
from trunner.logs.settings import LogSettings
from trunner.logs.spool import DIR_PREFIX
from trunner.models import Outcome, RunnerJob

JOB = RunnerJob(id="7", commands=("true",))


def settings(tmp_path: Path, **overrides: object) -> LogSettings:
    return job_log_settings(tmp_path, **{"job_log_spool_size": 1 << 20, **overrides})


def lines_data(count: int) -> bytes:
    return b"".join(f"{i:08d} {'x' * 31}\n".encode() for i in range(count))


def chunks(count: int, size: int = 4000) -> list[bytes]:
    data = lines_data(count)
    return [data[i : i + size] for i in range(0, len(data), size)]


def all_tasks() -> set[trio.lowlevel.Task]:
    found, todo = set(), [trio.lowlevel.current_root_task()]
    while todo:
        task = todo.pop()
        found.add(task)
        for nursery in task.child_nurseries:
            todo.extend(nursery.child_tasks)
    return found


class ObjectSink(RecordingSink):
    """Keeps the batch objects it was given."""

    def __init__(self, delay: float = 0.0) -> None:
        super().__init__()
        self.delay = delay
        self.objects: list[Batch] = []
        self.tasks_seen: set[str] = set()

    async def ship(self, batch: Batch) -> None:
        self.tasks_seen |= {task.name.rsplit(".", 1)[-1] for task in all_tasks()}
        await trio.sleep(self.delay)
        self.objects.append(batch)
        await super().ship(batch)


async def test_the_hand_off_channel_holds_two_batches_and_passes_the_drains_objects(
    autojump_clock, tmp_path, monkeypatch
):
    sealed: list[Batch] = []
    real_seal = batcher_module.Batcher.seal

    def seal(self: batcher_module.Batcher) -> Batch:
        batch = real_seal(self)
        sealed.append(batch)
        return batch

    monkeypatch.setattr(batcher_module.Batcher, "seal", seal)
    capacities = []
    real_init = JobLog.__init__

    def init(self: JobLog, *args: object, **kwargs: object) -> None:
        real_init(self, *args, **kwargs)  # type: ignore[arg-type]
        capacities.append(self._handoff.statistics().max_buffer_size)

    monkeypatch.setattr(JobLog, "__init__", init)
    sink = ObjectSink(delay=1.0)
    await run_job(
        JOB,
        executor=ScriptedExecutor(chunks(2000)),
        sink=sink,
        settings=settings(tmp_path, job_log_buffer="memory"),
    )
    assert capacities == [HANDOFF_CAPACITY] == [2]
    assert len(sink.objects) == len(sealed) > 10
    assert all(shipped is made for shipped, made in zip(sink.objects, sealed, strict=True))
    assert {"_read", "run", "_forward", "_write"} & sink.tasks_seen >= {"_read", "run"}


async def test_the_reader_drain_stage_and_shipper_run_as_tasks_of_the_jobs_nursery(autojump_clock, tmp_path):
    sink = ObjectSink(delay=1.0)
    seen: list[set[str]] = []

    class Watching(ScriptedExecutor):
        async def run(self, job: RunnerJob, output: object) -> ExitResult:
            seen.append({task.name for task in all_tasks()})
            return await super().run(job, output)  # type: ignore[arg-type]

    await run_job(JOB, executor=Watching(chunks(100)), sink=sink, settings=settings(tmp_path))
    names = " ".join(seen[0])
    for task in ("JobLog._read", "Drain.run", "SpoolStage.run", "Shipper.run", "JobLog._watch_for_shutdown"):
        assert task in names, names


async def test_the_drain_never_waits_for_the_sink(autojump_clock, tmp_path):
    """With a sink that never answers, every chunk that fits in the channel and the spool is
    taken from the reader at once: nothing the drain does waits for the network."""
    waited: list[float] = []
    job_log = JobLog(JOB, RecordingSink(stall=True), settings(tmp_path, log_flush_timeout=1.0))

    async def read() -> None:
        for chunk in chunks(10_000):
            job_log.feed(Stream.STDOUT, chunk)
            start = trio.current_time()
            await job_log.wait_for_room()
            waited.append(trio.current_time() - start)

    await job_log.run(read)
    assert len(waited) * 4000 < 1 << 20
    assert waited == [0.0] * len(waited)
    assert job_log.spool_peak > 0


class Boom(Exception):
    pass


def inject(monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    """Make one of the job log's tasks raise midway."""
    calls = [0]

    def after_a_few(real):  # type: ignore[no-untyped-def]
        async def broken(*args, **kwargs):  # type: ignore[no-untyped-def]
            calls[0] += 1
            if calls[0] == 5:
                raise Boom(f"injected into the {where}")
            return await real(*args, **kwargs)

        return broken

    if where == "reader":
        monkeypatch.setattr(JobLog, "wait_for_room", after_a_few(JobLog.wait_for_room))
    elif where == "drain":
        real_add = batcher_module.Batcher.add

        def add(*args, **kwargs):  # type: ignore[no-untyped-def]
            calls[0] += 1
            if calls[0] == 20:
                raise Boom("injected into the drain")
            return real_add(*args, **kwargs)

        monkeypatch.setattr(batcher_module.Batcher, "add", add)
    elif where == "spool stage":
        monkeypatch.setattr(spool_module.Spool, "append", after_a_few(spool_module.Spool.append))
    else:
        monkeypatch.setattr(shipper_module.Shipper, "_deliver", after_a_few(shipper_module.Shipper._deliver))


@pytest.mark.parametrize(
    "ending", ["success", "failure", "cancel", "reader", "drain", "spool stage", "shipper"]
)
async def test_no_task_outlives_the_job_and_an_outcome_is_reported(
    autojump_clock, tmp_path, monkeypatch, ending
):
    if ending in ("reader", "drain", "spool stage", "shipper"):
        inject(monkeypatch, ending)
    executor = {
        "failure": ScriptedExecutor(chunks(3000), ExitResult(ExitKind.INFRASTRUCTURE, message="broken")),
        "cancel": ScriptedExecutor(chunks(3000), hang=True),
    }.get(ending, ScriptedExecutor(chunks(3000)))
    sink = ObjectSink(delay=0.5)
    before = all_tasks()
    outcomes = []
    with trio.fail_after(1000):
        with trio.move_on_after(40 if ending == "cancel" else math.inf):
            outcomes.append(await run_job(JOB, executor=executor, sink=sink, settings=settings(tmp_path)))
    assert all_tasks() - before == set()
    assert len(sink.outcomes) == 1
    expected = {
        "success": Outcome.SUCCESS,
        "failure": Outcome.FAILED,
        "cancel": Outcome.CANCELED,
    }.get(ending, Outcome.FAILED)
    assert sink.outcomes[0].outcome is expected
    if ending not in ("success", "failure", "cancel"):
        assert f"injected into the {ending}" in sink.outcomes[0].message
    # The runner's own spool directory keeps only its lock; every job's spool is gone.
    assert not list((tmp_path / "spool").glob(f"*/{DIR_PREFIX}*"))


async def test_an_exception_in_the_drain_still_marks_what_is_left(autojump_clock, tmp_path, monkeypatch):
    inject(monkeypatch, "drain")
    sink = ObjectSink()
    outcome = await run_job(
        JOB,
        executor=ScriptedExecutor([Chunk(c, Stream.STDOUT, delay=1.0) for c in chunks(400, 500)]),
        sink=sink,
        settings=settings(tmp_path),
    )
    assert outcome.outcome is Outcome.FAILED
    assert "could not be delivered" in outcome.message
    assert "dropped: the job log failed" in sink.bodies()[-1]
