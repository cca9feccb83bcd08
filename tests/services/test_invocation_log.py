"""InvocationLog over a real database: journaled on the call's path, shipped in batches, nothing lost or doubled."""

from __future__ import annotations

import asyncio
import json
import os
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from config import normalize_database_url
from models import connect
from services import journal as journal_module
from services.database import Database
from services.errors import JournalFull
from services.invocation_log import InvocationLog, InvocationOutcome, InvocationStart, utc_now
from services.journal import SEGMENT_BYTES, Journal
from tests.conftest import POSTGRES_URL
from tests.tcp_proxy import TcpProxy, proxy_to

# The shipper's pause in these tests: records reach the table quickly, so waits stay short.
SHIP_INTERVAL = 0.02


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    opened = Database(normalize_database_url(database_url), 2)
    yield opened
    opened.close()


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    return tmp_path / "spool"


@pytest.fixture
async def log(database: Database, spool: Path) -> AsyncIterator[InvocationLog]:
    opened = InvocationLog(database, Journal(spool, 64 * 1024 * 1024), ship_interval=SHIP_INTERVAL)
    await opened.open()
    yield opened
    await opened.close()


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


def _rows(database: Database) -> list[dict]:
    db = connect(database.url)
    try:
        return [row.as_dict() for row in db(db.lambda_invocations).select(orderby=db.lambda_invocations.id)]
    finally:
        db.close()


def _folders(spool: Path) -> list[Path]:
    return [path for path in spool.iterdir() if path.is_dir()]


async def _ship_what_is_left(database: Database, spool: Path) -> None:
    """Start a log on `spool` as a new process would (adopting what ended ones left), ship it all, and close it."""
    log = InvocationLog(database, Journal(spool, 64 * 1024 * 1024), ship_interval=SHIP_INTERVAL)
    await log.open()
    try:
        assert await log.flush(5)
    finally:
        await log.close()


def _journal_bytes(spool: Path) -> int:
    return sum(path.stat().st_size for path in spool.glob("*/*.journal"))


def _journal_text(spool: Path) -> str:
    return "".join(path.read_text() for path in sorted(spool.glob("*/*.journal")))


def _journal_entries(spool: Path) -> list[tuple[str, str]]:
    """(kind, invocation id) of every entry in the journal files, in file order."""
    entries = [json.loads(line) for line in _journal_text(spool).rstrip("\x00").split("\n") if line.strip("\x00")]
    return [(entry["kind"], entry["invocation_id"]) for entry in entries]


def test_utc_now_is_naive_utc():
    now = utc_now()
    assert now.tzinfo is None
    assert abs(now - datetime.now(UTC).replace(tzinfo=None)) < timedelta(seconds=5)


async def test_a_start_is_in_the_journal_at_once_and_in_the_table_after_shipping(
    log: InvocationLog, database: Database, spool: Path
):
    record = _start()
    log.record_start(record)

    # Written before Lambda would be called: on disk already, whatever the database does.
    assert record.invocation_id in _journal_text(spool)
    assert await log.flush(5)
    row = await log.get(record.invocation_id)
    assert row["function_name"] == "waddlebot-echo"
    assert row["payload"] == '{"command":"!help"}'
    assert row["success"] is None
    assert row["completed_at"] is None


async def test_an_outcome_completes_the_row_within_a_second(log: InvocationLog, database: Database):
    record = _start()
    log.record_start(record)
    await log.record_outcome(record, _outcome(record))

    deadline = time.monotonic() + 1.0
    row = None
    while time.monotonic() < deadline:
        row = await log.get(record.invocation_id)
        if row and row["completed_at"] is not None:
            break
        await asyncio.sleep(0.02)
    assert row is not None
    assert (row["success"], row["status_code"], row["executed_version"], row["request_id"]) == (True, 200, "7", "req-1")
    assert row["duration_ms"] == pytest.approx(250.5)
    assert row["invoked_at"] == record.invoked_at.replace(microsecond=0)
    assert log.state().unshipped_bytes == 0


async def test_an_outcome_is_durable_in_the_journal_before_record_outcome_returns(log: InvocationLog, spool: Path):
    record = _start()
    log.record_start(record)
    await log.record_outcome(record, _outcome(record, response_payload='{"answer":42}'))

    text = _journal_text(spool)
    assert '"kind":"outcome"' in text
    assert "answer" in text


