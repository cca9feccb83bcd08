"""LambdaService against a real boto3 client talking HTTP to the fake Lambda in tests/fake_lambda.py."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config

from app import Services, build_services
from services import journal as journal_module
from services.domain import Caller, FunctionInfo, InvokeRequest, InvokeResult
from services.errors import (
    ConcurrencyLimitReached,
    DatabaseUnavailable,
    DeadlineExceeded,
    Forbidden,
    FunctionNotFound,
    InvalidRequest,
    OutcomeUnknown,
    PayloadTooLarge,
    ServiceError,
    Throttled,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from services.lambda_client import botocore_config, build_lambda_client
from services.lambda_service import (
    MAX_ASYNC_PAYLOAD_BYTES,
    MAX_SYNC_PAYLOAD_BYTES,
    LambdaService,
    encode_client_context,
)
from tests.fake_lambda import ACCOUNT_ID, REGION, FakeLambda, Reply, closed_port_url
from tests.records import invocation_row, invocation_rows

CLIENT = Caller(kind="client", name="test-client")
ROUTER = Caller(kind="service", name="router_module")
ECHO = "waddlebot-echo"

ServicesFactory = Callable[..., Awaitable[Services]]


@pytest.fixture
def fake() -> Iterator[FakeLambda]:
    with FakeLambda() as server:
        server.add_function(ECHO, versions=("1", "2"), aliases={"live": "2"})
        yield server


@pytest.fixture
async def make_module(make_settings, fake: FakeLambda) -> AsyncIterator[ServicesFactory]:
    """Build modules whose boto3 client talks to `fake` (or to `lambda_client`); all closed at the end."""
    built: list[tuple[Services, Any]] = []

    async def build(lambda_client: Any = None, endpoint_url: str | None = None, **overrides: str) -> Services:
        # No bootstrap client: these tests do not authenticate, and hashing its secret (scrypt) is slow.
        settings = make_settings(**{"BOOTSTRAP_CLIENT_ID": "", "BOOTSTRAP_CLIENT_SECRET": "", **overrides})
        client = lambda_client or build_lambda_client(settings, endpoint_url=endpoint_url or fake.url)
        module = await build_services(settings, lambda_client=client)
        built.append((module, client))
        return module

    yield build
    for module, client in reversed(built):
        await module.close()
        client.close()


@pytest.fixture
async def module(make_module: ServicesFactory) -> Services:
    """The module against the fake Lambda and SQLite (with functions of its own)."""
    return await make_module()


@pytest.fixture
def service(module: Services) -> LambdaService:
    return module.service


async def invoke(
    service: LambdaService, function_name: str = ECHO, caller: Caller = CLIENT, **fields: Any
) -> InvokeResult:
    return await service.invoke(InvokeRequest(function_name=function_name, **fields), caller, "rest")


async def records_of(module: Services, function_name: str) -> list[dict]:
    """Every invocation record of one function, for failures whose invocation id the caller never sees."""
    return await invocation_rows(module, function_name)


# -- invoking ---------------------------------------------------------------------------------------------


async def test_request_response_returns_lambda_answer_and_records_it(make_module, fake: FakeLambda, database_url):
    fake.functions[ECHO].handler = lambda event: {"reply": f"hello {event['user']}"}
    module = await make_module(DATABASE_URL=database_url)

    result = await invoke(module.service, payload=b'{"user": "ada"}')

    [request] = fake.calls("Invoke", ECHO)
    assert json.loads(result.payload) == {"reply": "hello ada"}
    assert result.status_code == 200
    assert result.success is True
    assert result.function_error is None
    assert result.executed_version == "$LATEST"
    assert result.request_id == request.request_id
    assert result.log_result is not None
    assert result.log_result.startswith(f"START RequestId: {request.request_id} Version: $LATEST")
    assert f"REPORT RequestId: {request.request_id}" in result.log_result
    assert request.body == b'{"user": "ada"}'
    assert request.headers["x-amz-invocation-type"] == "RequestResponse"
    assert request.headers["x-amz-log-type"] == "Tail"
    assert "Qualifier" not in request.query

    record = await invocation_row(module, result.invocation_id)
    assert record is not None
    assert record["function_name"] == ECHO
    assert record["invocation_type"] == "RequestResponse"
    assert json.loads(record["payload"]) == {"user": "ada"}
    assert record["caller"] == "client:test-client"
    assert record["transport"] == "rest"
    assert record["success"] is True
    assert record["status_code"] == 200
    assert json.loads(record["response_payload"]) == {"reply": "hello ada"}
    assert record["executed_version"] == "$LATEST"
    assert record["request_id"] == request.request_id
    assert record["error_code"] is None
    assert record["completed_at"] is not None


async def test_function_error_is_a_failed_result_not_an_exception(make_module, fake: FakeLambda, database_url):
    def handler(event: Any) -> Any:
        raise ValueError("unknown command !frobnicate")

    fake.functions[ECHO].handler = handler
    module = await make_module(DATABASE_URL=database_url)

    result = await invoke(module.service, payload=b'{"command": "!frobnicate"}')

    assert result.success is False
    assert result.status_code == 200
    assert result.function_error == "Unhandled"
    body = json.loads(result.payload)
    assert body["errorMessage"] == "unknown command !frobnicate"
    assert body["errorType"] == "ValueError"
    assert "[ERROR] ValueError: unknown command !frobnicate" in (result.log_result or "")
    # A function's own error proves it ran: retrying would run it again.
    assert len(fake.calls("Invoke", ECHO)) == 1
    record = await invocation_row(module, result.invocation_id)
    assert record is not None
    assert record["success"] is False
    assert record["function_error"] == "Unhandled"
    assert record["error_message"] == "unknown command !frobnicate"
    assert record["error_code"] is None
    assert record["completed_at"] is not None


async def test_event_invocation_is_queued_and_answered_202(service: LambdaService, fake: FakeLambda):
    result = await service.invoke_async(ECHO, b'{"n": 1}', ROUTER, "grpc")

    assert result.status_code == 202
    assert result.success is True
    assert result.payload == ""
    assert result.log_result is None
    assert fake.functions[ECHO].queued_events == [{"n": 1}]
    [request] = fake.calls("Invoke", ECHO)
    assert request.headers["x-amz-invocation-type"] == "Event"
    assert "x-amz-log-type" not in request.headers
    assert result.request_id == request.request_id


async def test_dry_run_is_answered_204_without_running_the_function(service: LambdaService, fake: FakeLambda):
    ran: list[Any] = []
    fake.functions[ECHO].handler = ran.append

    result = await invoke(service, invocation_type="DryRun")

    assert result.status_code == 204
    assert result.success is True
    assert ran == []
    assert fake.calls("Invoke", ECHO)[0].headers["x-amz-invocation-type"] == "DryRun"


@pytest.mark.parametrize(
    ("fields", "qualifier", "executed_version"),
    [
        ({"alias": "live"}, "live", "2"),
        ({"version": "1"}, "1", "1"),
        ({"version": "$LATEST"}, "$LATEST", "$LATEST"),
    ],
)
async def test_alias_or_version_reaches_lambda_as_qualifier(
    service: LambdaService, fake: FakeLambda, fields: dict, qualifier: str, executed_version: str
):
    result = await invoke(service, **fields)

    assert fake.calls("Invoke", ECHO)[0].query["Qualifier"] == qualifier
    assert result.executed_version == executed_version


async def test_unknown_alias_is_function_not_found(service: LambdaService, fake: FakeLambda):
    with pytest.raises(FunctionNotFound, match="waddlebot-echo:canary"):
        await invoke(service, alias="canary")
    assert len(fake.calls("Invoke")) == 1


@pytest.mark.parametrize(
    "reference", [f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{ECHO}", f"{ACCOUNT_ID}:function:{ECHO}"]
)
async def test_an_arn_of_the_modules_own_account_is_invoked_and_recorded_as_given(
    module: Services, fake: FakeLambda, reference: str
):
    result = await invoke(module.service, reference)

    assert result.success is True
    assert fake.calls("Invoke", ECHO)
    assert (await invocation_row(module, result.invocation_id))["function_name"] == reference


@pytest.mark.parametrize(
    ("reference", "says"),
    [
        (f"arn:aws:lambda:{REGION}:999999999999:function:{ECHO}", "account 999999999999"),
        (f"999999999999:function:{ECHO}", "account 999999999999"),
        (f"arn:aws:lambda:eu-west-1:{ACCOUNT_ID}:function:{ECHO}", "region eu-west-1"),
        (f"arn:aws-cn:lambda:{REGION}:{ACCOUNT_ID}:function:{ECHO}", "(aws)"),
    ],
)
async def test_an_arn_of_another_account_region_or_partition_is_forbidden_and_recorded(
    module: Services, fake: FakeLambda, reference: str, says: str
):
    with pytest.raises(Forbidden, match=re.escape(says)):
        await invoke(module.service, reference)

    assert fake.calls("Invoke") == []
    [record] = await records_of(module, reference)
    assert (record["success"], record["error_code"]) == (False, "Forbidden")


async def test_without_a_known_account_arns_are_forbidden_and_names_still_work(make_module, fake: FakeLambda):
    # An endpoint other than AWS's, and no AWS_ACCOUNT_ID: there is no STS to ask.
    module = await make_module(AWS_ACCOUNT_ID="")

    with pytest.raises(Forbidden, match="set AWS_ACCOUNT_ID"):
        await invoke(module.service, f"{ACCOUNT_ID}:function:{ECHO}")
    assert (await invoke(module.service, ECHO)).success is True
    assert len(fake.calls("Invoke", ECHO)) == 1


async def test_client_context_reaches_lambda(service: LambdaService, fake: FakeLambda):
    context = encode_client_context({"custom": {"channel": "#general"}})

    await invoke(service, client_context=context)

    assert fake.calls("Invoke", ECHO)[0].headers["x-amz-client-context"] == context


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"alias": "live", "version": "1"}, "not both"),
        ({"payload": b"{not json"}, "payload must be JSON"),
        ({"invocation_type": "Sometime"}, "invocation_type"),
        ({"alias": "123"}, "alias"),
        ({"version": "latest"}, "version"),
        ({"client_context": "x" * 4000}, "client_context"),
    ],
)
async def test_invalid_requests_are_refused_before_sending(
    service: LambdaService, fake: FakeLambda, fields: dict, message: str
):
    with pytest.raises(InvalidRequest, match=message):
        await invoke(service, **fields)
    assert fake.calls() == []


@pytest.mark.parametrize(
    ("invocation_type", "limit"),
    [
        ("RequestResponse", MAX_SYNC_PAYLOAD_BYTES),
        ("DryRun", MAX_SYNC_PAYLOAD_BYTES),
        ("Event", MAX_ASYNC_PAYLOAD_BYTES),
    ],
)
async def test_payload_over_lambda_limit_is_never_sent(
    service: LambdaService, fake: FakeLambda, invocation_type: str, limit: int
):
    payload = json.dumps("x" * (limit - 1)).encode()  # a JSON string one byte over the limit
    assert len(payload) == limit + 1

    with pytest.raises(PayloadTooLarge, match=str(limit)):
        await invoke(service, payload=payload, invocation_type=invocation_type)
    assert fake.calls() == []


async def test_event_payload_at_the_limit_is_sent(service: LambdaService, fake: FakeLambda):
    payload = json.dumps("x" * (MAX_ASYNC_PAYLOAD_BYTES - 2)).encode()
    assert len(payload) == MAX_ASYNC_PAYLOAD_BYTES

    result = await invoke(service, payload=payload, invocation_type="Event")

    assert result.status_code == 202
    assert fake.calls("Invoke", ECHO)[0].body == payload


async def test_function_outside_the_prefix_is_forbidden_never_sent_and_recorded(module: Services, fake: FakeLambda):
    fake.add_function("billing-export")

    with pytest.raises(Forbidden, match="waddlebot-"):
        await invoke(module.service, "billing-export", caller=ROUTER)

    assert fake.calls() == []
    [record] = await records_of(module, "billing-export")
    assert record["success"] is False
    assert record["error_code"] == "Forbidden"
    assert record["caller"] == "service:router_module"
    assert record["status_code"] is None
    assert record["completed_at"] is not None


async def test_client_patterns_narrow_what_it_may_invoke(service: LambdaService, fake: FakeLambda):
    fake.add_function("waddlebot-public-greet")
    fake.add_function("waddlebot-admin-ban")
    narrow = Caller(kind="client", name="greeter", allowed_patterns=("waddlebot-public-*",))

    assert (await invoke(service, "waddlebot-public-greet", caller=narrow)).success is True
    with pytest.raises(Forbidden, match="greeter"):
        await invoke(service, "waddlebot-admin-ban", caller=narrow)

    assert [request.function_name for request in fake.calls("Invoke")] == ["waddlebot-public-greet"]


async def test_unknown_function_is_not_found_and_recorded(make_module, fake: FakeLambda, database_url):
    module = await make_module(DATABASE_URL=database_url)

    with pytest.raises(FunctionNotFound, match="waddlebot-missing"):
        await invoke(module.service, "waddlebot-missing")

    assert len(fake.calls("Invoke", "waddlebot-missing")) == 1
    [record] = await records_of(module, "waddlebot-missing")
    assert record["success"] is False
    assert record["error_code"] == "FunctionNotFound"
    assert "waddlebot-missing" in record["error_message"]
    assert record["completed_at"] is not None


async def test_empty_prefix_turns_the_guard_off(make_module, fake: FakeLambda):
    fake.add_function("billing-export")
    module = await make_module(LAMBDA_FUNCTION_PREFIX="")

    assert (await invoke(module.service, "billing-export", caller=ROUTER)).success is True
    page = await module.service.list_functions(ROUTER)
    assert sorted(info.function_name for info in page.functions) == ["billing-export", ECHO]


async def test_invocation_whose_caller_left_is_still_recorded(module: Services, fake: FakeLambda):
    gate = fake.functions[ECHO].hold = threading.Event()
    caller = asyncio.create_task(invoke(module.service, payload=b'{"left": true}'))
    try:
        await asyncio.to_thread(fake.wait_until_active, 1)
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        assert module.service.in_flight == 1
    finally:
        gate.set()

    await module.service.close()  # waits for invocations under way to be recorded

    [record] = await records_of(module, ECHO)
    assert record["success"] is True
    assert json.loads(record["response_payload"]) == {"left": True}
    assert module.service.in_flight == 0


# -- retries ----------------------------------------------------------------------------------------------


async def test_throttled_twice_then_succeeds_after_three_requests(module: Services, fake: FakeLambda):
    fake.functions[ECHO].script(Reply.throttle(), Reply.throttle())

    result = await invoke(module.service, payload=b'{"try": 1}')

    assert result.success is True
    assert json.loads(result.payload) == {"try": 1}
    assert len(fake.calls("Invoke", ECHO)) == 3
    assert [record["success"] for record in await records_of(module, ECHO)] == [True]


async def test_retry_after_is_waited_before_the_retry(service: LambdaService, fake: FakeLambda):
    fake.functions[ECHO].script(Reply.throttle(retry_after=0.2))

    assert (await invoke(service)).success is True

    first, second = fake.calls("Invoke", ECHO)
    assert second.received_at - first.received_at >= 0.19  # the backoff alone is 0.01 s at most


async def test_retry_after_beyond_the_policy_limit_is_throttled_at_once(service: LambdaService, fake: FakeLambda):
    fake.functions[ECHO].script(Reply.throttle(retry_after=120))

    with pytest.raises(Throttled) as raised:
        await invoke(service)

    assert raised.value.retry_after == 120
    assert len(fake.calls("Invoke", ECHO)) == 1


async def test_throttling_past_max_retries_is_throttled(make_module, fake: FakeLambda):
    module = await make_module(MAX_RETRIES="2")
    fake.functions[ECHO].script(*[Reply.throttle()] * 10)

    with pytest.raises(Throttled) as raised:
        await invoke(module.service)

    assert not isinstance(raised.value, ConcurrencyLimitReached)
    assert len(fake.calls("Invoke", ECHO)) == 3  # MAX_RETRIES + 1
    [record] = await records_of(module, ECHO)
    assert record["error_code"] == "Throttled"


async def test_connection_refused_is_retried_then_unavailable(make_module, make_settings):
    attempts: list[str] = []
    client = build_lambda_client(make_settings(), endpoint_url=closed_port_url())
    # botocore's own hook, called before each HTTP request leaves: nothing listens on the port to count them.
    client.meta.events.register("before-send.lambda.Invoke", lambda **_: attempts.append("sent"))
    module = await make_module(lambda_client=client, MAX_RETRIES="2")

    with pytest.raises(UpstreamUnavailable, match="could not be reached"):
        await invoke(module.service)

    assert len(attempts) == 3  # MAX_RETRIES + 1
    [record] = await records_of(module, ECHO)
    assert record["success"] is False
    assert record["error_code"] == "UpstreamUnavailable"


async def test_service_exception_on_a_synchronous_invoke_is_not_retried(
    module: Services, service: LambdaService, fake: FakeLambda
):
    # The function may have run: a second request could run it twice.
    fake.functions[ECHO].script(Reply.service_error())

    with pytest.raises(OutcomeUnknown, match=r"ServiceException.*may have run") as raised:
        await invoke(service)

    assert len(fake.calls("Invoke", ECHO)) == 1
    # The answer names the invocation, whose record says how it ended once it is known.
    [record] = await records_of(module, ECHO)
    assert raised.value.invocation_id == record["invocation_id"]
    assert (record["success"], record["error_code"]) == (False, "OutcomeUnknown")


async def test_service_exception_on_an_event_invoke_is_retried(service: LambdaService, fake: FakeLambda):
    fake.functions[ECHO].script(Reply.service_error(), Reply.service_error())

    result = await service.invoke_async(ECHO, b'{"n": 2}', ROUTER, "rest")

    assert result.status_code == 202
    assert len(fake.calls("Invoke", ECHO)) == 3
    assert fake.functions[ECHO].queued_events == [{"n": 2}]


async def test_service_exception_on_an_event_invoke_gives_up_after_max_retries(make_module, fake: FakeLambda):
    module = await make_module(MAX_RETRIES="1")
    fake.functions[ECHO].script(*[Reply.service_error()] * 5)

    # Lambda may have queued the event all the same: the caller must not simply send it again.
    with pytest.raises(OutcomeUnknown):
        await module.service.invoke_async(ECHO, b"{}", ROUTER, "rest")

    assert len(fake.calls("Invoke", ECHO)) == 2


async def test_dropped_connection_on_a_synchronous_invoke_is_not_retried(service: LambdaService, fake: FakeLambda):
    fake.functions[ECHO].script(Reply.dropped())

    # The request reached Lambda, and the answer was lost: the function may have run.
    with pytest.raises(OutcomeUnknown, match="closed before it answered"):
        await invoke(service)

    assert len(fake.calls("Invoke", ECHO)) == 1


async def test_read_timeout_on_a_synchronous_invoke_is_sent_once(
    make_module, make_settings, fake: FakeLambda, database_url
):
    # The module reads for LAMBDA_TIMEOUT + 15 s, far too long for a test, and the margin is a constant. So this
    # client is the module's own botocore configuration with only the read timeout shortened; everything else
    # (no botocore retries in particular) is what production uses.
    config = botocore_config(make_settings()).merge(Config(read_timeout=0.5))
    client = boto3.session.Session().client("lambda", endpoint_url=fake.url, config=config)
    module = await make_module(lambda_client=client, DATABASE_URL=database_url)
    fake.functions[ECHO].delay = 10  # cut short when the fake stops

    with pytest.raises(OutcomeUnknown, match="may still be running"):
        await invoke(module.service)

    assert len(fake.calls("Invoke", ECHO)) == 1
    [record] = await records_of(module, ECHO)
    assert record["success"] is False
    assert record["error_code"] == "OutcomeUnknown"
    assert record["completed_at"] is not None


# -- the concurrency cap ----------------------------------------------------------------------------------


async def test_concurrency_cap_refuses_at_once_and_recovers(make_module, fake: FakeLambda):
    module = await make_module(MAX_CONCURRENT_REQUESTS="2")
    gate = fake.functions[ECHO].hold = threading.Event()
    held = [asyncio.create_task(invoke(module.service, payload=f'{{"n": {n}}}'.encode())) for n in (1, 2)]
    try:
        await asyncio.to_thread(fake.wait_until_active, 2)

        with pytest.raises(ConcurrencyLimitReached) as raised:
            await asyncio.wait_for(invoke(module.service, payload=b'{"n": 3}'), timeout=2)
        assert raised.value.retry_after is not None
        assert module.service.in_flight == 2
        assert len(fake.calls("Invoke")) == 2
    finally:
        gate.set()
    first, second = await asyncio.gather(*held)
    refused = [record for record in await records_of(module, ECHO) if record["payload"] == '{"n": 3}']
    assert [(record["success"], record["error_code"]) for record in refused] == [(False, "ConcurrencyLimitReached")]

    assert [json.loads(first.payload), json.loads(second.payload)] == [{"n": 1}, {"n": 2}]
    assert module.service.in_flight == 0
    assert (await invoke(module.service)).success is True


# -- batches ----------------------------------------------------------------------------------------------


async def test_batch_answers_in_order_and_failures_stay_in_their_place(service: LambdaService, fake: FakeLambda):
    unparsed = InvalidRequest("item 4: payload must be an object")
    requests: list[InvokeRequest | ServiceError] = [
        InvokeRequest(ECHO, b'{"i": 0}'),
        InvokeRequest("waddlebot-missing", b'{"i": 1}'),
        InvokeRequest("billing-export", b'{"i": 2}'),
        InvokeRequest(ECHO, b'{"i": 3}', alias="live"),
        unparsed,
        InvokeRequest(ECHO, b'{"i": 5}', invocation_type="Event"),
    ]

    results = await service.batch_invoke(requests, CLIENT, "rest")

    assert len(results) == 6
    assert isinstance(results[0], InvokeResult)
    assert json.loads(results[0].payload) == {"i": 0}
    assert isinstance(results[1], FunctionNotFound)
    assert isinstance(results[2], Forbidden)
    assert isinstance(results[3], InvokeResult)
    assert json.loads(results[3].payload) == {"i": 3}
    assert results[3].executed_version == "2"
    assert results[4] is unparsed
    assert isinstance(results[5], InvokeResult)
    assert results[5].status_code == 202
    assert len({result.invocation_id for result in results if isinstance(result, InvokeResult)}) == 3
    # The forbidden item never reached Lambda; the unknown one did, once.
    assert sorted(request.function_name for request in fake.calls("Invoke")) == [ECHO] * 3 + ["waddlebot-missing"]


async def test_batch_concurrency_is_bounded(make_module, fake: FakeLambda):
    module = await make_module(MAX_BATCH_CONCURRENCY="2")
    fake.functions[ECHO].delay = 0.1
    requests = [InvokeRequest(ECHO, json.dumps({"i": i}).encode()) for i in range(6)]

    results = await module.service.batch_invoke(requests, CLIENT, "rest")

    assert [json.loads(result.payload) for result in results] == [{"i": i} for i in range(6)]
    assert len(fake.calls("Invoke")) == 6
    assert fake.max_concurrent == 2


async def test_batch_larger_than_max_batch_size_is_refused(make_module, fake: FakeLambda):
    module = await make_module(MAX_BATCH_SIZE="3")

    with pytest.raises(InvalidRequest, match="MAX_BATCH_SIZE"):
        await module.service.batch_invoke([InvokeRequest(ECHO)] * 4, CLIENT, "rest")
    with pytest.raises(InvalidRequest, match="at least one"):
        await module.service.batch_invoke([], CLIENT, "rest")

    assert fake.calls() == []
    assert len(await module.service.batch_invoke([InvokeRequest(ECHO)] * 3, CLIENT, "rest")) == 3


# -- listing and describing -------------------------------------------------------------------------------


async def list_all(service: LambdaService, caller: Caller, max_items: int) -> list[list[FunctionInfo]]:
    """Every page, resuming from each page's next_marker."""
    pages, marker = [], None
    while True:
        page = await service.list_functions(caller, max_items=max_items, marker=marker)
        pages.append(page.functions)
        marker = page.next_marker
        if marker is None:
            return pages
        assert len(pages) < 20, "the pager does not end"


