"""GET /health: is this replica able to serve? No auth, no secrets."""

from __future__ import annotations

from quart import Blueprint, ResponseReturnValue

from config import MODULE_NAME, MODULE_VERSION
from routes.context import app_services

blueprint = Blueprint("health", __name__)


@blueprint.get("/health")
async def health() -> ResponseReturnValue:
    """Status, version, Lambda backend, database reachability and a secret-free configuration summary."""
    services = app_services()
    report = await services.service.health()
    body = {
        "status": "healthy" if report.database_ok else "unhealthy",
        "module": MODULE_NAME,
        "version": MODULE_VERSION,
        "lambda": report.lambda_backend,
        "database": {"ok": report.database_ok, "kind": services.settings.database_kind},
        "in_flight": report.in_flight,
        "config": services.settings.summary(),
    }
    return body, 200 if report.database_ok else 503
