"""grpc_api/convert.py: protobuf messages to the services' plain types and back, as pure functions."""

from __future__ import annotations

import base64
import json

import pytest

from grpc_api import convert
from proto import lambda_action_pb2 as pb
from services.domain import FunctionInfo, InvokeRequest, InvokeResult
from services.errors import ConcurrencyLimitReached, FunctionNotFound, InvalidRequest

FULL_INFO = FunctionInfo(
    function_name="waddlebot-echo",
    function_arn="arn:aws:lambda:us-east-1:123456789012:function:waddlebot-echo",
    runtime="python3.12",
    role="arn:aws:iam::123456789012:role/echo",
    handler="handler.lambda_handler",
    code_size=2048,
    description="echoes",
    timeout=30,
    memory_size=256,
    last_modified="2024-01-01T00:00:00.000+0000",
    version="3",
    state="Active",
    architectures=("arm64", "x86_64"),
)


def _wire(message):
    """The message after a trip over the wire."""
    return type(message).FromString(message.SerializeToString())


# -- requests ---------------------------------------------------------------------------------------------


def test_an_invoke_request_with_every_field():
    message = pb.InvokeFunctionRequest(
        function_name="waddlebot-echo",
        payload='{"command": "!help"}',
        invocation_type="Event",
        alias="live",
        token="ignored here",
        client_context='{"custom": {"user": "ada"}}',
    )

    request = convert.invoke_request(_wire(message))

    assert request.function_name == "waddlebot-echo"
    assert request.payload == b'{"command": "!help"}'
    assert request.invocation_type == "Event"
    assert (request.alias, request.version, request.qualifier) == ("live", None, "live")
    assert json.loads(base64.b64decode(request.client_context)) == {"custom": {"user": "ada"}}


def test_empty_fields_mean_not_given():
    request = convert.invoke_request(pb.InvokeFunctionRequest(function_name="waddlebot-echo"))

    assert request == InvokeRequest(
        function_name="waddlebot-echo",
        payload=b"{}",
        invocation_type="RequestResponse",
        alias=None,
        version=None,
        client_context=None,
    )


def test_a_version_is_the_qualifier():
    request = convert.invoke_request(pb.InvokeFunctionRequest(function_name="f", version="7"))

    assert (request.alias, request.version, request.qualifier) == (None, "7", "7")


def test_the_payload_is_sent_as_utf8_json_text():
    assert convert.payload_bytes('{"user": "jöhn"}') == '{"user": "jöhn"}'.encode()
    assert convert.payload_bytes("") == b"{}"
    # Whatever the text is, it is passed on: the service decides whether it is JSON.
    assert convert.payload_bytes("not json") == b"not json"


@pytest.mark.parametrize("text", ["{nope", "[1, 2]", '"text"', "3"])
def test_a_client_context_that_is_not_a_json_object_is_invalid(text: str):
    with pytest.raises(InvalidRequest, match=r"client_context must be (a )?JSON"):
        convert.invoke_request(pb.InvokeFunctionRequest(function_name="f", client_context=text))


def test_a_batch_item_is_its_request_or_the_error_that_names_its_place():
    good = convert.batch_item(0, pb.InvokeFunctionRequest(function_name="f", payload="{}"))
    bad = convert.batch_item(3, pb.InvokeFunctionRequest(function_name="f", client_context="{nope"))

    assert good == InvokeRequest(function_name="f", payload=b"{}")
    assert isinstance(bad, InvalidRequest)
    assert bad.message.startswith("invocations[3]: client_context must be JSON")


# -- replies ----------------------------------------------------------------------------------------------


def test_an_invoke_result_with_every_field():
    result = InvokeResult(
        invocation_id="abc123",
        function_name="waddlebot-echo",
        invocation_type="RequestResponse",
        status_code=200,
        payload='{"errorMessage": "no"}',
        function_error="Unhandled",
        log_result="START ...",
        executed_version="2",
        request_id="req-1",
        duration_ms=12.5,
    )

    reply = _wire(convert.invoke_response(result))

    assert reply.success is False  # a function error is not a success
    assert reply.status_code == 200
    assert reply.payload == '{"errorMessage": "no"}'
    assert reply.function_error == "Unhandled"
    assert reply.log_result == "START ..."
    assert reply.executed_version == "2"
    assert reply.invocation_id == "abc123"
    assert reply.request_id == "req-1"
    assert reply.duration_ms == 12.5
    assert (reply.error, reply.error_code) == ("", "")


def test_none_becomes_empty_strings_in_an_invoke_reply():
    result = InvokeResult(invocation_id="abc", function_name="f", invocation_type="DryRun", status_code=204)

    reply = _wire(convert.invoke_response(result))

    assert reply.success is True
    assert reply.status_code == 204
    assert (reply.payload, reply.function_error, reply.log_result) == ("", "", "")
    assert (reply.executed_version, reply.request_id) == ("", "")
    assert reply.duration_ms == 0.0


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (FunctionNotFound("function 'f' was not found"), "FunctionNotFound"),
        (ConcurrencyLimitReached("too many", retry_after=1.0), "ConcurrencyLimitReached"),
        (InvalidRequest("invocations[2]: bad"), "InvalidRequest"),
    ],
)
def test_a_batch_error_carries_its_message_and_stable_name(error, code: str):
    reply = _wire(convert.batch_error_response(error))

    assert reply.success is False
    assert reply.error == error.message
    assert reply.error_code == code
    assert (reply.status_code, reply.payload, reply.invocation_id) == (0, "", "")


def test_an_accepted_event():
    result = InvokeResult(
        invocation_id="abc", function_name="f", invocation_type="Event", status_code=202, request_id="req-9"
    )

    reply = _wire(convert.invoke_async_response(result))

    assert (reply.success, reply.status_code, reply.request_id, reply.invocation_id, reply.error) == (
        True,
        202,
        "req-9",
        "abc",
        "",
    )


def test_an_accepted_event_without_a_request_id():
    result = InvokeResult(invocation_id="abc", function_name="f", invocation_type="Event", status_code=202)

    assert convert.invoke_async_response(result).request_id == ""


def test_function_info_round_trips_every_field():
    info = _wire(convert.function_info(FULL_INFO))

    assert (
        FunctionInfo(
            function_name=info.function_name,
            function_arn=info.function_arn,
            runtime=info.runtime,
            role=info.role,
            handler=info.handler,
            code_size=info.code_size,
            description=info.description,
            timeout=info.timeout,
            memory_size=info.memory_size,
            last_modified=info.last_modified,
            version=info.version,
            state=info.state,
            architectures=tuple(info.architectures),
        )
        == FULL_INFO
    )


def test_function_info_of_defaults_is_empty():
    info = _wire(convert.function_info(FunctionInfo(function_name="f")))

    assert info == pb.FunctionInfo(function_name="f")
    assert list(info.architectures) == []


def test_a_code_size_beyond_int32_is_capped_rather_than_failing_the_reply():
    info = _wire(convert.function_info(FunctionInfo(function_name="f", code_size=5 * 2**30)))

    assert info.code_size == 2**31 - 1
