"""The autoscaling settings (``--scaling-enabled`` and what it needs)."""

from __future__ import annotations

import attrs

from trunner.config import positive, setting
from trunner.kube.names import dns_label_problem


def _empty_or_dns_label(value: str) -> str | None:
    return dns_label_problem(value) if value else None


@attrs.frozen
class ScalingSettings:
    """Autoscaling"""

    scaling_enabled: bool = setting(
        False,
        help="Leader-elected autoscaling: the runner holding the Lease named after --runner-deployment "
        "sets that Deployment's replicas from OpsLevel's recommendation.",
        env=("OPSLEVEL_SCALING_ENABLED", "SCALING_ENABLED"),
    )
    runner_deployment: str = setting(
        "runner",
        help="Deployment of the runner pods; also the name of the leader election Lease.",
        env=("OPSLEVEL_RUNNER_DEPLOYMENT", "RUNNER_DEPLOYMENT"),
        checks=[lambda v: dns_label_problem(v) if v else "must not be empty"],
    )
    runner_pod_namespace: str = setting(
        "",
        help="Namespace of the runner's Deployment, Lease and pod (empty: the Kubernetes client's, "
        "which in a cluster is the service account's).",
        env=("OPSLEVEL_RUNNER_POD_NAMESPACE", "RUNNER_POD_NAMESPACE"),
        checks=[_empty_or_dns_label],
    )
    runner_min_replicas: int = setting(
        1,
        help="Fewest runner pods the leader scales to.",
        env=("OPSLEVEL_RUNNER_MIN_REPLICAS", "RUNNER_MIN_REPLICAS"),
        checks=[positive],
    )
    runner_max_replicas: int = setting(
        10,
        help="Most runner pods the leader scales to.",
        env=("OPSLEVEL_RUNNER_MAX_REPLICAS", "RUNNER_MAX_REPLICAS"),
        checks=[positive],
    )
    job_concurrency_factor: int = setting(
        100,
        help="Multiplier of --job-concurrency in the jobs-per-runner figure sent to OpsLevel's runnerScale.",
        checks=[positive],
    )
    scaling_interval: float = setting(
        60.0, help="Seconds between the leader's scaling decisions.", checks=[positive]
    )

    def problems(self, pod_name: str) -> list[str]:
        """What keeps scaling from working, beyond the checks of single settings."""
        if not self.scaling_enabled:
            return []
        problems = []
        if self.runner_max_replicas < self.runner_min_replicas:
            problems.append(
                f"--runner-max-replicas ({self.runner_max_replicas}) must be at least "
                f"--runner-min-replicas ({self.runner_min_replicas})"
            )
        if not pod_name:
            problems.append(
                "--scaling-enabled needs the runner's pod name: set RUNNER_POD_NAME from the downward API "
                "(fieldRef metadata.name) or --runner-pod-name"
            )
        return problems
