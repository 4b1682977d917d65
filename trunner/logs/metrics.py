"""Prometheus metrics of the log pipeline and shipper."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class LogMetrics:
    def __init__(self, registry: CollectorRegistry, runner: str = "") -> None:
        labels = ["runner"]
        self.bytes_shipped = Counter(
            "trunner_log_bytes_shipped",
            "Bytes of job log lines delivered to the sink.",
            labels,
            registry=registry,
        ).labels(runner)
        self.lines_shipped = Counter(
            "trunner_log_lines_shipped", "Job log lines delivered to the sink.", labels, registry=registry
        ).labels(runner)
        self.bytes_dropped = Counter(
            "trunner_log_bytes_dropped",
            "Bytes of job log lines dropped (shipping behind or failed).",
            labels,
            registry=registry,
        ).labels(runner)
        self.lines_dropped = Counter(
            "trunner_log_lines_dropped",
            "Job log lines dropped (shipping behind or failed).",
            labels,
            registry=registry,
        ).labels(runner)
        self.lines_cut = Counter(
            "trunner_log_lines_cut",
            "Job log lines longer than the maximum line length, cut into pieces.",
            labels,
            registry=registry,
        ).labels(runner)
        self.batches_shipped = Counter(
            "trunner_log_batches_shipped", "Log batches delivered to the sink.", labels, registry=registry
        ).labels(runner)
        self.batches_failed = Counter(
            "trunner_log_batches_failed",
            "Log batches given up after retries or the flush deadline.",
            labels,
            registry=registry,
        ).labels(runner)
        self.batches_unconfirmed = Counter(
            "trunner_log_batches_unconfirmed",
            "Log batches given up after an attempt whose result is unknown (they may have been delivered).",
            labels,
            registry=registry,
        ).labels(runner)
        self.lines_unconfirmed = Counter(
            "trunner_log_lines_unconfirmed",
            "Job log lines of batches given up after an attempt whose result is unknown: they may have "
            "been delivered (not counted as dropped).",
            labels,
            registry=registry,
        ).labels(runner)
        self.batches_resent = Counter(
            "trunner_log_batches_resent",
            "Log batches delivered after an attempt whose result is unknown (their lines may appear twice).",
            labels,
            registry=registry,
        ).labels(runner)
        self.ship_attempts_failed = Counter(
            "trunner_log_ship_attempts_failed",
            "Failed attempts to deliver a log batch (retried or not).",
            labels,
            registry=registry,
        ).labels(runner)
        self.ship_latency = Histogram(
            "trunner_log_ship_latency_seconds",
            "Time from a batch's hand-off to its delivery.",
            labels,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=registry,
        ).labels(runner)
        self.lines_unflushed = Counter(
            "trunner_log_lines_unflushed",
            "Job log lines still undelivered when the final flush ended (also counted as dropped).",
            labels,
            registry=registry,
        ).labels(runner)
        self.spool_bytes = Gauge(
            "trunner_log_spool_bytes",
            "Bytes of job log spool files on disk.",
            labels,
            registry=registry,
        ).labels(runner)
