"""TLS with trustme certificates: the cluster CA, a client certificate (kubeconfig or exec
plugin), insecure-skip-tls-verify and tls-server-name, for REST and for exec's WebSocket."""

from __future__ import annotations

import random

import pytest
import trio

from tests.doubles import kube_exec as steps
from tests.kube.transport_support import NS, RecordingFeed, client_for, make_pki, running_pod, tls_api
from trunner.executors.base import ExitKind, ExitResult
from trunner.executors.kubernetes.exec import exec_stream
from trunner.kube.auth import Credentials, StaticAuth
from trunner.kube.client import KubeApiSettings, KubeClient
from trunner.kube.errors import KubeConfigError, TransportError, Unauthorized

PODS = f"/api/v1/namespaces/{NS}/pods"


async def test_cluster_ca_verifies_the_server(autojump_clock: trio.testing.MockClock) -> None:
    pki = make_pki()
    async with tls_api(pki) as api, client_for(api, ca_pem=pki.ca.cert_pem.bytes()) as client:
        assert (await client.request("GET", PODS))["kind"] == "PodList"
        assert api.url.startswith("https://")


async def test_unknown_ca_fails(autojump_clock: trio.testing.MockClock) -> None:
    pki, other = make_pki(), make_pki()
    async with tls_api(pki) as api, client_for(api, ca_pem=other.ca.cert_pem.bytes()) as client:
        with pytest.raises(TransportError, match="CERTIFICATE_VERIFY_FAILED"):
            await client.request("GET", PODS)


async def test_insecure_skip_tls_verify(autojump_clock: trio.testing.MockClock) -> None:
    pki = make_pki(names=("some.other.name",))
    async with tls_api(pki) as api, client_for(api, insecure_skip_tls_verify=True) as client:
        assert (await client.request("GET", PODS))["kind"] == "PodList"


async def test_tls_server_name(autojump_clock: trio.testing.MockClock) -> None:
    pki = make_pki(names=("kube.internal",))
    ca = pki.ca.cert_pem.bytes()
    async with tls_api(pki) as api:
        async with client_for(api, ca_pem=ca) as client:
            with pytest.raises(TransportError, match="CERTIFICATE_VERIFY_FAILED"):
                await client.request("GET", PODS)
        async with client_for(api, ca_pem=ca, tls_server_name="kube.internal") as client:
            assert (await client.request("GET", PODS))["kind"] == "PodList"


async def test_client_certificate_authenticates(autojump_clock: trio.testing.MockClock) -> None:
    pki = make_pki()
    ca = pki.ca.cert_pem.bytes()
    async with tls_api(pki) as api:
        api.tokens = set()
        api.client_cert_auth = True
        async with client_for(api, ca_pem=ca, auth=StaticAuth(None)) as anonymous:
            with pytest.raises(Unauthorized):
                await anonymous.request("GET", PODS)
        async with client_for(
            api,
            ca_pem=ca,
            auth=StaticAuth(None),
            client_cert_pem=pki.client_cert_pem,
            client_key_pem=pki.client_key_pem,
        ) as client:
            assert (await client.request("GET", PODS))["kind"] == "PodList"
        assert [r.client_cert for r in api.requests] == [False, True]
        assert api.requests[-1].header("authorization") is None


async def test_broken_tls_material_is_a_config_error(autojump_clock: trio.testing.MockClock) -> None:
    pki = make_pki()
    async with tls_api(pki) as api:
        with pytest.raises(KubeConfigError, match="certificate authority is not valid PEM"):
            async with client_for(
                api, ca_pem=b"-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n"
            ):
                pass
        with pytest.raises(KubeConfigError, match="client certificate/key are not a valid PEM pair"):
            async with client_for(api, client_cert_pem=b"x", client_key_pem=b"y"):
                pass


class CertFromPlugin:
    """An authenticator handing out a client certificate, as an exec plugin may."""

    def __init__(self, cert: bytes, key: bytes) -> None:
        self.value = Credentials(client_cert_pem=cert, client_key_pem=key)

    async def credentials(self) -> Credentials:
        return self.value

    def invalidate(self) -> bool:
        return False


async def test_client_certificate_from_credentials(autojump_clock: trio.testing.MockClock) -> None:
    pki = make_pki()
    async with tls_api(pki) as api:
        api.tokens = set()
        api.client_cert_auth = True
        from tests.kube.transport_support import config_for

        config = config_for(api, ca_pem=pki.ca.cert_pem.bytes(), auth=StaticAuth(None))
        auth = CertFromPlugin(pki.client_cert_pem, pki.client_key_pem)
        async with KubeClient.open(config, KubeApiSettings(), auth=auth, rng=random.Random(1)) as client:
            assert (await client.request("GET", PODS))["kind"] == "PodList"
        assert api.requests[-1].client_cert


async def test_exec_over_wss_with_client_certificate_and_server_name(
    autojump_clock: trio.testing.MockClock,
) -> None:
    pki = make_pki(names=("kube.internal",))
    async with tls_api(pki) as api:
        api.tokens = set()
        api.client_cert_auth = True
        async with (
            client_for(
                api,
                ca_pem=pki.ca.cert_pem.bytes(),
                tls_server_name="kube.internal",
                auth=StaticAuth(None),
                client_cert_pem=pki.client_cert_pem,
                client_key_pem=pki.client_key_pem,
            ) as client,
            running_pod(api, client) as pod,
        ):
            api.script_exec(steps.Stdout(b"secure\n"), steps.Exit(0))
            feed = RecordingFeed()
            result = await exec_stream(client, NS, pod, "job", ["true"], feed)
        assert result == ExitResult.exited(0)
        assert feed.stdout == b"secure\n"
        assert api.exec_sessions[0].subprotocol == "v5.channel.k8s.io"
        assert api.requests[-1].client_cert


async def test_exec_over_wss_with_an_unknown_ca(autojump_clock: trio.testing.MockClock) -> None:
    pki, other = make_pki(), make_pki()
    async with tls_api(pki) as api:
        async with client_for(api, ca_pem=pki.ca.cert_pem.bytes()) as client, running_pod(api, client) as pod:
            pass
        async with client_for(api, ca_pem=other.ca.cert_pem.bytes()) as client:
            result = await exec_stream(client, NS, pod, "job", ["true"], RecordingFeed())
        assert result.kind is ExitKind.INFRASTRUCTURE
        assert "CERTIFICATE_VERIFY_FAILED" in result.message
