"""What a request handler reaches: the services given to create_app, and the authenticated caller."""

from __future__ import annotations

from typing import TYPE_CHECKING

from quart import current_app, g, request

from services.auth import bearer_token_of
from services.domain import Caller

if TYPE_CHECKING:
    from app import Services

EXTENSION_KEY = "lambda_action"


def app_services() -> Services:
    """The services create_app wired into the app handling this request."""
    services: Services = current_app.extensions[EXTENSION_KEY]
    return services


def current_caller() -> Caller:
    """The caller that `authenticate_request` found for this request."""
    return g.caller


def source_address() -> str:
    """The address the request came from, for audit lines."""
    return request.remote_addr or "-"


def bearer_token() -> str | None:
    """The token of an `Authorization: Bearer <token>` header, if any."""
    return bearer_token_of(request.headers.get("Authorization", ""))


async def authenticate_request() -> None:
    """A before_request hook: turn the bearer token into the Caller, or answer 401."""
    g.caller = await app_services().authenticator.authenticate(bearer_token(), source_address())
