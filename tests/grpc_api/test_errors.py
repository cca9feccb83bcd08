"""Every status of grpc_api/errors.py, end to end through the server, with the error's stable name in trailers."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
import grpc
import pytest
from botocore.config import Config

from grpc_api.errors import ERROR_CODE_KEY, INVOCATION_ID_KEY, RETRY_AFTER_KEY, error_metadata, grpc_status_for
from proto import lambda_action_pb2 as pb
from services import errors
from services.lambda_client import botocore_config, build_lambda_client
from services.lambda_service import MAX_ASYNC_PAYLOAD_BYTES, MAX_SYNC_PAYLOAD_BYTES
from tests.conftest import SettingsFactory
from tests.error_classes import domain_errors
from tests.fake_lambda import FakeLambda, Reply, closed_port_url
from tests.grpc_api.conftest import (
    ECHO,
    Harness,
    HarnessFactory,
    bearer,
    error_code_of,
    retry_after_of,
    trailing,
)


async def _invoke_error(harness: Harness, seconds: float | None = None, **fields: Any) -> grpc.aio.AioRpcError:
    """The error of an InvokeFunction call as the router makes it, with a deadline of `seconds` when given."""
    fields.setdefault("function_name", ECHO)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await harness.stub.InvokeFunction(pb.InvokeFunctionRequest(**fields), metadata=harness.router, timeout=seconds)
    return raised.value


async def _wait_for_completed_record(harness: Harness, function_name: str = ECHO) -> dict:
    """The one record of `function_name` once completed: some invocations finish after their caller gave up."""
    for _ in range(200):
        records = await harness.records(function_name)
        if records and records[0]["completed_at"] is not None:
            [record] = records
            return record
        await asyncio.sleep(0.02)
    raise AssertionError(f"no completed record of {function_name}")


class _ExplodingLambda:
    """A Lambda client with a bug in it: every call fails with an error that is neither AWS's nor the module's."""

    meta = SimpleNamespace(endpoint_url="http://exploding.invalid")

    def _explode(self, **arguments: Any) -> Any:
        raise RuntimeError("boom: secret internal detail")

    invoke = list_functions = get_function_configuration = _explode


# -- INVALID_ARGUMENT -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "mentions"),
    [
        pytest.param({"payload": "{not json"}, "payload must be JSON", id="payload-not-json"),
        pytest.param({"payload": "   "}, "payload must be JSON", id="payload-blank"),
        pytest.param({"invocation_type": "Later"}, "invocation_type", id="invocation-type"),
        pytest.param({"alias": "live", "version": "1"}, "not both", id="alias-and-version"),
        pytest.param({"alias": "no spaces"}, "alias", id="bad-alias"),
        pytest.param({"version": "v1"}, "version", id="bad-version"),
        pytest.param({"function_name": "bad name!"}, "function_name", id="bad-name"),
        pytest.param({"function_name": ""}, "function_name", id="no-name"),
        pytest.param({"client_context": "{nope"}, "client_context", id="client-context-not-json"),
        pytest.param({"client_context": "[1, 2]"}, "client_context", id="client-context-not-object"),
        pytest.param({"client_context": json.dumps({"k": "v" * 4000})}, "client_context", id="client-context-large"),
    ],
)
async def test_malformed_invocations_are_invalid_argument_unsent_and_unrecorded(
    harness: Harness, fake: FakeLambda, fields: dict, mentions: str
):
    error = await _invoke_error(harness, **fields)

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_code_of(error) == "InvalidRequest"
    assert mentions in error.details()
    assert fake.calls() == []
    assert await harness.records() == []


async def test_a_payload_over_lambdas_6_mb_but_under_the_grpc_limit_is_invalid_argument(
    harness: Harness, fake: FakeLambda
):
    payload = json.dumps("x" * (MAX_SYNC_PAYLOAD_BYTES - 1))
    assert MAX_SYNC_PAYLOAD_BYTES < len(payload) < harness.settings.grpc_max_message_bytes

    error = await _invoke_error(harness, payload=payload)

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_code_of(error) == "PayloadTooLarge"
    assert str(MAX_SYNC_PAYLOAD_BYTES) in error.details()
    assert fake.calls() == []


async def test_an_event_payload_over_1_mb_is_invalid_argument(harness: Harness, fake: FakeLambda):
    payload = json.dumps("x" * MAX_ASYNC_PAYLOAD_BYTES)

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await harness.stub.InvokeAsync(
            pb.InvokeAsyncRequest(function_name=ECHO, payload=payload), metadata=harness.router
        )

    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_code_of(raised.value) == "PayloadTooLarge"
    assert fake.calls() == []


# -- NOT_FOUND --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "target"),
    [
        ({"function_name": "waddlebot-missing"}, "waddlebot-missing"),
        ({"alias": "gone"}, f"{ECHO}:gone"),
        ({"version": "7"}, f"{ECHO}:7"),
    ],
)
async def test_an_unknown_function_or_qualifier_is_not_found_and_recorded(harness: Harness, fields: dict, target: str):
    error = await _invoke_error(harness, **fields)

    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error_code_of(error) == "FunctionNotFound"
    assert target in error.details()
    [record] = await harness.records(fields.get("function_name", ECHO))
    assert (record["success"], record["error_code"]) == (False, "FunctionNotFound")


async def test_get_function_config_of_an_unknown_function_is_not_found(harness: Harness):
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await harness.stub.GetFunctionConfig(
            pb.GetFunctionConfigRequest(function_name="waddlebot-missing"), metadata=harness.router
        )

    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_code_of(raised.value) == "FunctionNotFound"


# -- RESOURCE_EXHAUSTED -----------------------------------------------------------------------------------


async def test_lambda_throttling_is_resource_exhausted_with_retry_after(make_harness: HarnessFactory, fake: FakeLambda):
    harness = await make_harness(MAX_RETRIES="0")
    fake.functions[ECHO].script(Reply.throttle(retry_after=3))

    error = await _invoke_error(harness)

    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_code_of(error) == "Throttled"
    assert retry_after_of(error) == "3"
    [record] = await harness.records(ECHO)
    assert record["error_code"] == "Throttled"


async def test_throttling_without_a_wait_sends_no_retry_after(make_harness: HarnessFactory, fake: FakeLambda):
    harness = await make_harness(MAX_RETRIES="1")
    fake.functions[ECHO].script(Reply.throttle(), Reply.throttle())

    error = await _invoke_error(harness)

    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_code_of(error) == "Throttled"
    assert RETRY_AFTER_KEY not in trailing(error)
    assert len(fake.calls("Invoke", ECHO)) == 2  # retried once: a throttled call never ran


async def test_the_concurrency_cap_is_resource_exhausted_and_recorded(make_harness: HarnessFactory, fake: FakeLambda):
    harness = await make_harness(MAX_CONCURRENT_REQUESTS="1")
    gate = fake.functions[ECHO].hold = threading.Event()
    held = asyncio.ensure_future(
        harness.stub.InvokeFunction(
            pb.InvokeFunctionRequest(function_name=ECHO, payload='{"n": 1}'), metadata=harness.router
        )
    )
    try:
        await asyncio.to_thread(fake.wait_until_active, 1)
        error = await _invoke_error(harness, payload='{"n": 2}', seconds=5)
    finally:
        gate.set()
    first = await held

    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_code_of(error) == "ConcurrencyLimitReached"
    assert retry_after_of(error) == "1"
    assert "MAX_CONCURRENT_REQUESTS" in error.details()
    assert json.loads(first.payload) == {"n": 1}
    assert [json.loads(request.body) for request in fake.calls("Invoke", ECHO)] == [{"n": 1}]
    refused = [record for record in await harness.records(ECHO) if record["error_code"]]
    assert [json.loads(record["payload"]) for record in refused] == [{"n": 2}]
    assert refused[0]["error_code"] == "ConcurrencyLimitReached"
    # The cap frees up as soon as the held call is done.
    assert (
        await harness.stub.InvokeFunction(pb.InvokeFunctionRequest(function_name=ECHO), metadata=harness.router)
    ).success


async def test_a_message_over_grpc_max_message_bytes_is_resource_exhausted_and_the_server_goes_on(
    make_harness: HarnessFactory, fake: FakeLambda
):
    harness = await make_harness(GRPC_MAX_MESSAGE_BYTES="65536")

    error = await _invoke_error(harness, payload=json.dumps("x" * 70_000))

    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert fake.calls() == []
    assert await harness.records() == []
    reply = await harness.stub.InvokeFunction(
        pb.InvokeFunctionRequest(function_name=ECHO, payload='{"after": true}'), metadata=harness.router
    )
    assert json.loads(reply.payload) == {"after": True}


async def test_an_answer_over_grpc_max_message_bytes_is_resource_exhausted_and_the_server_goes_on(
    make_harness: HarnessFactory, fake: FakeLambda
):
    harness = await make_harness(GRPC_MAX_MESSAGE_BYTES="65536")
    fake.functions[ECHO].handler = lambda event: "y" * 70_000 if event.get("big") else event

    error = await _invoke_error(harness, payload='{"big": true}')

    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # The function did run: its record says so even though the answer could not be sent.
    [record] = await harness.records(ECHO)
    assert record["success"] is True
    reply = await harness.stub.InvokeFunction(pb.InvokeFunctionRequest(function_name=ECHO), metadata=harness.router)
    assert reply.success is True


# -- UNAVAILABLE ------------------------------------------------------------------------------------------


async def test_lambda_out_of_reach_is_unavailable(make_harness: HarnessFactory):
    harness = await make_harness(endpoint_url=closed_port_url(), MAX_RETRIES="1")

    error = await _invoke_error(harness)

    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert error_code_of(error) == "UpstreamUnavailable"
    assert "could not be reached" in error.details()
    [record] = await harness.records(ECHO)
    assert record["error_code"] == "UpstreamUnavailable"


async def test_lambda_refusing_the_modules_credentials_is_unavailable_and_not_resent(
    harness: Harness, fake: FakeLambda
):
    fake.functions[ECHO].script(Reply.error(403, "UnrecognizedClientException", "bad key"))

    error = await _invoke_error(harness)

    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert error_code_of(error) == "UpstreamError"
    assert len(fake.calls("Invoke", ECHO)) == 1


@pytest.mark.parametrize(
    ("reply", "says"),
    [
        pytest.param(Reply.service_error(), "ServiceException", id="lambda-5xx"),
        pytest.param(Reply.dropped(), "closed before it answered", id="dropped-connection"),
    ],
)
async def test_lambda_failing_after_taking_a_call_is_aborted_outcome_unknown_and_not_resent(
    harness: Harness, fake: FakeLambda, reply: Reply, says: str
):
    # Not UNAVAILABLE, which routers retry: the function may have run, and running it again may do its work twice.
    fake.functions[ECHO].script(reply)

    error = await _invoke_error(harness)

    assert error.code() == grpc.StatusCode.ABORTED
    assert error_code_of(error) == "OutcomeUnknown"
    assert says in (error.details() or "")
    assert len(fake.calls("Invoke", ECHO)) == 1
    [record] = await harness.records(ECHO)
    assert trailing(error)[INVOCATION_ID_KEY] == record["invocation_id"]
    assert record["error_code"] == "OutcomeUnknown"


async def test_no_aws_credentials_is_unavailable_backend_not_configured(
    make_harness: HarnessFactory,
    make_settings: SettingsFactory,
    fake: FakeLambda,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    for name in ("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("AWS_WEB_IDENTITY_TOKEN_FILE", raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    client = build_lambda_client(make_settings(), endpoint_url=fake.url)
    try:
        harness = await make_harness(lambda_client=client)

        error = await _invoke_error(harness)

        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert error_code_of(error) == "BackendNotConfigured"
        assert "AWS_ENDPOINT_URL_LAMBDA" in error.details()
        assert fake.calls() == []
    finally:
        client.close()


async def test_a_database_that_does_not_answer_is_unavailable(harness: Harness, fake: FakeLambda):
    token = await harness.client_token()  # a client token is checked against the database
    await asyncio.to_thread(harness.module.database.close)

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await harness.stub.ListFunctions(pb.ListFunctionsRequest(), metadata=bearer(token))

    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error_code_of(raised.value) == "DatabaseUnavailable"
    assert fake.calls() == []


# -- DEADLINE_EXCEEDED ------------------------------------------------------------------------------------


async def test_lambda_not_answering_in_time_is_aborted_outcome_unknown(
    make_harness: HarnessFactory, make_settings: SettingsFactory, fake: FakeLambda
):
    # The module reads for LAMBDA_TIMEOUT + 15 s, too long for a test: this client is the module's own botocore
    # configuration with only the read timeout shortened.
    config = botocore_config(make_settings()).merge(Config(read_timeout=0.3))
    client = boto3.session.Session().client("lambda", endpoint_url=fake.url, config=config)
    try:
        harness = await make_harness(lambda_client=client)
        fake.functions[ECHO].delay = 10  # cut short when the fake stops

        error = await _invoke_error(harness, seconds=5)

        # Not DEADLINE_EXCEEDED, which routers retry: the function may still be running.
        assert error.code() == grpc.StatusCode.ABORTED
        assert error_code_of(error) == "OutcomeUnknown"
        assert "may still be running" in error.details()
        assert len(fake.calls("Invoke", ECHO)) == 1
    finally:
        client.close()


async def test_a_throttle_asking_to_wait_past_the_deadline_ends_the_call_early(harness: Harness, fake: FakeLambda):
    fake.functions[ECHO].script(Reply.throttle(retry_after=5))

    error = await _invoke_error(harness, seconds=2)

    # Waiting out the 5 s would have ended in DEADLINE_EXCEEDED at 2 s; the throttle came back at once instead.
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_code_of(error) == "Throttled"
    assert retry_after_of(error) == "5"
    assert len(fake.calls("Invoke", ECHO)) == 1


# -- INTERNAL ---------------------------------------------------------------------------------------------


async def test_an_unexpected_error_is_internal_with_a_generic_message(
    make_harness: HarnessFactory, caplog: pytest.LogCaptureFixture
):
    harness = await make_harness(lambda_client=_ExplodingLambda())

    invoke_error = await _invoke_error(harness)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await harness.stub.ListFunctions(pb.ListFunctionsRequest(), metadata=harness.router)

    for error in (invoke_error, raised.value):
        assert error.code() == grpc.StatusCode.INTERNAL
        assert error.details() == "internal error"
        assert trailing(error)[ERROR_CODE_KEY] == "InternalError"
        assert "secret internal detail" not in str(trailing(error))
    # The traceback is in the module's log, for the operator.
    assert any(
        record.exc_info and "secret internal detail" in str(record.exc_info[1])
        for record in caplog.records
        if record.name == "services.lambda_client"
    )
    [record] = await harness.records(ECHO)
    assert (record["success"], record["error_code"], record["error_message"]) == (
        False,
        "InternalError",
        "internal error",
    )


class _ExplodesFor:
    """A real boto3 client, except that invoking one function fails with an error the module does not know."""

    def __init__(self, client: Any, function_name: str) -> None:
        self._client = client
        self._function_name = function_name
        self.meta = client.meta

    def invoke(self, **arguments: Any) -> Any:
        if arguments["FunctionName"] == self._function_name:
            raise RuntimeError("boom")
        return self._client.invoke(**arguments)


async def test_an_unexpected_error_in_one_batch_item_fails_only_that_item(
    make_harness: HarnessFactory, make_settings: SettingsFactory, fake: FakeLambda
):
    fake.add_function("waddlebot-buggy")
    client = build_lambda_client(make_settings(), endpoint_url=fake.url)
    try:
        harness = await make_harness(lambda_client=_ExplodesFor(client, "waddlebot-buggy"))
        items = [
            pb.InvokeFunctionRequest(function_name=ECHO, payload='{"i": 0}'),
            pb.InvokeFunctionRequest(function_name="waddlebot-buggy", payload='{"i": 1}'),
            pb.InvokeFunctionRequest(function_name=ECHO, payload='{"i": 2}'),
        ]

        reply = await harness.stub.BatchInvoke(pb.BatchInvokeRequest(invocations=items), metadata=harness.router)

        assert [response.success for response in reply.responses] == [True, False, True]
        assert reply.responses[1].error == "internal error"
        assert reply.responses[1].error_code == "InternalError"
        assert json.loads(reply.responses[2].payload) == {"i": 2}
    finally:
        client.close()


# -- the mapping itself -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "error_class",
    [cls for cls in domain_errors() if cls is not errors.InternalError],
    ids=lambda cls: cls.__name__,
)
def test_every_domain_error_has_a_grpc_status_other_than_internal(error_class: type[errors.ServiceError]):
    error = error_class("something went wrong")

    assert grpc_status_for(error) != grpc.StatusCode.INTERNAL
    assert dict(error_metadata(error))[ERROR_CODE_KEY] == error_class.__name__


def test_a_subclass_takes_the_status_of_its_nearest_mapped_base():
    class AliasNotFound(errors.FunctionNotFound):
        pass

    class FunctionBusy(errors.ConcurrencyLimitReached):
        pass

    assert grpc_status_for(AliasNotFound("x")) == grpc.StatusCode.NOT_FOUND
    assert grpc_status_for(FunctionBusy("x", retry_after=2)) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert grpc_status_for(errors.UpstreamUnavailable("x")) == grpc.StatusCode.UNAVAILABLE
    assert grpc_status_for(errors.PayloadTooLarge("x")) == grpc.StatusCode.INVALID_ARGUMENT
    assert grpc_status_for(errors.ServiceError("x")) == grpc.StatusCode.INTERNAL


@pytest.mark.parametrize(("retry_after", "sent"), [(0.2, "1"), (1.0, "1"), (2.5, "3"), (3.0, "3"), (None, None)])
def test_retry_after_is_whole_seconds_rounded_up_and_at_least_one(retry_after: float | None, sent: str | None):
    metadata = dict(error_metadata(errors.Throttled("slow down", retry_after=retry_after)))

    assert metadata[ERROR_CODE_KEY] == "Throttled"
    assert metadata.get(RETRY_AFTER_KEY) == sent
