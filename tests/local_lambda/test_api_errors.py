"""Errors answered in Lambda's shape, so that boto3 raises its own exception classes."""

from __future__ import annotations

import base64
import http.client
import json
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from botocore.exceptions import ClientError

from local_lambda import LocalLambdaRuntime, start_runtime_process
from tests.local_lambda.conftest import FunctionMaker, make_lambda_client

ECHO = "def lambda_handler(event, context):\n    return event\n"
RESULT_ONLY = "def lambda_handler(event, context):\n    return len(event)\n"
SYNC_LIMIT = 6 * 1024 * 1024
EVENT_LIMIT = 1024 * 1024


def _json_string_of(size: int) -> bytes:
    """A JSON document (a string) of exactly `size` bytes."""
    return b'"' + b"x" * (size - 2) + b'"'


def test_an_unknown_function_is_resource_not_found(lambda_client: Any) -> None:
    with pytest.raises(lambda_client.exceptions.ResourceNotFoundException) as error:
        lambda_client.invoke(FunctionName="waddlebot-nothing", Payload=b"{}")
    with pytest.raises(lambda_client.exceptions.ResourceNotFoundException):
        lambda_client.get_function_configuration(FunctionName="waddlebot-nothing")

    assert error.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert error.value.response["Error"]["Message"] == (
        "Function not found: arn:aws:lambda:us-east-1:000000000000:function:waddlebot-nothing"
    )
    assert error.value.response["Type"] == "User"