async def test_a_refused_invocation_is_written_whole(log: InvocationLog):
    record = _start(invocation_type="Event", alias=None, version="3", transport="grpc")
    await log.record_whole(record, _outcome(record, success=False, status_code=None, error_code="Forbidden"))
    assert await log.flush(5)

    row = await log.get(record.invocation_id)
    assert (row["version"], row["transport"], row["success"], row["error_code"]) == ("3", "grpc", False, "Forbidden")


async def test_many_invocations_finishing_together_share_durability_and_each_has_one_row(
    log: InvocationLog, database: Database
):
    records = [_start() for _ in range(200)]
    for record in records:
        log.record_start(record)
    await asyncio.gather(*(log.record_outcome(record, _outcome(record)) for record in records))
    assert await log.flush(10)

    rows = _rows(database)
    assert sorted(row["invocation_id"] for row in rows) == sorted(record.invocation_id for record in records)
    assert all(row["success"] is True for row in rows)


async def test_a_replayed_journal_doubles_nothing(database: Database, spool: Path):
    first = InvocationLog(database, Journal(spool, 64 * 1024 * 1024), ship_interval=SHIP_INTERVAL)
    await first.open()
    records = [_start() for _ in range(5)]
    for record in records:
        first.record_start(record)
        await first.record_outcome(record, _outcome(record))
    assert await first.flush(5)
    # Copy the shipped segments back, as if the process had died after shipping but before trimming.
    leftover = spool / "left-by-a-crash"
    leftover.mkdir()
    (leftover / "0000000001.journal").write_text(
        "".join(
            f'{{"kind":"start","invocation_id":"{r.invocation_id}","function_name":"waddlebot-echo",'
            f'"invocation_type":"RequestResponse","payload":"{{}}","alias":null,"version":null,'
            f'"caller":"client:bot-one","transport":"rest","invoked_at":"{r.invoked_at.isoformat()}"}}\n'
            f'{{"kind":"outcome","invocation_id":"{r.invocation_id}","success":false,'
            f'"completed_at":"{r.invoked_at.isoformat()}","error_code":"Replayed"}}\n'
            for r in records
        )
    )
    await first.close()

    second = InvocationLog(database, Journal(spool, 64 * 1024 * 1024), ship_interval=SHIP_INTERVAL)
    await second.open()
    try:
        assert await second.flush(5)
    finally:
        await second.close()

    rows = _rows(database)
    assert len(rows) == 5
    # The replayed outcome lands on the existing row, one row per invocation whatever the replay holds.
    assert {row["invocation_id"] for row in rows} == {r.invocation_id for r in records}
    assert not leftover.exists()


async def test_a_start_left_without_outcome_by_an_ended_process_is_completed_as_interrupted(
    database: Database, spool: Path
):
    journal = Journal(spool, 64 * 1024 * 1024)
    ended = InvocationLog(database, journal, ship_interval=3600)
    await ended.open()
    record = _start()
    ended.record_start(record)
    # The process ends (its lock is released) with the invocation running and nothing shipped.
    await ended._shipper.stop()
    journal.close()

    await _ship_what_is_left(database, spool)

    [row] = _rows(database)
    assert row["invocation_id"] == record.invocation_id
    assert (row["success"], row["error_code"]) == (False, "Interrupted")
    assert row["completed_at"] is not None
    # Everything shipped, the old folder is gone: only the new process's own folder is left.
    assert len(_folders(spool)) == 1


async def test_a_torn_last_entry_is_cut_and_the_rest_shipped(database: Database, spool: Path):
    record = _start()
    leftover = spool / "torn"
    leftover.mkdir(parents=True)
    (leftover / "0000000001.journal").write_text(
        f'{{"kind":"start","invocation_id":"{record.invocation_id}","function_name":"waddlebot-echo",'
        f'"invocation_type":"Event","payload":"{{}}","alias":null,"version":null,"caller":"service:router_module",'
        f'"transport":"grpc","invoked_at":"{record.invoked_at.isoformat()}"}}\n'
        '{"kind":"outcome","invocation_id":"' + record.invocation_id[:10]
    )
    await _ship_what_is_left(database, spool)
    [row] = _rows(database)
    assert (row["invocation_type"], row["error_code"]) == ("Event", "Interrupted")


async def test_text_postgresql_cannot_hold_is_replaced_and_the_row_completed(log: InvocationLog, database: Database):
    record = _start(payload='{"msg": "a\\u0000b"}')
    log.record_start(record)
    await log.record_outcome(
        record,
        _outcome(
            record, success=False, function_error="Unhandled", error_message="a\x00b\ud800c", request_id="r" * 300
        ),
    )
    assert await log.flush(5)

    row = await log.get(record.invocation_id)
    assert row["error_message"] == "a\ufffdb?c"
    assert row["completed_at"] is not None
    assert len(row["request_id"]) == 128
    # The row says which texts are not exactly what happened (the escaped NUL in the payload is plain text).
    assert sorted(row["altered_fields"].split(",")) == ["error_message", "request_id"]


