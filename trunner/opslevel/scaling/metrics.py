"""Prometheus metrics of autoscaling."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class ScalingMetrics:
    def __init__(self, registry: CollectorRegistry, runner: str = "") -> None:
        self.leading = Gauge(
            "trunner_scaling_leader",
            "1 while this runner holds the scaling Lease.",
            ["runner"],
            registry=registry,
        ).labels(runner)
        self.desired = Gauge(
            "trunner_scaling_desired_replicas",
            "Replica count the leader last decided on.",
            ["runner"],
            registry=registry,
        ).labels(runner)
        self._errors = Counter(
            "trunner_scaling_errors",
            "Scaling rounds or pod-deletion-cost updates that failed, by stage.",
            ["runner", "stage"],
            registry=registry,
        )
        self._runner = runner
        for stage in ("read_scale", "recommend", "write_scale", "deletion_cost"):
            self._errors.labels(runner, stage)

    def error(self, stage: str) -> None:
        self._errors.labels(self._runner, stage).inc()
