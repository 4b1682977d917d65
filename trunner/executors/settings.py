"""Settings shared by every executor: how commands are run and for how long."""

from __future__ import annotations

import attrs

from trunner.config import positive, setting


def _absolute(value: str) -> str | None:
    return None if value.startswith("/") else "must be an absolute path"


def _absolute_or_empty(value: str) -> str | None:
    return None if not value or value.startswith("/") else "must be an absolute path (or empty)"


@attrs.frozen
class JobRunSettings:
    """Job execution"""

    job_pod_shell: str = setting("/bin/sh", help="Shell that runs the job's commands.", checks=[_absolute])
    job_pod_workdir: str = setting(
        "",
        help="Directory under which each job works in <workdir>/<job id>. Empty: /jobs in a pod, "
        "a temporary directory (removed afterwards) for the local executor. The local executor makes "
        "its own private directory here (trunner-work-<random>, mode 0700) and works in "
        "<workdir>/trunner-work-<random>/<job id>; it refuses a directory of another user, and one that "
        "others may write to, or that lies below such a directory, unless that directory is sticky.",
        checks=[_absolute_or_empty],
    )
    job_pod_max_lifetime: float = setting(
        3600.0, help="Seconds a job may run before it ends as execution_timeout.", checks=[positive]
    )