async def test_an_outcome_shipped_after_its_start_records_what_was_altered(log: InvocationLog):
    record = _start(caller="client:" + "c" * 300)
    log.record_start(record)
    assert await log.flush(5)
    assert (await log.get(record.invocation_id))["altered_fields"] == "caller"

    await log.record_outcome(record, _outcome(record, success=False, error_message="nul\x00here"))
    assert await log.flush(5)

    row = await log.get(record.invocation_id)
    assert row["error_message"] == "nul\ufffdhere"
    assert row["altered_fields"] == "caller,error_message"


async def test_a_row_holding_exactly_what_was_journaled_has_no_altered_fields(log: InvocationLog):
    record = _start()
    log.record_start(record)
    await log.record_outcome(record, _outcome(record))
    assert await log.flush(5)
    assert (await log.get(record.invocation_id))["altered_fields"] is None


def test_two_instances_cannot_share_a_spool_directory(spool: Path):
    from services.journal import JournalInUse, instance_lock

    held = instance_lock(spool)
    try:
        with pytest.raises(JournalInUse, match=r"LOG_SPOOL_DIR=.* is in use by another running instance"):
            instance_lock(spool)
    finally:
        os.close(held)
    os.close(instance_lock(spool))


async def test_a_full_journal_refuses_new_invocations(database: Database, spool: Path):
    journal = Journal(spool, 4096)
    log = InvocationLog(database, journal, ship_interval=3600)
    await log.open()
    try:
        await log._shipper.stop()
        while True:
            try:
                log.check_room()
            except JournalFull as error:
                refused = error
                break
            record = _start(payload="x" * 500)
            log.record_start(record)
            await log.record_outcome(record, _outcome(record))
        assert "LOG_SPOOL_MAX_BYTES=4096" in refused.message
        assert refused.code == "JournalFull"
        assert log.state().full is True
        assert log.state().unshipped_bytes >= 4096
        # Once shipped, there is room again.
        assert await log.flush(5)
        log.check_room()
        assert log.state().full is False
    finally:
        await log.close()


async def test_get_of_an_unknown_invocation_is_none(log: InvocationLog):
    assert await log.get("no-such-invocation") is None


# -- the database away: PostgreSQL behind a proxy that the test turns off and on again -----------------------


@pytest.fixture
def postgres_proxy() -> Iterator[TcpProxy]:
    if not POSTGRES_URL:
        pytest.skip("TEST_DATABASE_URL is not set")
    match = re.match(r"postgres(?:ql)?://[^@]*@([^:/]+):?(\d+)?/", POSTGRES_URL)
    assert match is not None
    with proxy_to(match.group(1), int(match.group(2) or 5432)) as proxy:
        yield proxy


@pytest.fixture
def proxied_database(postgres_proxy: TcpProxy, database_url: str) -> Iterator[Database]:
    if not database_url.startswith("postgres"):
        pytest.skip("the outage is cut between the module and PostgreSQL")
    url = re.sub(r"@([^:/]+)(:\d+)?/", f"@127.0.0.1:{postgres_proxy.port}/", normalize_database_url(database_url))
    opened = Database(url, 2)
    yield opened
    opened.close()


@pytest.mark.parametrize("fault", ["refuse", "blackhole"])
async def test_while_the_database_is_away_invocations_go_on_and_the_backlog_drains_after(
    proxied_database: Database, postgres_proxy: TcpProxy, database: Database, spool: Path, fault: str
):
    log = InvocationLog(proxied_database, Journal(spool, 64 * 1024 * 1024), ship_interval=SHIP_INTERVAL)
    await log.open()
    try:
        getattr(postgres_proxy, fault)()
        records = []
        slowest = 0.0
        for _ in range(100):
            record = _start()
            started = time.perf_counter()
            log.check_room()
            log.record_start(record)
            await log.record_outcome(record, _outcome(record))
            slowest = max(slowest, time.perf_counter() - started)
            records.append(record)
        # Recording never waited on the database (a generous bound: these machines are shared).
        assert slowest < 0.5
        await asyncio.sleep(0.3)
        assert log.state().unshipped_bytes > 0
        postgres_proxy.restore()
        assert await log.flush(30)
    finally:
        await log.close()

    rows = _rows(database)
    assert sorted(row["invocation_id"] for row in rows) == sorted(record.invocation_id for record in records)
    assert all(row["success"] is True and row["completed_at"] is not None for row in rows)


