from __future__ import annotations

import email.utils
import json
import random
import ssl
import time
from functools import partial
from pathlib import Path

import pytest
import trio
import trustme
from prometheus_client import CollectorRegistry

from tests.doubles.opslevel import (
    UNAUTHORIZED,
    Delay,
    GraphQLErrors,
    HttpStatus,
    OpsLevelDouble,
    PayloadErrors,
    Reset,
    Stall,
    job_payload,
)
from trunner import __version__
from trunner.net.retry import NO_RETRIES, RetryPolicy
from trunner.opslevel.client import (
    OpsLevelClient,
    graphql_endpoint,
)
from trunner.opslevel.errors import (
    ApiAuthenticationError,
    ApiGraphQLError,
    ApiPayloadError,
    ApiResponseError,
    ApiStatusError,
    ApiTlsError,
    ApiTransportError,
    GraphQLProblem,
)
from trunner.opslevel.metrics import ApiMetrics
from trunner.opslevel.operations import (
    RUNNER_APPEND_JOB_LOG,
    RUNNER_GET_PENDING_JOB,
    RUNNER_REGISTER,
    AppendJobLogVariables,
    GetPendingJobVariables,
    Operation,
    RegisteredRunner,
    RegisterVariables,
    RunnerAppendJobLogInput,
    RunnerRegisterPayload,
)
from trunner.opslevel.settings import ApiSettings


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def requests_total(registry: CollectorRegistry, operation: str, status: str) -> float:
    return sample(
        registry, "trunner_api_requests_total", runner="test-runner", operation=operation, status=status
    )


# --- URL and headers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("api_url", "endpoint"),
    [
        ("https://api.opslevel.com", "https://api.opslevel.com/graphql"),
        ("https://api.opslevel.com/", "https://api.opslevel.com/graphql"),
        ("https://api.opslevel.com///", "https://api.opslevel.com/graphql"),
        ("https://self-hosted.example.com/api", "https://self-hosted.example.com/api/graphql"),
        ("https://api.opslevel-staging.com/graphql", "https://api.opslevel-staging.com/graphql"),
        ("https://api.opslevel-staging.com/graphql/", "https://api.opslevel-staging.com/graphql"),
        ("http://localhost:3000/LOCAL_TESTING/graphql-x", "http://localhost:3000/LOCAL_TESTING/graphql-x"),
        ("http://localhost:3000/LOCAL_TESTING/q/", "http://localhost:3000/LOCAL_TESTING/q"),
    ],
)
def test_endpoint_rules(api_url: str, endpoint: str) -> None:
    assert graphql_endpoint(api_url) == endpoint


async def test_every_call_sends_the_headers_opslevel_go_sends(opslevel: OpsLevelDouble) -> None:
    settings = ApiSettings(api_url=opslevel.url + "/", api_token=opslevel.token, user_agent_extras="acme-ci")
    async with OpsLevelClient.from_settings(settings, ApiMetrics(CollectorRegistry())) as client:
        await client.check_token()
        await client.call(RUNNER_REGISTER, RegisterVariables(queue=None))
    assert [c.operation for c in opslevel.calls] == ["account", "RunnerRegister"]
    for call in opslevel.calls:
        assert call.headers["authorization"] == "Bearer test-token"
        assert call.headers["graphql-visibility"] == "internal"
        assert call.headers["content-type"] == "application/json"
        agent = call.headers["user-agent"]
        assert agent.startswith(f"trunner/{__version__} python/")
        assert agent.endswith(" user/acme-ci")


async def test_token_check_body_is_exactly_what_opslevel_go_sends(
    client: OpsLevelClient, opslevel: OpsLevelDouble
) -> None:
    account = await client.check_token()
    assert account.id == opslevel.account_id
    assert opslevel.calls[0].body == b'{"query":"{account{id}}"}\n'


async def test_api_url_already_ending_in_graphql_reaches_the_api(opslevel: OpsLevelDouble) -> None:
    settings = ApiSettings(api_url=opslevel.url + "/graphql", api_token=opslevel.token)
    async with OpsLevelClient.from_settings(settings, ApiMetrics(CollectorRegistry())) as client:
        await client.check_token()
    assert len(opslevel.calls) == 1


