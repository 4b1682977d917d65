"""Shared helpers for the Kubernetes transport tests (config, client, exec, double)."""

from __future__ import annotations

import random
import ssl
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio
import trustme

from tests.doubles.kube import KubeApiDouble, serve_kube_api
from trunner.contracts import Stream
from trunner.kube.auth import AuthSpec, StaticAuth
from trunner.kube.client import KubeApiSettings, KubeClient
from trunner.kube.config import KubeConfig
from trunner.net.retry import RetryPolicy

NS = "ci"

POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "job-1", "labels": {"app.kubernetes.io/instance": "job-1"}},
    "spec": {
        "restartPolicy": "Never",
        "containers": [
            {
                "name": "job",
                "image": "alpine:3.20",
                "command": ["sleep", "3600"],
                "env": [{"name": "GREETING", "value": "hello from the pod"}],
            }
        ],
    },
}


class RecordingFeed:
    """An OutputFeed keeping everything."""

    def __init__(self) -> None:
        self.data: dict[Stream, bytearray] = {Stream.STDOUT: bytearray(), Stream.STDERR: bytearray()}
        self.chunks: list[tuple[Stream, bytes]] = []
        self.notes: list[str] = []

    def feed(self, stream: Stream, data: bytes) -> None:
        self.data[stream] += data
        self.chunks.append((stream, data))

    def note(self, text: str) -> None:
        self.notes.append(text)

    async def wait_for_room(self) -> None:
        pass

    @property
    def stdout(self) -> bytes:
        return bytes(self.data[Stream.STDOUT])

    @property
    def stderr(self) -> bytes:
        return bytes(self.data[Stream.STDERR])


class StartedFeed(RecordingFeed):
    """A RecordingFeed whose ``started`` is set by the first output."""

    def __init__(self) -> None:
        super().__init__()
        self.started = trio.Event()

    def feed(self, stream: Stream, data: bytes) -> None:
        super().feed(stream, data)
        self.started.set()


def config_for(api: KubeApiDouble, *, auth: AuthSpec | None = None, **changes: Any) -> KubeConfig:
    config = KubeConfig(server=api.url, namespace=NS, auth=auth or StaticAuth("double-token"), source="test")
    return attrs.evolve(config, **changes)


@asynccontextmanager
async def client_for(
    api: KubeApiDouble,
    *,
    settings: KubeApiSettings | None = None,
    retry: RetryPolicy | None = None,
    **config_changes: Any,
) -> AsyncIterator[KubeClient]:
    async with KubeClient.open(
        config_for(api, **config_changes),
        settings or KubeApiSettings(),
        retry=retry,
        rng=random.Random(7),
    ) as client:
        yield client


@asynccontextmanager
async def running_pod(
    api: KubeApiDouble, client: KubeClient, pod: dict[str, Any] | None = None
) -> AsyncIterator[str]:
    """Create a pod through the API and wait (virtual time) until the double runs it."""
    body = pod or POD
    await client.request("POST", f"/api/v1/namespaces/{NS}/pods", json=body)
    name = body["metadata"]["name"]
    async with client.watch(
        f"/api/v1/namespaces/{NS}/pods", params={"fieldSelector": f"metadata.name={name}"}
    ) as events:
        async for event in events:
            if event.object.get("status", {}).get("phase") == "Running":
                break
    yield name


@attrs.frozen
class Pki:
    ca: trustme.CA
    server: ssl.SSLContext
    client_cert_pem: bytes
    client_key_pem: bytes


def make_pki(*, names: Sequence[str] = ("127.0.0.1", "localhost"), client_ca: bool = True) -> Pki:
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*names).configure_cert(server)
    if client_ca:
        ca.configure_trust(server)
        server.verify_mode = ssl.CERT_OPTIONAL
    client = ca.issue_cert("runner@example.test")
    return Pki(
        ca=ca,
        server=server,
        client_cert_pem=client.cert_chain_pems[0].bytes(),
        client_key_pem=client.private_key_pem.bytes(),
    )


@asynccontextmanager
async def tls_api(pki: Pki) -> AsyncIterator[KubeApiDouble]:
    async with serve_kube_api(tls=pki.server) as api:
        yield api