async def test_list_functions_pages_through_only_prefixed_functions(service: LambdaService, fake: FakeLambda):
    prefixed = [ECHO] + [f"waddlebot-fn-{n}" for n in range(6)]
    for name in prefixed[1:]:
        fake.add_function(name)
    for name in ("aaa-first", "billing-export", "waddle-almost", "zzz-last", "billing-2"):
        fake.add_function(name)

    pages = await list_all(service, ROUTER, max_items=3)

    names = [info.function_name for page in pages for info in page]
    assert sorted(names) == sorted(prefixed)  # none missing, none twice, none outside the prefix
    assert all(1 <= len(page) <= 3 for page in pages)
    assert len(pages) == 3
    assert all(request.query["MaxItems"] in ("1", "2", "3") for request in fake.calls("ListFunctions"))
    echo = next(info for page in pages for info in page if info.function_name == ECHO)
    assert echo.runtime == "python3.12"
    assert echo.version == "$LATEST"


async def test_list_functions_skips_pages_without_a_reachable_function(service: LambdaService, fake: FakeLambda):
    for n in range(5):
        fake.add_function(f"other-{n}")

    page = await service.list_functions(ROUTER, max_items=2)

    assert [info.function_name for info in page.functions] == [ECHO]
    assert page.next_marker is None
    assert len(fake.calls("ListFunctions")) > 1


