"""The boto3 Lambda client: which backend it reaches, its botocore settings, the retry policy, and botocore
errors as ServiceErrors."""

from __future__ import annotations

import enum
import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    CredentialRetrievalError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
)
from botocore.exceptions import (
    ConnectionError as BotocoreConnectionError,
)

from config import MODULE_NAME, MODULE_VERSION, Settings
from services.errors import (
    BackendNotConfigured,
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

logger = logging.getLogger(__name__)

_CONNECT_TIMEOUT_SECONDS = 5
# Lambda may take LAMBDA_TIMEOUT to run and a little more to answer; reading less long would abandon (and,
# with retries, re-send) calls that are still running.
_READ_TIMEOUT_MARGIN_SECONDS = 15
# Threads beyond MAX_CONCURRENT_REQUESTS for list and configuration calls, so invocations cannot starve them.
CONTROL_PLANE_THREADS = 4

_THROTTLING_CODES = {"TooManyRequestsException", "ThrottlingException", "EC2ThrottledException"}
_NOT_FOUND_CODES = {"ResourceNotFoundException"}
_BAD_REQUEST_CODES = {
    "InvalidRequestContentException",
    "InvalidParameterValueException",
    "UnsupportedMediaTypeException",
}
_CREDENTIAL_CODES = {
    "UnrecognizedClientException",
    "InvalidSignatureException",
    "ExpiredTokenException",
    "AccessDeniedException",
    "InvalidClientTokenId",
}
_NO_CREDENTIALS_HINT = (
    "no AWS credentials were found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE or an IAM role, "
    "point AWS_ENDPOINT_URL_LAMBDA at a Lambda-compatible endpoint, or set LAMBDA_BACKEND=local to run ./functions"
)
# The embedded runtime checks no signature, but botocore signs every request and needs some credentials.
LOCAL_RUNTIME_CREDENTIALS = {"aws_access_key_id": "local", "aws_secret_access_key": "local"}
# The account the embedded runtime's ARNs name.
LOCAL_RUNTIME_ACCOUNT = "000000000000"
ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL_LAMBDA", "AWS_ENDPOINT_URL")


class LambdaClient(Protocol):
    """What the module uses of boto3's Lambda client (its methods take and give plain dicts)."""

    meta: Any

    def invoke(self, **arguments: Any) -> dict[str, Any]: ...

    def list_functions(self, **arguments: Any) -> dict[str, Any]: ...

    def get_function_configuration(self, **arguments: Any) -> dict[str, Any]: ...


def botocore_config(settings: Settings) -> Config:
    """The botocore settings for the module's one Lambda client."""
    return Config(
        region_name=settings.aws_region,
        connect_timeout=_CONNECT_TIMEOUT_SECONDS,
        read_timeout=settings.lambda_timeout + _READ_TIMEOUT_MARGIN_SECONDS,
        # botocore would re-send a synchronous Invoke after a read timeout; the module retries on its own,
        # and only what proves the function did not run.
        retries={"total_max_attempts": 1, "mode": "standard"},
        # One pooled connection per thread that may call Lambda, so no connection is discarded under load.
        max_pool_connections=settings.max_concurrent_requests + CONTROL_PLANE_THREADS,
        tcp_keepalive=True,
        user_agent_extra=f"{MODULE_NAME}/{MODULE_VERSION}",
        # The module checks every parameter it sends itself (names, qualifiers, payload sizes); botocore's
        # second check of each request is work on every call's path.
        parameter_validation=False,
    )


def build_lambda_client(settings: Settings, endpoint_url: str | None = None) -> LambdaClient:
    """The boto3 Lambda client; credentials and endpoint come from boto3's own chain unless given."""
    session = boto3.session.Session()
    client: LambdaClient = session.client("lambda", endpoint_url=endpoint_url, config=botocore_config(settings))
    return client


def build_local_lambda_client(settings: Settings, endpoint_url: str) -> LambdaClient:
    """The boto3 Lambda client of the embedded runtime: the same client, pointed at loopback."""
    session = boto3.session.Session(**LOCAL_RUNTIME_CREDENTIALS)
    client: LambdaClient = session.client("lambda", endpoint_url=endpoint_url, config=botocore_config(settings))
    return client


# What one history lookup reads of a function's CloudWatch log at most.
MAX_LOG_LINES = 200
_LOG_PAGES = 5


def cloudwatch_log_reader(
    settings: Settings, endpoint_url: str | None = None
) -> Callable[[str, str, datetime, datetime | None], list[str]]:
    """A blocking reader of one invocation's lines in its function's CloudWatch log group (FilterLogEvents on the
    request id, from a minute before the invocation to five after it ended), at most MAX_LOG_LINES.

    With `endpoint_url` (the embedded runtime's), the runtime's own FilterLogEvents answers, with its credentials.
    """
    session = boto3.session.Session(**(LOCAL_RUNTIME_CREDENTIALS if endpoint_url else {}))
    logs = session.client(
        "logs",
        region_name=settings.aws_region,
        endpoint_url=endpoint_url,
        config=Config(connect_timeout=3, read_timeout=5, retries={"total_max_attempts": 2}),
    )

    def read(log_group: str, request_id: str, invoked_at: datetime, completed_at: datetime | None) -> list[str]:
        start = invoked_at.replace(tzinfo=UTC) - timedelta(minutes=1)
        end = (completed_at or invoked_at).replace(tzinfo=UTC) + timedelta(minutes=5)
        arguments: dict[str, Any] = {
            "logGroupName": log_group,
            "filterPattern": f'"{request_id}"',
            "startTime": int(start.timestamp() * 1000),
            "endTime": int(end.timestamp() * 1000),
            "limit": MAX_LOG_LINES,
        }
        lines: list[str] = []
        for _ in range(_LOG_PAGES):
            page = logs.filter_log_events(**arguments)
            lines.extend(str(event.get("message", "")).rstrip("\n") for event in page.get("events", []))
            if len(lines) >= MAX_LOG_LINES or not page.get("nextToken"):
                break
            arguments["nextToken"] = page["nextToken"]
        return lines[:MAX_LOG_LINES]

    return read


def caller_account(settings: Settings) -> str:
    """The AWS account the module's credentials belong to, from STS (blocking; BotoCoreError or ClientError)."""
    sts = boto3.session.Session().client(
        "sts",
        region_name=settings.aws_region,
        config=Config(connect_timeout=3, read_timeout=5, retries={"total_max_attempts": 1}),
    )
    try:
        return str(sts.get_caller_identity()["Account"])
    finally:
        sts.close()


def client_for_backend(settings: Settings) -> LambdaClient:
    """The client for LAMBDA_BACKEND (made concrete by `choose_lambda_backend`): AWS's, or the embedded runtime's."""
    if settings.lambda_backend == "local":
        return build_local_lambda_client(settings, local_runtime_url(settings))
    return build_lambda_client(settings)


def local_runtime_url(settings: Settings) -> str:
    """Where the embedded runtime answers: always loopback, never another host."""
    return f"http://127.0.0.1:{settings.local_lambda_port}"


def choose_lambda_backend(settings: Settings, environ: Mapping[str, str]) -> Settings:
    """Settings with LAMBDA_BACKEND=auto made concrete: aws when AWS is configured here, else local."""
    if settings.lambda_backend == "aws" and find_aws(environ) is None:
        logger.warning(
            "LAMBDA_BACKEND=aws, but boto3 finds no AWS credentials and no endpoint is set: invocations will answer "
            "503 BackendNotConfigured until AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, an IAM role or "
            "AWS_ENDPOINT_URL_LAMBDA is set"
        )
    if settings.lambda_backend != "auto":
        return settings
    found = find_aws(environ)
    if found is not None:
        return replace(settings, lambda_backend="aws", lambda_backend_reason=f"auto: {found}")
    logger.warning(
        "*** LAMBDA_BACKEND is not set and no AWS credentials or endpoint were found: functions run on the "
        "embedded local runtime from %s. Set LAMBDA_BACKEND=aws (and credentials) to call AWS Lambda. ***",
        settings.local_functions_dir,
    )
    return replace(settings, lambda_backend="local", lambda_backend_reason="auto: no AWS credentials or endpoint found")


def find_aws(environ: Mapping[str, str]) -> str | None:
    """Why AWS (or an endpoint like it) is configured here, or None: an endpoint variable, or boto3's credentials."""
    for name in ENDPOINT_VARIABLES:
        if environ.get(name, "").strip():
            return f"{name} is set"
    try:
        credentials = boto3.session.Session().get_credentials()
    except BotoCoreError as error:
        # A broken profile or credential process is still AWS configured: let the first call say what is wrong.
        return f"boto3 found an AWS configuration it could not use ({error})"
    if credentials is None:
        return None
    return f"boto3 found credentials ({credentials.method})"


class RetryMode(enum.Enum):
    """What a failed call may be retried on."""

    # A synchronous Invoke: only what proves the function did not run.
    INVOKE_SYNC = "invoke_sync"
    # An Event Invoke: Lambda delivers at least once anyway, so server errors too.
    INVOKE_EVENT = "invoke_event"
    # Reads (list, get configuration): anything transient.
    READ = "read"


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter from `base_delay`, honouring Lambda's Retry-After."""

    max_retries: int
    base_delay: float
    # A Retry-After longer than this is not waited out; the caller gets the throttling error at once.
    max_delay: float = 30.0

    def delay_before_retry(
        self, error: BaseException, attempt: int, mode: RetryMode, rng: random.Random | None = None
    ) -> float | None:
        """Seconds to wait before retry number `attempt + 1`, or None when `error` must not be retried."""
        if attempt >= self.max_retries or not _is_retryable(error, mode):
            return None
        backoff = self.base_delay * (2**attempt)
        delay = backoff / 2 + (rng or random).uniform(0, backoff / 2)
        retry_after = retry_after_seconds(error)
        if retry_after is not None:
            if retry_after > self.max_delay:
                return None
            delay = max(delay, retry_after)
        return min(delay, self.max_delay)


def _is_retryable(error: BaseException, mode: RetryMode) -> bool:
    if error_code(error) in _THROTTLING_CODES:
        return True
    # Connection refused or connect timeout: the request never left, so the function did not run.
    if isinstance(error, BotocoreConnectionError):
        return True
    if mode is RetryMode.INVOKE_SYNC:
        return False
    if isinstance(error, ClientError) and _http_status(error) >= 500:
        return True
    return mode is RetryMode.READ and isinstance(error, (ReadTimeoutError, ConnectionClosedError))


# Lambda's 5xx codes for failing to set the function up (its network, keys, code): it did not run.
_SETUP_FAILURE_PREFIXES = (
    "EC2",
    "ENI",
    "Subnet",
    "InvalidSubnet",
    "InvalidSecurityGroup",
    "KMS",
    "EFS",
    "InvalidRuntime",
    "InvalidZipFile",
    "ResourceNotReady",
    "SnapStart",
)


def may_have_run(error: BaseException) -> bool:
    """Whether an Invoke that ended in `error` may have run the function all the same.

    The request was sent and no answer came back (a read timeout, a connection closed mid-answer), or Lambda
    failed on its side after taking the request; not when it refused, throttled, or failed to set the function up.
    """
    if isinstance(error, (ReadTimeoutError, ConnectionClosedError)):
        return True
    if isinstance(error, ClientError) and _http_status(error) >= 500:
        code = error_code(error) or ""
        return code not in _THROTTLING_CODES and not code.startswith(_SETUP_FAILURE_PREFIXES)
    return False


def error_code(error: BaseException) -> str | None:
    """Lambda's error code (such as ResourceNotFoundException) of a ClientError, else None."""
    if isinstance(error, ClientError):
        return error.response.get("Error", {}).get("Code")
    return None


def _http_status(error: ClientError) -> int:
    return int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)


