"""The Lambda client layer: botocore settings, the retry policy, and real botocore errors as ServiceErrors."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ConnectionClosedError, EndpointConnectionError, ReadTimeoutError

from services.errors import (
    FunctionNotFound,
    InternalError,
    InvalidRequest,
    PayloadTooLarge,
    ServiceError,
    Throttled,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from services.lambda_client import (
    RetryMode,
    RetryPolicy,
    botocore_config,
    build_lambda_client,
    build_local_lambda_client,
    choose_lambda_backend,
    error_code,
    find_aws,
    retry_after_seconds,
    translate_error,
)
from tests.conftest import SettingsFactory
from tests.fake_lambda import FakeLambda, Reply, closed_port_url

ECHO = "waddlebot-echo"
ALL_MODES = tuple(RetryMode)


@pytest.fixture
def fake() -> Iterator[FakeLambda]:
    with FakeLambda() as server:
        server.add_function(ECHO)
        yield server


@pytest.fixture
def lambda_client(make_settings, fake: FakeLambda) -> Iterator[Any]:
    client = build_lambda_client(make_settings(), endpoint_url=fake.url)
    yield client
    client.close()


def raised_by(call: Callable[[], Any]) -> Exception:
    """The exception a real boto3 call raises."""
    with pytest.raises(Exception) as raised:  # noqa: PT011 - any botocore error is the point
        call()
    return raised.value


def throttling_error(retry_after: str | None = None, *, in_body: bool = False) -> ClientError:
    """A ClientError shaped as botocore parses Lambda's TooManyRequestsException."""
    headers = {"x-amzn-errortype": "TooManyRequestsException"}
    response: dict[str, Any] = {
        "Error": {"Code": "TooManyRequestsException", "Message": "Rate Exceeded."},
        "ResponseMetadata": {"HTTPStatusCode": 429, "HTTPHeaders": headers},
    }
    if retry_after is not None:
        if in_body:
            response["retryAfterSeconds"] = retry_after
        else:
            headers["retry-after"] = retry_after
    return ClientError(response, "Invoke")


# -- botocore_config and build_lambda_client --------------------------------------------------------------


@pytest.mark.parametrize("lambda_timeout", ["1", "300", "900"])
def test_read_timeout_outlasts_the_longest_function_run(make_settings, lambda_timeout: str):
    settings = make_settings(LAMBDA_TIMEOUT=lambda_timeout)

    config = botocore_config(settings)

    assert config.read_timeout > settings.lambda_timeout
    assert config.connect_timeout < settings.lambda_timeout + 15


def test_botocore_never_retries_on_its_own(make_settings):
    config = botocore_config(make_settings())

    assert config.retries["total_max_attempts"] == 1


@pytest.mark.parametrize("max_concurrent", ["1", "100", "500"])
def test_connection_pool_holds_every_concurrent_invocation(make_settings, max_concurrent: str):
    settings = make_settings(MAX_CONCURRENT_REQUESTS=max_concurrent)

    assert botocore_config(settings).max_pool_connections >= settings.max_concurrent_requests


def test_client_uses_the_region_and_endpoint_given(make_settings, fake: FakeLambda):
    client = build_lambda_client(make_settings(AWS_REGION="eu-west-1"), endpoint_url=fake.url)
    try:
        assert client.meta.region_name == "eu-west-1"
        assert client.meta.endpoint_url == fake.url
        assert client.invoke(FunctionName=ECHO, Payload=b'{"a": 1}')["Payload"].read() == b'{"a": 1}'
    finally:
        client.close()


@pytest.mark.parametrize(
    "reply", [Reply.throttle(), Reply.service_error(), Reply.dropped()], ids=["throttle", "service-error", "dropped"]
)
def test_the_client_sends_each_call_once(lambda_client, fake: FakeLambda, reply: Reply):
    # botocore's standard mode would retry all three; the module retries itself, knowing what is safe.
    fake.script(reply, reply, reply)

    raised_by(lambda: lambda_client.invoke(FunctionName=ECHO, Payload=b"{}"))

    assert len(fake.calls("Invoke")) == 1


