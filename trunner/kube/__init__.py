"""The Kubernetes API client: configuration and credentials, REST, watch, WebSocket, and the Lease."""
