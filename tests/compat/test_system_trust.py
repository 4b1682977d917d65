"""The OpsLevel API, Faktory over TLS and the Kubernetes API (with no CA configured) verify servers
against the system trust store through truststore, as the Go runner does: a private CA given the
system's way (SSL_CERT_FILE or SSL_CERT_DIR) is trusted, and without it the same server is not."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import trustme
import truststore

from tests.doubles.faktory import faktory_double
from tests.doubles.kube import serve_kube_api
from tests.kube.transport_support import client_for
from trunner.faktory.client import WorkerIdentity, connect, parse_server_url
from trunner.faktory.protocol import ConnectionLost
from trunner.kube.errors import KubeError
from trunner.net.tls import system_trust_context

IDENTITY = WorkerIdentity.producer()


def server_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    return context


@pytest.fixture
def ca(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> trustme.CA:
    """A private CA; the system trust store is pointed away from the machine's own CAs."""
    authority = trustme.CA()
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "none.pem"))
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path / "no-dir"))
    return authority


def trust(ca: trustme.CA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = tmp_path / "bundle.pem"
    ca.cert_pem.write_to_path(str(bundle))
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))


def test_the_context_is_truststores() -> None:
    assert isinstance(system_trust_context(), truststore.SSLContext)
    assert system_trust_context().verify_mode is ssl.CERT_REQUIRED


async def test_faktory_over_tls_trusts_a_ca_from_ssl_cert_file(
    ca, tmp_path, monkeypatch, autojump_clock
) -> None:
    async with faktory_double(ssl_context=server_context(ca)) as server:
        location = parse_server_url(server.url(tls=True), origin="test")
        with pytest.raises(ConnectionLost, match="TLS"):
            await connect(location, IDENTITY, timeout=5)
        trust(ca, tmp_path, monkeypatch)
        conn = await connect(location, IDENTITY, timeout=5)
        await conn.aclose()


async def test_kubernetes_without_a_configured_ca_trusts_the_system_store(
    ca, tmp_path, monkeypatch, autojump_clock
) -> None:
    async with serve_kube_api(tls=server_context(ca)) as api:
        async with client_for(api) as kube:
            with pytest.raises(KubeError):
                await kube.request("GET", "/api/v1/namespaces/default/pods")
        trust(ca, tmp_path, monkeypatch)
        async with client_for(api) as kube:
            await kube.request("GET", "/api/v1/namespaces/default/pods")


async def test_a_configured_kubernetes_ca_is_the_only_one_trusted(
    ca, tmp_path, monkeypatch, autojump_clock
) -> None:
    other = trustme.CA()
    async with serve_kube_api(tls=server_context(ca)) as api:
        trust(ca, tmp_path, monkeypatch)
        async with client_for(api, ca_pem=other.cert_pem.bytes()) as kube:
            with pytest.raises(KubeError):
                await kube.request("GET", "/api/v1/namespaces/default/pods")
        async with client_for(api, ca_pem=ca.cert_pem.bytes()) as kube:
            await kube.request("GET", "/api/v1/namespaces/default/pods")
