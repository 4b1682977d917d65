"""Leader-elected autoscaling of the runner Deployment (``--scaling-enabled``), as the Go runner does
it, plus what it lacks: a busy runner is the last one a scale-down removes.

Every runner pod campaigns for the Lease named after the Deployment (:mod:`trunner.kube.leader`). The
leader, every ``--scaling-interval`` seconds, reads the Deployment's replica count, asks OpsLevel's
``runnerScale`` for a replica count given ``job-concurrency x job-concurrency-factor`` jobs per
runner, clamps it to ``--runner-min-replicas``..``--runner-max-replicas`` and writes it back
(retrying on a conflicting write). It reads and writes the ``scale`` subresource while the Role
allows it; once the Role refuses it, the Deployment itself, as the Go runner does. Losing the Lease
cancels that loop at once.

Every runner, leader or not, keeps ``controller.kubernetes.io/pod-deletion-cost`` on its own pod
equal to its number of running jobs: a ReplicaSet that scales down removes the pods with the lowest
cost first, so idle runners go before busy ones (and a busy one that must go still finishes its
jobs within its shutdown grace).
"""

from trunner.opslevel.scaling.cluster import DELETION_COST_ANNOTATION, SCALE_ATTEMPTS, DeletionCost, Scaler
from trunner.opslevel.scaling.decision import clamp_replicas, jobs_per_runner
from trunner.opslevel.scaling.metrics import ScalingMetrics
from trunner.opslevel.scaling.service import check_scaling, run_scaling, serve_scaling
from trunner.opslevel.scaling.settings import ScalingSettings

__all__ = [
    "DELETION_COST_ANNOTATION",
    "SCALE_ATTEMPTS",
    "DeletionCost",
    "Scaler",
    "ScalingMetrics",
    "ScalingSettings",
    "check_scaling",
    "clamp_replicas",
    "jobs_per_runner",
    "run_scaling",
    "serve_scaling",
]
