"""The runner's own observability: its Prometheus metrics and their Go names, its log, error
reporting, and the HTTP server for ``/metrics``, ``/healthz`` and ``/readyz``."""
