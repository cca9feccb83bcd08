"""Bad input over gRPC: INVALID_ARGUMENT with a message that says what to fix, never INTERNAL or UNKNOWN."""

from __future__ import annotations

import grpc
import pytest

from proto import lambda_action_pb2 as pb
from tests.grpc_api.conftest import ECHO, Harness, error_code_of

TOO_DEEP = 5000


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


async def _invalid(call, *, says: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    error = raised.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert says in (error.details() or ""), error.details()
    assert error_code_of(error) == "InvalidRequest"


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        pytest.param({"payload": _nested(TOO_DEEP)}, "payload is nested", id="payload too deep"),
        pytest.param({"client_context": '{"a":' * TOO_DEEP + "1" + "}" * TOO_DEEP}, "client_context", id="context"),
        pytest.param({"payload": '{"x": NaN}'}, "NaN", id="NaN"),
        pytest.param({"payload": '{"x": Infinity}'}, "Infinity", id="Infinity"),
        pytest.param({"payload": '{"x": 1e400}'}, "1e400", id="1e400"),
    ],
)
async def test_json_the_module_does_not_take_is_invalid_argument(harness: Harness, fields, says):
    request = pb.InvokeFunctionRequest(function_name=ECHO, **fields)
    await _invalid(harness.stub.InvokeFunction(request, metadata=harness.router), says=says)
    assert harness.fake.calls("Invoke") == []


async def test_a_batch_item_nested_too_deep_fails_alone(harness: Harness):
    items = [
        pb.InvokeFunctionRequest(function_name=ECHO, payload=_nested(TOO_DEEP)),
        pb.InvokeFunctionRequest(function_name=ECHO, payload='{"n": 1}'),
    ]
    reply = await harness.stub.BatchInvoke(pb.BatchInvokeRequest(invocations=items), metadata=harness.router)
    first, second = reply.responses
    assert (first.success, first.error_code) == (False, "InvalidRequest")
    assert "nested" in first.error
    assert second.success


@pytest.mark.parametrize(
    "method", ["InvokeFunction", "InvokeAsync", "BatchInvoke", "ListFunctions", "GetFunctionConfig"]
)
async def test_bytes_that_are_not_the_message_are_invalid_argument(harness: Harness, method: str):
    call = harness.channel.unary_unary(
        f"/lambda_action.LambdaAction/{method}", request_serializer=None, response_deserializer=None
    )
    # A field 1 of wire type 2 whose length runs past the end: no protobuf parser takes it.
    await _invalid(call(b"\x0a\xff\xff\xff\x0fabc", metadata=harness.router), says="not a valid")
