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
