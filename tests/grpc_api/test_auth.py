"""Who may call: tokens in metadata or in the message, service and client tokens, and the reach of each caller."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from proto import lambda_action_pb2 as pb
from services.client_secrets import hash_secret
from tests.conftest import TEST_CLIENT_ID
from tests.fake_lambda import ACCOUNT_ID, REGION, FakeLambda
from tests.grpc_api.conftest import (
    ECHO,
    OUTSIDE,
    Harness,
    HarnessFactory,
    Metadata,
    bearer,
    error_code_of,
    service_token,
)
from tests.records import invocation_row

CHAT = "waddlebot-chat-hello"
CHAT_CLIENT = "chat-bot"
CHAT_SECRET = "chat-bot-secret-0123456789"

# Each RPC with a request that succeeds against the default fake, carrying `token` in its message.
RPCS: dict[str, Callable[[str], Any]] = {
    "InvokeFunction": lambda token: pb.InvokeFunctionRequest(function_name=ECHO, token=token),
    "InvokeAsync": lambda token: pb.InvokeAsyncRequest(function_name=ECHO, token=token),
    "BatchInvoke": lambda token: pb.BatchInvokeRequest(
        invocations=[pb.InvokeFunctionRequest(function_name=ECHO)], token=token
    ),
    "ListFunctions": lambda token: pb.ListFunctionsRequest(token=token),
    "GetFunctionConfig": lambda token: pb.GetFunctionConfigRequest(function_name=ECHO, token=token),
}


async def _call(harness: Harness, rpc: str, token: str = "", metadata: Metadata = ()) -> Any:
    return await getattr(harness.stub, rpc)(RPCS[rpc](token), metadata=metadata)


def _succeeded(rpc: str, reply: Any) -> bool:
    return reply.responses[0].success if rpc == "BatchInvoke" else reply.success


async def _refused(harness: Harness, rpc: str, token: str = "", metadata: Metadata = ()) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await _call(harness, rpc, token, metadata)
    return raised.value


@pytest.fixture
async def chat_token(harness: Harness, fake: FakeLambda) -> str:
    """A token of a client whose allowed patterns reach only the chat functions."""
    fake.add_function(CHAT)
    await harness.module.clients.save(CHAT_CLIENT, hash_secret(CHAT_SECRET), ("waddlebot-chat-*",))
    issued = await harness.module.authenticator.issue_token(CHAT_CLIENT, CHAT_SECRET, "127.0.0.1")
    return issued.token


# -- both ways of passing a token -------------------------------------------------------------------------


@pytest.mark.parametrize("rpc", list(RPCS))
async def test_every_rpc_takes_a_client_token_as_bearer_metadata(harness: Harness, rpc: str):
    reply = await _call(harness, rpc, metadata=bearer(await harness.client_token()))

    assert _succeeded(rpc, reply)


@pytest.mark.parametrize("rpc", list(RPCS))
async def test_every_rpc_takes_a_service_token_in_the_message(harness: Harness, rpc: str):
    reply = await _call(harness, rpc, token=service_token())

    assert _succeeded(rpc, reply)


@pytest.mark.parametrize("rpc", list(RPCS))
async def test_every_rpc_without_a_token_is_unauthenticated_and_reaches_nothing(
    harness: Harness, fake: FakeLambda, rpc: str
):
    error = await _refused(harness, rpc)

    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_code_of(error) == "Unauthenticated"
    assert "bearer token" in error.details()
    assert fake.calls() == []
    assert await harness.records() == []


async def test_metadata_wins_over_a_bad_token_field(harness: Harness):
    reply = await _call(harness, "InvokeFunction", token="not-a-token", metadata=harness.router)

    assert reply.success is True


async def test_a_bad_metadata_token_fails_even_with_a_good_token_field(harness: Harness, fake: FakeLambda):
    error = await _refused(harness, "InvokeFunction", token=service_token(), metadata=bearer("not-a-token"))

    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert fake.calls() == []


async def test_the_bearer_scheme_is_case_insensitive(harness: Harness):
    reply = await _call(harness, "InvokeFunction", metadata=(("authorization", f"bearer {service_token()}"),))

    assert reply.success is True


async def test_non_bearer_authorization_metadata_leaves_the_token_field_in_charge(harness: Harness):
    basic = (("authorization", "Basic dXNlcjpwYXNz"),)

    assert (await _call(harness, "InvokeFunction", token=service_token(), metadata=basic)).success is True
    error = await _refused(harness, "InvokeFunction", metadata=basic)
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED


# -- service and client tokens ----------------------------------------------------------------------------


async def test_a_service_listed_in_allowed_services_is_recorded_as_that_service(make_harness: HarnessFactory):
    harness = await make_harness(ALLOWED_SERVICES="router_module,scheduler")

    reply = await harness.stub.InvokeFunction(
        pb.InvokeFunctionRequest(function_name=ECHO), metadata=bearer(service_token("scheduler"))
    )

    assert (await invocation_row(harness.module, reply.invocation_id))["caller"] == "service:scheduler"


async def test_a_service_token_is_refused_when_allowed_services_is_empty(make_harness: HarnessFactory):
    harness = await make_harness(ALLOWED_SERVICES="")

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await harness.stub.InvokeFunction(pb.InvokeFunctionRequest(function_name=ECHO), metadata=harness.router)

    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        pytest.param(lambda: "garbage", "invalid token", id="garbage"),
        pytest.param(lambda: service_token(issued_ago=120, lifetime=60), "expired", id="expired"),
        pytest.param(lambda: service_token(key="another-key-" + "x" * 64), "invalid token", id="another-key"),
        pytest.param(lambda: service_token("billing_module"), "service not allowed", id="unknown-service"),
        pytest.param(lambda: service_token(sub="nobody", service=None), "client unknown", id="unknown-client"),
    ],
)
async def test_bad_tokens_are_unauthenticated(
    harness: Harness, fake: FakeLambda, token: Callable[[], str], reason: str
):
    error = await _refused(harness, "InvokeFunction", metadata=bearer(token()))

    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_code_of(error) == "Unauthenticated"
    assert reason in error.details()
    assert fake.calls() == []


async def test_a_disabled_clients_token_is_unauthenticated(harness: Harness, fake: FakeLambda):
    token = await harness.client_token()
    await harness.module.clients.set_active(TEST_CLIENT_ID, False)

    error = await _refused(harness, "ListFunctions", metadata=bearer(token))

    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "disabled" in error.details()
    assert fake.calls() == []


# -- reach ------------------------------------------------------------------------------------------------


async def test_a_client_outside_its_patterns_is_permission_denied_and_recorded(
    harness: Harness, fake: FakeLambda, chat_token: str
):
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await harness.stub.InvokeFunction(pb.InvokeFunctionRequest(function_name=ECHO), metadata=bearer(chat_token))

    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_code_of(raised.value) == "Forbidden"
    assert CHAT_CLIENT in raised.value.details()
    assert fake.calls("Invoke") == []
    [record] = await harness.records(ECHO)
    assert (record["error_code"], record["caller"], record["transport"]) == (
        "Forbidden",
        f"client:{CHAT_CLIENT}",
        "grpc",
    )


async def test_a_client_reaches_what_its_patterns_allow(harness: Harness, chat_token: str):
    reply = await harness.stub.InvokeFunction(pb.InvokeFunctionRequest(function_name=CHAT), metadata=bearer(chat_token))
    listed = await harness.stub.ListFunctions(pb.ListFunctionsRequest(), metadata=bearer(chat_token))

    assert reply.success is True
    assert [info.function_name for info in listed.functions] == [CHAT]


async def test_a_client_cannot_describe_a_function_outside_its_patterns(
    harness: Harness, fake: FakeLambda, chat_token: str
):
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await harness.stub.GetFunctionConfig(
            pb.GetFunctionConfigRequest(function_name=ECHO), metadata=bearer(chat_token)
        )

    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert fake.calls("GetFunctionConfiguration") == []


@pytest.mark.parametrize("name", [OUTSIDE, f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{OUTSIDE}"])
async def test_the_prefix_guard_denies_every_caller(harness: Harness, fake: FakeLambda, name: str):
    for metadata in (harness.router, bearer(await harness.client_token())):
        for call in (
            harness.stub.InvokeFunction(pb.InvokeFunctionRequest(function_name=name), metadata=metadata),
            harness.stub.InvokeAsync(pb.InvokeAsyncRequest(function_name=name), metadata=metadata),
            harness.stub.GetFunctionConfig(pb.GetFunctionConfigRequest(function_name=name), metadata=metadata),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await call
            assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert error_code_of(raised.value) == "Forbidden"
            assert "waddlebot-" in raised.value.details()

    assert fake.calls("Invoke") == []
    assert fake.calls("GetFunctionConfiguration") == []


async def test_the_audit_log_names_the_grpc_callers_address_and_never_its_token(
    harness: Harness, caplog: pytest.LogCaptureFixture
):
    token = service_token()
    caplog.set_level(logging.INFO, logger="lambda_action.audit")

    await harness.stub.InvokeFunction(pb.InvokeFunctionRequest(function_name=ECHO), metadata=bearer(token))
    with pytest.raises(grpc.aio.AioRpcError):
        await harness.stub.InvokeFunction(pb.InvokeFunctionRequest(function_name=ECHO), metadata=bearer("garbage-x"))

    lines = [record.getMessage() for record in caplog.records if record.name == "lambda_action.audit"]
    assert any(line.startswith("AUTH success principal=service:router_module source=127.0.0.1 ") for line in lines)
    assert any(line.startswith("AUTH failure principal=- source=127.0.0.1 ") for line in lines)
    assert any("INVOKE caller=service:router_module transport=grpc" in line for line in lines)
    assert not any(token in line or "garbage-x" in line for line in lines)


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback here")
async def test_an_ipv6_caller_is_audited_by_its_bare_address(
    make_harness: HarnessFactory, caplog: pytest.LogCaptureFixture
):
    harness = await make_harness(HOST="::1")
    caplog.set_level(logging.INFO, logger="lambda_action.audit")

    reply = await harness.stub.InvokeFunction(pb.InvokeFunctionRequest(function_name=ECHO), metadata=harness.router)

    assert reply.success is True
    lines = [record.getMessage() for record in caplog.records if record.name == "lambda_action.audit"]
    assert any(line.startswith("AUTH success principal=service:router_module source=::1 ") for line in lines)
