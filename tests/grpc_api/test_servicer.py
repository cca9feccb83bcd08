"""Every LambdaAction RPC through a real grpc.aio server, a real channel and a boto3 client talking to FakeLambda."""

from __future__ import annotations

import asyncio
import base64
import json
import threading

import grpc
import pytest

from grpc_api.interceptor import SERVICE_NAME
from proto import lambda_action_pb2 as pb
from proto import lambda_action_pb2_grpc as pb_grpc
from tests.fake_lambda import ACCOUNT_ID, REGION, FakeLambda
from tests.grpc_api.conftest import (
    ECHO,
    FAILING,
    OUTSIDE,
    Harness,
    HarnessFactory,
    bearer,
    error_code_of,
    service_token,
)
from tests.records import invocation_row

# -- InvokeFunction ---------------------------------------------------------------------------------------


async def test_request_response_returns_lambda_answer_and_records_it(
    make_harness: HarnessFactory, fake: FakeLambda, database_url: str
):
    fake.functions[ECHO].handler = lambda event: {"reply": f"hello {event['user']}"}
    harness = await make_harness(DATABASE_URL=database_url)

    reply = await harness.stub.InvokeFunction(
        pb.InvokeFunctionRequest(function_name=ECHO, payload='{"user": "ada"}'), metadata=harness.router
    )

    [request] = fake.calls("Invoke", ECHO)
    assert reply.success is True
    assert reply.status_code == 200
    assert json.loads(reply.payload) == {"reply": "hello ada"}
    assert reply.function_error == ""
    assert reply.error == ""
    assert reply.error_code == ""
    assert reply.executed_version == "$LATEST"
    assert reply.request_id == request.request_id
    assert reply.log_result.startswith(f"START RequestId: {request.request_id} Version: $LATEST")
    assert reply.duration_ms > 0
    assert request.body == b'{"user": "ada"}'
    assert request.headers["x-amz-invocation-type"] == "RequestResponse"
    assert "Qualifier" not in request.query

    record = await invocation_row(harness.module, reply.invocation_id)
    assert record is not None
    assert record["transport"] == "grpc"
    assert record["caller"] == "service:router_module"
    assert record["function_name"] == ECHO
    assert record["invocation_type"] == "RequestResponse"
    assert record["success"] is True
    assert record["status_code"] == 200
    assert record["request_id"] == request.request_id
    assert json.loads(record["payload"]) == {"user": "ada"}
    assert json.loads(record["response_payload"]) == {"reply": "hello ada"}
    assert record["completed_at"] is not None


async def test_a_client_caller_is_recorded_with_its_label(harness: Harness):
    token = await harness.client_token()

    reply = await harness.stub.InvokeFunction(pb.InvokeFunctionRequest(function_name=ECHO), metadata=bearer(token))

    record = await invocation_row(harness.module, reply.invocation_id)
    assert record["caller"] == "client:test-client"
    assert record["transport"] == "grpc"


async def test_event_invocation_is_accepted_with_status_202(harness: Harness, fake: FakeLambda):
    reply = await harness.stub.InvokeFunction(
        pb.InvokeFunctionRequest(function_name=ECHO, payload='{"n": 1}', invocation_type="Event"),
        metadata=harness.router,
    )

    [request] = fake.calls("Invoke", ECHO)
    assert (reply.success, reply.status_code) == (True, 202)
    assert reply.request_id == request.request_id
    assert request.headers["x-amz-invocation-type"] == "Event"
    assert "x-amz-log-type" not in request.headers
    assert fake.functions[ECHO].queued_events == [{"n": 1}]
    record = await invocation_row(harness.module, reply.invocation_id)
    assert (record["invocation_type"], record["status_code"], record["success"]) == ("Event", 202, True)


async def test_dry_run_is_status_204_and_runs_nothing(harness: Harness, fake: FakeLambda):
    ran: list = []
    fake.functions[ECHO].handler = ran.append

    reply = await harness.stub.InvokeFunction(
        pb.InvokeFunctionRequest(function_name=ECHO, invocation_type="DryRun"), metadata=harness.router
    )

    [request] = fake.calls("Invoke", ECHO)
    assert (reply.success, reply.status_code, reply.payload) == (True, 204, "")
    assert request.headers["x-amz-invocation-type"] == "DryRun"
    assert ran == []
    assert fake.functions[ECHO].queued_events == []


