"""The schema on SQLite and PostgreSQL: idempotent creation, real booleans, concurrent start-ups, unique ids."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from pydal import DAL

from config import PROJECT_ROOT, normalize_database_url
from models import connect, create_schema, describe_url
from tests.conftest import POSTGRES_URL


@pytest.fixture
def db(database_url: str) -> Iterator[DAL]:
    """A connection to a fresh database with the tables defined but not created."""
    connection = connect(normalize_database_url(database_url))
    yield connection
    connection.rollback()
    connection.close()


def _tables(db: DAL) -> set[str]:
    if db._adapter.dbengine == "postgres":
        rows = db.executesql("SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema();")
    else:
        rows = db.executesql("SELECT name FROM sqlite_master WHERE type = 'table';")
    return {row[0] for row in rows}


def _indexes(db: DAL) -> set[str]:
    if db._adapter.dbengine == "postgres":
        rows = db.executesql("SELECT indexname FROM pg_indexes WHERE schemaname = current_schema();")
    else:
        rows = db.executesql("SELECT name FROM sqlite_master WHERE type = 'index';")
    return {row[0] for row in rows}


def _invocation(invocation_id: str, **fields) -> dict:
    return {
        "invocation_id": invocation_id,
        "function_name": "waddlebot-echo",
        "invocation_type": "RequestResponse",
        "invoked_at": datetime.now(UTC).replace(tzinfo=None),
        **fields,
    }


def test_create_schema_creates_the_tables_and_indexes_and_can_run_again(db: DAL):
    assert not {"api_clients", "lambda_invocations"} & _tables(db)
    create_schema(db)
    db.lambda_invocations.insert(**_invocation("first"))
    db.commit()

    create_schema(db)

    assert {"api_clients", "lambda_invocations"} <= _tables(db)
    assert {"idx_lambda_invocations_function_invoked", "idx_lambda_invocations_invoked"} <= _indexes(db)
    assert db(db.lambda_invocations).count() == 1


def test_columns_a_newer_version_defines_are_added_to_an_older_table(db: DAL):
    create_schema(db)
    # The table as a version before `altered_fields` created it, with a row in it.
    db.executesql("ALTER TABLE lambda_invocations DROP COLUMN altered_fields;")
    db.executesql(
        "INSERT INTO lambda_invocations (invocation_id, function_name, invocation_type, invoked_at) "
        "VALUES ('old-row', 'waddlebot-echo', 'Event', '2026-01-02 03:04:05');"
    )
    db.commit()

    create_schema(db)

    [row] = db(db.lambda_invocations).select()
    assert (row.invocation_id, row.invocation_type, row.altered_fields) == ("old-row", "Event", None)
    db.lambda_invocations.insert(**_invocation("new-row", altered_fields="error_message"))
    db.commit()
    assert db(db.lambda_invocations.altered_fields == "error_message").count() == 1


def test_booleans_round_trip_as_booleans(db: DAL):
    create_schema(db)
    now = datetime.now(UTC).replace(tzinfo=None)
    db.api_clients.insert(client_id="off", secret_hash="x", active=False, created_at=now, updated_at=now)
    db.lambda_invocations.insert(**_invocation("ok", success=True))
    db.commit()
    assert db(db.api_clients.client_id == "off").select().first().active is False
    assert db(db.lambda_invocations.invocation_id == "ok").select().first().success is True
    assert db(db.api_clients.active == False).count() == 1  # noqa: E712 (a PyDAL query, not a comparison)


def test_booleans_are_boolean_columns_on_postgresql(db: DAL):
    if db._adapter.dbengine != "postgres":
        pytest.skip("a PostgreSQL column type")
    create_schema(db)
    rows = db.executesql(
        "SELECT table_name, column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND "
        "((table_name = 'lambda_invocations' AND column_name = 'success') "
        "OR (table_name = 'api_clients' AND column_name = 'active'));"
    )
    assert sorted(rows) == [("api_clients", "active", "boolean"), ("lambda_invocations", "success", "boolean")]


def test_invocation_id_is_unique(db: DAL):
    create_schema(db)
    db.lambda_invocations.insert(**_invocation("same-id"))
    db.commit()
    with pytest.raises(Exception, match=r"(?i)unique|duplicate"):
        db.lambda_invocations.insert(**_invocation("same-id", function_name="waddlebot-other"))
    db.rollback()
    assert db(db.lambda_invocations.invocation_id == "same-id").select().first().function_name == "waddlebot-echo"


def test_client_id_is_unique(db: DAL):
    create_schema(db)
    now = datetime.now(UTC).replace(tzinfo=None)
    db.api_clients.insert(client_id="twice", secret_hash="a", created_at=now, updated_at=now)
    db.commit()
    with pytest.raises(Exception, match=r"(?i)unique|duplicate"):
        db.api_clients.insert(client_id="twice", secret_hash="b", created_at=now, updated_at=now)
    db.rollback()


# Each process connects, waits for the shared start time, then creates the schema: the creations collide.
_START_UP = """
import sys, time
from models import connect, create_schema
db = connect(sys.argv[1])
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
create_schema(db)
db.close()
"""


def test_processes_starting_together_on_one_fresh_postgresql_all_create_the_schema():
    if not POSTGRES_URL:
        pytest.skip("TEST_DATABASE_URL is not set")
    url = normalize_database_url(POSTGRES_URL)
    for _ in range(2):
        setup = connect(url)
        setup.executesql("DROP TABLE IF EXISTS lambda_invocations, api_clients;")
        setup.commit()
        setup.close()
        start_at = str(time.time() + 0.75)
        processes = [
            subprocess.Popen(
                [sys.executable, "-c", _START_UP, url, start_at],
                cwd=PROJECT_ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(4)
        ]
        outcomes = [(process.wait(timeout=60), process.stderr.read()) for process in processes]
        for process in processes:
            process.stdout.close()
            process.stderr.close()
        assert [code for code, _ in outcomes] == [0] * len(processes), outcomes
    check = connect(url)
    try:
        assert {"api_clients", "lambda_invocations"} <= _tables(check)
    finally:
        check.close()


def test_describe_url_masks_the_password():
    assert describe_url("postgres3://lambda:s3cret@db:5432/x") == "postgresql://lambda:***@db:5432/x"
    assert describe_url("postgres3://lambda@db:5432/x") == "postgresql://lambda@db:5432/x"
    assert describe_url("sqlite:///tmp/x.sqlite") == "sqlite:///tmp/x.sqlite"
