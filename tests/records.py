"""The one way tests read invocation records: ship the journal first, then read `lambda_invocations`."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app import Services

# Shipping normally takes well under a second; a shared, loaded machine gets more room.
SHIP_WITHIN_SECONDS = 15.0


async def invocation_rows(services: Services, function_name: str | None = None) -> list[dict]:
    """The rows of `lambda_invocations`, oldest first (of one function when named), with everything journaled so far
    shipped; fails the test if the journal could not be shipped."""
    assert await services.invocation_log.flush(SHIP_WITHIN_SECONDS), "the journal was not shipped in time"

    def select(db) -> list[dict]:
        table = db.lambda_invocations
        query = table.function_name == function_name if function_name else table.id > 0
        return [row.as_dict() for row in db(query).select(orderby=table.id)]

    return await services.database.run(select)


async def invocation_row(services: Services, invocation_id: str) -> dict | None:
    """The row of one invocation, with everything journaled so far shipped."""
    assert await services.invocation_log.flush(SHIP_WITHIN_SECONDS), "the journal was not shipped in time"
    return await services.invocation_log.get(invocation_id)


def generate_invocations(db, rows: int, functions: int = 40, callers: int = 25) -> None:
    """`rows` completed invocations on PostgreSQL, one every 13 s back from now, from `callers` clients (`client:cN`)
    to `functions` functions (`waddlebot-fN`), one in seven failed; made by the server in one statement, then
    analysed."""
    db.executesql(
        "INSERT INTO lambda_invocations (invocation_id, function_name, invocation_type, caller, transport, "
        "invoked_at, completed_at, duration_ms, status_code, success) "
        f"SELECT md5(n::text), 'waddlebot-f' || (n % {int(functions)}), 'RequestResponse', "
        f"'client:c' || (n % {int(callers)}), 'grpc', now() - (n || ' seconds')::interval * 13, "
        "now() - (n || ' seconds')::interval * 13, n % 97, 200, n % 7 <> 0 "
        f"FROM generate_series(1, {int(rows)}) AS n;"
    )
    db.executesql("ANALYZE lambda_invocations;")