@pytest.mark.parametrize(
    ("fields", "qualifier", "executed"),
    [({"alias": "live"}, "live", "2"), ({"version": "1"}, "1", "1"), ({"version": "$LATEST"}, "$LATEST", "$LATEST")],
)
async def test_alias_or_version_reaches_lambda_as_the_qualifier(
    harness: Harness, fake: FakeLambda, fields: dict, qualifier: str, executed: str
):
    reply = await harness.stub.InvokeFunction(
        pb.InvokeFunctionRequest(function_name=ECHO, **fields), metadata=harness.router
    )

    [request] = fake.calls("Invoke", ECHO)
    assert request.query["Qualifier"] == qualifier
    assert reply.executed_version == executed
    assert reply.success is True
    record = await invocation_row(harness.module, reply.invocation_id)
    assert (record["alias"], record["version"]) == (fields.get("alias"), fields.get("version"))
    assert record["executed_version"] == executed


async def test_an_empty_payload_reaches_lambda_as_an_empty_object(harness: Harness, fake: FakeLambda):
    reply = await harness.stub.InvokeFunction(pb.InvokeFunctionRequest(function_name=ECHO), metadata=harness.router)

    [request] = fake.calls("Invoke", ECHO)
    assert request.body == b"{}"
    assert json.loads(reply.payload) == {}
    assert (await invocation_row(harness.module, reply.invocation_id))["payload"] == "{}"


async def test_client_context_reaches_lambda_as_base64_json(harness: Harness, fake: FakeLambda):
    context = {"custom": {"channel": "#general", "user": "jöhn"}, "env": {"locale": "en"}}

    await harness.stub.InvokeFunction(
        pb.InvokeFunctionRequest(function_name=ECHO, client_context=json.dumps(context)), metadata=harness.router
    )

    [request] = fake.calls("Invoke", ECHO)
    assert json.loads(base64.b64decode(request.headers["x-amz-client-context"])) == context


async def test_no_client_context_sends_no_header(harness: Harness, fake: FakeLambda):
    await harness.stub.InvokeFunction(pb.InvokeFunctionRequest(function_name=ECHO), metadata=harness.router)

    [request] = fake.calls("Invoke", ECHO)
    assert "x-amz-client-context" not in request.headers


async def test_a_function_arn_is_accepted_and_recorded_as_given(harness: Harness, fake: FakeLambda):
    arn = f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{ECHO}"

    reply = await harness.stub.InvokeFunction(pb.InvokeFunctionRequest(function_name=arn), metadata=harness.router)

    assert reply.success is True
    assert len(fake.calls("Invoke", ECHO)) == 1
    assert (await invocation_row(harness.module, reply.invocation_id))["function_name"] == arn


async def test_a_function_error_is_ok_with_success_false_and_the_error_payload(harness: Harness):
    reply = await harness.stub.InvokeFunction(
        pb.InvokeFunctionRequest(function_name=FAILING, payload='{"command": "!boom"}'), metadata=harness.router
    )

    error = json.loads(reply.payload)
    assert reply.success is False
    assert reply.status_code == 200
    assert reply.function_error == "Unhandled"
    assert error["errorType"] == "ValueError"
    assert "!boom" in error["errorMessage"]
    assert "[ERROR] ValueError" in reply.log_result
    assert reply.error == ""
    record = await invocation_row(harness.module, reply.invocation_id)
    assert (record["success"], record["function_error"]) == (False, "Unhandled")
    assert "!boom" in record["error_message"]