async def test_list_functions_honours_client_patterns(service: LambdaService, fake: FakeLambda):
    fake.add_function("waddlebot-public-a")
    fake.add_function("waddlebot-public-b")
    narrow = Caller(kind="client", name="greeter", allowed_patterns=("waddlebot-public-*",))

    pages = await list_all(service, narrow, max_items=50)

    assert [info.function_name for page in pages for info in page] == ["waddlebot-public-a", "waddlebot-public-b"]


@pytest.mark.parametrize("max_items", [0, -1, 51])
async def test_list_functions_refuses_max_items_outside_1_to_50(
    service: LambdaService, fake: FakeLambda, max_items: int
):
    with pytest.raises(InvalidRequest, match="max_items"):
        await service.list_functions(ROUTER, max_items=max_items)
    assert fake.calls() == []


async def test_list_functions_is_retried_when_throttled_or_dropped(service: LambdaService, fake: FakeLambda):
    fake.script(Reply.throttle(), Reply.dropped(), Reply.service_error())

    page = await service.list_functions(ROUTER)

    assert [info.function_name for info in page.functions] == [ECHO]
    assert len(fake.calls("ListFunctions")) == 4


async def test_get_function_config_without_qualifier(service: LambdaService, fake: FakeLambda):
    info = await service.get_function_config(ROUTER, ECHO)

    assert info.function_name == ECHO
    assert info.function_arn == f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{ECHO}"
    assert info.version == "$LATEST"
    assert info.runtime == "python3.12"
    assert info.memory_size == 128
    assert info.architectures == ("x86_64",)
    assert "Qualifier" not in fake.calls("GetFunctionConfiguration")[0].query


