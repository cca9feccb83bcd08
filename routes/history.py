"""GET /api/v1/invocations, /api/v1/invocations/<invocation_id> and /api/v1/stats."""

from __future__ import annotations

from quart import Blueprint
from quart.typing import ResponseReturnValue
from quart_schema import document_response, security_scheme_blueprint, validate_querystring

from routes.context import app_services, authenticate_request, current_caller
from routes.errors import documents_errors
from routes.history_schemas import (
    HistoryQuery,
    InvocationDetailReply,
    InvocationPageReply,
    StatsQuery,
    StatsReply,
    invocation_detail,
    invocation_page,
    stats_reply,
)
from services.history import parse_instant

blueprint = Blueprint("history", __name__)
blueprint.before_request(authenticate_request)
security_scheme_blueprint(blueprint, [{"bearer": []}])


@blueprint.get("/api/v1/invocations")
@validate_querystring(HistoryQuery)
@document_response(InvocationPageReply, 200)
@documents_errors(400, 401, 404, 503)
async def list_invocations(query_args: HistoryQuery) -> InvocationPageReply:
    """The caller's invocations (a service's: every one), newest first; `next_cursor` reads the next page."""
    page = await app_services().history.list(
        current_caller(), query_args.to_filter(), query_args.limit, query_args.cursor
    )
    return invocation_page(page)


@blueprint.get("/api/v1/invocations/<invocation_id>")
@document_response(InvocationDetailReply, 200)
@documents_errors(400, 401, 404, 503)
async def get_invocation(invocation_id: str) -> ResponseReturnValue:
    """One invocation with its payloads, its log tail, and where its whole log is."""
    detail = await app_services().history.get(current_caller(), invocation_id)
    return invocation_detail(detail).model_dump(mode="json")


@blueprint.get("/api/v1/stats")
@validate_querystring(StatsQuery)
@document_response(StatsReply, 200)
@documents_errors(400, 401, 503)
async def stats(query_args: StatsQuery) -> StatsReply:
    """Per function and in total over the period (default the last 24 hours): counts by outcome, success rate,
    and duration percentiles."""
    report = await app_services().history.stats(
        current_caller(),
        since=parse_instant(query_args.since, "since") if query_args.since is not None else None,
        until=parse_instant(query_args.until, "until") if query_args.until is not None else None,
        function_name=query_args.function_name,
    )
    return stats_reply(report)
