"""The history's queries stay index range scans at 200,000 rows on PostgreSQL (EXPLAIN, not a stopwatch)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from app import Services, build_services
from services.domain import Caller
from services.history import HistoryFilter, _decode_cursor, _encode_cursor, _query
from services.invocation_log import utc_now
from tests.records import generate_invocations

POSTGRES_URL = os.environ.get("TEST_DATABASE_URL")
ROWS = 200_000

pytestmark = pytest.mark.skipif(not POSTGRES_URL, reason="TEST_DATABASE_URL is not set (the plans are PostgreSQL's)")


@pytest.fixture
async def module(make_settings, database_url: str) -> AsyncIterator[Services]:
    if not database_url.startswith("postgres"):
        pytest.skip("the plans are PostgreSQL's")
    settings = make_settings(DATABASE_URL=database_url, BOOTSTRAP_CLIENT_ID="", BOOTSTRAP_CLIENT_SECRET="")
    built = await build_services(settings)

    await built.database.run(lambda db: generate_invocations(db, ROWS))
    yield built
    await built.close()


def _plan(db, query, limit: int = 50) -> str:
    table = db.lambda_invocations
    sql = db(query)._select(table.id, table.invocation_id, orderby=~table.invoked_at | ~table.id, limitby=(0, limit))
    return "\n".join(line for (line,) in db.executesql("EXPLAIN " + sql))


@pytest.mark.parametrize(
    ("caller", "filters"),
    [
        (Caller(kind="service", name="router_module"), HistoryFilter()),
        (Caller(kind="service", name="router_module"), HistoryFilter(function_name="waddlebot-f7")),
        (Caller(kind="client", name="c3"), HistoryFilter()),
        (Caller(kind="client", name="c3"), HistoryFilter(success=False)),
        (Caller(kind="service", name="router_module"), HistoryFilter(function_name="waddlebot-f7", success=True)),
    ],
)
async def test_every_page_of_the_history_is_an_index_scan(module: Services, caller: Caller, filters: HistoryFilter):
    scope = None if caller.kind == "service" else caller.label
    moment, row_id = _decode_cursor(_encode_cursor(utc_now() - timedelta(days=3), 10_000_000))

    def plans(db) -> tuple[str, str]:
        table = db.lambda_invocations
        first = _query(db, scope, filters)
        later = first & ((table.invoked_at < moment) | ((table.invoked_at == moment) & (table.id < row_id)))
        return _plan(db, first), _plan(db, later)

    first_page, later_page = await module.database.run(plans)

    for plan in (first_page, later_page):
        assert "Index" in plan, plan
        assert "Seq Scan on lambda_invocations" not in plan, plan
