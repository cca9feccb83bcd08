"""The `idempotency-key` metadata on InvokeFunction, InvokeAsync and BatchInvoke, through a real server and channel."""

from __future__ import annotations

import asyncio
import json
import threading

import grpc
import pytest

from grpc_api.errors import INVOCATION_ID_KEY
from grpc_api.interceptor import REPLAYED_METADATA
from proto import lambda_action_pb2 as pb
from tests.fake_lambda import FakeLambda
from tests.grpc_api.conftest import ECHO, Harness, error_code_of, retry_after_of, trailing
from tests.records import invocation_rows

KEY = "3c9b1f0e-7a2d-4b6c-8e5f-90a1b2c3d4e5"


def keyed(harness: Harness, key: str = KEY) -> tuple[tuple[str, str], ...]:
    return (*harness.router, ("idempotency-key", key))


async def test_a_repeated_invoke_is_replayed_and_says_so(harness: Harness, fake: FakeLambda):
    request = pb.InvokeFunctionRequest(function_name=ECHO, payload='{"command": "!roll"}')

    first_call = harness.stub.InvokeFunction(request, metadata=keyed(harness))
    first = await first_call
    await invocation_rows(harness.module)  # shipped
    repeat_call = harness.stub.InvokeFunction(request, metadata=keyed(harness))
    repeat = await repeat_call

    assert repeat.invocation_id == first.invocation_id
    assert json.loads(repeat.payload) == json.loads(first.payload) == {"command": "!roll"}
    assert dict(await repeat_call.trailing_metadata() or ()).get(REPLAYED_METADATA) == "true"
    assert REPLAYED_METADATA not in dict(await first_call.trailing_metadata() or ())
    assert len(fake.calls("Invoke", ECHO)) == 1


async def test_an_invoke_async_repeat_is_replayed(harness: Harness, fake: FakeLambda):
    request = pb.InvokeAsyncRequest(function_name=ECHO, payload="{}")

    first = await harness.stub.InvokeAsync(request, metadata=keyed(harness))
    await invocation_rows(harness.module)
    repeat = await harness.stub.InvokeAsync(request, metadata=keyed(harness))

    assert repeat.invocation_id == first.invocation_id
    assert len(fake.calls("Invoke", ECHO)) == 1


async def test_the_key_with_another_message_is_invalid_argument(harness: Harness, fake: FakeLambda):
    await harness.stub.InvokeFunction(pb.InvokeFunctionRequest(function_name=ECHO), metadata=keyed(harness))

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await harness.stub.InvokeFunction(
            pb.InvokeFunctionRequest(function_name=ECHO, payload='{"other": true}'), metadata=keyed(harness)
        )

    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_code_of(raised.value) == "IdempotencyKeyReused"
    assert len(fake.calls("Invoke", ECHO)) == 1


async def test_a_repeat_while_the_first_runs_is_aborted_in_progress(harness: Harness, fake: FakeLambda):
    request = pb.InvokeFunctionRequest(function_name=ECHO)
    gate = fake.functions[ECHO].hold = threading.Event()
    first = asyncio.ensure_future(harness.stub.InvokeFunction(request, metadata=keyed(harness)))
    try:
        await asyncio.to_thread(fake.wait_until_active, 1)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await harness.stub.InvokeFunction(request, metadata=keyed(harness))
    finally:
        gate.set()
    reply = await first

    # ABORTED, which the router does not retry on its own, with the invocation to ask about.
    assert raised.value.code() == grpc.StatusCode.ABORTED
    assert error_code_of(raised.value) == "InvocationInProgress"
    assert trailing(raised.value)[INVOCATION_ID_KEY] == reply.invocation_id
    assert retry_after_of(raised.value) == "1"


async def test_a_malformed_key_is_invalid_argument(harness: Harness, fake: FakeLambda):
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await harness.stub.InvokeFunction(
            pb.InvokeFunctionRequest(function_name=ECHO), metadata=keyed(harness, "k" * 256)
        )

    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Idempotency-Key" in raised.value.details()
    assert fake.calls("Invoke") == []


async def test_a_repeated_batch_replays_each_item(harness: Harness, fake: FakeLambda):
    items = [pb.InvokeFunctionRequest(function_name=ECHO, payload=json.dumps({"i": i})) for i in range(3)]
    request = pb.BatchInvokeRequest(invocations=items)

    first = await harness.stub.BatchInvoke(request, metadata=keyed(harness))
    await invocation_rows(harness.module)
    repeat = await harness.stub.BatchInvoke(request, metadata=keyed(harness))

    assert [item.invocation_id for item in repeat.responses] == [item.invocation_id for item in first.responses]
    assert len(fake.calls("Invoke", ECHO)) == 3
