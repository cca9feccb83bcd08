"""InvocationHistory on both engines: filters, keyset pages, the access rule, statistics against hand-counted
fixtures, log locations and retention."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import pytest

from app import Services, build_services
from services.domain import Caller
from services.errors import InvalidRequest, InvocationNotFound, PageNotFound
from services.history import HistoryFilter, InvocationHistory, parse_instant
from services.invocation_log import utc_now

ALICE = Caller(kind="client", name="alice")
BOB = Caller(kind="client", name="bob")
ROUTER = Caller(kind="service", name="router_module")
NOW = utc_now().replace(microsecond=0)


@pytest.fixture
async def module(make_settings, database_url: str) -> AsyncIterator[Services]:
    settings = make_settings(DATABASE_URL=database_url, BOOTSTRAP_CLIENT_ID="", BOOTSTRAP_CLIENT_SECRET="")
    built = await build_services(settings)
    yield built
    await built.close()


def row(
    function_name: str = "waddlebot-echo",
    *,
    caller: Caller = ALICE,
    ago: timedelta = timedelta(minutes=5),
    duration_ms: float | None = 10.0,
    status_code: int | None = 200,
    success: bool | None = True,
    function_error: str | None = None,
    error_code: str | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """A record as the shipper writes it (completed, unless `success` is None)."""
    invoked_at = NOW - ago
    return {
        "invocation_id": uuid.uuid4().hex,
        "function_name": function_name,
        "invocation_type": "RequestResponse",
        "payload": '{"n": 1}',
        "caller": caller.label,
        "transport": "rest",
        "invoked_at": invoked_at,
        "completed_at": None if success is None else invoked_at + timedelta(milliseconds=duration_ms or 0),
        "duration_ms": duration_ms,
        "status_code": status_code,
        "success": success,
        "function_error": function_error,
        "error_code": error_code,
        "response_payload": '{"ok": true}' if status_code else None,
        "request_id": uuid.uuid4().hex if status_code else None,
        **fields,
    }


async def insert(module: Services, *rows: dict[str, Any]) -> list[str]:
    def write(db) -> None:
        for values in rows:
            db.lambda_invocations.insert(**values)

    await module.database.run(write)
    return [values["invocation_id"] for values in rows]


def history(module: Services, **options: Any) -> InvocationHistory:
    return InvocationHistory(module.database, **{"lambda_backend": "aws", **options})


# -- lists ------------------------------------------------------------------------------------------------


async def test_a_client_sees_its_own_invocations_newest_first_and_a_service_sees_all(module: Services):
    oldest, middle, newest = await insert(
        module,
        row(ago=timedelta(minutes=30)),
        row(ago=timedelta(minutes=20), caller=BOB),
        row(ago=timedelta(minutes=10)),
    )

    alices = await history(module).list(ALICE, HistoryFilter())
    everyone = await history(module).list(ROUTER, HistoryFilter())

    assert [item["invocation_id"] for item in alices.items] == [newest, oldest]
    assert [item["invocation_id"] for item in everyone.items] == [newest, middle, oldest]
    assert alices.next_cursor is None
    assert "payload" not in alices.items[0]


async def test_filters_narrow_the_list(module: Services):
    ids = await insert(
        module,
        row("waddlebot-a", ago=timedelta(hours=3)),
        row("waddlebot-a", success=False, function_error="Unhandled", ago=timedelta(hours=2)),
        row("waddlebot-b", ago=timedelta(hours=1), invocation_type="Event", transport="grpc"),
        row("waddlebot-b", success=False, status_code=None, error_code="Throttled", ago=timedelta(minutes=1)),
    )
    listed = history(module)

    async def which(**filters: Any) -> list[str]:
        page = await listed.list(ROUTER, HistoryFilter(**filters))
        return [item["invocation_id"] for item in page.items]

    assert await which(function_name="waddlebot-a") == [ids[1], ids[0]]
    assert await which(success=False) == [ids[3], ids[1]]
    assert await which(success=True) == [ids[2], ids[0]]
    assert await which(invocation_type="Event") == [ids[2]]
    assert await which(transport="grpc") == [ids[2]]
    assert await which(since=NOW - timedelta(hours=2, minutes=30), until=NOW - timedelta(minutes=30)) == [
        ids[2],
        ids[1],
    ]
    assert await which(since=NOW, until=NOW - timedelta(hours=1)) == []


async def test_pages_follow_each_other_without_gaps_or_repeats_while_rows_arrive(module: Services):
    # Three rows share each second, as the shipper stores them: the id breaks the ties.
    ids = await insert(module, *(row(ago=timedelta(seconds=index // 3)) for index in range(25)))
    listed = history(module)

    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = await listed.list(ALICE, HistoryFilter(), limit=7, cursor=cursor)
        seen += [item["invocation_id"] for item in page.items]
        pages += 1
        # Newer invocations recorded meanwhile belong before the first page, never inside the later ones.
        await insert(module, row(ago=timedelta(seconds=-pages)))
        if page.next_cursor is None:
            break
        cursor = page.next_cursor

    assert pages == 4
    assert sorted(seen) == sorted(ids)
    assert len(seen) == len(set(seen)) == 25


@pytest.mark.parametrize("limit", [0, 201, -1])
async def test_a_limit_outside_1_to_200_is_invalid(module: Services, limit: int):
    with pytest.raises(InvalidRequest):
        await history(module).list(ALICE, HistoryFilter(), limit=limit)


@pytest.mark.parametrize("cursor", ["garbage", "e30", "WyIxIiwgMl0"])
async def test_a_cursor_the_history_did_not_give_starts_no_page(module: Services, cursor: str):
    with pytest.raises(PageNotFound):
        await history(module).list(ALICE, HistoryFilter(), cursor=cursor)


@pytest.mark.parametrize(
    ("filters", "says"),
    [
        ({"function_name": "waddlebot-echo\n"}, "function_name"),
        ({"invocation_type": "Sync"}, "invocation_type"),
        ({"transport": "smtp"}, "transport"),
    ],
)
async def test_a_malformed_filter_is_invalid(module: Services, filters: dict[str, Any], says: str):
    with pytest.raises(InvalidRequest) as raised:
        await history(module).list(ALICE, HistoryFilter(**filters))

    assert says in raised.value.message


# -- one invocation ---------------------------------------------------------------------------------------


async def test_one_invocation_has_its_payloads_and_log_tail_and_where_its_log_is(module: Services):
    [mine] = await insert(module, row(log_tail="START\nhello\nEND", altered_fields="payload"))

    detail = await history(module).get(ALICE, mine)

    record = detail.record
    assert (record["payload"], record["response_payload"], record["log_tail"]) == (
        '{"n": 1}',
        '{"ok": true}',
        "START\nhello\nEND",
    )
    assert record["altered_fields"] == "payload"
    assert detail.logs.log_group == "/aws/lambda/waddlebot-echo"
    assert record["request_id"] in (detail.logs.insights_query or "")
    assert detail.logs.lines is None


async def test_another_clients_invocation_is_not_found_like_a_missing_one(module: Services):
    [bobs] = await insert(module, row(caller=BOB))
    nobodys = uuid.uuid4().hex

    with pytest.raises(InvocationNotFound) as others:
        await history(module).get(ALICE, bobs)
    with pytest.raises(InvocationNotFound) as missing:
        await history(module).get(ALICE, nobodys)
    seen_by_router = await history(module).get(ROUTER, bobs)

    # The same words either way: nothing tells another client's invocation from none.
    assert others.value.message.replace(bobs, "?") == missing.value.message.replace(nobodys, "?")
    assert seen_by_router.record["caller"] == BOB.label


async def test_a_malformed_invocation_id_is_invalid(module: Services):
    with pytest.raises(InvalidRequest):
        await history(module).get(ALICE, "not-an-id")


async def test_with_fetch_function_logs_the_lines_are_read_for_the_request(module: Services):
    [mine] = await insert(module, row())
    asked: list[tuple] = []

    def read(group: str, request_id: str, invoked_at: datetime, completed_at: datetime | None) -> list[str]:
        asked.append((group, request_id, invoked_at, completed_at))
        return [f"START RequestId: {request_id}", "hello"]

    detail = await history(module, read_logs=read).get(ALICE, mine)

    [(group, request_id, invoked_at, _)] = asked
    assert group == "/aws/lambda/waddlebot-echo"
    assert request_id == detail.record["request_id"]
    assert invoked_at == detail.record["invoked_at"]
    assert detail.logs.lines == [f"START RequestId: {request_id}", "hello"]


async def test_an_unreadable_cloudwatch_log_still_answers_with_where_it_is(module: Services):
    [mine] = await insert(module, row())

    def read(*_: Any) -> list[str]:
        raise OSError("AccessDeniedException: not authorized to perform logs:FilterLogEvents")

    detail = await history(module, read_logs=read).get(ALICE, mine)

    assert detail.logs.lines is None
    assert detail.logs.insights_query
    assert "AccessDenied" in detail.logs.note


async def test_on_the_embedded_runtime_the_log_is_the_recorded_tail(module: Services):
    [mine] = await insert(module, row(log_tail="line one\nline two"))

    detail = await history(module, lambda_backend="local").get(ALICE, mine)

    assert detail.logs.lines == ["line one", "line two"]
    assert detail.logs.insights_query is None


# -- statistics -------------------------------------------------------------------------------------------


async def test_stats_match_hand_counted_figures(module: Services):
    await insert(
        module,
        # waddlebot-a: four answered (one a function error): durations 10, 20, 30, 40.
        row("waddlebot-a", duration_ms=10),
        row("waddlebot-a", duration_ms=20),
        row("waddlebot-a", duration_ms=30, success=False, function_error="Unhandled"),
        row("waddlebot-a", duration_ms=40),
        # waddlebot-b: one answered (100 ms), one throttled, one refused by the module, one still running.
        row("waddlebot-b", duration_ms=100),
        row("waddlebot-b", duration_ms=5, status_code=None, success=False, error_code="Throttled"),
        row("waddlebot-b", duration_ms=0, status_code=None, success=False, error_code="Forbidden"),
        row("waddlebot-b", duration_ms=None, status_code=None, success=None),
        # Outside the period, and another client's: not counted.
        row("waddlebot-a", ago=timedelta(days=2)),
        row("waddlebot-a", caller=BOB),
    )

    report = await history(module).stats(ALICE)

    a, b = report.functions
    assert (a.function_name, a.count, a.successes, a.function_errors, a.throttles, a.other_failures) == (
        "waddlebot-a",
        4,
        3,
        1,
        0,
        0,
    )
    # percentile_cont: rank (n - 1) * p, interpolated. n = 4: p50 at 1.5 -> 25; p95 at 2.85 -> 38.5; p99 -> 39.7.
    assert (a.p50_ms, a.p95_ms, a.p99_ms) == (25.0, 38.5, 39.7)
    assert a.success_rate == 0.75
    assert (b.count, b.successes, b.function_errors, b.throttles, b.other_failures) == (3, 1, 0, 1, 1)
    assert (b.p50_ms, b.p95_ms, b.p99_ms) == (100.0, 100.0, 100.0)
    totals = report.totals
    assert (totals.function_name, totals.count, totals.successes, totals.throttles) == (None, 7, 4, 1)
    # All answered: 10, 20, 30, 40, 100. p50 at 2 -> 30; p95 at 3.8 -> 40 + 0.8 * 60 = 88; p99 at 3.96 -> 97.6.
    assert (totals.p50_ms, totals.p95_ms, totals.p99_ms) == (30.0, 88.0, 97.6)


async def test_stats_of_one_function_a_period_and_for_a_service(module: Services):
    await insert(
        module,
        row("waddlebot-a", ago=timedelta(hours=30)),
        row("waddlebot-a", caller=BOB),
        row("waddlebot-b"),
    )
    stats = history(module).stats

    one = await stats(ROUTER, function_name="waddlebot-a")
    wide = await stats(ROUTER, since=NOW - timedelta(days=3))
    empty = await stats(ROUTER, since=NOW, until=NOW - timedelta(hours=1))

    assert [(item.function_name, item.count) for item in one.functions] == [("waddlebot-a", 1)]
    assert [(item.function_name, item.count) for item in wide.functions] == [("waddlebot-a", 2), ("waddlebot-b", 1)]
    assert (empty.functions, empty.totals.count, empty.totals.p50_ms, empty.totals.success_rate) == ([], 0, None, None)


# -- retention --------------------------------------------------------------------------------------------


async def test_retention_deletes_what_is_older_than_its_days_in_batches(module: Services, monkeypatch):
    monkeypatch.setattr("services.history.RETENTION_BATCH", 4)
    old = await insert(module, *(row(ago=timedelta(days=10, minutes=index)) for index in range(9)))
    kept = await insert(module, row(ago=timedelta(days=6)), row())

    deleted = await history(module, retention_days=7).delete_expired()
    left = await history(module).list(ROUTER, HistoryFilter())

    assert deleted == len(old) == 9
    assert sorted(item["invocation_id"] for item in left.items) == sorted(kept)


async def test_retention_runs_in_the_background_once_started(module: Services):
    await insert(module, row(ago=timedelta(days=40)))
    background = history(module, retention_days=30, retention_interval=0.05)

    background.start()
    try:
        for _ in range(100):
            if not (await history(module).list(ROUTER, HistoryFilter())).items:
                break
            await module.database.run(lambda db: None)
    finally:
        await background.close()

    assert (await history(module).list(ROUTER, HistoryFilter())).items == []


# -- instants ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "moment"),
    [
        ("2026-12-01T10:00:00Z", datetime(2026, 12, 1, 10)),
        ("2026-12-01T12:00:00+02:00", datetime(2026, 12, 1, 10)),
        ("2026-12-01t10:00:00.5z", datetime(2026, 12, 1, 10, 0, 0, 500000)),
        ("2016-12-31T23:59:60Z", datetime(2016, 12, 31, 23, 59, 59)),
    ],
)
def test_instants_are_rfc_3339_in_utc(text: str, moment: datetime):
    assert parse_instant(text, "since") == moment


@pytest.mark.parametrize("text", ["2026-12-01", "2026-12-01T10:00:00", "yesterday", "", "2026-13-01T00:00:00Z"])
def test_anything_else_is_invalid_and_named(text: str):
    with pytest.raises(InvalidRequest) as raised:
        parse_instant(text, "since")

    assert "since" in raised.value.message
