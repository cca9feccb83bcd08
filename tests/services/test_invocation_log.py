"""InvocationLog over a real database: a started row completed, a whole row written late, failures swallowed."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from config import normalize_database_url
from models import connect
from services.database import Database
from services.invocation_log import InvocationLog, InvocationOutcome, InvocationStart, utc_now


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    opened = Database(normalize_database_url(database_url), 2)
    yield opened
    opened.close()


@pytest.fixture
def log(database: Database) -> InvocationLog:
    return InvocationLog(database)


def _start(**fields) -> InvocationStart:
    values = {
        "invocation_id": uuid.uuid4().hex,
        "function_name": "waddlebot-echo",
        "invocation_type": "RequestResponse",
        "payload": '{"command":"!help"}',
        "alias": "live",
        "version": None,
        "caller": "client:bot-one",
        "transport": "rest",
        "invoked_at": utc_now(),
    }
    values.update(fields)
    return InvocationStart(**values)


def _outcome(record: InvocationStart, **fields) -> InvocationOutcome:
    values = {
        "success": True,
        "completed_at": record.invoked_at + timedelta(milliseconds=250),
        "duration_ms": 250.5,
        "status_code": 200,
        "response_payload": '{"ok":true}',
        "executed_version": "7",
        "request_id": "req-1",
    }
    values.update(fields)
    return InvocationOutcome(**values)


def test_utc_now_is_naive_utc():
    now = utc_now()
    assert now.tzinfo is None
    assert abs(now - datetime.now(UTC).replace(tzinfo=None)) < timedelta(seconds=5)


async def test_a_started_row_is_open_until_finished(log: InvocationLog):
    record = _start()
    assert await log.start(record) is True

    row = await log.get(record.invocation_id)
    assert row["function_name"] == "waddlebot-echo"
    assert row["invocation_type"] == "RequestResponse"
    assert row["payload"] == '{"command":"!help"}'
    assert row["alias"] == "live"
    assert row["version"] is None
    assert row["caller"] == "client:bot-one"
    assert row["transport"] == "rest"
    assert abs(row["invoked_at"] - record.invoked_at) < timedelta(seconds=1)
    assert row["completed_at"] is None
    assert row["success"] is None
    assert row["status_code"] is None


async def test_finish_completes_the_started_row(log: InvocationLog, database: Database):
    record = _start()
    await log.start(record)
    outcome = _outcome(record)
    assert await log.finish(record, outcome) is True

    row = await log.get(record.invocation_id)
    assert row["success"] is True
    assert row["status_code"] == 200
    assert row["response_payload"] == '{"ok":true}'
    assert row["executed_version"] == "7"
    assert row["request_id"] == "req-1"
    assert row["duration_ms"] == pytest.approx(250.5)
    assert abs(row["completed_at"] - outcome.completed_at) < timedelta(seconds=1)
    assert row["function_error"] is None
    assert row["error_message"] is None
    assert row["payload"] == '{"command":"!help"}'
    count = await database.run(lambda db: db(db.lambda_invocations.invocation_id == record.invocation_id).count())
    assert count == 1


async def test_finish_records_a_failure(log: InvocationLog):
    record = _start()
    await log.start(record)
    await log.finish(
        record, _outcome(record, success=False, status_code=None, error_message="throttled", error_code="Throttled")
    )
    row = await log.get(record.invocation_id)
    assert row["success"] is False
    assert row["status_code"] is None
    assert row["error_message"] == "throttled"
    assert row["error_code"] == "Throttled"


async def test_finish_without_start_writes_the_whole_row(log: InvocationLog, database: Database):
    record = _start(invocation_type="Event", alias=None, version="3", transport="grpc")
    assert await log.finish(record, _outcome(record, status_code=202, response_payload="")) is True

    row = await log.get(record.invocation_id)
    assert row["function_name"] == "waddlebot-echo"
    assert row["invocation_type"] == "Event"
    assert row["payload"] == '{"command":"!help"}'
    assert row["version"] == "3"
    assert row["caller"] == "client:bot-one"
    assert row["transport"] == "grpc"
    assert row["invoked_at"] is not None
    assert row["status_code"] == 202
    assert row["success"] is True
    assert row["completed_at"] is not None
    assert await database.run(lambda db: db(db.lambda_invocations).count()) == 1


async def test_get_of_an_unknown_invocation_is_none(log: InvocationLog):
    assert await log.get("no-such-invocation") is None


async def test_a_closed_database_makes_start_and_finish_report_false(log: InvocationLog, database: Database):
    database.close()
    record = _start()
    assert await log.start(record) is False
    assert await log.finish(record, _outcome(record)) is False
    assert await log.ping() is False


async def test_a_database_without_the_tables_makes_start_and_finish_report_false(
    log: InvocationLog, database: Database
):
    assert await log.ping() is True
    await database.run(lambda db: db.executesql("DROP TABLE lambda_invocations;"))
    record = _start()
    assert await log.start(record) is False
    assert await log.finish(record, _outcome(record)) is False
    # The failures left the connection usable.
    assert await log.ping() is True


async def test_a_duplicate_start_reports_false(log: InvocationLog):
    record = _start()
    assert await log.start(record) is True
    assert await log.start(record) is False
    assert await log.finish(record, _outcome(record)) is True
    assert (await log.get(record.invocation_id))["success"] is True


async def test_records_survive_a_postgresql_connection_cut_between_writes(database: Database, log: InvocationLog):
    if database.engine != "postgres":
        pytest.skip("cutting a server-side connection is a PostgreSQL test")
    record = _start()
    assert await log.start(record) is True
    # Terminate every connection of the module (as a server restart would), between the two writes.
    admin = connect(database.url)
    try:
        terminated = admin.executesql(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = 'lambda-action' AND pid <> pg_backend_pid();"
        )[0][0]
    finally:
        admin.close()
    assert terminated >= 1

    assert await log.finish(record, _outcome(record)) is True
    row = await log.get(record.invocation_id)
    assert row["success"] is True
    assert row["completed_at"] is not None
