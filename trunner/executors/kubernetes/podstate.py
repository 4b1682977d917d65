"""Pure reading of a Pod's status while a job waits for it: ready, still waiting (and for what),
or failed before it ever ran.

Image problems that cannot heal (``InvalidImageName``, ``ErrImageNeverPull``) fail at once; those
that may (``ImagePullBackOff``, ``ErrImagePull``, ``CreateContainerConfigError`` while a Secret is
missing, ...) are reported and waited out up to the pod wait limit, whose timeout message then
carries them. The Go runner only looks at the phase and times out without a reason.
"""

from __future__ import annotations

import enum

import attrs

from trunner.kube.objects import ContainerStatus, PodObservation

FATAL_WAITING_REASONS = frozenset({"InvalidImageName", "ErrImageNeverPull"})
STARTING_REASONS = frozenset({"ContainerCreating", "PodInitializing"})
"""Waiting reasons of a pod starting normally; not mentioned next to a real problem."""


class PodState(enum.Enum):
    READY = "ready"
    WAITING = "waiting"
    FAILED = "failed"


@attrs.frozen
class PodVerdict:
    state: PodState
    detail: str
    """What the pod waits for, or why it failed; one line, for the job's log and outcome."""
    exit_code: int | None = None
    """The exit code of a failed init container."""


def _clip(text: str, limit: int = 500) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _reason(reason: str, message: str) -> str:
    if reason and message:
        return f"{reason}: {_clip(message)}"
    return reason or _clip(message)


def _statuses(pod: PodObservation) -> list[tuple[str, ContainerStatus]]:
    return [("init container", s) for s in pod.status.init_container_statuses] + [
        ("container", s) for s in pod.status.container_statuses
    ]


def _terminations(pod: PodObservation) -> list[tuple[str, int]]:
    """``(description, exit code)`` of every container that ended with a non-zero exit code."""
    found = []
    for kind, status in _statuses(pod):
        ended = status.state.terminated if status.state else None
        if ended is not None and ended.exit_code != 0:
            how = _reason(ended.reason, ended.message)
            description = f"{kind} {status.name} exited with code {ended.exit_code}"
            found.append((description + (f" ({how})" if how else ""), ended.exit_code))
    return found


def _waiting(pod: PodObservation) -> list[tuple[str, str]]:
    """``(reason, description)`` of every container that is waiting with a reason."""
    found = []
    for kind, status in _statuses(pod):
        waiting = status.state.waiting if status.state else None
        if waiting is not None and (waiting.reason or waiting.message):
            found.append(
                (waiting.reason, f"{kind} {status.name}: {_reason(waiting.reason, waiting.message)}")
            )
    return found


def evaluate(pod: PodObservation) -> PodVerdict:
    status = pod.status
    if pod.metadata.deletion_timestamp:
        return PodVerdict(PodState.FAILED, "the pod was deleted before it was running")
    if status.phase == "Running":
        return PodVerdict(PodState.READY, "running")
    if status.phase in ("Succeeded", "Failed"):
        terminations = _terminations(pod)
        causes = [_reason(status.reason, status.message)] if status.reason or status.message else []
        causes.extend(description for description, _ in terminations)
        detail = f"the pod {status.phase.lower()} before it was running"
        if causes:
            detail += ": " + "; ".join(causes)
        return PodVerdict(PodState.FAILED, detail, terminations[0][1] if terminations else None)
    waiting = _waiting(pod)
    fatal = [description for reason, description in waiting if reason in FATAL_WAITING_REASONS]
    if fatal:
        return PodVerdict(PodState.FAILED, "; ".join(fatal))
    terminations = _terminations(pod)
    if terminations:
        return PodVerdict(PodState.FAILED, "; ".join(d for d, _ in terminations), terminations[0][1])
    parts = [
        f"{c.type}={c.status}" + (f" {_reason(c.reason, c.message)}" if c.reason or c.message else "")
        for c in status.conditions
        if c.type == "PodScheduled" and c.status == "False"
    ]
    problems = [description for reason, description in waiting if reason not in STARTING_REASONS]
    parts.extend(problems or [description for _, description in waiting])
    if not parts:
        parts.append(f"the pod is {status.phase}" if status.phase else "the pod has no status yet")
    return PodVerdict(PodState.WAITING, "; ".join(parts))


def explain_stop(pod: PodObservation) -> str | None:
    """What the pod says about a job whose exec ended badly: the job container killed (e.g.
    ``OOMKilled``), the pod evicted or marked for disruption, or deleted; None if nothing."""
    status = pod.status
    causes = []
    for container in status.container_statuses:
        ended = container.state.terminated if container.state else None
        if ended is not None:
            how = _reason(ended.reason, ended.message) or "terminated"
            causes.append(f"container {container.name} ended: {how} (exit code {ended.exit_code})")
    if status.phase == "Failed" and (status.reason or status.message):
        causes.append(f"the pod failed: {_reason(status.reason, status.message)}")
    causes.extend(
        f"the pod is marked for disruption: {_reason(c.reason, c.message)}"
        for c in status.conditions
        if c.type == "DisruptionTarget" and c.status == "True"
    )
    if pod.metadata.deletion_timestamp:
        causes.append("the pod was being deleted")
    return "; ".join(causes) or None