async def test_a_payload_at_lambdas_6_mb_limit_fits_in_a_grpc_message_both_ways(harness: Harness, fake: FakeLambda):
    # The default GRPC_MAX_MESSAGE_BYTES leaves room for Lambda's largest request and its echo.
    payload = json.dumps("x" * (6 * 1024 * 1024 - 2))
    assert len(payload) == 6 * 1024 * 1024

    # A client receives at most 4 MB unless told otherwise, as routers calling for large answers are.
    options = [("grpc.max_receive_message_length", harness.settings.grpc_max_message_bytes)]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{harness.server.port}", options=options) as channel:
        reply = await pb_grpc.LambdaActionStub(channel).InvokeFunction(
            pb.InvokeFunctionRequest(function_name=ECHO, payload=payload), metadata=harness.router
        )

    assert reply.success is True
    assert len(fake.calls("Invoke", ECHO)[0].body) == len(payload)
    assert reply.payload == payload


# -- InvokeAsync ------------------------------------------------------------------------------------------


async def test_invoke_async_queues_an_event_and_records_it(harness: Harness, fake: FakeLambda):
    reply = await harness.stub.InvokeAsync(
        pb.InvokeAsyncRequest(function_name=ECHO, payload='{"queued": true}'), metadata=harness.router
    )

    [request] = fake.calls("Invoke", ECHO)
    assert (reply.success, reply.status_code, reply.error) == (True, 202, "")
    assert reply.request_id == request.request_id
    assert request.headers["x-amz-invocation-type"] == "Event"
    assert fake.functions[ECHO].queued_events == [{"queued": True}]
    record = await invocation_row(harness.module, reply.invocation_id)
    assert (record["invocation_type"], record["transport"], record["success"]) == ("Event", "grpc", True)


async def test_invoke_async_with_an_empty_payload_sends_an_empty_object(harness: Harness, fake: FakeLambda):
    await harness.stub.InvokeAsync(pb.InvokeAsyncRequest(function_name=ECHO), metadata=harness.router)

    assert fake.functions[ECHO].queued_events == [{}]


# -- BatchInvoke ------------------------------------------------------------------------------------------


async def test_batch_items_succeed_or_fail_each_on_their_own_in_request_order(
    make_harness: HarnessFactory, fake: FakeLambda, database_url: str
):
    harness = await make_harness(DATABASE_URL=database_url)
    items = [
        pb.InvokeFunctionRequest(function_name=ECHO, payload='{"i": 0}'),
        pb.InvokeFunctionRequest(function_name="not a name!", payload='{"i": 1}'),
        pb.InvokeFunctionRequest(function_name=ECHO, payload='{"i": 2}', invocation_type="Sometimes"),
        pb.InvokeFunctionRequest(function_name=ECHO, payload='{"i": 3}', client_context="{not json"),
        pb.InvokeFunctionRequest(function_name="waddlebot-missing", payload='{"i": 4}'),
        pb.InvokeFunctionRequest(function_name=OUTSIDE, payload='{"i": 5}'),
        pb.InvokeFunctionRequest(function_name=FAILING, payload='{"i": 6}'),
        pb.InvokeFunctionRequest(function_name=ECHO, payload='{"i": 7}', alias="live"),
        pb.InvokeFunctionRequest(function_name=ECHO, payload='{"i": 8}', invocation_type="Event"),
    ]

    reply = await harness.stub.BatchInvoke(
        pb.BatchInvokeRequest(invocations=items, token=service_token()),  # the batch's token, no metadata
    )

    responses = list(reply.responses)
    assert [response.success for response in responses] == [True, False, False, False, False, False, False, True, True]
    assert [response.error_code for response in responses] == [
        "",
        "InvalidRequest",
        "InvalidRequest",
        "InvalidRequest",
        "FunctionNotFound",
        "Forbidden",
        "",
        "",
        "",
    ]
    assert json.loads(responses[0].payload) == {"i": 0}
    assert "invocations[3]" in responses[3].error
    assert "client_context" in responses[3].error
    assert "invocation_type" in responses[2].error
    assert "function_name" in responses[1].error
    assert OUTSIDE in responses[5].error
    for failed in responses[1:6]:
        assert failed.error
        assert failed.status_code == 0
        assert failed.invocation_id == ""
    assert responses[6].function_error == "Unhandled"
    assert responses[6].error == ""
    assert (json.loads(responses[7].payload), responses[7].executed_version) == ({"i": 7}, "2")
    assert responses[8].status_code == 202
    assert fake.functions[ECHO].queued_events == [{"i": 8}]

    # Every item that was well formed is on record, refused or not, with the batch's caller.
    records = await harness.records()
    by_payload = {json.loads(record["payload"])["i"]: record for record in records}
    assert sorted(by_payload) == [0, 4, 5, 6, 7, 8]
    assert {record["caller"] for record in records} == {"service:router_module"}
    assert {record["transport"] for record in records} == {"grpc"}
    assert by_payload[4]["error_code"] == "FunctionNotFound"
    assert by_payload[5]["error_code"] == "Forbidden"
    assert by_payload[0]["invocation_id"] == responses[0].invocation_id


