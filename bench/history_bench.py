"""How long a filtered page of the invocation history takes at 200,000 rows on PostgreSQL.

    .venv/bin/python bench/history_bench.py [--database-url postgresql://postgres@127.0.0.1:5432/postgres]

Makes a database of its own beside the one given (dropped at the end), fills it with generated invocations, and
reads pages through InvocationHistory as the endpoints do: the first page and a later one (by cursor), for a
service filtering by function and for a client filtering by outcome. Prints p50 and p99 per query; the figures go
in the README.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg2

from config import load_settings
from services.database import open_database
from services.domain import Caller
from services.history import HistoryFilter, InvocationHistory
from tests.records import generate_invocations

DATABASE = "lambda_action_history_bench"
ROWS = 200_000
READS = 200


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--rows", type=int, default=ROWS)
    arguments = parser.parse_args()
    _admin(arguments.database_url, f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)", f"CREATE DATABASE {DATABASE}")
    try:
        asyncio.run(_measure(re.sub(r"/[^/]+$", f"/{DATABASE}", arguments.database_url), arguments.rows))
    finally:
        _admin(arguments.database_url, f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
    return 0


async def _measure(url: str, rows: int) -> None:
    settings = load_settings({"DATABASE_URL": url, "MODULE_SECRET_KEY": "b" * 64})
    async with open_database(settings) as database:
        await database.run(lambda db: generate_invocations(db, rows))
        history = InvocationHistory(database, lambda_backend="aws")
        cases = {
            "service, one function": (Caller("service", "router_module"), HistoryFilter(function_name="waddlebot-f7")),
            "client, failures only": (Caller("client", "c3"), HistoryFilter(success=False)),
        }
        print(f"{rows:,} rows; {READS} reads of 50 newest first per query")
        for name, (caller, which) in cases.items():
            first = await history.list(caller, which)
            for label, cursor in (("first page", None), ("a later page", first.next_cursor)):
                timings = []
                for _ in range(READS):
                    started = time.perf_counter()
                    await history.list(caller, which, cursor=cursor)
                    timings.append((time.perf_counter() - started) * 1000)
                timings.sort()
                p99 = timings[int(len(timings) * 0.99) - 1]
                print(f"  {name}, {label}: p50 {statistics.median(timings):.2f} ms, p99 {p99:.2f} ms")


def _admin(url: str, *statements: str) -> None:
    connection = psycopg2.connect(url)
    connection.autocommit = True
    with connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)
    connection.close()


if __name__ == "__main__":
    sys.exit(main())
