"""The Go runner's Prometheus metrics, by its names, types, labels and buckets.

Dashboards and alerts written for the Go runner read ``opslevel_runner_jobs_started``,
``_jobs_finished{outcome}``, ``_jobs_processing``, ``_jobs_duration`` and, in Faktory mode,
``_jobs_enqueue_failed`` and ``_jobs_enqueue_batch_failed``, each with a constant ``runner`` label
(the runner id in API mode, ``faktory`` in Faktory mode). The Go client exposes counters under
their bare names (no ``_total``) and no ``_created`` series; prometheus-client's Counter cannot,
so this collector builds the families itself and :func:`exposition` names them in its HELP and
TYPE lines as the Go client does. The registry is served in the text format 0.0.4, the only one the
Go runner serves.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

NAMESPACE = "opslevel_runner"
DURATION_BUCKETS = (5.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1200.0)
COUNTERS = ("jobs_started", "jobs_finished", "jobs_enqueue_failed", "jobs_enqueue_batch_failed")


def go_float(value: float) -> str:
    """A float as the Go client writes a bucket bound (``strconv.FormatFloat(v, 'g', -1, 64)``):
    ``5``, ``0.25``, ``+Inf``; prometheus-client would write ``5.0``, a different label value."""
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    return repr(value)


def exposition(registry: CollectorRegistry) -> bytes:
    """The registry in the Prometheus text format, the Go runner's counters under their bare names
    in HELP and TYPE too (prometheus-client writes ``<name>_total`` there for every counter)."""
    text = generate_latest(registry)
    for name in COUNTERS:
        full = f"{NAMESPACE}_{name}".encode()
        text = text.replace(b"# HELP " + full + b"_total ", b"# HELP " + full + b" ")
        text = text.replace(b"# TYPE " + full + b"_total counter\n", b"# TYPE " + full + b" counter\n")
    return text


class GoRunnerMetrics(Collector):
    """Counts fed by the runner; collected under the Go runner's names."""

    def __init__(
        self, registry: CollectorRegistry | None, runner_id: str, outcomes: Iterable[str] = ()
    ) -> None:
        self.runner_id = runner_id
        self.started = 0
        self.processing = 0
        self.finished: dict[str, int] = dict.fromkeys(outcomes, 0)
        self.enqueue_failed = 0
        self.enqueue_batch_failed = 0
        self._bucket_counts = [0] * (len(DURATION_BUCKETS) + 1)
        self._duration_sum = 0.0
        if registry is not None:
            registry.register(self)

    def job_started(self) -> None:
        self.started += 1
        self.processing += 1

    def job_finished(self, outcome: str, seconds: float) -> None:
        self.processing -= 1
        self.finished[outcome] = self.finished.get(outcome, 0) + 1
        index = next(
            (i for i, bound in enumerate(DURATION_BUCKETS) if seconds <= bound), len(DURATION_BUCKETS)
        )
        self._bucket_counts[index] += 1
        self._duration_sum += seconds

    def push_failed(self, *, in_batch: bool) -> None:
        if in_batch:
            self.enqueue_batch_failed += 1
        else:
            self.enqueue_failed += 1

    def _family(self, name: str, help_text: str, kind: str) -> Metric:
        return Metric(f"{NAMESPACE}_{name}", help_text, kind)

    def collect(self) -> Iterable[Metric]:
        runner = {"runner": self.runner_id}
        for name, help_text, value in (
            ("jobs_started", "The count of jobs that started processing.", self.started),
            (
                "jobs_enqueue_failed",
                "The count of jobs that failed to enqueue to faktory.",
                self.enqueue_failed,
            ),
            (
                "jobs_enqueue_batch_failed",
                "The count of jobs that failed to enqueue to faktory for a batch.",
                self.enqueue_batch_failed,
            ),
        ):
            family = self._family(name, help_text, "counter")
            family.add_sample(family.name, runner, float(value))
            yield family
        finished = self._family(
            "jobs_finished", "The count of jobs that finished processing by outcome status.", "counter"
        )
        for outcome, count in sorted(self.finished.items()):
            finished.add_sample(finished.name, {**runner, "outcome": outcome}, float(count))
        yield finished
        processing = self._family(
            "jobs_processing", "The current number of active jobs being processed.", "gauge"
        )
        processing.add_sample(processing.name, runner, float(self.processing))
        yield processing
        duration = self._family("jobs_duration", "The duration of jobs in seconds.", "histogram")
        cumulative = 0
        for bound, count in zip((*DURATION_BUCKETS, math.inf), self._bucket_counts, strict=True):
            cumulative += count
            le = go_float(bound)
            duration.add_sample(f"{duration.name}_bucket", {**runner, "le": le}, float(cumulative))
        duration.add_sample(f"{duration.name}_sum", runner, self._duration_sum)
        duration.add_sample(f"{duration.name}_count", runner, float(cumulative))
        yield duration
