"""GET /api/v1/functions and /api/v1/functions/<name>."""

from __future__ import annotations

from quart import Blueprint
from quart_schema import document_response, security_scheme_blueprint, validate_querystring

from routes.context import app_services, authenticate_request, current_caller
from routes.errors import documents_errors
from routes.schemas import ConfigQuery, FunctionPageReply, FunctionReply, ListQuery, function_config, function_page

blueprint = Blueprint("functions", __name__)
blueprint.before_request(authenticate_request)
security_scheme_blueprint(blueprint, [{"bearer": []}])


@blueprint.get("/api/v1/functions")
@validate_querystring(ListQuery)
@document_response(FunctionPageReply, 200)
@documents_errors(400, 401, 404, 429, 502, 503, 504)
async def list_functions(query_args: ListQuery) -> FunctionPageReply:
    """One page of the functions the caller may reach, and `next_marker` for the next page."""
    page = await app_services().service.list_functions(current_caller(), query_args.max_items, query_args.next_marker)
    return function_page(page)


@blueprint.get("/api/v1/functions/<function_name>")
@validate_querystring(ConfigQuery)
@document_response(FunctionReply, 200)
@documents_errors(400, 401, 403, 404, 429, 502, 503, 504)
async def get_function(function_name: str, query_args: ConfigQuery) -> FunctionReply:
    """One function's configuration (of a version or alias with `?qualifier=`)."""
    info = await app_services().service.get_function_config(current_caller(), function_name, query_args.qualifier)
    return FunctionReply(function=function_config(info))
