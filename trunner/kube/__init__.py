"""The Kubernetes API client: configuration and credentials, REST, watch, WebSocket, the Lease, and
the API server's rules for names and labels."""
