"""Runs a job's commands on this host, like GitLab Runner's shell executor.

Job files must appear at ``/opslevel/<name>`` as in a pod. Where ``/opslevel`` exists and the
kernel allows it, each job that has files runs in a private mount namespace (as root:
``unshare --mount``; as a normal user: an unprivileged user + mount namespace) with its own
directory bind-mounted there, so concurrent jobs never see each other's files. Otherwise
(``/opslevel`` missing, no namespaces, macOS) the files stay in the job's own directory and
``/opslevel/`` in its commands is mapped to that directory; the job's log says so. Nothing is
written outside the job's temporary directory (or the executor's own private directory under
``--job-pod-workdir``).
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import attrs
import trio

from trunner.contracts import OutputFeed, Stream
from trunner.executors.base import ExitKind, ExitResult
from trunner.executors.script import phase_argv, phase_script
from trunner.executors.settings import JobRunSettings
from trunner.models import JobVariable, RunnerJob, validate_job
from trunner.process import privdir

logger = logging.getLogger("trunner.executors.local")

FILES_MOUNT = "/opslevel"
WORKDIR_PREFIX = "trunner-work-"
_READ_SIZE = 64 * 1024
_OUTPUT_GRACE = 2.0
"""Seconds to wait for more output after the shell exits (for its background children); time the
log holds the reader is not counted."""
_KILL_WAIT = 5.0

MAX_SCRIPT_BYTES = 128 * 1024 - 1024
"""Linux's limit on one argument (MAX_ARG_STRLEN) less room for the temporary directory's path."""

SETTINGS: tuple[type[Any], ...] = (JobRunSettings,)


JOB_ENVIRONMENT = ("PATH", "HOME", "USER", "LOGNAME", "SHELL", "TERM", "TZ", "TMPDIR", "LANG", "LANGUAGE")
"""The only variables of the runner's environment a local job gets (with every ``LC_*``): the
runner's own settings, credentials (API token, ``FAKTORY_URL``, ``SENTRY_DSN``, cloud keys) and
anything else it was started with stay out of jobs."""


def job_base_env(environ: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in environ.items() if k in JOB_ENVIRONMENT or k.startswith("LC_")}


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
        self._base_env = job_base_env(os.environ if base_env is None else base_env)
        self._namespace_probed = False
        self._namespace_wrapper: list[str] | None = None
        self._namespace_problem = ""
        self._workdir: str | None = None
        self._isolation_probed = False
        self._probing = trio.Lock()
        self._files_probing = trio.Lock()
        self._isolation: list[str] | None = None

    def check_job(self, job: RunnerJob) -> list[str]:
        problems = validate_job(job)
        if not job.commands:
            problems.append("commands: the job has no commands")
        for index, variable in enumerate(job.variables):
            if not variable.key or "=" in variable.key or "\0" in variable.key:
                problems.append(
                    f"variables[{index}].key: {variable.key!r} is not a valid environment variable name"
                )
            elif "\0" in variable.value:
                problems.append(
                    f"variables[{index}] ({variable.key}): the value holds a NUL character, which an environment "
                    "variable cannot"
                )
        for field, commands in (("initCommands", job.init_commands), ("commands", job.commands)):
            size = len(phase_script(self._settings.job_pod_workdir or "/tmp", job.id, commands).encode())
            if size > MAX_SCRIPT_BYTES:
                problems.append(
                    f"{field}: {size} bytes of script; a command line argument is limited to "
                    f"{MAX_SCRIPT_BYTES // 1024} KiB (put long scripts in a file of the job)"
                )
        return problems

    async def run(self, job: RunnerJob, output: OutputFeed) -> ExitResult:
        images = [image for image in (job.image, job.init_image) if image]
        if images:
            output.note(
                f"the local executor runs commands on this host: image {', '.join(images)} is not used"
            )
        with tempfile.TemporaryDirectory(prefix="trunner-job-") as scratch:
            files_dir = Path(scratch, "files")
            await trio.to_thread.run_sync(_write_files, files_dir, job)
            if self._settings.job_pod_workdir:
                try:
                    workdir = await self._private_workdir()
                except OSError as exc:
                    return ExitResult(ExitKind.COULD_NOT_START, message=f"--job-pod-workdir: {exc.strerror}")
            else:
                workdir = str(Path(scratch, "work"))
            wrapper = list(await self._process_isolation() or [])
            shell = self._settings.job_pod_shell
            if wrapper and not os.access(shell, os.X_OK):
                # inside unshare, a shell that cannot run would look like the job's exit code 127
                return ExitResult(
                    ExitKind.COULD_NOT_START, message=f"could not start {shell!r}: not an executable file"
                )
            if job.files:
                namespace = await self._files_namespace()
                if namespace is not None:
                    wrapper = [*namespace, str(files_dir)]
                else:
                    output.note(
                        f"{FILES_MOUNT} cannot be mounted here ({self._namespace_problem}): the job's files "
                        f"are in {files_dir}, and {FILES_MOUNT}/ in its commands stands for that directory"
                    )
                    job = map_files_path(job, f"{files_dir}/")
            with trio.move_on_after(self._settings.job_pod_max_lifetime) as lifetime:
                for init, commands in ((True, job.init_commands), (False, job.commands)):
                    if not commands:
                        continue
                    argv = wrapper + phase_argv(self._settings.job_pod_shell, workdir, job.id, commands)
                    env = _phase_env(self._base_env, job.variables, init)
                    result = await self._run_phase(argv, env, output, track=self._isolation is None)
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

    async def _run_phase(
        self, argv: list[str], env: dict[str, str], output: OutputFeed, *, track: bool = False
    ) -> ExitResult:
        try:
            process = await trio.lowlevel.open_process(
                argv,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            return ExitResult(
                ExitKind.COULD_NOT_START, message=f"could not start {argv[0]!r}: {exc.strerror}"
            )
        seen: dict[int, str] = {}
        try:
            reader = PipeReader(output)
            async with trio.open_nursery() as nursery:
                assert process.stdout is not None and process.stderr is not None
                nursery.start_soon(reader.pump, process.stdout, Stream.STDOUT)
                nursery.start_soon(reader.pump, process.stderr, Stream.STDERR)
                tracking = trio.CancelScope()
                if track:
                    nursery.start_soon(_track_descendants, process.pid, seen, tracking)
                code = await process.wait()
                tracking.cancel()
                reader.writer_exited(_OUTPUT_GRACE)
            if reader.abandoned:
                output.note(
                    f"stopped reading the job's output {_OUTPUT_GRACE:g}s after its shell exited: a "
                    "background process still holds it open; what it writes from now on is not in this log"
                )
            _kill_group(process.pid)
        finally:
            with trio.CancelScope(shield=True, deadline=trio.current_time() + _KILL_WAIT):
                _kill_group(process.pid)
                if seen:
                    await trio.to_thread.run_sync(_kill_tracked, seen)
                await process.wait()
        if code < 0:
            return ExitResult(
                ExitKind.EXITED, 128 - code, f"command killed by signal {signal.Signals(-code).name}"
            )
        return ExitResult.exited(code)

    async def _private_workdir(self) -> str:
        """This executor's own directory under ``--job-pod-workdir`` (made once, mode 0700): a job
        id is predictable, so ``<workdir>/<job id>`` in a shared directory could be another user's
        symlink; in a directory no one else may enter it cannot."""
        if self._workdir is None:
            root = Path(self._settings.job_pod_workdir)
            self._workdir = await trio.to_thread.run_sync(_make_private_workdir, root)
            logger.info("local jobs work in %s/<job id>", self._workdir)
        return self._workdir

    async def _process_isolation(self) -> list[str] | None:
        """The argv prefix that runs a job phase in its own PID namespace (with its own /proc),
        or None where that is impossible: then the job's processes are tracked instead."""
        async with self._probing:
            if self._isolation_probed:
                return self._isolation
            self._isolation_probed = True
            problem = None
            for wrapper in pid_namespace_wrappers(os.geteuid()):
                problem = await _probe_isolation(wrapper)
                if problem is None:
                    self._isolation = wrapper
                    break
            if problem:
                logger.warning(
                    "local jobs cannot run in their own PID namespace (%s): a process a job starts in a new "
                    "session is killed only if trunner saw it while the job ran, and jobs can see each "
                    "other's processes",
                    problem,
                )
        return self._isolation

    async def _files_namespace(self) -> list[str] | None:
        """The argv prefix that runs a command with a directory (its next argument) mounted at
        ``/opslevel``, or None (the reason in ``_namespace_problem``) where that is impossible."""
        pid = await self._process_isolation() is not None
        async with self._files_probing:
            if self._namespace_probed:
                return self._namespace_wrapper
            self._namespace_probed = True
            wrapper = namespace_wrapper(os.geteuid(), pid=pid)
            self._namespace_problem = await _probe_namespace(wrapper) or ""
            if self._namespace_problem:
                logger.warning(
                    "%s cannot be mounted for local jobs (%s); their files stay in each job's directory",
                    FILES_MOUNT,
                    self._namespace_problem,
                )
            else:
                self._namespace_wrapper = wrapper
        return self._namespace_wrapper


