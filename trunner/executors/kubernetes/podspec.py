"""Pure builders of a job's Kubernetes objects and of the command exec'd into its pod.

The shapes follow the Go runner (``src/pkg/k8s.go``): the job's files mounted at ``/opslevel``
(mode 0777), a PodDisruptionBudget with ``maxUnavailable: 0`` so a node drain cannot evict a running
job, and a Pod whose ``job`` container sleeps for the job's lifetime while the commands are exec'd
into it. Differences, all deliberate: the files and the sensitive variables' values are in an
immutable Secret of the job (the Go runner puts the files in a ConfigMap and every value in the
pod's ``env``, where whoever may read pods or ConfigMaps reads them), the variables reach the
containers through ``secretKeyRef``; every object carries the job's labels (the Go runner labels
only the Pod, so its ConfigMaps and PDBs cannot be found after a crash); the configured pull policy
and DNS policy apply to every container (the Go runner reads ``dnsPolicy`` but never sets it, and
hard-codes ``IfNotPresent`` on the job and init containers); the job directory is shell-quoted when
it needs quoting (``trunner.executors.script``); tolerations and affinity can be set.
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Callable, Sequence

import attrs

from trunner.executors.kubernetes.names import JobIdentity
from trunner.executors.kubernetes.security import job_container_context
from trunner.executors.kubernetes.settings import JobPodConfig
from trunner.executors.script import phase_argv
from trunner.kube.objects import (
    Container,
    EmptyDirVolumeSource,
    EnvVar,
    EnvVarSource,
    KeyToPath,
    LabelSelector,
    ObjectMeta,
    Pod,
    PodDisruptionBudget,
    PodDisruptionBudgetSpec,
    PodSecurityContext,
    PodSpec,
    Secret,
    SecretKeySelector,
    SecretVolumeSource,
    Volume,
    VolumeMount,
)
from trunner.models import JobVariable, RunnerJob

JOB_CONTAINER = "job"
INIT_CONTAINER = "init"
HELPER_CONTAINER = "helper"

FILES_MOUNT = "/opslevel"
HELPER_MOUNT = "/mount"
FILES_MODE = 0o777
SECRET_MAX_BYTES = 1024 * 1024
"""The API server's limit on a Secret's data (``MaxSecretSize``)."""
MAX_ARGUMENT_BYTES = 128 * 1024 - 1
"""Linux's limit on one argument of ``execve`` (``MAX_ARG_STRLEN``: 32 pages of 4 KiB, terminating NUL
included); a longer one fails with E2BIG, "argument list too long". The commands of a phase are one
``-c`` argument."""

_FILES_VOLUME = "scripts"
_HELPER_VOLUME = "shared"
_WORKSPACE_VOLUME = "workspace"
_FILE_NAME = re.compile(r"[-._a-zA-Z0-9]+")


class PodSpecError(ValueError):
    """The job cannot be turned into Kubernetes objects; ``problems`` say why, per field."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


@attrs.frozen
class JobObjects:
    secret: Secret | None
    """None when the job has no files and no sensitive variables."""
    pod_disruption_budget: PodDisruptionBudget
    pod: Pod


def _argument_problems(config: JobPodConfig, job: RunnerJob) -> list[str]:
    problems = []
    for field, commands in (("commands", job.commands), ("initCommands", job.init_commands)):
        if not commands:
            continue
        for argument in shell_command(config, job, commands):
            size = len(argument.encode())
            if size > MAX_ARGUMENT_BYTES:
                problems.append(
                    f"{field}: the script of the job's {field} is {size} bytes, more than the "
                    f"{MAX_ARGUMENT_BYTES} bytes Linux takes in one argument (MAX_ARG_STRLEN, 128 KiB with "
                    "its terminating NUL); it cannot be run in a pod (put long scripts in the job's files)"
                )
    return problems


def job_problems(job: RunnerJob, config: JobPodConfig | None = None) -> list[str]:
    """Why ``job`` cannot run in a pod built with ``config`` (default: the default config), as
    ``<field>: <reason>``; empty if it can."""
    problems: list[str] = []
    if not job.image.strip():
        problems.append("image: a Kubernetes job needs an image")
    seen: set[str] = set()
    for index, file in enumerate(job.files):
        where = f"files[{index}].name"
        if len(file.name) > 253 or file.name in (".", "..") or not _FILE_NAME.fullmatch(file.name):
            problems.append(
                f"{where}: {file.name!r} is not a valid file name here "
                "(1-253 letters, digits, '-', '_' or '.'; not '.' or '..')"
            )
        elif file.name in seen:
            problems.append(f"{where}: {file.name!r} appears more than once")
        seen.add(file.name)
    size = sum(len(value) for value in secret_data(job).values())
    if size > SECRET_MAX_BYTES:
        problems.append(
            f"files: the job's files and sensitive variables hold {size} bytes, more than the "
            f"{SECRET_MAX_BYTES} bytes (1 MiB) a Kubernetes Secret can hold"
        )
    for index, variable in enumerate(job.variables):
        if not variable.key or "=" in variable.key or not variable.key.isprintable():
            problems.append(
                f"variables[{index}].key: {variable.key!r} is not a valid environment variable name"
            )
    problems += _argument_problems(config or JobPodConfig(), job)
    return problems


def shell_command(config: JobPodConfig, job: RunnerJob, commands: Sequence[str]) -> tuple[str, ...]:
    """``<shell> -e -c "mkdir -p <dir>;\\ncd <dir>;\\nset -xv;\\n<cmd1>;\\n<cmd2>"``, as the Go runner
    runs both the init and the main commands (the same script every executor runs)."""
    return tuple(phase_argv(config.shell, config.workdir, job.id, commands))