async def test_batch_items_tokens_are_not_read(harness: Harness, fake: FakeLambda):
    items = [pb.InvokeFunctionRequest(function_name=ECHO, token=service_token())]

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await harness.stub.BatchInvoke(pb.BatchInvokeRequest(invocations=items))

    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert fake.calls("Invoke") == []

    items = [pb.InvokeFunctionRequest(function_name=ECHO, token="garbage")]
    reply = await harness.stub.BatchInvoke(pb.BatchInvokeRequest(invocations=items), metadata=harness.router)
    assert reply.responses[0].success is True


async def test_batch_runs_items_concurrently_up_to_max_batch_concurrency(
    make_harness: HarnessFactory, fake: FakeLambda
):
    harness = await make_harness(MAX_BATCH_CONCURRENCY="3")
    gate = fake.functions[ECHO].hold = threading.Event()
    items = [pb.InvokeFunctionRequest(function_name=ECHO, payload=json.dumps({"i": i})) for i in range(5)]
    call = asyncio.ensure_future(
        harness.stub.BatchInvoke(pb.BatchInvokeRequest(invocations=items), metadata=harness.router)
    )
    try:
        await asyncio.to_thread(fake.wait_until_active, 3)
        await asyncio.sleep(0.1)
        assert fake.active == 3
    finally:
        gate.set()
    reply = await call

    assert [json.loads(response.payload) for response in reply.responses] == [{"i": i} for i in range(5)]
    assert fake.max_concurrent == 3


async def test_an_empty_batch_is_invalid(harness: Harness):
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await harness.stub.BatchInvoke(pb.BatchInvokeRequest(), metadata=harness.router)

    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_batch_over_max_batch_size_is_invalid_and_runs_nothing(make_harness: HarnessFactory, fake: FakeLambda):
    harness = await make_harness(MAX_BATCH_SIZE="2")
    items = [pb.InvokeFunctionRequest(function_name=ECHO)] * 3

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await harness.stub.BatchInvoke(pb.BatchInvokeRequest(invocations=items), metadata=harness.router)

    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "MAX_BATCH_SIZE" in raised.value.details()
    assert fake.calls("Invoke") == []


# -- ListFunctions ----------------------------------------------------------------------------------------


async def test_list_functions_pages_through_the_reachable_functions(harness: Harness, fake: FakeLambda):
    for index in range(6):
        fake.add_function(f"waddlebot-f{index:02d}")
    fake.add_function("zeta-tool")
    reachable = sorted(name for name in fake.functions if name.startswith("waddlebot-"))

    pages: list[list[str]] = []
    marker = ""
    while True:
        reply = await harness.stub.ListFunctions(
            pb.ListFunctionsRequest(max_items=3, next_marker=marker), metadata=harness.router
        )
        assert reply.success is True
        pages.append([info.function_name for info in reply.functions])
        marker = reply.next_marker
        if not marker:
            break

    assert [len(page) for page in pages] == [3, 3, 2]
    assert [name for page in pages for name in page] == reachable


async def test_list_functions_max_items_zero_means_fifty(harness: Harness, fake: FakeLambda):
    for index in range(55):
        fake.add_function(f"waddlebot-many-{index:02d}")

    reply = await harness.stub.ListFunctions(pb.ListFunctionsRequest(), metadata=harness.router)

    assert len(reply.functions) == 50
    assert reply.next_marker != ""