# --- retries ------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 502, 503, 504])
async def test_retryable_statuses_are_retried_with_backoff(
    status: int,
    client: OpsLevelClient,
    opslevel: OpsLevelDouble,
    registry: CollectorRegistry,
    autojump_clock: trio.testing.MockClock,
) -> None:
    opslevel.inject(HttpStatus(status), operation="account", times=2)
    await client.check_token()
    times = [c.at for c in opslevel.calls]
    assert len(times) == 3
    first_wait, second_wait = times[1] - times[0], times[2] - times[1]
    assert 0.5 <= first_wait <= 1.0 + 0.01
    assert 1.0 <= second_wait <= 2.0 + 0.01
    assert sample(registry, "trunner_api_retries_total", runner="test-runner", operation="account") == 2
    assert requests_total(registry, "account", str(status)) == 2
    assert requests_total(registry, "account", "200") == 1


async def test_retry_after_seconds_is_honoured(
    client: OpsLevelClient, opslevel: OpsLevelDouble, autojump_clock: trio.testing.MockClock
) -> None:
    opslevel.inject(HttpStatus(503, retry_after="7"), operation="account")
    await client.check_token()
    assert len(opslevel.calls) == 2
    assert opslevel.calls[1].at - opslevel.calls[0].at == pytest.approx(7.0, abs=0.01)


async def test_retry_after_http_date_is_honoured(
    client: OpsLevelClient, opslevel: OpsLevelDouble, autojump_clock: trio.testing.MockClock
) -> None:
    when = email.utils.formatdate(time.time() + 20, usegmt=True)
    opslevel.inject(HttpStatus(429, retry_after=when), operation="account")
    await client.check_token()
    assert 18.0 <= opslevel.calls[1].at - opslevel.calls[0].at <= 21.0


async def test_retries_are_bounded_in_attempts(
    client: OpsLevelClient, opslevel: OpsLevelDouble, autojump_clock: trio.testing.MockClock
) -> None:
    opslevel.inject(HttpStatus(503, body=b'{"errors":[{"message":"down for maintenance"}]}'), times=None)
    with pytest.raises(ApiStatusError) as caught:
        await client.check_token()
    assert len(opslevel.calls) == 6
    assert caught.value.status == 503
    assert caught.value.retryable
    assert "down for maintenance" in str(caught.value)


async def test_retries_are_bounded_in_total_time(
    opslevel: OpsLevelDouble, autojump_clock: trio.testing.MockClock
) -> None:
    async with OpsLevelClient(
        endpoint=graphql_endpoint(opslevel.url),
        token=opslevel.token,
        timeout=30.0,
        metrics=ApiMetrics(CollectorRegistry()),
        retry=RetryPolicy(max_retries=50, total=20.0),
        rng=random.Random(1),
    ) as client:
        opslevel.inject(HttpStatus(502), times=None)
        started = trio.current_time()
        with pytest.raises(ApiStatusError):
            await client.check_token()
        assert trio.current_time() - started <= 20.0
        assert 3 <= len(opslevel.calls) <= 6


async def test_retry_after_beyond_the_budget_fails_at_once_with_the_wait(
    client: OpsLevelClient, opslevel: OpsLevelDouble, autojump_clock: trio.testing.MockClock
) -> None:
    opslevel.inject(HttpStatus(429, retry_after="3600"))
    with pytest.raises(ApiStatusError) as caught:
        await client.check_token()
    assert len(opslevel.calls) == 1
    assert caught.value.retry_after == 3600.0


@pytest.mark.parametrize("status", [400, 403, 404, 422, 500])
async def test_other_statuses_are_not_retried(
    status: int, client: OpsLevelClient, opslevel: OpsLevelDouble
) -> None:
    opslevel.inject(HttpStatus(status, body=b'{"errors":[{"message":"the API says no"}]}'))
    with pytest.raises(ApiStatusError) as caught:
        await client.check_token()
    assert len(opslevel.calls) == 1
    assert not caught.value.retryable
    assert str(caught.value) == f"account: HTTP {status}: the API says no"


async def test_connection_reset_is_retried(
    client: OpsLevelClient, opslevel: OpsLevelDouble, autojump_clock: trio.testing.MockClock
) -> None:
    opslevel.inject(Reset(), operation="account", times=2)
    await client.check_token()
    assert len(opslevel.calls) == 3


