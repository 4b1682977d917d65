"""HTTP proxies as the Go runner uses them (Go's ``ProxyFromEnvironment``; client-go's kubeconfig
``proxy-url``), through the real command line against the doubles and a CONNECT proxy double on
loopback. Hosts named ``*.test`` do not resolve on this machine: a request that reaches the double
behind such a name can only have gone through the proxy, which maps every name to 127.0.0.1."""

from __future__ import annotations

import base64
import json
import signal
import socket
import ssl
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trustme
import yaml
from prometheus_client import CollectorRegistry

from tests.cli.support import ROOT, clean_env
from tests.doubles.kube import serve_kube_api
from tests.doubles.opslevel import OpsLevelDouble
from tests.doubles.proxy import running_proxy, serve_proxy
from trunner.kube.config import load_config
from trunner.kube.errors import KubeConfigError
from trunner.net.proxy import ProxyEnvironment, ProxyError, parse_proxy
from trunner.net.retry import RetryPolicy
from trunner.opslevel.client import OpsLevelClient, graphql_endpoint
from trunner.opslevel.metrics import ApiMetrics

# --- which proxy, as Go chooses it ----------------------------------------------------------------

PROXIES = {"HTTPS_PROXY": "http://secure:3128", "HTTP_PROXY": "plain:3128"}


def chosen(url: str, no_proxy: str = "", **env: str) -> str | None:
    proxy = ProxyEnvironment.from_environ({**PROXIES, "NO_PROXY": no_proxy, **env}).proxy_for(url)
    return None if proxy is None else proxy.url


@pytest.mark.parametrize(
    ("url", "no_proxy", "expected"),
    [
        ("https://api.opslevel.com/graphql", "", "http://secure:3128"),
        ("http://opslevel:3000/graphql", "", "http://plain:3128"),
        ("https://localhost:6443", "", None),
        ("https://127.0.0.1:6443", "", None),
        ("https://127.3.4.5:6443", "", None),
        ("https://[::1]:6443", "", None),
        ("https://10.96.0.1:443", "", "http://secure:3128"),
        ("https://10.96.0.1:443", "10.0.0.0/8", None),
        ("https://10.96.0.1:443", "10.96.0.1", None),
        ("https://10.96.0.1:443", "10.96.0.1:80", "http://secure:3128"),
        ("https://10.96.0.1:443", "10.96.0.1:443", None),
        ("https://api.opslevel.com", "opslevel.com", None),
        ("https://opslevel.com", "opslevel.com", None),
        ("https://api.opslevel.com", ".opslevel.com", None),
        ("https://opslevel.com", ".opslevel.com", "http://secure:3128"),
        ("https://api.opslevel.com", "*.opslevel.com", None),
        ("https://notopslevel.com", "opslevel.com", "http://secure:3128"),
        ("https://api.opslevel.com", " foo.com , OpsLevel.COM ", None),
        ("https://api.opslevel.com:8443", "opslevel.com:443", "http://secure:3128"),
        ("https://api.opslevel.com", "*", None),
        ("https://[2001:db8::5]:443", "2001:db8::/32", None),
        ("https://[2001:db8::5]:443", "[2001:db8::5]:443", None),
    ],
)
def test_the_proxy_for_a_url_is_gos_choice(url: str, no_proxy: str, expected: str | None) -> None:
    assert chosen(url, no_proxy) == expected


def test_upper_case_wins_and_no_fallback_between_schemes() -> None:
    env = {"HTTPS_PROXY": "http://upper:1", "https_proxy": "http://lower:2"}
    assert ProxyEnvironment.from_environ(env).proxy_for("https://x.example").url == "http://upper:1"  # type: ignore[union-attr]
    assert (
        ProxyEnvironment.from_environ({"https_proxy": "lower:2"}).proxy_for("https://x.example") is not None
    )
    assert ProxyEnvironment.from_environ({"HTTP_PROXY": "p:1"}).proxy_for("https://x.example") is None
    assert ProxyEnvironment.from_environ({"HTTPS_PROXY": "p:1"}).proxy_for("http://x.example") is None
    assert (
        ProxyEnvironment.from_environ({"no_proxy": "x.example", "HTTP_PROXY": "p:1"}).proxy_for(
            "http://x.example"
        )
        is None
    )


