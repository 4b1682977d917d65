"""``trunner enqueue -f FILE|-``: push one Faktory job described in YAML (for testing Faktory
mode, like the Go runner's ``enqueue`` command). The description's keys are parsed by
:mod:`trunner.faktory.definition`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from functools import partial
from typing import Any

import attrs
import trio

from trunner.cli.commands.common import add_common_arguments, settings_source
from trunner.config import add_arguments, at_most, positive, setting
from trunner.faktory.client import ServerLocation, WorkerIdentity, connect, locate_server
from trunner.faktory.definition import JobDefinition, JobDefinitionError, parse_job_definition
from trunner.faktory.protocol import FaktoryError, Job

DEFAULT_FILE = "./job.yaml"

_DESCRIPTION = """\
Push one Faktory job described in YAML. The server comes from FAKTORY_URL or FAKTORY_PROVIDER.

keys:
  type          the job type (required), e.g. legacy
  queue         queue name (default: default)
  args          list of job arguments (default: empty)
  custom        mapping of custom fields, e.g. opslevel-runner-job-id
  retries       retry count (-1: straight to the dead set, 0: none; default 25)
  at            run at this RFC3339 time, e.g. 2026-01-02T15:04:05Z
  reserve_for   seconds a worker may hold the job (60-86400; default 1800)
  backtrace     FAIL backtrace lines the server keeps
  unique_for    seconds the job is unique (Faktory Enterprise)
  unique_until  success or start (Faktory Enterprise)
  expires_in    seconds until the job is discarded unrun (Faktory Enterprise)
  batch         bid of an open batch to push into (Faktory Enterprise)

The Go runner's reservefor/uniquefor/uniqueuntil/expiresin spellings are accepted too.
"""


@attrs.frozen
class EnqueueSettings:
    """Faktory connection"""

    faktory_timeout: float = setting(
        5.0, help="Seconds connecting and each Faktory command may take.", checks=[positive, at_most(300)]
    )


async def push_job(
    definition: JobDefinition, location: ServerLocation, *, timeout: float, now: dt.datetime | None = None
) -> Job:
    """Connect as a producer and push the job (into its batch, if any)."""
    job = definition.build(now or dt.datetime.now(dt.UTC))
    conn = await connect(location, WorkerIdentity.producer(), timeout=timeout)
    try:
        if definition.batch:
            bid = await conn.batch_open(definition.batch)
            job = attrs.evolve(job, custom={**job.custom, "bid": bid})
        await conn.push(job)
    finally:
        await conn.aclose()
    return job


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "enqueue",
        help="Push a Faktory job described in YAML (to try out Faktory mode).",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "-f",
        "--file",
        default=DEFAULT_FILE,
        metavar="FILE",
        help=f"YAML job description, or - for standard input (default {DEFAULT_FILE}).",
    )
    add_common_arguments(parser)
    add_arguments(parser, EnqueueSettings)
    parser.set_defaults(handler=run)


def _read(path: str) -> tuple[str, str]:
    if path == "-":
        return sys.stdin.read(), "<stdin>"
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read(), path
    except FileNotFoundError:
        raise JobDefinitionError(path, ["file not found"]) from None
    except UnicodeDecodeError:
        raise JobDefinitionError(path, ["not UTF-8 text"]) from None
    except OSError as exc:
        raise JobDefinitionError(path, [f"cannot read: {exc.strerror}"]) from None


def run(args: argparse.Namespace) -> int:
    source = settings_source(args)
    timeout = source.get(EnqueueSettings).faktory_timeout
    location = locate_server(source.environ)
    try:
        text, origin = _read(args.file)
        definition = parse_job_definition(text, origin)
    except JobDefinitionError as exc:
        print(f"trunner enqueue: {exc.origin}: invalid job description:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        return 2
    try:
        job = trio.run(partial(push_job, definition, location, timeout=timeout))
    except FaktoryError as exc:
        print(f"trunner enqueue: could not push to Faktory at {location.describe()}: {exc}", file=sys.stderr)
        return 1
    where = f"batch {job.custom['bid']} on queue {job.queue}" if definition.batch else f"queue {job.queue}"
    print(f"enqueued {job.jobtype} job {job.jid} to {where}")
    return 0
