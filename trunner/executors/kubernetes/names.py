"""Names and labels of a job's Kubernetes objects.

Every object of a job (Secret, PodDisruptionBudget, Pod) is called
``opslevel-job-<job key>-<unix time>``, as in the Go runner, but made safe: the Go runner pastes
the raw key in, so a Faktory job id with capitals or underscores gives a name the API rejects.
The name is also the value of the ``app.kubernetes.io/instance`` label, so it must satisfy both
DNS-1123 label rules and label-value rules: at most 63 characters of ``[a-z0-9-]``, starting and
ending with a letter or digit. A key that had to be changed or shortened gets a short hash of the
original, so two different keys never share a name.
"""

from __future__ import annotations

import hashlib
import re

import attrs

from trunner.executors.base import JobNaming
from trunner.kube.names import MAX_LABEL
from trunner.models import RunnerJob

NAME_PREFIX = "opslevel-job-"
INSTANCE_LABEL = "app.kubernetes.io/instance"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
OWNER_LABEL = "runner.opslevel.com/owner"
"""Which runner process (pod name or host) created the object; startup cleanup selects on it."""

_HASH_LENGTH = 8


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:_HASH_LENGTH]


def _fit(original: str, cleaned: str, budget: int) -> str:
    """``cleaned`` if it is ``original`` unchanged and fits; else a prefix of it plus a hash of
    ``original`` (``budget`` counts the joining dash and the hash)."""
    if cleaned == original and len(cleaned) <= budget:
        return cleaned
    head = cleaned[: budget - _HASH_LENGTH - 1].rstrip("-_.")
    return f"{head}-{_digest(original)}" if head else _digest(original)


def object_name(job_key: str, unix_time: int) -> str:
    """``opslevel-job-<key>-<unix time>``, DNS-1123 label safe."""
    suffix = f"-{unix_time}"
    budget = MAX_LABEL - len(NAME_PREFIX) - len(suffix)
    cleaned = re.sub(r"-+", "-", re.sub(r"[^a-z0-9]", "-", job_key.lower())).strip("-")
    return f"{NAME_PREFIX}{_fit(job_key, cleaned, budget)}{suffix}"


def label_value(text: str) -> str:
    """``text`` as a valid label value; a changed or shortened value carries a hash of ``text``."""
    cleaned = re.sub(r"[^-A-Za-z0-9_.]", "-", text).strip("-_.")
    return _fit(text, cleaned, MAX_LABEL)


def job_key(job: RunnerJob, naming: JobNaming) -> str:
    return job.number() if naming is JobNaming.NUMBER else job.id


@attrs.frozen
class JobIdentity:
    """The name shared by a job's objects and the labels that select them."""

    name: str
    labels: dict[str, str]

    @property
    def selector(self) -> dict[str, str]:
        """The labels that pick out exactly this job's pod."""
        return {INSTANCE_LABEL: self.labels[INSTANCE_LABEL], MANAGED_BY_LABEL: self.labels[MANAGED_BY_LABEL]}


def job_identity(
    job: RunnerJob, *, runner_id: str, owner: str, naming: JobNaming, unix_time: int
) -> JobIdentity:
    name = object_name(job_key(job, naming), unix_time)
    return JobIdentity(
        name,
        {
            INSTANCE_LABEL: name,
            MANAGED_BY_LABEL: label_value(f"runner-{runner_id}"),
            OWNER_LABEL: label_value(owner),
        },
    )


def leftover_selector(owner: str) -> str:
    """Label selector for every object this runner process's predecessors created."""
    return f"{OWNER_LABEL}={label_value(owner)}"
