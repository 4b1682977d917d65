"""Prometheus metrics of Faktory mode (the Go runner's ``jobs_enqueue_failed`` and
``jobs_enqueue_batch_failed``, widened to every command)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from trunner.observability.gometrics import GoRunnerMetrics


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
        self._jobs_left = Counter(
            "trunner_faktory_jobs_left_for_redelivery",
            "Jobs the shutdown interrupted, neither reported nor acknowledged: Faktory delivers them "
            "again when their reservation expires.",
            ["runner"],
            registry=self.registry,
        )
        self._connected = Gauge(
            "trunner_faktory_connected",
            "1 while the worker's connection to Faktory works, 0 while it is lost and being reconnected.",
            ["runner"],
            registry=self.registry,
        )
        self._reconnect_attempts = Counter(
            "trunner_faktory_reconnect_attempts",
            "Attempts to reconnect to Faktory after the connection was lost.",
            ["runner"],
            registry=self.registry,
        )
        self._answers_undelivered = Counter(
            "trunner_faktory_answers_undelivered",
            "ACKs and FAILs given up on (Faktory retries those jobs when their reservation expires).",
            ["runner", "command"],
            registry=self.registry,
        )

    def set_connected(self, connected: bool) -> None:
        self._connected.labels(self._runner_id).set(1 if connected else 0)

    def reconnect_attempted(self) -> None:
        self._reconnect_attempts.labels(self._runner_id).inc()

    def answer_undelivered(self, command: str) -> None:
        self._answers_undelivered.labels(self._runner_id, command).inc()

    def command_failed(self, command: str) -> None:
        self._commands_failed.labels(self._runner_id, command).inc()

    def push_failed(self, command: str, *, in_batch: bool) -> None:
        """A push of a log or outcome job failed (``command`` is where it failed)."""
        self.command_failed(command)
        if self._go is not None:
            self._go.push_failed(in_batch=in_batch)

    def job_left(self) -> None:
        self._jobs_left.labels(self._runner_id).inc()

    def job_rejected(self, reason: str) -> None:
        self._jobs_rejected.labels(self._runner_id, reason).inc()