# -- translate_error on errors real boto3 calls raise -----------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "expected", "message"),
    [
        (Reply.error(404, "ResourceNotFoundException", "Function not found: x"), FunctionNotFound, "not found"),
        (Reply.throttle(retry_after=7), Throttled, "throttled"),
        (Reply.service_error("disk on fire"), UpstreamError, "disk on fire"),
        (Reply.error(400, "InvalidRequestContentException", "bad json"), InvalidRequest, "bad json"),
        (Reply.error(413, "RequestTooLargeException", "too big"), PayloadTooLarge, "too big"),
        (Reply.error(413, "RequestEntityTooLargeException", "1048577 byte payload"), PayloadTooLarge, "1048577 byte"),
        (Reply.error(403, "AccessDeniedException", "no"), UpstreamError, "credentials"),
        (Reply.error(400, "SomethingNewException", "surprise"), UpstreamError, "SomethingNewException"),
    ],
    ids=lambda value: value.__name__ if isinstance(value, type) else None,
)
def test_lambda_errors_become_service_errors(
    lambda_client, fake: FakeLambda, reply: Reply, expected: type[ServiceError], message: str
):
    fake.script(reply)
    error = raised_by(lambda: lambda_client.invoke(FunctionName=ECHO, Payload=b"{}"))

    translated = translate_error(error, ECHO, "live")

    assert type(translated) is expected
    assert message in translated.message


def test_not_found_names_the_function_and_qualifier(lambda_client):
    error = raised_by(lambda: lambda_client.invoke(FunctionName="waddlebot-missing", Qualifier="live"))

    assert error_code(error) == "ResourceNotFoundException"
    message = translate_error(error, "waddlebot-missing", "live").message
    assert message.startswith("function 'waddlebot-missing' has no version or alias 'live'")
    assert "'waddlebot-missing' was not found" in translate_error(error, "waddlebot-missing").message


def test_throttled_carries_lambdas_retry_after(lambda_client, fake: FakeLambda):
    fake.script(Reply.throttle(retry_after=7), Reply.throttle())
    with_header = raised_by(lambda: lambda_client.invoke(FunctionName=ECHO))
    without = raised_by(lambda: lambda_client.invoke(FunctionName=ECHO))

    assert retry_after_seconds(with_header) == 7.0
    assert translate_error(with_header, ECHO).retry_after == 7.0
    assert retry_after_seconds(without) is None
    assert translate_error(without, ECHO).retry_after is None


def test_connection_refused_is_unavailable(make_settings):
    client = build_lambda_client(make_settings(), endpoint_url=closed_port_url())
    try:
        error = raised_by(lambda: client.invoke(FunctionName=ECHO))
    finally:
        client.close()

    assert isinstance(error, EndpointConnectionError)
    assert type(translate_error(error, ECHO)) is UpstreamUnavailable


def test_dropped_connection_is_unavailable(lambda_client, fake: FakeLambda):
    fake.script(Reply.dropped())
    error = raised_by(lambda: lambda_client.invoke(FunctionName=ECHO))

    assert isinstance(error, ConnectionClosedError)
    assert type(translate_error(error, ECHO)) is UpstreamUnavailable


def test_read_timeout_is_upstream_timeout(make_settings, fake: FakeLambda):
    # The module's configuration with a short read timeout (its own is LAMBDA_TIMEOUT + 15 s).
    config = botocore_config(make_settings()).merge(Config(read_timeout=0.3))
    client = boto3.session.Session().client("lambda", endpoint_url=fake.url, config=config)
    fake.functions[ECHO].delay = 10  # cut short when the fake stops
    try:
        error = raised_by(lambda: client.invoke(FunctionName=ECHO))
    finally:
        client.close()

    assert isinstance(error, ReadTimeoutError)
    assert type(translate_error(error, ECHO)) is UpstreamTimeout
    assert len(fake.calls("Invoke")) == 1


def test_an_unexpected_error_becomes_internal_with_its_traceback_logged(caplog: pytest.LogCaptureFixture):
    already = FunctionNotFound("gone")
    bug = KeyError("bug")

    assert translate_error(already, ECHO) is already
    translated = translate_error(bug, ECHO)

    assert isinstance(translated, InternalError)
    assert translated.message == "internal error"
    assert any(record.exc_info and record.exc_info[1] is bug for record in caplog.records)


# -- which real errors the retry policy retries, per mode -------------------------------------------------

POLICY = RetryPolicy(max_retries=3, base_delay=0.01)


@pytest.mark.parametrize(
    ("reply", "retried_in"),
    [
        (Reply.throttle(), ALL_MODES),
        (Reply.error(502, "EC2ThrottledException", "slow down"), ALL_MODES),
        (Reply.service_error(), (RetryMode.INVOKE_EVENT, RetryMode.READ)),
        (Reply.dropped(), (RetryMode.READ,)),
        (Reply.error(404, "ResourceNotFoundException", "Function not found"), ()),
        (Reply.error(400, "InvalidRequestContentException", "bad json"), ()),
        (Reply.error(413, "RequestTooLargeException", "too big"), ()),
    ],
    ids=["throttle", "ec2-throttle", "service-error", "dropped", "not-found", "bad-request", "too-large"],
)
def test_what_each_mode_retries(lambda_client, fake: FakeLambda, reply: Reply, retried_in: tuple[RetryMode, ...]):
    fake.script(reply)
    error = raised_by(lambda: lambda_client.invoke(FunctionName=ECHO))

    retried = {mode for mode in ALL_MODES if POLICY.delay_before_retry(error, 0, mode) is not None}

    assert retried == set(retried_in)


