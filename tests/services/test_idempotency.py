"""Idempotency keys through LambdaService, against the fake Lambda and a real database (both engines where it
matters): a repeat is answered from the first invocation's record and never runs the function again."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest

from app import Services, build_services
from services.domain import Caller, InvokeRequest, InvokeResult
from services.errors import (
    DatabaseUnavailable,
    IdempotencyKeyReused,
    InvalidRequest,
    InvocationInProgress,
    OutcomeUnknown,
    ServiceError,
    Throttled,
)
from services.idempotency import KeyClaim, claim_in, fingerprint, purge_in
from services.invocation_log import utc_now
from services.lambda_client import build_lambda_client
from tests.fake_lambda import FakeLambda, Reply
from tests.records import invocation_row, invocation_rows

CLIENT = Caller(kind="client", name="test-client")
OTHER_CLIENT = Caller(kind="client", name="other-client")
ECHO = "waddlebot-echo"
KEY = "6f1c2a9e-0b7d-4e55-9a3c-1d2e3f405162"

ServicesFactory = Callable[..., Awaitable[Services]]


@pytest.fixture
def fake() -> Iterator[FakeLambda]:
    with FakeLambda() as server:
        server.add_function(ECHO, handler=lambda event: {"echo": event})
        yield server


@pytest.fixture
async def make_module(make_settings, fake: FakeLambda) -> AsyncIterator[ServicesFactory]:
    """Modules over `fake`, each with a journal of its own (replicas when given one DATABASE_URL)."""
    built: list[tuple[Services, Any]] = []

    async def build(spool: str = "spool", **overrides: str) -> Services:
        settings = make_settings(
            **{"BOOTSTRAP_CLIENT_ID": "", "BOOTSTRAP_CLIENT_SECRET": "", **overrides},
        )
        settings = dataclasses.replace(settings, log_spool_dir=f"{settings.log_spool_dir}-{spool}")
        client = build_lambda_client(settings, endpoint_url=fake.url)
        module = await build_services(settings, lambda_client=client)
        built.append((module, client))
        return module

    yield build
    for module, client in reversed(built):
        await module.close()
        client.close()


async def invoke(
    module: Services, key: str | None = KEY, caller: Caller = CLIENT, payload: bytes = b'{"n": 1}', **fields: Any
) -> InvokeResult:
    request = InvokeRequest(function_name=ECHO, payload=payload, idempotency_key=key, **fields)
    return await module.service.invoke(request, caller, "grpc")


async def shipped(module: Services) -> None:
    assert await module.invocation_log.flush(15.0)


async def test_a_repeat_gets_the_first_outcome_and_lambda_runs_once(make_module, fake: FakeLambda, database_url):
    module = await make_module(DATABASE_URL=database_url)

    first = await invoke(module)
    await shipped(module)
    repeat = await invoke(module)

    assert len(fake.calls("Invoke", ECHO)) == 1
    assert first.replayed is False
    assert repeat.replayed is True
    assert (repeat.invocation_id, repeat.payload, repeat.status_code) == (
        first.invocation_id,
        first.payload,
        first.status_code,
    )
    assert repeat.request_id == first.request_id
    [row] = await invocation_rows(module)
    assert row["idempotency_key"] == KEY
    assert row["invocation_id"] == first.invocation_id


async def test_a_function_error_is_replayed_as_recorded(make_module, fake: FakeLambda):
    def fail(event: Any) -> Any:
        raise ValueError("no such command")

    fake.functions[ECHO].handler = fail
    module = await make_module()

    first = await invoke(module)
    await shipped(module)
    repeat = await invoke(module)

    assert len(fake.calls("Invoke", ECHO)) == 1
    assert first.success is False
    assert (repeat.success, repeat.function_error, repeat.payload) == (False, "Unhandled", first.payload)


async def test_a_repeat_while_the_first_runs_is_in_progress_with_its_id(make_module, fake: FakeLambda, database_url):
    module = await make_module(DATABASE_URL=database_url)
    gate = fake.functions[ECHO].hold = threading.Event()
    first = asyncio.ensure_future(invoke(module))
    try:
        await asyncio.to_thread(fake.wait_until_active, 1)
        with pytest.raises(InvocationInProgress) as raised:
            await invoke(module)
    finally:
        gate.set()
    result = await first

    assert raised.value.invocation_id == result.invocation_id
    assert raised.value.retry_after == 1.0
    assert len(fake.calls("Invoke", ECHO)) == 1


async def test_the_same_key_with_another_body_is_refused_and_runs_nothing(make_module, fake: FakeLambda, database_url):
    module = await make_module(DATABASE_URL=database_url)
    first = await invoke(module)

    with pytest.raises(IdempotencyKeyReused) as raised:
        await invoke(module, payload=b'{"n": 2}')
    with pytest.raises(IdempotencyKeyReused):
        await invoke(module, invocation_type="Event")

    assert first.invocation_id in raised.value.message
    assert "new key" in raised.value.message
    assert len(fake.calls("Invoke", ECHO)) == 1
    assert len(await invocation_rows(module)) == 1


async def test_keys_belong_to_their_caller(make_module, fake: FakeLambda):
    module = await make_module()

    mine = await invoke(module)
    theirs = await invoke(module, caller=OTHER_CLIENT, payload=b'{"n": 2}')

    assert theirs.replayed is False
    assert theirs.invocation_id != mine.invocation_id
    assert len(fake.calls("Invoke", ECHO)) == 2


async def test_without_a_key_every_request_runs(make_module, fake: FakeLambda):
    module = await make_module()

    await invoke(module, key=None)
    await invoke(module, key=None)

    assert len(fake.calls("Invoke", ECHO)) == 2


@pytest.mark.parametrize("key", ["", "has space", "tab\there", "é", "k" * 256, "line\n"])
async def test_a_malformed_key_is_invalid_before_anything_runs(make_module, fake: FakeLambda, key: str):
    module = await make_module()

    with pytest.raises(InvalidRequest) as raised:
        await invoke(module, key=key)

    assert "Idempotency-Key" in raised.value.message
    assert fake.calls("Invoke") == []


async def test_a_repeat_on_another_replica_sharing_the_database_is_answered_alike(
    make_module, fake: FakeLambda, database_url
):
    first_replica = await make_module("a", DATABASE_URL=database_url)
    second_replica = await make_module("b", DATABASE_URL=database_url)

    first = await invoke(first_replica)
    await shipped(first_replica)
    repeat = await invoke(second_replica)

    assert repeat.replayed is True
    assert repeat.invocation_id == first.invocation_id
    assert len(fake.calls("Invoke", ECHO)) == 1


async def test_concurrent_requests_with_one_key_on_two_replicas_run_once(make_module, fake: FakeLambda, database_url):
    first_replica = await make_module("a", DATABASE_URL=database_url)
    second_replica = await make_module("b", DATABASE_URL=database_url)
    gate = fake.functions[ECHO].hold = threading.Event()

    calls = [asyncio.ensure_future(invoke(replica)) for replica in (first_replica, second_replica) * 4]
    try:
        await asyncio.to_thread(fake.wait_until_active, 1)
        await asyncio.sleep(0.2)
    finally:
        gate.set()
    outcomes = await asyncio.gather(*calls, return_exceptions=True)

    ran = [outcome for outcome in outcomes if isinstance(outcome, InvokeResult)]
    in_progress = [outcome for outcome in outcomes if isinstance(outcome, InvocationInProgress)]
    assert len(ran) == 1, outcomes
    assert len(in_progress) == 7, outcomes
    assert {error.invocation_id for error in in_progress} == {ran[0].invocation_id}
    assert len(fake.calls("Invoke", ECHO)) == 1


async def test_a_throttled_first_attempt_frees_the_key_for_a_retry(make_module, fake: FakeLambda):
    module = await make_module(MAX_RETRIES="0")
    fake.functions[ECHO].script(Reply.throttle())

    with pytest.raises(Throttled):
        await invoke(module)
    retried = await invoke(module)

    assert retried.replayed is False
    assert retried.success is True
    assert len(fake.calls("Invoke", ECHO)) == 2
    rows = await invocation_rows(module)
    assert [row["error_code"] for row in rows] == ["Throttled", None]
    assert {row["idempotency_key"] for row in rows} == {KEY}


async def test_an_outcome_unknown_is_not_run_again_for_the_key(make_module, fake: FakeLambda):
    module = await make_module()
    fake.functions[ECHO].script(Reply.service_error())

    with pytest.raises(OutcomeUnknown) as first:
        await invoke(module)
    await shipped(module)
    with pytest.raises(OutcomeUnknown) as repeat:
        await invoke(module)

    assert repeat.value.invocation_id == first.value.invocation_id
    assert "not run again" in repeat.value.message
    assert len(fake.calls("Invoke", ECHO)) == 1


async def test_a_key_past_its_window_runs_again(make_module, fake: FakeLambda, database_url):
    module = await make_module(DATABASE_URL=database_url, IDEMPOTENCY_WINDOW_SECONDS="60")
    first = await invoke(module)
    await shipped(module)
    # The claim as it stands an hour later: moved back rather than waited for.
    await module.database.run(
        lambda db: db(db.idempotency_keys.invocation_id == first.invocation_id).update(
            claimed_at=utc_now() - timedelta(hours=1)
        )
    )

    again = await invoke(module, payload=b'{"n": "another body is fine once the window has passed"}')

    assert again.replayed is False
    assert again.invocation_id != first.invocation_id
    assert len(fake.calls("Invoke", ECHO)) == 2


async def test_with_the_database_away_a_keyed_request_is_refused_at_once_and_a_plain_one_runs(
    make_module, fake: FakeLambda
):
    module = await make_module()
    module.invocation_log._shipper.database_ok = False  # as the shipper leaves it when the database is away

    with pytest.raises(DatabaseUnavailable) as raised:
        await invoke(module)
    plain = await invoke(module, key=None)

    assert "without the key" in raised.value.message
    assert plain.success is True
    assert len(fake.calls("Invoke", ECHO)) == 1


async def test_an_event_invocation_is_keyed_too(make_module, fake: FakeLambda):
    module = await make_module()

    first = await module.service.invoke_async(ECHO, b"{}", CLIENT, "rest", idempotency_key=KEY)
    await shipped(module)
    repeat = await module.service.invoke_async(ECHO, b"{}", CLIENT, "rest", idempotency_key=KEY)

    assert (first.status_code, repeat.status_code) == (202, 202)
    assert repeat.replayed is True
    assert repeat.request_id == first.request_id
    assert len(fake.calls("Invoke", ECHO)) == 1


# -- batches ----------------------------------------------------------------------------------------------


def batch(*payloads: str) -> list[InvokeRequest | ServiceError]:
    return [InvokeRequest(function_name=ECHO, payload=payload.encode()) for payload in payloads]


async def test_a_repeated_batch_replays_every_item(make_module, fake: FakeLambda, database_url):
    module = await make_module(DATABASE_URL=database_url)

    first = await module.service.batch_invoke(batch('{"i": 0}', '{"i": 1}'), CLIENT, "rest", idempotency_key=KEY)
    await shipped(module)
    repeat = await module.service.batch_invoke(batch('{"i": 0}', '{"i": 1}'), CLIENT, "rest", idempotency_key=KEY)

    assert len(fake.calls("Invoke", ECHO)) == 2
    assert [item.invocation_id for item in repeat] == [item.invocation_id for item in first]  # type: ignore[union-attr]
    assert all(isinstance(item, InvokeResult) and item.replayed for item in repeat)
    rows = await invocation_rows(module)
    assert sorted(row["idempotency_key"] for row in rows) == [f"{KEY}#0", f"{KEY}#1"]


async def test_a_different_batch_under_the_same_key_is_refused_before_any_item_runs(make_module, fake: FakeLambda):
    module = await make_module()
    await module.service.batch_invoke(batch('{"i": 0}'), CLIENT, "rest", idempotency_key=KEY)
    await shipped(module)

    with pytest.raises(IdempotencyKeyReused):
        await module.service.batch_invoke(batch('{"i": 0}', '{"i": 1}'), CLIENT, "rest", idempotency_key=KEY)

    assert len(fake.calls("Invoke", ECHO)) == 1


async def test_a_malformed_batch_key_is_invalid(make_module, fake: FakeLambda):
    module = await make_module()

    with pytest.raises(InvalidRequest):
        await module.service.batch_invoke(batch("{}"), CLIENT, "rest", idempotency_key="not a key")

    assert fake.calls("Invoke") == []


# -- the claims table -------------------------------------------------------------------------------------


async def test_expired_claims_are_purged_and_live_ones_kept(make_module, database_url):
    module = await make_module(DATABASE_URL=database_url)
    now = utc_now()

    def claim_some(db) -> None:
        for number in range(5):
            claim = KeyClaim("client:a", f"key-{number}", fingerprint(str(number)), f"id-{number}")
            assert claim_in(db, claim, now - timedelta(hours=2 if number < 3 else 0), 3600) is None

    await module.database.run(claim_some)
    purged = await module.database.run(lambda db: purge_in(db, now, 3600))
    left = await module.database.run(lambda db: [row.idempotency_key for row in db(db.idempotency_keys).select()])

    assert purged == 3
    assert sorted(left) == ["key-3", "key-4"]


async def test_the_record_keeps_the_key_of_a_refused_request(make_module, fake: FakeLambda):
    module = await make_module()

    with pytest.raises(ServiceError):
        await invoke(module, caller=Caller(kind="client", name="narrow", allowed_patterns=("nothing-*",)))

    [row] = await invocation_rows(module)
    assert row["error_code"] == "Forbidden"
    assert row["idempotency_key"] == KEY
    assert await invocation_row(module, row["invocation_id"]) is not None
