"""What the OpsLevel client says about a server it cannot trust or a URL that leaks: a TLS
verification failure is one clear, unretried error; userinfo in the URL and the token never reach
the runner's log; plain http:// is warned about."""

from __future__ import annotations

import contextlib
import logging
import ssl
from functools import partial
from pathlib import Path

import pytest
import trio
import trustme
from prometheus_client import CollectorRegistry

from tests.doubles.command_executor import CommandExecutor
from tests.doubles.opslevel import job_payload
from tests.opslevel.harness import start_mode
from tests.opslevel.test_opslevel_mode import FAST, metric
from trunner.net.retry import RetryPolicy
from trunner.opslevel.client import OpsLevelClient
from trunner.opslevel.errors import ApiError, ApiTlsError
from trunner.opslevel.metrics import ApiMetrics
from trunner.opslevel.mode import warn_if_unencrypted
from trunner.opslevel.settings import ApiSettings


async def test_a_certificate_that_does_not_verify_is_a_tls_error_and_not_retried(
    autojump_clock, nursery, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "none.pem"))
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path / "no-dir"))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert("127.0.0.1").configure_cert(context)
    accepted = []

    async def handle(stream: trio.SocketStream) -> None:
        accepted.append(1)
        tls = trio.SSLStream(stream, context, server_side=True)
        with contextlib.suppress(trio.BrokenResourceError):
            await tls.do_handshake()
        await stream.aclose()

    listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    settings = ApiSettings(
        api_url=f"https://user:url-pass-123@127.0.0.1:{port}", api_token="t0ken-abc", api_max_retries=3
    )
    async with OpsLevelClient.from_settings(settings, ApiMetrics(CollectorRegistry())) as client:
        with pytest.raises(
            ApiTlsError, match="TLS verification of https://\\*\\*\\*@127.0.0.1:.* failed"
        ) as caught:
            await client.check_token()
    assert "url-pass-123" not in str(caught.value)
    assert len(accepted) == 1


def test_plain_http_is_warned_about_without_the_userinfo(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="trunner"):
        warn_if_unencrypted("http://admin:hunter2-pass@api.example.test")
        warn_if_unencrypted("https://api.opslevel.com")
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert "is http://" in message and "unencrypted" in message and "hunter2" not in message
    assert "http://***@api.example.test" in message


async def test_a_job_with_no_id_is_logged_and_counted(
    nursery, opslevel, autojump_clock, caplog: pytest.LogCaptureFixture
) -> None:
    no_id = job_payload("x", ["exit 0"])
    no_id["id"] = None
    opslevel.add_job(no_id)
    opslevel.add_job(job_payload("job-good", ["exit 0"]))
    with caplog.at_level(logging.ERROR, logger="trunner"):
        running = await start_mode(nursery, opslevel, CommandExecutor(), **FAST)
        with trio.fail_after(60):
            await opslevel.wait_until(lambda: "job-good" in opslevel.outcomes)
    assert any(
        "the API sent a job with no id (fields commands, image" in r.getMessage() for r in caplog.records
    )
    assert await metric(running.metrics_url, "trunner_api_jobs_rejected_total") == 1
    assert await running.stop() == 0


async def test_a_header_httpx_refuses_is_described_without_its_value(autojump_clock, opslevel) -> None:
    client = OpsLevelClient(
        endpoint=f"{opslevel.url}/graphql",
        token="bad\ntoken-value-77",
        timeout=5.0,
        metrics=ApiMetrics(CollectorRegistry()),
        retry=RetryPolicy(0, 5.0),
    )
    async with client:
        with pytest.raises(ApiError) as caught:
            await client.check_token()
    assert "token-value-77" not in str(caught.value) and "a header value is not valid" in str(caught.value)