def test_connection_refused_is_retried_in_every_mode(make_settings):
    client = build_lambda_client(make_settings(), endpoint_url=closed_port_url())
    try:
        error = raised_by(lambda: client.invoke(FunctionName=ECHO))
    finally:
        client.close()

    assert all(POLICY.delay_before_retry(error, 0, mode) is not None for mode in ALL_MODES)


def test_read_timeout_is_retried_only_for_reads(make_settings, fake: FakeLambda):
    config = botocore_config(make_settings()).merge(Config(read_timeout=0.3))
    client = boto3.session.Session().client("lambda", endpoint_url=fake.url, config=config)
    fake.functions[ECHO].delay = 10
    try:
        error = raised_by(lambda: client.invoke(FunctionName=ECHO))
    finally:
        client.close()

    # A synchronous or Event invoke that timed out may have run: sending it again could run it twice.
    assert POLICY.delay_before_retry(error, 0, RetryMode.INVOKE_SYNC) is None
    assert POLICY.delay_before_retry(error, 0, RetryMode.INVOKE_EVENT) is None
    assert POLICY.delay_before_retry(error, 0, RetryMode.READ) is not None


# -- RetryPolicy.delay_before_retry as a pure function ----------------------------------------------------


@pytest.mark.parametrize("attempt", range(5))
def test_delay_is_jittered_within_half_to_full_backoff(attempt: int):
    policy = RetryPolicy(max_retries=5, base_delay=0.5)
    rng = random.Random(1234)
    backoff = 0.5 * 2**attempt

    delays = [policy.delay_before_retry(throttling_error(), attempt, RetryMode.READ, rng) for _ in range(200)]

    assert all(backoff / 2 <= delay <= backoff for delay in delays)
    # Jitter spreads the delays over the range, so that throttled callers do not retry in step.
    assert min(delays) < backoff * 0.6
    assert max(delays) > backoff * 0.9


def test_delay_grows_with_each_attempt():
    policy = RetryPolicy(max_retries=6, base_delay=0.1)
    rng = random.Random(7)

    ranges = []
    for attempt in range(6):
        delays = [policy.delay_before_retry(throttling_error(), attempt, RetryMode.INVOKE_SYNC, rng) for _ in range(50)]
        ranges.append((min(delays), max(delays)))

    # Each attempt's shortest delay is at least the previous attempt's longest: the backoff doubles.
    assert all(ranges[n + 1][0] >= ranges[n][1] for n in range(5))


def test_same_seed_same_delays():
    policy = RetryPolicy(max_retries=3, base_delay=1.0)

    first = [policy.delay_before_retry(throttling_error(), n, RetryMode.READ, random.Random(99)) for n in range(3)]
    second = [policy.delay_before_retry(throttling_error(), n, RetryMode.READ, random.Random(99)) for n in range(3)]

    assert first == second


@pytest.mark.parametrize("max_retries", [0, 1, 3])
def test_no_delay_once_retries_are_spent(max_retries: int):
    policy = RetryPolicy(max_retries=max_retries, base_delay=0.01)

    assert policy.delay_before_retry(throttling_error(), max_retries, RetryMode.READ) is None
    if max_retries:
        assert policy.delay_before_retry(throttling_error(), max_retries - 1, RetryMode.READ) is not None


@pytest.mark.parametrize("in_body", [False, True], ids=["header", "body"])
def test_retry_after_is_waited_when_longer_than_the_backoff(in_body: bool):
    policy = RetryPolicy(max_retries=3, base_delay=0.01, max_delay=30)

    delay = policy.delay_before_retry(throttling_error("4", in_body=in_body), 0, RetryMode.INVOKE_SYNC)

    assert delay == 4.0


def test_backoff_is_kept_when_longer_than_retry_after():
    policy = RetryPolicy(max_retries=3, base_delay=8, max_delay=30)

    delay = policy.delay_before_retry(throttling_error("1"), 0, RetryMode.READ, random.Random(3))

    assert 4 <= delay <= 8


def test_retry_after_beyond_max_delay_is_not_waited():
    policy = RetryPolicy(max_retries=3, base_delay=0.01, max_delay=30)

    assert policy.delay_before_retry(throttling_error("31"), 0, RetryMode.READ) is None
    assert policy.delay_before_retry(throttling_error("30"), 0, RetryMode.READ) == 30


