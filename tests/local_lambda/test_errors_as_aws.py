"""A handler's error and answer as Lambda's Python runtime gives them, through real boto3."""

from __future__ import annotations

import base64
import decimal
import json
from typing import Any

import pytest

from tests.local_lambda.conftest import FunctionMaker

RAISES = """
def lambda_handler(event, context):
    values = {"a": 1}
    return values["b"] + values["a"]
"""

UNICODE = """
def lambda_handler(event, context):
    return {"greeting": "héllo ✓"}
"""


def test_the_stack_trace_and_the_log_hold_the_users_frames_only(make_function: FunctionMaker, lambda_client: Any):
    make_function("raises", RAISES)

    response = lambda_client.invoke(FunctionName="raises", LogType="Tail")

    error = json.loads(response["Payload"].read())
    log = base64.b64decode(response["LogResult"]).decode()
    assert error["errorType"] == "KeyError"
    assert len(error["stackTrace"]) == 1
    assert error["stackTrace"][0].endswith('in lambda_handler\n    return values["b"] + values["a"]\n')
    assert "^^^" not in "".join(error["stackTrace"])
    assert "[ERROR] KeyError: 'b'\nTraceback (most recent call last):\n" in log
    # In the log (not in the answer) Lambda indents the frames with no-break spaces.
    assert '\n\u00a0\u00a0File "' in log
    assert "\n\u00a0\u00a0\u00a0\u00a0return values" in log
    assert "bootstrap.py" not in log
    assert "^^^" not in log


def test_non_ascii_answers_are_utf8_from_python3_12_and_escaped_before(
    make_function: FunctionMaker, lambda_client: Any
):
    make_function("new", UNICODE, runtime="python3.12")
    make_function("old", UNICODE, runtime="python3.11")

    new = lambda_client.invoke(FunctionName="new")["Payload"].read()
    old = lambda_client.invoke(FunctionName="old")["Payload"].read()

    assert new == '{"greeting": "héllo ✓"}'.encode()
    assert old == b'{"greeting": "h\\u00e9llo \\u2713"}'
    assert json.loads(new) == json.loads(old)


DECIMALS = """
import decimal

def lambda_handler(event, context):
    return {
        "price": decimal.Decimal("0.1"),
        "id": decimal.Decimal("12345678901234567890.123456789"),
        "big": decimal.Decimal("1E+400"),
        "list": [decimal.Decimal("-0.00"), decimal.Decimal("NaN"), decimal.Decimal("Infinity")],
        "looks_like_a_mark": "local-lambda-decimal-0",
    }
"""

BYTES = """
def lambda_handler(event, context):
    return bytes(range(256))
"""


def test_a_decimal_is_answered_with_its_exact_digits(make_function: FunctionMaker, lambda_client: Any):
    make_function("decimals", DECIMALS)

    answer = lambda_client.invoke(FunctionName="decimals")["Payload"].read().decode()

    # Lambda writes str(Decimal) into the JSON: no float rounding, no string quotes; NaN as JSON's NaN.
    assert answer == (
        '{"price": 0.1, "id": 12345678901234567890.123456789, "big": 1E+400, '
        '"list": [-0.00, NaN, Infinity], "looks_like_a_mark": "local-lambda-decimal-0"}'
    )
    assert json.loads(answer, parse_float=decimal.Decimal)["id"] == decimal.Decimal("12345678901234567890.123456789")


def test_bytes_are_answered_as_they_are(make_function: FunctionMaker, lambda_client: Any):
    make_function("raw", BYTES)

    response = lambda_client.invoke(FunctionName="raw")

    assert response["Payload"].read() == bytes(range(256))
    assert "FunctionError" not in response
    assert response["ResponseMetadata"]["HTTPHeaders"]["content-type"] == "application/unknown"


@pytest.mark.parametrize(
    ("code", "error_type", "stack_trace"),
    [
        ("import no_such_module\n", "Runtime.ImportModuleError", []),
        ("def other(event, context):\n    return 1\n", "Runtime.HandlerNotFound", []),
        (
            "def lambda_handler(event, context)\n    return 1\n",
            "Runtime.UserCodeSyntaxError",
            ['  File "{path}" Line 1\n    def lambda_handler(event, context)\n'],
        ),
    ],
)
def test_an_init_error_is_answered_as_lambda_answers_it(
    make_function: FunctionMaker, lambda_client: Any, code: str, error_type: str, stack_trace: list[str]
):
    directory = make_function("broken", code)

    response = lambda_client.invoke(FunctionName="broken", LogType="Tail")

    error = json.loads(response["Payload"].read())
    log = base64.b64decode(response["LogResult"]).decode()
    # An initialisation error belongs to no invocation: Lambda's Python runtime reports it with an empty requestId.
    assert error["requestId"] == ""
    assert error["errorType"] == error_type
    assert error["stackTrace"] == [entry.format(path=directory.resolve() / "handler.py") for entry in stack_trace]
    assert f"[ERROR] {error_type}: {error['errorMessage']}\nTraceback (most recent call last):\n" in log


def test_in_the_json_log_format_an_error_is_logged_as_json(make_function: FunctionMaker, lambda_client: Any):
    make_function("raises", RAISES, logging_config={"log_format": "JSON"})

    response = lambda_client.invoke(FunctionName="raises", LogType="Tail")

    answer = json.loads(response["Payload"].read())
    lines = base64.b64decode(response["LogResult"]).decode().splitlines()
    logged = [json.loads(line) for line in lines if '"log_level"' in line]
    assert len(logged) == 1
    assert logged[0]["log_level"] == "ERROR"
    assert {key: logged[0][key] for key in answer} == answer
    assert not any(line.startswith("[ERROR]") for line in lines)
