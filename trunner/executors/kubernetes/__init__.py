"""The Kubernetes executor: each job runs as a pod (spec, start wait, WebSocket exec, cleanup),
over the API client in :mod:`trunner.kube`."""

from trunner.executors.kubernetes.executor import SETTINGS, KubernetesExecutor, open_executor

__all__ = ["SETTINGS", "KubernetesExecutor", "open_executor"]