async def test_a_segment_a_killed_process_left_mid_copy_ships_its_whole_entries(database: Database, spool: Path):
    # What a process killed while writing an entry leaves: whole entries, part of one, then the unwritten zeros.
    record = _start()
    leftover = spool / "killed"
    leftover.mkdir(parents=True)
    whole = (
        f'{{"kind":"start","invocation_id":"{record.invocation_id}","function_name":"waddlebot-echo",'
        f'"invocation_type":"RequestResponse","payload":"{{}}","alias":null,"version":null,'
        f'"caller":"service:router_module","transport":"grpc","invoked_at":"{record.invoked_at.isoformat()}"}}\n'
    )
    (leftover / "0000000001.journal").write_bytes(whole.encode() + b'{"kind":"outc' + b"\0" * 4096)
    await _ship_what_is_left(database, spool)
    [row] = _rows(database)
    assert (row["invocation_id"], row["error_code"]) == (record.invocation_id, "Interrupted")


async def test_outcomes_written_by_many_threads_are_made_durable_together(
    log: InvocationLog, database: Database, monkeypatch: pytest.MonkeyPatch
):
    # As the Lambda threads write them (not yet durable), then the loop waits for each: few fdatasyncs cover all.
    syncs: list[int] = []
    make_durable = journal_module._sync_segments

    def counted(*arguments, **keywords) -> None:
        syncs.append(1)
        make_durable(*arguments, **keywords)

    monkeypatch.setattr(journal_module, "_sync_segments", counted)
    records = [_start() for _ in range(400)]

    loop = asyncio.get_running_loop()
    answered: list[asyncio.Future[bool]] = [loop.create_future() for _ in records]

    def invocation(record: InvocationStart, answer: asyncio.Future[bool]) -> None:
        log.record_start(record)
        position = log.write_outcome(record, _outcome(record))

        def settled(error: OSError | None) -> None:
            # Nobody is answered before their outcome is durable.
            answer.set_result(error is None and log._journal._synced >= position)

        log.when_outcome_durable(position, loop, settled)

    with ThreadPoolExecutor(max_workers=16) as threads:
        writes = zip(records, answered, strict=True)
        await asyncio.gather(*(loop.run_in_executor(threads, invocation, *pair) for pair in writes))
    assert all(await asyncio.gather(*answered))

    assert 1 <= len(syncs) < len(records)
    assert await log.flush(10)
    rows = _rows(database)
    assert sorted(row["invocation_id"] for row in rows) == sorted(record.invocation_id for record in records)
    assert all(row["success"] is True and row["completed_at"] is not None for row in rows)
    assert log.state().unshipped_bytes == 0


async def test_an_outcome_that_cannot_be_made_durable_fails_its_wait(
    log: InvocationLog, monkeypatch: pytest.MonkeyPatch
):
    def failing(*_: object) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(journal_module, "_sync_segments", failing)
    record = _start()
    log.record_start(record)
    position = await asyncio.to_thread(log.write_outcome, record, _outcome(record))

    with pytest.raises(OSError, match="could not be made durable"):
        await _durable(log, position)


async def test_an_outcome_written_during_an_fdatasync_leaves_its_wait_to_the_thread_making_it(
    log: InvocationLog, monkeypatch: pytest.MonkeyPatch
):
    # The first thread makes the fdatasync and blocks in it; the second returns at once, and the first makes a
    # second fdatasync for it before it goes back to the pool.
    syncing, release = threading.Event(), threading.Event()
    syncs: list[int] = []
    make_durable = journal_module._sync_segments

    def held(*arguments, **keywords) -> None:
        syncs.append(1)
        syncing.set()
        release.wait(10)
        make_durable(*arguments, **keywords)

    monkeypatch.setattr(journal_module, "_sync_segments", held)
    loop = asyncio.get_running_loop()
    settled: dict[str, asyncio.Future[OSError | None]] = {name: loop.create_future() for name in ("first", "second")}

    def outcome_of(name: str) -> None:
        record = _start()
        log.record_start(record)
        position = log.write_outcome(record, _outcome(record))
        log.when_outcome_durable(position, loop, settled[name].set_result)

    first = threading.Thread(target=outcome_of, args=("first",))
    first.start()
    assert await asyncio.to_thread(syncing.wait, 10)
    await asyncio.wait_for(asyncio.to_thread(outcome_of, "second"), 5)  # returned while the fdatasync is held
    assert first.is_alive()
    assert not settled["first"].done()
    release.set()
    assert await asyncio.wait_for(settled["first"], 10) is None
    assert await asyncio.wait_for(settled["second"], 10) is None
    await asyncio.to_thread(first.join, 10)
    assert len(syncs) == 2