def test_a_payload_that_is_not_json_is_invalid_request_content(
    make_function: FunctionMaker, lambda_client: Any
) -> None:
    make_function("echo", ECHO)

    with pytest.raises(lambda_client.exceptions.InvalidRequestContentException, match="Could not parse") as error:
        lambda_client.invoke(FunctionName="echo", Payload=b"not json")

    assert error.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_json_nested_too_deeply_is_invalid_request_content(make_function: FunctionMaker, lambda_client: Any) -> None:
    make_function("echo", ECHO)
    nested = b"[" * 1200 + b"]" * 1200
    deep_context = base64.b64encode(b'{"custom": ' + nested + b"}").decode()

    with pytest.raises(lambda_client.exceptions.InvalidRequestContentException, match="Could not parse"):
        lambda_client.invoke(FunctionName="echo", Payload=b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises(lambda_client.exceptions.InvalidRequestContentException, match="Client context"):
        lambda_client.invoke(FunctionName="echo", ClientContext=deep_context)


def test_payload_limits_are_lambdas(make_function: FunctionMaker, lambda_client: Any) -> None:
    make_function("sized", RESULT_ONLY)

    # As AWS names them: an oversized synchronous request is refused before Lambda, an oversized event by Lambda.
    with pytest.raises(ClientError, match=str(SYNC_LIMIT)) as sync_error:
        lambda_client.invoke(FunctionName="sized", Payload=_json_string_of(SYNC_LIMIT + 1))
    with pytest.raises(ClientError) as event_error:
        lambda_client.invoke(FunctionName="sized", InvocationType="Event", Payload=_json_string_of(EVENT_LIMIT + 1))
    at_event_limit = lambda_client.invoke(
        FunctionName="sized", InvocationType="Event", Payload=_json_string_of(EVENT_LIMIT)
    )
    at_sync_limit = lambda_client.invoke(FunctionName="sized", Payload=_json_string_of(SYNC_LIMIT))

    assert sync_error.value.response["ResponseMetadata"]["HTTPStatusCode"] == 413
    assert sync_error.value.response["Error"]["Code"] == "RequestEntityTooLargeException"
    assert event_error.value.response["ResponseMetadata"]["HTTPStatusCode"] == 413
    assert event_error.value.response["Error"]["Code"] == "RequestEntityTooLargeException"
    assert event_error.value.response["Error"]["Message"] == (
        f"{EVENT_LIMIT + 1} byte payload is too large for the Event invocation type (limit {EVENT_LIMIT} bytes)"
    )
    assert at_event_limit["StatusCode"] == 202
    assert json.loads(at_sync_limit["Payload"].read()) == SYNC_LIMIT - 2


def test_a_response_of_6_mb_and_100_bytes_is_answered_as_aws_does(
    make_function: FunctionMaker, lambda_client: Any
) -> None:
    # A JSON string of 6 MB + 100 bytes with its quotes: AWS's limit, which it reaches exactly.
    make_function("full", "def lambda_handler(event, context):\n    return 'x' * (6 * 1024 * 1024 + 98)\n")
    make_function("over", "def lambda_handler(event, context):\n    return 'x' * (6 * 1024 * 1024 + 99)\n")

    full = lambda_client.invoke(FunctionName="full")
    over = lambda_client.invoke(FunctionName="over")

    assert "FunctionError" not in full
    assert len(full["Payload"].read()) == 6 * 1024 * 1024 + 100
    assert over["FunctionError"] == "Unhandled"


def test_a_response_over_6_mb_is_a_function_error(make_function: FunctionMaker, lambda_client: Any) -> None:
    make_function("bloated", "def lambda_handler(event, context):\n    return 'x' * (7 * 1024 * 1024)\n")

    response = lambda_client.invoke(FunctionName="bloated")

    assert response["FunctionError"] == "Unhandled"
    assert json.loads(response["Payload"].read())["errorType"] == "Function.ResponseSizeTooLarge"


def test_unknown_operations_are_a_clear_404(runtime: LocalLambdaRuntime, lambda_client: Any) -> None:
    with pytest.raises(ClientError) as error:  # GetPolicy is not served
        lambda_client.get_policy(FunctionName="anything")
    status, headers, body = _request(runtime, "DELETE", "/2015-03-31/functions/anything/invocations")

    assert error.value.response["Error"]["Code"] == "UnknownOperationException"
    assert error.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert status == 404
    assert headers["x-amzn-errortype"] == "UnknownOperationException"
    assert "DELETE /2015-03-31/functions/anything/invocations" in json.loads(body)["message"]
    # The answer says what is served, so a caller knows what to use instead.
    assert "GetFunction, GetFunctionConfiguration, ListVersionsByFunction" in json.loads(body)["message"]
    assert headers["x-amzn-requestid"]


def test_ping_answers_for_readiness_checks(runtime: LocalLambdaRuntime) -> None:
    status, _, body = _request(runtime, "GET", "/ping")

    assert status == 200
    assert json.loads(body) == {"status": "ok"}


def test_malformed_http_is_answered_not_dropped(runtime: LocalLambdaRuntime) -> None:
    with socket.create_connection(("127.0.0.1", runtime.port), timeout=5) as connection:
        connection.sendall(b"NONSENSE\r\n\r\n")
        answer = connection.recv(65536)

    assert answer.startswith(b"HTTP/1.1 400 ")


def test_a_huge_response_is_refused_before_the_runtime_holds_it(
    functions_dir: Path, make_function: FunctionMaker
) -> None:
    response_size = 200 * 1024 * 1024
    make_function(
        "enormous",
        f"def lambda_handler(event, context):\n    return 'x' * {response_size - 2}\n",
        memory_size=2048,
        # Building and encoding 200 MB takes seconds on a loaded machine: the subject is the size, not the time.
        timeout=60,
    )
    with start_runtime_process(functions_dir, port=0, ready_timeout=20) as runtime:
        response = make_lambda_client(runtime.endpoint_url).invoke(FunctionName="enormous")
        runtime_peak_kb = _peak_resident_kb(runtime.pid)

    assert response["FunctionError"] == "Unhandled"
    assert json.loads(response["Payload"].read()) == {
        "errorMessage": f"Response payload size ({response_size} bytes) exceeded maximum allowed payload size "
        f"({SYNC_LIMIT + 100} bytes).",
        "errorType": "Function.ResponseSizeTooLarge",
    }
    assert runtime_peak_kb < 100 * 1024  # far below the response's 200 MB


def _request(runtime: LocalLambdaRuntime, method: str, path: str) -> tuple[int, dict[str, str], bytes]:
    address = urlsplit(runtime.endpoint_url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=10)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def _peak_resident_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmHWM for process {pid}")
