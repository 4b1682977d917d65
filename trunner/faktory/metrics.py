"""Prometheus metrics of Faktory mode (the Go runner's ``jobs_enqueue_failed`` and
``jobs_enqueue_batch_failed``, widened to every command)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

from trunner.gometrics import GoRunnerMetrics


class FaktoryMetrics:
    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        runner_id: str = "",
        go: GoRunnerMetrics | None = None,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._runner_id = runner_id
        self._go = go
        self._commands_failed = Counter(
            "trunner_faktory_commands_failed",
            "Faktory commands that failed (connection lost, timeout, error reply), by command.",
            ["runner", "command"],
            registry=self.registry,
        )
        self._jobs_rejected = Counter(
            "trunner_faktory_jobs_rejected",
            "Fetched jobs answered with FAIL without running (unknown job type, undecodable payload).",
            ["runner", "reason"],
            registry=self.registry,
        )

    def command_failed(self, command: str) -> None:
        self._commands_failed.labels(self._runner_id, command).inc()

    def push_failed(self, command: str, *, in_batch: bool) -> None:
        """A push of a log or outcome job failed (``command`` is where it failed)."""
        self.command_failed(command)
        if self._go is not None:
            self._go.push_failed(in_batch=in_batch)

    def job_rejected(self, reason: str) -> None:
        self._jobs_rejected.labels(self._runner_id, reason).inc()
