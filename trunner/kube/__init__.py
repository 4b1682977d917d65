"""Kubernetes: configuration, the API client (REST, watch, WebSocket) and pod exec."""
