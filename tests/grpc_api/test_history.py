"""ListInvocations, GetInvocation and GetStats through a real server and channel, after real invocations."""

from __future__ import annotations

import json

import grpc
import pytest

from proto import lambda_action_pb2 as pb
from tests.grpc_api.conftest import ECHO, FAILING, Harness, bearer, error_code_of


@pytest.fixture
async def invoked(harness: Harness) -> dict[str, str]:
    """Two invocations of the test client (an echo and a failure) and one of the router, all shipped."""
    client = bearer(await harness.client_token())
    ids = {
        "echo": (
            await harness.stub.InvokeFunction(
                pb.InvokeFunctionRequest(function_name=ECHO, payload='{"n": 1}'), metadata=client
            )
        ).invocation_id,
        "failed": (
            await harness.stub.InvokeFunction(pb.InvokeFunctionRequest(function_name=FAILING), metadata=client)
        ).invocation_id,
        "router": (
            await harness.stub.InvokeFunction(pb.InvokeFunctionRequest(function_name=ECHO), metadata=harness.router)
        ).invocation_id,
    }
    await harness.records()
    return ids


async def test_a_client_lists_its_own_and_the_router_all(harness: Harness, invoked: dict[str, str]):
    client = bearer(await harness.client_token())

    mine = await harness.stub.ListInvocations(pb.ListInvocationsRequest(), metadata=client)
    everyone = await harness.stub.ListInvocations(pb.ListInvocationsRequest(), metadata=harness.router)
    failed = await harness.stub.ListInvocations(
        pb.ListInvocationsRequest(success=pb.ListInvocationsRequest.SUCCESS_FALSE), metadata=client
    )

    # Both within one second: the order between them is the id's, and both are there.
    assert {record.invocation_id for record in mine.invocations} == {invoked["failed"], invoked["echo"]}
    assert {record.invocation_id for record in everyone.invocations} == set(invoked.values())
    assert [record.invocation_id for record in failed.invocations] == [invoked["failed"]]
    assert mine.invocations[0].payload == ""  # payloads only in GetInvocation
    assert mine.next_cursor == ""


async def test_pages_follow_their_cursor(harness: Harness, invoked: dict[str, str]):
    first = await harness.stub.ListInvocations(pb.ListInvocationsRequest(limit=2), metadata=harness.router)
    rest = await harness.stub.ListInvocations(
        pb.ListInvocationsRequest(limit=2, cursor=first.next_cursor), metadata=harness.router
    )

    assert len(first.invocations) == 2
    assert rest.next_cursor == ""
    assert {record.invocation_id for record in [*first.invocations, *rest.invocations]} == set(invoked.values())


async def test_one_invocation_with_its_payloads_and_log(harness: Harness, invoked: dict[str, str]):
    client = bearer(await harness.client_token())

    reply = await harness.stub.GetInvocation(pb.GetInvocationRequest(invocation_id=invoked["echo"]), metadata=client)

    assert json.loads(reply.invocation.payload) == {"n": 1}
    assert json.loads(reply.invocation.response_payload) == {"n": 1}
    assert reply.invocation.success is True
    assert "START RequestId:" in reply.invocation.log_tail
    assert reply.logs.log_group == f"/aws/lambda/{ECHO}"
    assert reply.invocation.request_id in reply.logs.insights_query


async def test_another_callers_invocation_is_not_found(harness: Harness, invoked: dict[str, str]):
    client = bearer(await harness.client_token())

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await harness.stub.GetInvocation(pb.GetInvocationRequest(invocation_id=invoked["router"]), metadata=client)

    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_code_of(raised.value) == "InvocationNotFound"


@pytest.mark.parametrize(
    ("request_message", "code"),
    [
        (pb.ListInvocationsRequest(since="yesterday"), grpc.StatusCode.INVALID_ARGUMENT),
        (pb.ListInvocationsRequest(limit=500), grpc.StatusCode.INVALID_ARGUMENT),
        (pb.ListInvocationsRequest(cursor="bogus"), grpc.StatusCode.NOT_FOUND),
        (pb.ListInvocationsRequest(success=7), grpc.StatusCode.INVALID_ARGUMENT),
    ],
)
async def test_a_bad_filter_gets_its_code(harness: Harness, request_message, code):
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await harness.stub.ListInvocations(request_message, metadata=harness.router)

    assert raised.value.code() == code


async def test_stats_per_function_and_in_total(harness: Harness, invoked: dict[str, str]):
    reply = await harness.stub.GetStats(pb.GetStatsRequest(), metadata=harness.router)

    by_name = {stats.function_name: stats for stats in reply.functions}
    assert (by_name[ECHO].count, by_name[ECHO].successes, by_name[ECHO].success_rate) == (2, 2, 1.0)
    assert (by_name[FAILING].count, by_name[FAILING].function_errors) == (1, 1)
    assert (reply.totals.count, reply.totals.function_name) == (3, "")
    assert reply.since.endswith("Z")
    assert reply.until.endswith("Z")


async def test_the_history_needs_a_token(harness: Harness):
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await harness.stub.GetStats(pb.GetStatsRequest())

    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