async def test_connection_reset_without_retries_is_a_transport_error(
    client: OpsLevelClient, opslevel: OpsLevelDouble
) -> None:
    opslevel.inject(Reset())
    with pytest.raises(ApiTransportError) as caught:
        await client.call(RUNNER_REGISTER, RegisterVariables(None), retry=NO_RETRIES)
    assert caught.value.retryable
    assert "connection failed" in str(caught.value)


async def test_connection_refused_is_a_transport_error(autojump_clock: trio.testing.MockClock) -> None:
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()
    async with OpsLevelClient(
        endpoint=f"http://127.0.0.1:{port}/graphql",
        token="t",
        timeout=5.0,
        metrics=ApiMetrics(CollectorRegistry()),
        retry=RetryPolicy(2, 60.0),
        rng=random.Random(1),
    ) as client:
        with pytest.raises(ApiTransportError):
            await client.check_token()


async def test_a_stalled_call_times_out_and_is_retried(
    client: OpsLevelClient, opslevel: OpsLevelDouble, autojump_clock: trio.testing.MockClock
) -> None:
    opslevel.inject(Stall(), operation="account")
    started = trio.current_time()
    await client.check_token()
    assert len(opslevel.calls) == 2
    assert 30.0 <= trio.current_time() - started <= 31.0


async def test_a_stalled_call_without_retries_fails_after_the_timeout(
    client: OpsLevelClient,
    opslevel: OpsLevelDouble,
    registry: CollectorRegistry,
    autojump_clock: trio.testing.MockClock,
) -> None:
    opslevel.inject(Stall())
    started = trio.current_time()
    with pytest.raises(ApiTransportError) as caught:
        await client.call(RUNNER_REGISTER, RegisterVariables(None), retry=NO_RETRIES)
    assert trio.current_time() - started == pytest.approx(30.0, abs=0.01)
    assert str(caught.value) == "RunnerRegister: no response within 30 s"
    assert requests_total(registry, "RunnerRegister", "timeout") == 1


async def test_a_slow_call_within_the_timeout_succeeds(
    client: OpsLevelClient, opslevel: OpsLevelDouble, autojump_clock: trio.testing.MockClock
) -> None:
    opslevel.inject(Delay(25.0))
    await client.check_token()
    assert len(opslevel.calls) == 1


# --- errors -------------------------------------------------------------------------------------


async def test_payload_errors_become_typed_errors_with_the_apis_words(
    client: OpsLevelClient, opslevel: OpsLevelDouble
) -> None:
    opslevel.inject(PayloadErrors((("Queue does not exist", ("queue",)), ("Try again", ("base",)))))
    with pytest.raises(ApiPayloadError) as caught:
        await client.call(RUNNER_REGISTER, RegisterVariables("nope"))
    assert caught.value.problems == (
        GraphQLProblem("Queue does not exist", ("queue",)),
        GraphQLProblem("Try again", ("base",)),
    )
    assert (
        str(caught.value) == "RunnerRegister: OpsLevel API errors: 'queue' Queue does not exist; '' Try again"
    )
    assert not caught.value.retryable
    assert len(opslevel.calls) == 1


async def test_top_level_errors_become_typed_errors(client: OpsLevelClient, opslevel: OpsLevelDouble) -> None:
    opslevel.inject(GraphQLErrors(("Internal server error",)))
    with pytest.raises(ApiGraphQLError) as caught:
        await client.check_token()
    assert str(caught.value) == "account: OpsLevel API error: Internal server error"


async def test_the_double_refuses_an_unknown_operation_text(
    client: OpsLevelClient, opslevel: OpsLevelDouble
) -> None:
    drifted = Operation(
        "RunnerRegister",
        "mutation RunnerRegister($queue:String){runnerRegister(queue: $queue){runner{id},errors{message,path}}}",
        "runnerRegister",
        RunnerRegisterPayload,
    )
    with pytest.raises(ApiGraphQLError, match="Unknown operation text"):
        await client.call(drifted, RegisterVariables(None))


async def test_the_double_refuses_badly_typed_variables(
    client: OpsLevelClient, opslevel: OpsLevelDouble
) -> None:
    bad = RunnerAppendJobLogInput("r", "j", "yesterday", ("aGk=",))
    with pytest.raises(
        ApiGraphQLError,
        match=r"\$input of type RunnerAppendJobLogInput! was provided invalid value: sentAt: Could not coerce value \"yesterday\" to ISO8601DateTime",
    ):
        await client.call(RUNNER_APPEND_JOB_LOG, AppendJobLogVariables(bad))