@pytest.mark.parametrize(("qualifier", "version"), [("live", "2"), ("1", "1")])
async def test_get_function_config_with_qualifier(
    service: LambdaService, fake: FakeLambda, qualifier: str, version: str
):
    info = await service.get_function_config(ROUTER, ECHO, qualifier)

    assert info.version == version
    assert info.function_arn.endswith(f":function:{ECHO}:{qualifier}")
    assert fake.calls("GetFunctionConfiguration")[0].query["Qualifier"] == qualifier


async def test_get_function_config_of_unknown_function_or_qualifier(service: LambdaService, fake: FakeLambda):
    with pytest.raises(FunctionNotFound, match="waddlebot-missing"):
        await service.get_function_config(ROUTER, "waddlebot-missing")
    with pytest.raises(FunctionNotFound, match="waddlebot-echo:7"):
        await service.get_function_config(ROUTER, ECHO, "7")
    assert len(fake.calls("GetFunctionConfiguration")) == 2


async def test_get_function_config_refuses_before_sending(service: LambdaService, fake: FakeLambda):
    fake.add_function("billing-export")

    with pytest.raises(Forbidden):
        await service.get_function_config(ROUTER, "billing-export")
    with pytest.raises(InvalidRequest, match="qualifier"):
        await service.get_function_config(ROUTER, ECHO, "not a qualifier!")

    assert fake.calls() == []


