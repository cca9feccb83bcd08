"""GET /api/v1/functions and /api/v1/functions/<name>."""

from __future__ import annotations

from quart import Blueprint, ResponseReturnValue
from quart_schema import validate_querystring

from routes.context import app_services, authenticate_request, current_caller
from routes.schemas import ConfigQuery, ListQuery, function_json, page_json

blueprint = Blueprint("functions", __name__)
blueprint.before_request(authenticate_request)


@blueprint.get("/api/v1/functions")
@validate_querystring(ListQuery)
async def list_functions(query_args: ListQuery) -> ResponseReturnValue:
    """One page of the functions the caller may reach, and `next_marker` for the next page."""
    page = await app_services().service.list_functions(current_caller(), query_args.max_items, query_args.next_marker)
    return page_json(page)


@blueprint.get("/api/v1/functions/<function_name>")
@validate_querystring(ConfigQuery)
async def get_function(function_name: str, query_args: ConfigQuery) -> ResponseReturnValue:
    """One function's configuration (of a version or alias with `?qualifier=`)."""
    info = await app_services().service.get_function_config(current_caller(), function_name, query_args.qualifier)
    return {"success": True, "function": function_json(info)}
