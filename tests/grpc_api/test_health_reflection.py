"""The standard health and reflection services beside LambdaAction, and a server that drains."""

from __future__ import annotations

import asyncio
import json
import threading

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from grpc_api.interceptor import SERVICE_NAME
from proto import lambda_action_pb2 as pb
from services.invocation_log import InvocationStart, utc_now
from tests.fake_lambda import FakeLambda
from tests.grpc_api.conftest import ECHO, Harness, HarnessFactory, bearer

HEALTH_SERVICE = "grpc.health.v1.Health"
REFLECTION_SERVICE = "grpc.reflection.v1alpha.ServerReflection"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _health(harness: Harness) -> health_pb2_grpc.HealthStub:
    return health_pb2_grpc.HealthStub(harness.channel)


async def _reflect(harness: Harness, request: reflection_pb2.ServerReflectionRequest):
    stub = reflection_pb2_grpc.ServerReflectionStub(harness.channel)
    call = stub.ServerReflectionInfo(iter([request]))
    return [response async for response in call]


# -- health -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("service", ["", SERVICE_NAME])
async def test_health_is_serving_after_start_without_a_token(harness: Harness, service: str):
    reply = await _health(harness).Check(health_pb2.HealthCheckRequest(service=service))

    assert reply.status == SERVING


async def test_health_ignores_a_bad_token(harness: Harness):
    reply = await _health(harness).Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), metadata=bearer("bad"))

    assert reply.status == SERVING


async def test_health_tells_the_journal_state_in_trailing_metadata(harness: Harness):
    await harness.stub.InvokeFunction(pb.InvokeFunctionRequest(function_name=ECHO), metadata=harness.router)
    assert await harness.module.invocation_log.flush(10)

    call = _health(harness).Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
    reply = await call
    trailing = dict(await call.trailing_metadata())

    assert reply.status == SERVING
    assert trailing["journal-unshipped-bytes"] == "0"
    assert trailing["journal-full"] == "false"
    assert trailing["database-ok"] == "true"
    assert float(trailing["journal-lag-seconds"]) == 0.0


async def test_a_full_journal_makes_lambda_action_not_serving(make_harness: HarnessFactory):
    harness = await make_harness(LOG_SPOOL_MAX_BYTES=str(1024 * 1024))
    await asyncio.to_thread(harness.module.database.close)
    for number in range(3):
        harness.module.invocation_log.record_start(
            InvocationStart(
                invocation_id=f"filler-{number}",
                function_name=ECHO,
                invocation_type="Event",
                payload="x" * 400_000,
                alias=None,
                version=None,
                caller="service:router_module",
                transport="grpc",
                invoked_at=utc_now(),
            )
        )

    call = _health(harness).Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
    reply = await call
    trailing = dict(await call.trailing_metadata())
    overall = await _health(harness).Check(health_pb2.HealthCheckRequest(service=""))

    assert reply.status == NOT_SERVING
    assert trailing["journal-full"] == "true"
    assert int(trailing["journal-unshipped-bytes"]) >= 1024 * 1024
    # The process itself is alive; only the invocation service cannot take calls.
    assert overall.status == SERVING
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await harness.stub.InvokeFunction(pb.InvokeFunctionRequest(function_name=ECHO), metadata=harness.router)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert dict(raised.value.trailing_metadata())["lambda-action-error-code"] == "JournalFull"


async def test_health_of_an_unknown_service_is_not_found(harness: Harness):
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await _health(harness).Check(health_pb2.HealthCheckRequest(service="lambda_action.Nothing"))

    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


async def test_graceful_shutdown_reports_not_serving(harness: Harness):
    await harness.server.health.enter_graceful_shutdown()

    for service in ("", SERVICE_NAME):
        reply = await _health(harness).Check(health_pb2.HealthCheckRequest(service=service))
        assert reply.status == NOT_SERVING


async def test_a_draining_server_finishes_calls_under_way_and_refuses_new_ones(harness: Harness, fake: FakeLambda):
    watch = _health(harness).Watch(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
    assert (await watch.read()).status == SERVING
    gate = fake.functions[ECHO].hold = threading.Event()
    slow = asyncio.ensure_future(
        harness.stub.InvokeFunction(
            pb.InvokeFunctionRequest(function_name=ECHO, payload='{"slow": true}'), metadata=harness.router
        )
    )
    drained = None
    try:
        await asyncio.to_thread(fake.wait_until_active, 1)
        drained = asyncio.ensure_future(harness.server.drain(5))

        # Health says so first, to streams already open, so that load balancers stop sending.
        assert (await asyncio.wait_for(watch.read(), 2)).status == NOT_SERVING
        watch.cancel()  # the watcher has its answer (an open stream would hold the drain for its whole grace)
        await asyncio.sleep(0.1)  # health is told first; the server stops taking calls right after
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await harness.stub.InvokeFunction(
                pb.InvokeFunctionRequest(function_name=ECHO, payload='{"late": true}'),
                metadata=harness.router,
                timeout=2,
            )
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        assert not drained.done()  # still waiting for the call under way
    finally:
        gate.set()

    reply = await slow
    await asyncio.wait_for(drained, 5)
    assert json.loads(reply.payload) == {"slow": True}
    assert [json.loads(request.body) for request in fake.calls("Invoke", ECHO)] == [{"slow": True}]
    [record] = await harness.records(ECHO)
    assert record["success"] is True


# -- reflection -------------------------------------------------------------------------------------------


async def test_reflection_lists_the_services_without_a_token(harness: Harness):
    [response] = await _reflect(harness, reflection_pb2.ServerReflectionRequest(list_services=""))

    names = {service.name for service in response.list_services_response.service}
    assert {SERVICE_NAME, HEALTH_SERVICE, REFLECTION_SERVICE} <= names


async def test_reflection_describes_the_lambda_action_service(harness: Harness):
    [response] = await _reflect(harness, reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE_NAME))

    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in response.file_descriptor_response.file_descriptor_proto
    ]
    [described] = [file for file in files if file.package == "lambda_action"]
    [service] = described.service
    assert service.name == "LambdaAction"
    assert {method.name for method in service.method} == {
        "InvokeFunction",
        "InvokeAsync",
        "BatchInvoke",
        "ListFunctions",
        "GetFunctionConfig",
        "ListInvocations",
        "GetInvocation",
        "GetStats",
    }
    fields = {message.name: {field.name: field.number for field in message.field} for message in described.message_type}
    assert fields["InvokeFunctionRequest"]["token"] == 6
    assert fields["InvokeFunctionResponse"]["error_code"] == 11


async def test_reflection_of_an_unknown_symbol_is_not_found(harness: Harness):
    [response] = await _reflect(
        harness, reflection_pb2.ServerReflectionRequest(file_containing_symbol="lambda_action.Nothing")
    )

    assert response.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]


async def test_reflection_can_be_turned_off(make_harness: HarnessFactory):
    harness = await make_harness(GRPC_REFLECTION="false")

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await _reflect(harness, reflection_pb2.ServerReflectionRequest(list_services=""))

    assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED
    # Health is still there.
    assert (await _health(harness).Check(health_pb2.HealthCheckRequest())).status == SERVING


async def test_an_open_health_watch_does_not_hold_a_drain_with_nothing_under_way(harness: Harness):
    watch = _health(harness).Watch(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
    assert (await watch.read()).status == SERVING

    # A grace period far longer than the bound below: only a drain that stops waiting once nothing is under
    # way can finish inside the bound, however slow this machine is today.
    await asyncio.wait_for(harness.server.drain(600), timeout=30)

    assert (await watch.read()).status == NOT_SERVING