def test_backoff_is_capped_at_max_delay():
    policy = RetryPolicy(max_retries=10, base_delay=1, max_delay=5)

    assert policy.delay_before_retry(throttling_error(), 8, RetryMode.READ, random.Random(0)) == 5


@pytest.mark.parametrize("value", ["soon", ""])
def test_unreadable_retry_after_is_ignored(value: str):
    policy = RetryPolicy(max_retries=3, base_delay=0.01)

    delay = policy.delay_before_retry(throttling_error(value), 0, RetryMode.READ)

    assert delay is not None
    assert delay <= 0.01


def test_errors_other_than_botocore_errors_are_not_retried():
    assert POLICY.delay_before_retry(ValueError("bug"), 0, RetryMode.READ) is None


# -- is AWS configured here? ------------------------------------------------------------------------------


@pytest.fixture
def no_aws(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """A machine with no AWS configuration at all: no keys, no profile files, no instance metadata."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.mark.usefixtures("no_aws")
def test_nothing_configured_is_no_aws():
    assert find_aws({}) is None


@pytest.mark.usefixtures("no_aws")
@pytest.mark.parametrize("variable", ["AWS_ENDPOINT_URL_LAMBDA", "AWS_ENDPOINT_URL"])
def test_an_endpoint_variable_counts_as_aws(variable: str):
    assert find_aws({variable: "http://127.0.0.1:4566"}) == f"{variable} is set"
    assert find_aws({variable: "  "}) is None


@pytest.mark.usefixtures("no_aws")
def test_credentials_boto3_finds_count_as_aws(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    assert find_aws({}) == "boto3 found credentials (env)"


@pytest.mark.usefixtures("no_aws")
def test_a_profile_in_the_shared_credentials_file_counts_as_aws(monkeypatch: pytest.MonkeyPatch, tmp_path):
    credentials = tmp_path / "credentials"
    credentials.write_text("[default]\naws_access_key_id = AKIAEXAMPLE\naws_secret_access_key = secret\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    assert find_aws({}) == "boto3 found credentials (shared-credentials-file)"


@pytest.mark.usefixtures("no_aws")
def test_the_local_client_signs_with_placeholder_credentials_and_reaches_its_endpoint(make_settings, fake: FakeLambda):
    fake.add_function(ECHO)
    client = build_local_lambda_client(make_settings(), fake.url)
    try:
        response = client.invoke(FunctionName=ECHO, Payload=b'{"a": 1}')
    finally:
        client.close()
    assert response["StatusCode"] == 200
    assert response["Payload"].read() == b'{"a": 1}'


@pytest.fixture
def no_aws_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No AWS keys or profile files, whatever this machine has."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))


@pytest.mark.usefixtures("no_aws_files")
def test_auto_runs_locally_and_says_so_loudly_when_no_aws_is_configured(
    make_settings: SettingsFactory, caplog: pytest.LogCaptureFixture
):
    chosen = choose_lambda_backend(make_settings(LAMBDA_BACKEND="auto"), {})
    assert chosen.lambda_backend == "local"
    assert chosen.lambda_backend_reason == "auto: no AWS credentials or endpoint found"
    [warning] = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert "embedded local runtime" in warning.getMessage()


@pytest.mark.usefixtures("no_aws_files")
def test_auto_uses_aws_when_an_endpoint_or_credentials_are_there(
    make_settings: SettingsFactory, monkeypatch: pytest.MonkeyPatch
):
    by_endpoint = choose_lambda_backend(make_settings(LAMBDA_BACKEND="auto"), {"AWS_ENDPOINT_URL_LAMBDA": "http://x"})
    assert (by_endpoint.lambda_backend, by_endpoint.lambda_backend_reason) == (
        "aws",
        "auto: AWS_ENDPOINT_URL_LAMBDA is set",
    )
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    by_keys = choose_lambda_backend(make_settings(LAMBDA_BACKEND="auto"), {})
    assert by_keys.lambda_backend == "aws"
    assert by_keys.lambda_backend_reason == "auto: boto3 found credentials (env)"


@pytest.mark.usefixtures("no_aws_files")
@pytest.mark.parametrize("backend", ["aws", "local"])
def test_a_chosen_backend_is_kept(make_settings: SettingsFactory, backend: str):
    settings = make_settings(LAMBDA_BACKEND=backend)
    assert choose_lambda_backend(settings, {"AWS_ENDPOINT_URL_LAMBDA": "http://x"}) is settings
