"""A handler's error and answer as Lambda's Python runtime gives them, through real boto3."""

from __future__ import annotations

import base64
import json
from typing import Any

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
