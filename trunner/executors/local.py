"""Runs a job's commands on this host, like GitLab Runner's shell executor.

Job files must appear at ``/opslevel/<name>`` as in a pod. Each job that has files runs in a
private mount namespace (``unshare --mount``) with its own directory bind-mounted there, so
concurrent jobs never see each other's files. Where that is not possible (not root, no
``unshare``, no CAP_SYS_ADMIN) such a job fails and says why; it never runs with other paths.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import trio

from trunner.config import SettingsSource
from trunner.contracts import OutputFeed, Stream
from trunner.executors.base import ExitKind, ExitResult
from trunner.executors.script import phase_argv
from trunner.executors.settings import JobRunSettings
from trunner.metrics import RunnerMetrics
from trunner.models import JobVariable, RunnerJob, validate_job

logger = logging.getLogger("trunner.executors.local")

FILES_MOUNT = "/opslevel"
_READ_SIZE = 64 * 1024
_OUTPUT_GRACE = 2.0
"""Seconds to keep reading after the shell exits, for output of its background children."""
_KILL_WAIT = 5.0

SETTINGS: tuple[type[Any], ...] = (JobRunSettings,)


def _without_runner_settings(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment minus the runner's own settings: the API token must not reach jobs."""
    return {k: v for k, v in environ.items() if not k.startswith(("OPSLEVEL_", "FAKTORY_"))}


def _phase_env(base: Mapping[str, str], variables: Sequence[JobVariable], init: bool) -> dict[str, str]:
    env = dict(base)
    for variable in variables:
        if variable.scope.reaches_init() if init else variable.scope.reaches_main():
            env[variable.key] = variable.value
    return env


class LocalExecutor:
    name = "local"

    def __init__(self, settings: JobRunSettings, *, base_env: Mapping[str, str] | None = None) -> None:
        self._settings = settings
        self._base_env = _without_runner_settings(os.environ if base_env is None else base_env)
        self._namespace_probed = False
        self._namespace_problem: str | None = None

    def check_job(self, job: RunnerJob) -> list[str]:
        problems = validate_job(job)
        if not job.commands:
            problems.append("commands: the job has no commands")
        return problems

    async def run(self, job: RunnerJob, output: OutputFeed) -> ExitResult:
        with tempfile.TemporaryDirectory(prefix="trunner-job-") as scratch:
            files_dir = Path(scratch, "files")
            files_dir.mkdir()
            for file in job.files:
                path = files_dir / file.name
                path.write_text(file.contents)
                path.chmod(0o777)
            workdir = self._settings.job_pod_workdir or str(Path(scratch, "work"))
            wrapper: list[str] = []
            if job.files:
                problem = await self._mount_namespace_problem()
                if problem:
                    return ExitResult(
                        ExitKind.COULD_NOT_START,
                        message=f"job files must be at {FILES_MOUNT}/<name>, but {problem}",
                    )
                wrapper = [
                    "unshare",
                    "--mount",
                    "--propagation",
                    "private",
                    "--",
                    "sh",
                    "-c",
                    'mount --bind "$1" ' + FILES_MOUNT + ' && shift && exec "$@"',
                    "trunner-mount",
                    str(files_dir),
                ]
            with trio.move_on_after(self._settings.job_pod_max_lifetime) as lifetime:
                for init, commands in ((True, job.init_commands), (False, job.commands)):
                    if not commands:
                        continue
                    argv = wrapper + phase_argv(self._settings.job_pod_shell, workdir, job.id, commands)
                    env = _phase_env(self._base_env, job.variables, init)
                    result = await self._run_phase(argv, env, output)
                    if result.kind is not ExitKind.EXITED or result.exit_code != 0:
                        if init and result.kind is ExitKind.EXITED:
                            return ExitResult(
                                ExitKind.EXITED,
                                result.exit_code,
                                f"init commands exited with code {result.exit_code}",
                            )
                        return result
                return ExitResult.exited(0)
            assert lifetime.cancelled_caught
            return ExitResult(
                ExitKind.LIFETIME_EXCEEDED,
                message=f"job exceeded its maximum lifetime of {self._settings.job_pod_max_lifetime:g}s",
            )

    async def _run_phase(self, argv: list[str], env: dict[str, str], output: OutputFeed) -> ExitResult:
        try:
            process = await trio.lowlevel.open_process(
                argv,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            return ExitResult(
                ExitKind.COULD_NOT_START, message=f"could not start {argv[0]!r}: {exc.strerror}"
            )
        try:
            async with trio.open_nursery() as nursery:
                assert process.stdout is not None
                nursery.start_soon(_pump, process.stdout, Stream.STDOUT, output)
                code = await process.wait()
                nursery.cancel_scope.deadline = trio.current_time() + _OUTPUT_GRACE
            _kill_group(process.pid)
        finally:
            with trio.CancelScope(shield=True, deadline=trio.current_time() + _KILL_WAIT):
                _kill_group(process.pid)
                await process.wait()
        if code < 0:
            return ExitResult(
                ExitKind.EXITED, 128 - code, f"command killed by signal {signal.Signals(-code).name}"
            )
        return ExitResult.exited(code)

    async def _mount_namespace_problem(self) -> str | None:
        if not self._namespace_probed:
            self._namespace_problem = await _probe_mount_namespace()
            self._namespace_probed = True
            if self._namespace_problem:
                logger.warning("jobs with files cannot run locally: %s", self._namespace_problem)
        return self._namespace_problem


async def _pump(stream: trio.abc.ReceiveStream, which: Stream, output: OutputFeed) -> None:
    async with stream:
        while chunk := await stream.receive_some(_READ_SIZE):
            output.feed(which, chunk if isinstance(chunk, bytes) else bytes(chunk))
            await output.wait_for_room()


def _kill_group(pid: int) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


async def _probe_mount_namespace() -> str | None:
    """Why a private mount namespace with /opslevel cannot be made here, or None if it can."""
    if shutil.which("unshare") is None:
        return "the 'unshare' command (util-linux) is not installed"
    if not os.path.isdir(FILES_MOUNT):
        try:
            os.mkdir(FILES_MOUNT, 0o755)
        except OSError as exc:
            return f"{FILES_MOUNT} does not exist and cannot be created ({exc.strerror}); create it as root"
    with tempfile.TemporaryDirectory(prefix="trunner-probe-") as probe:
        argv = ["unshare", "--mount", "--propagation", "private", "--", "mount", "--bind", probe, FILES_MOUNT]
        with trio.move_on_after(10):
            result = await trio.run_process(argv, capture_stdout=True, capture_stderr=True, check=False)
            if result.returncode == 0:
                return None
            reason = result.stderr.decode(errors="replace").strip() or f"exit code {result.returncode}"
            return f"a private mount namespace is not available ({reason}); run as root or with CAP_SYS_ADMIN"
    return "probing for a private mount namespace timed out"


@asynccontextmanager
async def open_executor(
    source: SettingsSource, *, runner_id: str, metrics: RunnerMetrics | None = None
) -> AsyncIterator[LocalExecutor]:
    yield LocalExecutor(source.get(JobRunSettings))
