"""x-request-id and traceparent metadata over gRPC: returned on every call, kept in the record, passed on to Lambda."""

from __future__ import annotations

import grpc
import pytest

from proto import lambda_action_pb2 as pb
from tests.fake_lambda import FakeLambda
from tests.grpc_api.conftest import ECHO, Harness, trailing
from tests.records import invocation_row

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"


async def test_the_callers_id_is_returned_recorded_and_its_trace_passed_on(harness: Harness, fake: FakeLambda):
    metadata = (*harness.router, ("x-request-id", "router-cmd-7"), ("traceparent", TRACEPARENT))

    call = harness.stub.InvokeFunction(pb.InvokeFunctionRequest(function_name=ECHO), metadata=metadata)
    reply = await call

    assert dict(await call.trailing_metadata() or ())["x-request-id"] == "router-cmd-7"
    row = await invocation_row(harness.module, reply.invocation_id)
    assert row is not None
    assert row["x_request_id"] == "router-cmd-7"
    [sent] = fake.calls("Invoke", ECHO)
    assert sent.headers["x-amzn-trace-id"].endswith(";Sampled=0")


async def test_a_failed_call_returns_a_made_id(harness: Harness):
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await harness.stub.InvokeFunction(pb.InvokeFunctionRequest(function_name=ECHO))

    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert len(trailing(raised.value)["x-request-id"]) == 32