def main_command(config: JobPodConfig, job: RunnerJob) -> tuple[str, ...]:
    """The argv exec'd into the job container."""
    return shell_command(config, job, job.commands)


def _file_key(index: int) -> str:
    return f"file.{index}"


def _variable_key(index: int) -> str:
    return f"variable.{index}"


def secret_data(job: RunnerJob) -> dict[str, bytes]:
    """What the job's Secret holds: each file, and each sensitive variable's value."""
    data = {_file_key(i): file.contents.encode() for i, file in enumerate(job.files)}
    data.update({_variable_key(i): v.value.encode() for i, v in enumerate(job.variables) if v.sensitive})
    return data


def _env(
    job: RunnerJob, identity: JobIdentity, reaches: Callable[[JobVariable], bool]
) -> tuple[EnvVar, ...] | None:
    env = tuple(
        EnvVar(v.key, value_from=EnvVarSource(SecretKeySelector(identity.name, _variable_key(i))))
        if v.sensitive
        else EnvVar(v.key, v.value)
        for i, v in enumerate(job.variables)
        if reaches(v)
    )
    return env or None


def build_secret(job: RunnerJob, identity: JobIdentity, config: JobPodConfig) -> Secret | None:
    data = secret_data(job)
    if not data:
        return None
    return Secret(
        metadata=ObjectMeta(identity.name, config.namespace, dict(identity.labels)),
        data={key: base64.b64encode(value).decode("ascii") for key, value in data.items()},
    )


def build_pod_disruption_budget(identity: JobIdentity, config: JobPodConfig) -> PodDisruptionBudget:
    return PodDisruptionBudget(
        metadata=ObjectMeta(identity.name, config.namespace, dict(identity.labels)),
        spec=PodDisruptionBudgetSpec(
            selector=LabelSelector(match_labels=identity.selector), max_unavailable=0
        ),
    )


def build_pod(job: RunnerJob, identity: JobIdentity, config: JobPodConfig) -> Pod:
    job_security = job_container_context(config.container_security_context, agent_mode=config.agent_mode)
    pod_security = (
        PodSecurityContext(run_as_user=0, fs_group=0) if config.agent_mode else config.security_context
    )
    files_mount = VolumeMount(_FILES_VOLUME, FILES_MOUNT, read_only=True)
    workspace_mount = VolumeMount(_WORKSPACE_VOLUME, config.workdir)

    init_containers: list[Container] = []
    files = tuple(KeyToPath(_file_key(i), file.name) for i, file in enumerate(job.files))
    volumes = [
        Volume(_FILES_VOLUME, secret=SecretVolumeSource(identity.name, files, default_mode=FILES_MODE))
        if files
        else Volume(_FILES_VOLUME, empty_dir=EmptyDirVolumeSource())
    ]
    job_mounts = [files_mount, workspace_mount]
    if config.helper_image is not None:
        init_containers.append(
            Container(
                name=HELPER_CONTAINER,
                image=config.helper_image,
                image_pull_policy=config.pull_policy,
                command=("cp", "/opslevel-runner", HELPER_MOUNT),
                security_context=config.container_security_context,
                volume_mounts=(VolumeMount(_HELPER_VOLUME, HELPER_MOUNT),),
            )
        )
        volumes.append(Volume(_HELPER_VOLUME, empty_dir=EmptyDirVolumeSource()))
        job_mounts.insert(1, VolumeMount(_HELPER_VOLUME, HELPER_MOUNT, read_only=True))
    volumes.append(Volume(_WORKSPACE_VOLUME, empty_dir=EmptyDirVolumeSource()))
    if job.init_commands:
        init_containers.append(
            Container(
                name=INIT_CONTAINER,
                image=job.init_image or job.image,
                image_pull_policy=config.pull_policy,
                command=shell_command(config, job, job.init_commands),
                env=_env(job, identity, lambda v: v.scope.reaches_init()),
                resources=config.resources,
                security_context=job_security,
                volume_mounts=(files_mount, workspace_mount),
            )
        )
    job_container = Container(
        name=JOB_CONTAINER,
        image=job.image,
        image_pull_policy=config.pull_policy,
        command=(config.shell, "-c", f"sleep {math.ceil(config.lifetime)}"),
        env=_env(job, identity, lambda v: v.scope.reaches_main()),
        resources=config.resources,
        security_context=job_security,
        volume_mounts=tuple(job_mounts),
    )
    return Pod(
        metadata=ObjectMeta(
            identity.name,
            config.namespace,
            dict(identity.labels),
            dict(config.annotations) if config.annotations else None,
        ),
        spec=PodSpec(
            containers=(job_container,),
            restart_policy="Never",
            termination_grace_period_seconds=config.termination_grace_period_seconds,
            init_containers=tuple(init_containers) or None,
            volumes=tuple(volumes),
            security_context=pod_security,
            service_account_name=config.service_account_name,
            # A job runs arbitrary commands: it gets no API credentials unless its config names the
            # service account it is meant to act as (then that account's own automount setting applies).
            automount_service_account_token=None if config.service_account_name else False,
            node_selector=dict(config.node_selector) if config.node_selector else None,
            dns_policy=config.dns_policy,
            tolerations=config.tolerations,
            affinity=config.affinity,
        ),
    )


def build_job_objects(job: RunnerJob, identity: JobIdentity, config: JobPodConfig) -> JobObjects:
    """The objects of a job; raises :class:`PodSpecError` if the job cannot run in a pod."""
    problems = job_problems(job, config)
    if problems:
        raise PodSpecError(problems)
    return JobObjects(
        build_secret(job, identity, config),
        build_pod_disruption_budget(identity, config),
        build_pod(job, identity, config),
    )