async def test_listing_and_describing_give_up_after_the_control_plane_timeout(module: Services, fake: FakeLambda):
    # The boto3 client waits LAMBDA_TIMEOUT and more for invocations; reads must not hold a caller that long.
    client = build_lambda_client(module.settings, endpoint_url=fake.url)
    service = LambdaService(module.settings, client, module.invocation_log, control_plane_timeout=0.3)
    fake.control_plane_delay = 10
    try:
        with pytest.raises(UpstreamTimeout, match="did not answer"):
            await service.list_functions(ROUTER)
        with pytest.raises(UpstreamTimeout, match="did not answer"):
            await service.get_function_config(ROUTER, ECHO)
    finally:
        await service.close()
    assert len(fake.calls("ListFunctions")) == 1
    assert len(fake.calls("GetFunctionConfiguration")) == 1


async def test_no_attempt_is_sent_once_the_callers_deadline_has_passed(module: Services, fake: FakeLambda):
    request = InvokeRequest(function_name=ECHO, payload=b"{}")

    with pytest.raises(DeadlineExceeded, match="deadline passed before waddlebot-echo was invoked"):
        await module.service.invoke(request, ROUTER, "grpc", deadline=time.monotonic() - 0.001)

    assert fake.calls("Invoke") == []
    [record] = await records_of(module, ECHO)
    assert (record["success"], record["error_code"], record["transport"]) == (False, "DeadlineExceeded", "grpc")


