"""Runner-level Prometheus metrics. One registry per process (tests make their own)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from trunner.logs.metrics import LogMetrics
from trunner.models import Outcome
from trunner.observability.gometrics import GoRunnerMetrics


class RunnerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None, runner_id: str = "") -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.runner_id = runner_id
        labels = ["runner"]
        self.logs = LogMetrics(self.registry, runner_id)
        self.go = GoRunnerMetrics(self.registry, runner_id, (outcome.value for outcome in Outcome))
        self.jobs_started = Counter(
            "trunner_jobs_started", "Jobs started.", labels, registry=self.registry
        ).labels(runner_id)
        self._jobs_finished = Counter(
            "trunner_jobs_finished",
            "Jobs finished, by outcome.",
            [*labels, "outcome"],
            registry=self.registry,
        )
        for outcome in Outcome:
            self._jobs_finished.labels(runner_id, outcome.value)
        self.jobs_in_progress = Gauge(
            "trunner_jobs_in_progress", "Jobs running now.", labels, registry=self.registry
        ).labels(runner_id)
        self.job_duration = Histogram(
            "trunner_job_duration_seconds",
            "Time from a job's claim to its reported outcome.",
            labels,
            buckets=(1, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200),
            registry=self.registry,
        ).labels(runner_id)
        self.pod_start_latency = Histogram(
            "trunner_pod_start_latency_seconds",
            "Time from creating a job pod to it running.",
            labels,
            buckets=(0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300),
            registry=self.registry,
        ).labels(runner_id)

        self.exec_resumes = Counter(
            "trunner_exec_resumes",
            "Reads of a job's output resumed after its exec stream dropped.",
            labels,
            registry=self.registry,
        ).labels(runner_id)
        self.exec_resume_latency = Histogram(
            "trunner_exec_resume_latency_seconds",
            "Time from an exec stream's drop to the job's output flowing again.",
            labels,
            buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300),
            registry=self.registry,
        ).labels(runner_id)

    def exec_resumed(self, seconds: float) -> None:
        self.exec_resumes.inc()
        self.exec_resume_latency.observe(seconds)

    def job_started(self) -> None:
        self.jobs_started.inc()
        self.jobs_in_progress.inc()
        self.go.job_started()

    def job_finished(self, outcome: Outcome, duration: float) -> None:
        self.jobs_in_progress.dec()
        self.job_duration.observe(duration)
        self._jobs_finished.labels(self.runner_id, outcome.value).inc()
        self.go.job_finished(outcome.value, duration)
