"""Prometheus metrics of the OpsLevel API client and job poller."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


class ApiMetrics:
    """``runner`` is the id the API gave at registration; calls made before it (the token
    check and the registration itself) carry ``runner=""``."""

    def __init__(self, registry: CollectorRegistry, runner: str = "") -> None:
        self.runner = runner
        self._requests = Counter(
            "trunner_api_requests",
            "OpsLevel API requests by operation and outcome (HTTP status, 'timeout' or 'connection_error').",
            ["runner", "operation", "status"],
            registry=registry,
        )
        self._duration = Histogram(
            "trunner_api_request_duration_seconds",
            "Duration of one OpsLevel API request (one attempt).",
            ["runner", "operation"],
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=registry,
        )
        self._retries = Counter(
            "trunner_api_retries",
            "OpsLevel API requests repeated after a retryable failure.",
            ["runner", "operation"],
            registry=registry,
        )
        self._poll_errors = Counter(
            "trunner_api_poll_errors", "Failed polls for pending jobs.", ["runner"], registry=registry
        )
        self._jobs_rejected = Counter(
            "trunner_api_jobs_rejected",
            "Jobs received from the API that could not be read, reported as failed.",
            ["runner"],
            registry=registry,
        )

    def request(self, operation: str, status: str, seconds: float) -> None:
        self._requests.labels(self.runner, operation, status).inc()
        self._duration.labels(self.runner, operation).observe(seconds)

    def retry(self, operation: str) -> None:
        self._retries.labels(self.runner, operation).inc()

    def poll_error(self) -> None:
        self._poll_errors.labels(self.runner).inc()

    def job_rejected(self) -> None:
        self._jobs_rejected.labels(self.runner).inc()
