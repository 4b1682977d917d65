"""Executors run a job somewhere and feed its output into the job's pipeline."""

from trunner.executors.base import Executor, ExitKind, ExitResult

__all__ = ["Executor", "ExitKind", "ExitResult"]