@pytest.mark.parametrize("max_items", [51, -1])
async def test_list_functions_refuses_a_page_size_out_of_range(harness: Harness, fake: FakeLambda, max_items: int):
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await harness.stub.ListFunctions(pb.ListFunctionsRequest(max_items=max_items), metadata=harness.router)

    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert fake.calls("ListFunctions") == []


async def test_list_functions_describes_each_function(harness: Harness):
    reply = await harness.stub.ListFunctions(pb.ListFunctionsRequest(), metadata=harness.router)

    infos = {info.function_name: info for info in reply.functions}
    assert sorted(infos) == [ECHO, FAILING]  # OUTSIDE is beyond the prefix guard
    echo = infos[ECHO]
    assert echo.function_arn == f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{ECHO}"
    assert echo.runtime == "python3.12"
    assert echo.role == f"arn:aws:iam::{ACCOUNT_ID}:role/{ECHO}-role"
    assert echo.handler == "handler.lambda_handler"
    assert (echo.code_size, echo.timeout, echo.memory_size) == (1024, 3, 128)
    assert echo.last_modified == "2024-01-01T00:00:00.000+0000"
    assert (echo.version, echo.state, list(echo.architectures)) == ("$LATEST", "Active", ["x86_64"])
    assert reply.next_marker == ""


async def test_list_functions_with_a_marker_lambda_does_not_know_is_not_found(harness: Harness):
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await harness.stub.ListFunctions(pb.ListFunctionsRequest(next_marker="not-a-marker"), metadata=harness.router)

    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_code_of(raised.value) == "PageNotFound"
    assert "next_marker" in (raised.value.details() or "")


# -- GetFunctionConfig ------------------------------------------------------------------------------------


async def test_get_function_config_without_qualifier_is_latest(harness: Harness, fake: FakeLambda):
    reply = await harness.stub.GetFunctionConfig(
        pb.GetFunctionConfigRequest(function_name=ECHO), metadata=harness.router
    )

    [request] = fake.calls("GetFunctionConfiguration", ECHO)
    assert "Qualifier" not in request.query
    assert reply.success is True
    assert reply.function_info.function_name == ECHO
    assert reply.function_info.version == "$LATEST"
    assert reply.function_info.function_arn.endswith(f":function:{ECHO}")
    assert reply.function_info.runtime == "python3.12"


@pytest.mark.parametrize(("qualifier", "version"), [("live", "2"), ("1", "1"), ("$LATEST", "$LATEST")])
async def test_get_function_config_of_a_qualifier(harness: Harness, fake: FakeLambda, qualifier: str, version: str):
    reply = await harness.stub.GetFunctionConfig(
        pb.GetFunctionConfigRequest(function_name=ECHO, qualifier=qualifier), metadata=harness.router
    )

    [request] = fake.calls("GetFunctionConfiguration", ECHO)
    assert request.query["Qualifier"] == qualifier
    assert reply.function_info.version == version
    assert reply.function_info.function_arn.endswith(f":function:{ECHO}:{qualifier}")


async def test_get_function_config_of_an_unknown_qualifier_is_not_found(harness: Harness):
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await harness.stub.GetFunctionConfig(
            pb.GetFunctionConfigRequest(function_name=ECHO, qualifier="gone"), metadata=harness.router
        )

    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert f"{ECHO}:gone" in raised.value.details()


async def test_get_function_config_of_a_malformed_qualifier_is_invalid(harness: Harness, fake: FakeLambda):
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await harness.stub.GetFunctionConfig(
            pb.GetFunctionConfigRequest(function_name=ECHO, qualifier="no such thing!"), metadata=harness.router
        )

    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert fake.calls("GetFunctionConfiguration") == []


async def test_the_servicer_answers_under_its_proto_service_name(harness: Harness):
    # Older routers call the method by its full name; the package and service names are part of the wire.
    call = harness.channel.unary_unary(
        f"/{SERVICE_NAME}/GetFunctionConfig",
        request_serializer=pb.GetFunctionConfigRequest.SerializeToString,
        response_deserializer=pb.GetFunctionConfigResponse.FromString,
    )

    reply = await call(pb.GetFunctionConfigRequest(function_name=ECHO, token=service_token()))

    assert reply.function_info.function_name == ECHO