async def test_an_invocation_the_journal_cannot_record_is_refused_before_lambda_is_called(
    module: Services, fake: FakeLambda
):
    await asyncio.to_thread(module.invocation_log._journal.close)

    with pytest.raises(DatabaseUnavailable, match="could not be recorded"):
        await invoke(module.service)

    assert fake.calls("Invoke") == []
    assert module.service.in_flight == 0


async def test_when_the_journal_cannot_take_an_outcome_the_answer_stands_and_the_record_goes_to_the_database(
    module: Services, fake: FakeLambda, monkeypatch: pytest.MonkeyPatch
):
    journal = module.invocation_log._journal

    def disk_full(entry: dict) -> None:
        raise OSError(28, "No space left on device")

    # A fault injected where the disk would fail: the journal takes the start, then not the outcome.
    monkeypatch.setattr(journal, "append_outcome_later", disk_full)

    result = await invoke(module.service, payload=b'{"n": 1}')

    assert result.success is True
    assert len(fake.calls("Invoke")) == 1
    record = await invocation_row(module, result.invocation_id)
    assert record is not None
    assert (record["success"], record["status_code"], record["completed_at"] is not None) == (True, 200, True)


async def test_when_the_journal_cannot_make_an_outcome_durable_the_answer_stands_and_the_record_goes_to_the_database(
    module: Services, fake: FakeLambda, monkeypatch: pytest.MonkeyPatch
):
    # The disk fails under the outcome's fdatasync (the start was written, and the outcome copied in).
    def disk_failed(*_: object) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(journal_module, "_sync_segments", disk_failed)
    result = await invoke(module.service, payload=b'{"n": 2}')

    assert result.success is True
    record = await invocation_row(module, result.invocation_id)
    assert record is not None
    assert (record["success"], record["status_code"], record["completed_at"] is not None) == (True, 200, True)


async def test_released_callers_get_outcome_unknown_while_their_invocations_run_on_and_are_recorded(
    module: Services, fake: FakeLambda
):
    gate = threading.Event()
    fake.functions[ECHO].hold = gate
    waiting = asyncio.ensure_future(invoke(module.service, payload=b'{"n": 5}'))
    await asyncio.to_thread(fake.wait_until_active, 1)

    assert module.service.release_waiting() == 1
    with pytest.raises(OutcomeUnknown, match="could not wait") as raised:
        await waiting
    assert module.service.in_flight == 1  # still running

    gate.set()
    for _ in range(200):
        if module.service.in_flight == 0:
            break
        await asyncio.sleep(0.01)
    record = await invocation_row(module, raised.value.invocation_id)
    assert record is not None
    assert (record["success"], record["status_code"]) == (True, 200)
    # Nobody waiting: nothing to release.
    assert module.service.release_waiting() == 0