def _make_private_workdir(root: Path) -> str:
    root_fd = privdir.open_root(root, sticky_if_shared=True)
    try:
        name, fd = privdir.make_private(WORKDIR_PREFIX, dir_fd=root_fd, shown_root=root)
    finally:
        os.close(root_fd)
    os.close(fd)
    return str(root / name)


def _write_files(files_dir: Path, job: RunnerJob) -> None:
    files_dir.mkdir()
    for file in job.files:
        path = files_dir / file.name
        path.write_text(file.contents)
        path.chmod(0o777)


def map_files_path(job: RunnerJob, directory: str) -> RunnerJob:
    """``job`` with ``/opslevel/`` in its commands replaced by ``directory``."""

    def mapped(commands: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(command.replace(f"{FILES_MOUNT}/", directory) for command in commands)

    return attrs.evolve(job, commands=mapped(job.commands), init_commands=mapped(job.init_commands))


_PID_NAMESPACE = ["--pid", "--fork", "--kill-child", "--mount-proc"]
"""A PID namespace with its own /proc: a job sees only its own processes, and when the phase's
shell (its PID 1) ends or trunner kills ``unshare``, the kernel kills every process in it,
including those started with ``setsid``."""


def namespace_wrapper(euid: int, *, pid: bool = False) -> list[str]:
    """Root needs only a private mount namespace; a normal user gets one inside an unprivileged
    user namespace (mapped to root there, which is what may mount)."""
    user = [] if euid == 0 else ["--user", "--map-root-user"]
    script = 'mount --bind "$1" ' + FILES_MOUNT + ' && shift && exec "$@"'
    return [
        "unshare",
        *user,
        *(_PID_NAMESPACE if pid else []),
        "--mount",
        "--propagation",
        "private",
        "--",
        "sh",
        "-c",
        script,
        "trunner-mount",
    ]


class PipeReader:
    """Feeds the job's pipes to the log until their end of file. Once the shell has exited, a pipe ends as
    soon as the last process holding it is gone; a background process may hold it for ever, so
    from then on the time spent waiting for the pipe is bounded, never the time the log holds
    the reader (what the shell wrote before it exited is all read, however slow the sink)."""

    def __init__(self, output: OutputFeed) -> None:
        self._output = output
        self._deadline = math.inf
        self._exited_at = math.inf
        self._waiting: set[trio.CancelScope] = set()
        self.abandoned = False

    def writer_exited(self, grace: float) -> None:
        """From now on ``grace`` seconds of waiting for the pipe in all, then stop reading."""
        self._exited_at = trio.current_time()
        self._deadline = self._exited_at + grace
        for waiting in self._waiting:
            waiting.deadline = self._deadline

    async def pump(self, stream: trio.abc.ReceiveStream, which: Stream) -> None:
        feed = self._output.feed
        wait_for_room = self._output.wait_for_room
        async with stream:
            while True:
                with trio.CancelScope(deadline=self._deadline) as waiting:
                    self._waiting.add(waiting)
                    try:
                        chunk = await stream.receive_some(_READ_SIZE)
                    finally:
                        self._waiting.discard(waiting)
                if waiting.cancelled_caught:
                    self.abandoned = True
                    return
                if not chunk:
                    return
                feed(which, chunk if isinstance(chunk, bytes) else bytes(chunk))
                held_from = trio.current_time()
                await wait_for_room()
                self._deadline += max(0.0, trio.current_time() - max(held_from, self._exited_at))
                for other in self._waiting:
                    other.deadline = self._deadline


def pid_namespace_wrappers(euid: int) -> list[list[str]]:
    """The ways to run a phase in its own PID namespace, best first. A normal user needs a user
    namespace: mapped to its own uid where util-linux can (2.38+), so the job keeps its user,
    else mapped to root there."""
    tail = [*_PID_NAMESPACE, "--mount", "--propagation", "private", "--"]
    if euid == 0:
        return [["unshare", *tail]]
    return [["unshare", "--user", user, *tail] for user in ("--map-current-user", "--map-root-user")]


def _kill_group(pid: int) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


_TRACK_INTERVAL = 0.2


async def _track_descendants(root: int, seen: dict[int, str], scope: trio.CancelScope) -> None:
    """Where jobs get no PID namespace: note every descendant of ``root`` (with its start time,
    so a reused pid is never killed) until ``scope`` is cancelled when the phase's shell exits, so
    those that left its process group can be killed at its end."""
    with scope:
        while True:
            seen.update(await trio.to_thread.run_sync(descendants, root))
            await trio.sleep(_TRACK_INTERVAL)


def _proc_stat(pid: int) -> tuple[int, str] | None:
    """``(parent pid, start time)`` of ``pid`` from /proc, or None if it is gone (or no /proc)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat_file:
            fields = stat_file.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), fields[19].decode()


def _process_tree() -> dict[int, list[tuple[int, str]]]:
    """parent pid -> its children's ``(pid, start time)``, from /proc (empty where there is none)."""
    try:
        pids = [int(name) for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return {}
    children: dict[int, list[tuple[int, str]]] = {}
    for pid in pids:
        found = _proc_stat(pid)
        if found is not None:
            children.setdefault(found[0], []).append((pid, found[1]))
    return children


def descendants(root: int, tree: dict[int, list[tuple[int, str]]] | None = None) -> dict[int, str]:
    """Every live descendant of ``root``: pid -> start time (Linux; elsewhere nothing)."""
    children = _process_tree() if tree is None else tree
    result: dict[int, str] = {}
    todo = [root]
    while todo:
        for pid, started in children.get(todo.pop(), []):
            if pid not in result:
                result[pid] = started
                todo.append(pid)
    return result


def _kill_tracked(seen: dict[int, str]) -> None:
    """Kill every process of ``seen`` still running (same start time: not a reused pid) and all
    of its descendants. Blocking: reads /proc."""
    if not seen:
        return
    tree = _process_tree()
    doomed: set[int] = set()
    for pid, started in seen.items():
        current = _proc_stat(pid)
        if current is not None and current[1] == started:
            doomed.add(pid)
            doomed.update(descendants(pid, tree))
    for pid in doomed:
        with suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


async def _probe_isolation(wrapper: list[str]) -> str | None:
    """Why ``wrapper`` cannot run a command in a PID namespace here, or None if it can."""
    if shutil.which("unshare") is None:
        return "the 'unshare' command (util-linux, Linux only) is not available"
    with trio.move_on_after(10):
        result = await trio.run_process(
            [*wrapper, "true"], capture_stdout=True, capture_stderr=True, check=False
        )
        if result.returncode == 0:
            return None
        reason = result.stderr.decode(errors="replace").strip() or f"exit code {result.returncode}"
        return f"unshare --pid fails: {reason}"
    return "probing for a PID namespace timed out"


async def _probe_namespace(wrapper: list[str]) -> str | None:
    """Why ``wrapper`` cannot mount a directory at /opslevel here, or None if it can. Never
    creates /opslevel: that would write outside the job's own directory."""
    if shutil.which("unshare") is None:
        return "the 'unshare' command (util-linux, Linux only) is not available"
    if not os.path.isdir(FILES_MOUNT):
        return f"{FILES_MOUNT} does not exist on this host"
    with tempfile.TemporaryDirectory(prefix="trunner-probe-") as probe:
        with trio.move_on_after(10):
            result = await trio.run_process(
                [*wrapper, probe, "true"], capture_stdout=True, capture_stderr=True, check=False
            )
            if result.returncode == 0:
                return None
            reason = result.stderr.decode(errors="replace").strip() or f"exit code {result.returncode}"
            return f"no private mount namespace: {reason}"
    return "probing for a private mount namespace timed out"


@asynccontextmanager
async def open_executor(settings: JobRunSettings) -> AsyncIterator[LocalExecutor]:
    yield LocalExecutor(settings)
