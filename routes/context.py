"""What a request handler reaches: the services given to create_app, and the authenticated caller."""

from __future__ import annotations

from dataclasses import dataclass

from quart import current_app, g, request

from config import Settings
from services.auth import Authenticator
from services.domain import Caller
from services.lambda_service import LambdaService

EXTENSION_KEY = "lambda_action"


@dataclass(frozen=True)
class AppServices:
    """The objects create_app wires into the app."""

    settings: Settings
    service: LambdaService
    authenticator: Authenticator


def app_services() -> AppServices:
    """The services of the app handling this request."""
    return current_app.extensions[EXTENSION_KEY]


def current_caller() -> Caller:
    """The caller that `authenticate_request` found for this request."""
    return g.caller


def source_address() -> str:
    """The address the request came from, for audit lines."""
    return request.remote_addr or "-"


def bearer_token() -> str | None:
    """The token of an `Authorization: Bearer <token>` header, if any."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


async def authenticate_request() -> None:
    """A before_request hook: turn the bearer token into the Caller, or answer 401."""
    g.caller = await app_services().authenticator.authenticate(bearer_token(), source_address())
