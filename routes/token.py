"""POST /api/v1/token: client credentials in, bearer token out."""

from __future__ import annotations

from quart import Blueprint
from quart_schema import validate_request, validate_response

from routes.context import app_services, source_address
from routes.errors import documents_errors
from routes.schemas import TokenBody, TokenReply

blueprint = Blueprint("token", __name__)


@blueprint.post("/api/v1/token")
@validate_request(TokenBody)
@validate_response(TokenReply, 200)
@documents_errors(400, 401, 413, 415, 429, 503)
async def issue_token(data: TokenBody) -> TokenReply:
    """Exchange a client's id and secret for a JWT."""
    issued = await app_services().authenticator.issue_token(data.client_id, data.client_secret, source_address())
    return TokenReply(token=issued.token, expires_in=issued.expires_in, token_type=issued.token_type)
