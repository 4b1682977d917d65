"""What the network clients (Kubernetes, OpsLevel, Faktory) share: one retry policy, TLS contexts
from the system trust store, and the rest of their common ground."""