def test_credentials_in_the_url_become_basic_proxy_authorization() -> None:
    proxy = parse_proxy("http://us%40er:p%3Ass@proxy.corp:8080", "HTTPS_PROXY")
    assert proxy.url == "http://proxy.corp:8080"
    assert proxy.headers == {"Proxy-Authorization": "Basic " + base64.b64encode(b"us@er:p:ss").decode()}
    assert parse_proxy("https://proxy.corp", "x").port == 443 and parse_proxy("proxy.corp", "x").port == 80


@pytest.mark.parametrize("value", ["socks5://proxy:1080", "ftp://proxy:21", "http://:3128"])
def test_an_unusable_proxy_is_an_error_naming_the_variable(value: str) -> None:
    with pytest.raises(ProxyError, match="HTTPS_PROXY"):
        ProxyEnvironment.from_environ({"HTTPS_PROXY": value})


# --- the OpsLevel API ------------------------------------------------------------------------------


async def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    with trio.fail_after(60):
        done = await trio.run_process(
            [sys.executable, "-m", "trunner", *args],
            cwd=ROOT,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env=clean_env(**env),
        )
    return subprocess.CompletedProcess(done.args, done.returncode, done.stdout.decode(), done.stderr.decode())


def no_proxy_env() -> dict[str, str]:
    return {k: "" for k in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy")}


async def test_the_opslevel_api_goes_through_http_proxy(opslevel: OpsLevelDouble) -> None:
    url = f"http://opslevel.test:{opslevel.port}"
    async with serve_proxy() as proxy:
        env = {**no_proxy_env(), "HTTP_PROXY": proxy.url()}
        result = await cli("version", "--api-url", url, env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["opslevel"]["app_version"] == "v2026.11.20"
    assert proxy.forwarded == [f"{url}/api/ping"]


async def test_a_proxy_asking_for_credentials_gets_them_from_the_url(opslevel: OpsLevelDouble) -> None:
    url = f"http://opslevel.test:{opslevel.port}"
    async with serve_proxy(credentials=("runner", "s3cr:t")) as proxy:
        denied = await cli("version", "--api-url", url, env={**no_proxy_env(), "HTTP_PROXY": proxy.url()})
        allowed = await cli(
            "version",
            "--api-url",
            url,
            env={**no_proxy_env(), "http_proxy": proxy.url(userinfo="runner:s3cr%3At")},
        )
    assert "407" in denied.stderr and json.loads(denied.stdout)["opslevel"] == {"app_date": "unknown"}
    assert allowed.returncode == 0 and json.loads(allowed.stdout)["opslevel"]["app_version"] == "v2026.11.20"
    assert [r.status for r in proxy.requests] == [407, 200]
    assert "s3cr" not in allowed.stderr


async def test_loopback_never_goes_through_the_proxy(opslevel: OpsLevelDouble) -> None:
    async with serve_proxy() as proxy:
        result = await cli(
            "version", "--api-url", opslevel.url, env={**no_proxy_env(), "HTTP_PROXY": proxy.url()}
        )
    assert json.loads(result.stdout)["opslevel"]["app_version"] == "v2026.11.20"
    assert proxy.requests == []


async def test_a_bad_proxy_variable_stops_run_before_anything_starts() -> None:
    result = await cli(
        "run", env={**no_proxy_env(), "OPSLEVEL_API_TOKEN": "t", "HTTPS_PROXY": "socks5://p:1080"}
    )
    assert result.returncode == 2
    assert "HTTPS_PROXY: SOCKS proxies are not supported" in result.stderr


def resolve_test_names(port_of: dict[str, int]) -> None:
    """Names of ``port_of`` resolve to 127.0.0.1 in this trio run, nothing else resolves."""

    class Resolver(trio.abc.HostnameResolver):
        async def getaddrinfo(
            self, host: Any, port: Any, family: Any = 0, type: Any = 0, proto: Any = 0, flags: Any = 0
        ):  # type: ignore[no-untyped-def]
            name = host.decode() if isinstance(host, bytes) else host
            if name not in port_of and name != "127.0.0.1":
                raise socket.gaierror(socket.EAI_NONAME, "not a test name")
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", int(port)))]

        async def getnameinfo(self, sockaddr: Any, flags: Any) -> Any:
            raise NotImplementedError

    trio.socket.set_custom_hostname_resolver(Resolver())


async def test_no_proxy_naming_the_host_connects_directly(
    opslevel: OpsLevelDouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    resolve_test_names({"opslevel.test": opslevel.port})
    async with serve_proxy() as proxy:
        for key, value in no_proxy_env().items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("HTTP_PROXY", proxy.url())
        endpoint = graphql_endpoint(f"http://opslevel.test:{opslevel.port}")

        async def check() -> None:
            async with OpsLevelClient(
                endpoint=endpoint,
                token=opslevel.token,
                timeout=10,
                metrics=ApiMetrics(CollectorRegistry(), runner="r"),
                retry=RetryPolicy(max_retries=0, total=10),
            ) as client:
                await client.check_token()

        monkeypatch.setenv("NO_PROXY", "example.com,.test")
        await check()
        assert proxy.requests == []
        monkeypatch.setenv("NO_PROXY", "example.com")
        await check()
        assert proxy.forwarded == [endpoint]


# --- the Kubernetes API, REST and exec WebSocket ---------------------------------------------------

JOB = 'id: "7"\nimage: alpine:3.20\ncommands:\n  - echo proxied "$((6 * 7))"\n'


@pytest.fixture
def kube_tls() -> tuple[trustme.CA, ssl.SSLContext]:
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("kube.test").configure_cert(server)
    return ca, server


async def run_job_through(
    tmp_path: Path,
    kube_tls: tuple[trustme.CA, ssl.SSLContext],
    *,
    cluster: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
    credentials: tuple[str, str] | None = None,
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    ca, server_tls = kube_tls
    async with serve_kube_api(tls=server_tls) as api, serve_proxy(credentials=credentials) as proxy:
        entry = {"certificate-authority-data": base64.b64encode(ca.cert_pem.bytes()).decode()}
        for key, value in (cluster or {}).items():
            entry[key] = value.replace("PROXY", str(proxy.port))
        kubeconfig = api.write_kubeconfig(
            tmp_path / "kubeconfig", server=f"https://kube.test:{api.port}", cluster=entry
        )
        variables = {k: v.replace("PROXY", str(proxy.port)) for k, v in (env or {}).items()}
        job = tmp_path / "job.yaml"
        job.write_text(JOB)
        result = await cli(
            "test",
            "-f",
            str(job),
            "--executor",
            "kubernetes",
            "--job-pod-workdir",
            str(tmp_path / "jobs"),
            env={
                **no_proxy_env(),
                "KUBECONFIG": str(kubeconfig),
                "OPSLEVEL_JOB_POD_OWNER": "proxied",
                **variables,
            },
        )
    return result, proxy.connects


async def test_kubernetes_through_https_proxy_rest_and_exec(tmp_path, kube_tls) -> None:
    result, connects = await run_job_through(tmp_path, kube_tls, env={"HTTPS_PROXY": "127.0.0.1:PROXY"})
    assert result.returncode == 0, result.stderr
    assert "proxied 42" in result.stdout
    assert connects and set(connects) == {f"kube.test:{connects[0].rsplit(':', 1)[1]}"}
    assert len(connects) >= 2, "the REST pool and the exec WebSocket each open a tunnel"


async def test_kubeconfig_proxy_url_with_credentials_wins_over_the_environment(tmp_path, kube_tls) -> None:
    result, connects = await run_job_through(
        tmp_path,
        kube_tls,
        cluster={"proxy-url": "http://ops:pw@127.0.0.1:PROXY"},
        env={"HTTPS_PROXY": "http://127.0.0.1:9", "NO_PROXY": "kube.test"},
        credentials=("ops", "pw"),
    )
    assert result.returncode == 0, result.stderr
    assert "proxied 42" in result.stdout and connects


async def test_a_proxy_refusing_the_tunnel_fails_the_job_saying_so(tmp_path, kube_tls) -> None:
    result, connects = await run_job_through(
        tmp_path, kube_tls, env={"HTTPS_PROXY": "http://127.0.0.1:PROXY"}, credentials=("ops", "pw")
    )
    assert result.returncode != 0 and connects == []
    assert "407" in result.stdout + result.stderr


def test_a_socks_proxy_url_in_the_kubeconfig_is_refused_naming_the_cluster(tmp_path) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "current-context": "c",
                "clusters": [
                    {"name": "k", "cluster": {"server": "https://k:6443", "proxy-url": "socks5://p:1080"}}
                ],
                "contexts": [{"name": "c", "context": {"cluster": "k"}}],
                "users": [],
            }
        )
    )
    with pytest.raises(KubeConfigError, match="cluster 'k': proxy-url: SOCKS"):
        load_config({"KUBECONFIG": str(path)})


def test_in_cluster_and_kubeconfig_servers_take_the_environments_proxy(tmp_path) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "current-context": "c",
                "clusters": [{"name": "k", "cluster": {"server": "https://10.96.0.1:443"}}],
                "contexts": [{"name": "c", "context": {"cluster": "k"}}],
                "users": [],
            }
        )
    )
    env = {"KUBECONFIG": str(path), "HTTPS_PROXY": "http://egress:3128"}
    assert load_config(env).proxy is not None
    assert load_config({**env, "NO_PROXY": "10.96.0.0/12"}).proxy is None