async def test_an_outcome_waiting_when_the_journal_closes_fails_its_wait(log: InvocationLog):
    record = _start()
    log.record_start(record)
    position = await asyncio.to_thread(log.write_outcome, record, _outcome(record))
    await asyncio.to_thread(log._journal.close)

    with pytest.raises(OSError, match="closed"):
        await _durable(log, position)


async def _durable(log: InvocationLog, position: int) -> None:
    """Wait as an invocation does: its thread asks to be settled on the loop once its outcome is durable."""
    loop = asyncio.get_running_loop()
    settled: asyncio.Future[OSError | None] = loop.create_future()
    await asyncio.to_thread(log.when_outcome_durable, position, loop, settled.set_result)
    error = await settled
    if error is not None:
        raise error


async def test_an_outcome_is_in_the_journal_file_once_it_is_durable(log: InvocationLog, spool: Path):
    record = _start()
    log.record_start(record)
    position = await asyncio.to_thread(log.write_outcome, record, _outcome(record, response_payload='{"n":7}'))
    written = '"response_payload":"{\\"n\\":7}"'
    # Kept for the fdatasync that makes it durable, which writes it with every outcome of its group.
    assert written not in _journal_text(spool)
    await _durable(log, position)
    assert written in _journal_text(spool)


async def test_a_start_takes_the_outcomes_waiting_ahead_of_it(log: InvocationLog, database: Database, spool: Path):
    first, second = _start(), _start()
    log.record_start(first)
    await asyncio.to_thread(log.write_outcome, first, _outcome(first))
    log.record_start(second)
    assert _journal_entries(spool) == [
        ("start", first.invocation_id),
        ("outcome", first.invocation_id),
        ("start", second.invocation_id),
    ]
    assert await log.flush(10)
    assert {row["invocation_id"]: row["success"] for row in _rows(database)} == {
        first.invocation_id: True,
        second.invocation_id: None,
    }


async def test_outcomes_a_failed_write_could_not_take_are_written_by_the_next(
    log: InvocationLog, database: Database, spool: Path, monkeypatch: pytest.MonkeyPatch
):
    record = _start()
    log.record_start(record)
    position = await asyncio.to_thread(log.write_outcome, record, _outcome(record))

    def disk_full(*_: object) -> int:
        raise OSError(28, "No space left on device")

    write = os.pwrite
    monkeypatch.setattr(journal_module.os, "pwrite", disk_full)
    with pytest.raises(OSError, match="could not take outcomes"):
        await _durable(log, position)
    # The caller was told, and its record goes to the database directly; the outcome still waits, in its place.
    monkeypatch.setattr(journal_module.os, "pwrite", write)
    later = _start()
    log.record_start(later)
    await _durable(log, await asyncio.to_thread(log.write_outcome, later, _outcome(later)))
    assert log._journal._synced >= position
    assert _journal_entries(spool) == [
        ("start", record.invocation_id),
        ("outcome", record.invocation_id),
        ("start", later.invocation_id),
        ("outcome", later.invocation_id),
    ]
    assert await log.flush(10)
    assert all(row["success"] is True for row in _rows(database))
    assert len(_rows(database)) == 2


async def test_an_entry_larger_than_a_segment_is_kept_whole(log: InvocationLog, database: Database, spool: Path):
    big = '{"text": "' + "x" * (2 * SEGMENT_BYTES) + '"}'
    record = _start(payload=big)
    log.record_start(record)
    await log.record_outcome(record, _outcome(record))
    assert await log.flush(10)
    [row] = _rows(database)
    assert row["payload"] == big
    # Shipped segments are deleted: nothing of the big entry is left on disk.
    assert _journal_bytes(spool) <= SEGMENT_BYTES


async def test_a_closed_journal_refuses_starts_and_outcomes(log: InvocationLog, database: Database):
    record = _start()
    log.record_start(record)
    await asyncio.to_thread(log._journal.close)
    with pytest.raises(OSError, match="closed"):
        log.record_start(_start())
    with pytest.raises(OSError, match="closed"):
        log.write_outcome(record, _outcome(record))
    # record_outcome never raises: the record goes to the database directly.
    await log.record_outcome(record, _outcome(record))
    assert (await log.get(record.invocation_id))["success"] is True