def retry_after_seconds(error: BaseException) -> float | None:
    """The wait Lambda asked for on a throttled call (Retry-After header or retryAfterSeconds), if any."""
    if not isinstance(error, ClientError):
        return None
    headers = error.response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    for value in (headers.get("retry-after"), error.response.get("retryAfterSeconds")):
        try:
            if value is not None:
                return max(0.0, float(value))
        except (TypeError, ValueError):
            continue
    return None


def translate_error(error: BaseException, function_name: str, qualifier: str | None = None) -> ServiceError:
    """The ServiceError a boto3 or botocore error stands for (InternalError, logged, for anything unexpected)."""
    if isinstance(error, ServiceError):
        return error
    target = f"{function_name}:{qualifier}" if qualifier else function_name
    if isinstance(error, ClientError):
        code = error_code(error) or "Unknown"
        message = error.response.get("Error", {}).get("Message") or str(error)
        if code in _NOT_FOUND_CODES and qualifier:
            return FunctionNotFound(
                f"function {function_name!r} has no version or alias {qualifier!r} (or the function itself does "
                f"not exist): {message}"
            )
        if code in _NOT_FOUND_CODES:
            return FunctionNotFound(f"function {target!r} was not found: {message}")
        if code in ("RequestTooLargeException", "RequestEntityTooLargeException"):
            return PayloadTooLarge(f"Lambda refused the payload as too large: {message}")
        if code in _BAD_REQUEST_CODES:
            return InvalidRequest(f"Lambda refused the request ({code}): {message}")
        if code in _THROTTLING_CODES:
            return Throttled(f"Lambda throttled {target!r}: {message}", retry_after_seconds(error))
        if code in _CREDENTIAL_CODES:
            return UpstreamError(f"AWS refused the module's credentials ({code}): {message}")
        return UpstreamError(f"Lambda failed ({code}): {message}")
    if isinstance(error, (NoCredentialsError, PartialCredentialsError, CredentialRetrievalError)):
        return BackendNotConfigured(_NO_CREDENTIALS_HINT)
    if isinstance(error, ReadTimeoutError):
        return UpstreamTimeout(f"Lambda did not answer for {target!r} in time; the function may still be running")
    if isinstance(error, ConnectionClosedError):
        return UpstreamUnavailable(f"the connection to Lambda closed before it answered for {target!r}")
    if isinstance(error, BotocoreConnectionError):
        return UpstreamUnavailable(f"Lambda could not be reached: {error}")
    if isinstance(error, BotoCoreError):
        return UpstreamError(f"calling Lambda failed: {error}")
    logger.error("unexpected error calling Lambda for %r", target, exc_info=error)
    return InternalError()