# --- Sentry ------------------------------------------------------------------------------------------


def test_sentry_events_go_through_the_proxy_with_its_credentials() -> None:
    from tests.doubles.sentry import PROJECT, PUBLIC_KEY, running_sentry
    from trunner.observability import errorreport

    with running_sentry() as standin, running_proxy(credentials=("ops", "pw")) as proxy:
        environ = {
            "SENTRY_DSN": f"http://{PUBLIC_KEY}@sentry.test:{standin.port}/{PROJECT}",
            "HTTP_PROXY": proxy.url(userinfo="ops:pw"),
        }
        assert errorreport.init(environ)
        errorreport.report_fatal("trunner could not start")
        errorreport.close()
        assert proxy.forwarded == [f"http://sentry.test:{standin.port}/api/{PROJECT}/envelope/"]
        assert [e["message"] for e in standin.events()] == ["trunner could not start"]

        environ["NO_PROXY"] = "sentry.test"
        environ["SENTRY_DSN"] = standin.dsn
        assert errorreport.init(environ)
        errorreport.report_fatal("direct")
        errorreport.close()
        assert len(proxy.requests) == 1 and len(standin.events()) == 2


# --- the issue's case: `trunner run` with HTTPS_PROXY, the API over TLS trusted the system's way -----


async def test_run_in_api_mode_goes_through_https_proxy_and_trusts_the_system_store(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    from tests.doubles.opslevel import job_payload

    ca = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("opslevel.test").configure_cert(server_tls)
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    double = await nursery.start(partial(OpsLevelDouble().serve, tls=server_tls))
    double.add_job(job_payload("job-1", ['echo "::set-outcome-var via=proxy"']))
    async with serve_proxy() as proxy:
        env = clean_env(
            **{**no_proxy_env(), "HTTPS_PROXY": proxy.url()},
            SSL_CERT_FILE=str(bundle),
            OPSLEVEL_API_URL=f"https://opslevel.test:{double.port}",
            OPSLEVEL_API_TOKEN=double.token,
            OPSLEVEL_METRICS_PORT="0",
            OPSLEVEL_POLL_INTERVAL="1",
            OPSLEVEL_JOB_POD_WORKDIR=str(tmp_path / "jobs"),
        )
        argv = [sys.executable, "-m", "trunner", "run", "--executor", "local"]
        with trio.fail_after(60):
            process = await trio.lowlevel.open_process(argv, cwd=ROOT, env=env)
            try:
                await double.wait_until(lambda: "job-1" in double.outcomes)
                process.send_signal(signal.SIGTERM)
                code = await process.wait()
            finally:
                process.kill()
    assert code == 0
    [outcome] = double.outcomes["job-1"]
    assert outcome.outcome == "success" and ("via", "proxy") in outcome.variables
    assert proxy.connects and set(proxy.connects) == {f"opslevel.test:{double.port}"}