async def test_a_malformed_payload_is_a_clear_error(client: OpsLevelClient, opslevel: OpsLevelDouble) -> None:
    wrong = Operation("RunnerRegister", RUNNER_REGISTER.text, "runnerRegister", RegisteredRunner)
    with pytest.raises(
        ApiResponseError, match=r"^RunnerRegister: data\.runnerRegister\.id: required field missing$"
    ):
        await client.call(wrong, RegisterVariables(None))


async def test_401_says_how_to_set_the_token_in_one_line(opslevel: OpsLevelDouble) -> None:
    settings = ApiSettings(api_url=opslevel.url, api_token="wrong-token-value")
    async with OpsLevelClient.from_settings(settings, ApiMetrics(CollectorRegistry())) as client:
        with pytest.raises(ApiAuthenticationError) as caught:
            await client.check_token()
    message = str(caught.value)
    assert "\n" not in message
    assert "export OPSLEVEL_API_TOKEN=<token>" in message
    assert "wrong-token-value" not in message
    assert len(opslevel.calls) == 1


async def test_injected_401_is_not_retried(client: OpsLevelClient, opslevel: OpsLevelDouble) -> None:
    opslevel.inject(UNAUTHORIZED)
    with pytest.raises(ApiAuthenticationError):
        await client.check_token()
    assert len(opslevel.calls) == 1


async def test_the_token_never_reaches_the_logs(
    opslevel: OpsLevelDouble, all_logs: object, autojump_clock: trio.testing.MockClock
) -> None:
    secret = "s3cr3t-token-value"
    opslevel.token = secret
    settings = ApiSettings(api_url=opslevel.url, api_token=secret)
    opslevel.inject(HttpStatus(503), times=2)
    opslevel.inject(Reset(), times=1)
    opslevel.inject(Stall(), times=1)
    async with OpsLevelClient.from_settings(settings, ApiMetrics(CollectorRegistry())) as client:
        await client.check_token()
        runner = await client.call(RUNNER_REGISTER, RegisterVariables(None))
        opslevel.add_job(job_payload("job-1", ["echo hi"]))
        await client.call(
            RUNNER_GET_PENDING_JOB, GetPendingJobVariables(runner.runner.id if runner.runner else "", None)
        )
    records = all_logs.records  # type: ignore[attr-defined]
    assert any("retrying" in r for r in records)
    assert all(secret not in r for r in records)
    assert secret not in repr(settings)


async def test_requests_are_counted_by_operation_and_status(
    client: OpsLevelClient, opslevel: OpsLevelDouble, registry: CollectorRegistry
) -> None:
    await client.check_token()
    registered = await client.call(RUNNER_REGISTER, RegisterVariables("q1"))
    assert registered.runner is not None
    assert json.loads(opslevel.calls[1].body)["variables"] == {"queue": "q1"}
    assert requests_total(registry, "RunnerRegister", "200") == 1
    assert (
        sample(
            registry, "trunner_api_request_duration_seconds_count", runner="test-runner", operation="account"
        )
        == 1
    )


async def test_https_trusts_the_ca_named_by_ssl_cert_file(
    nursery: trio.Nursery, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The API client verifies with the system's trust store, so a private CA given the system's way
    (SSL_CERT_FILE, as the chart's caBundle does) is trusted, and without it the same server is not."""
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    opslevel: OpsLevelDouble = await nursery.start(partial(OpsLevelDouble().serve, tls=server))
    assert opslevel.url.startswith("https://")

    async def register() -> None:
        async with OpsLevelClient(
            endpoint=graphql_endpoint(opslevel.url),
            token=opslevel.token,
            timeout=10.0,
            metrics=ApiMetrics(CollectorRegistry()),
            retry=RetryPolicy(0, 10.0),
            rng=random.Random(1),
        ) as client:
            await client.call(RUNNER_REGISTER, RegisterVariables(None), retry=NO_RETRIES)

    with pytest.raises(ApiTlsError):
        await register()
    bundle = tmp_path / "ca-bundle.crt"
    ca.cert_pem.write_to_path(str(bundle))
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    await register()
    assert opslevel.calls_to("RunnerRegister")
