"""GET /health: is this replica able to serve? No auth, no secrets."""

from __future__ import annotations

from pydantic import BaseModel
from quart import Blueprint, ResponseReturnValue
from quart_schema import document_response

from config import MODULE_NAME, MODULE_VERSION
from routes.context import app_services
from routes.schemas import HealthReply

blueprint = Blueprint("health", __name__)


@blueprint.get("/health")
@document_response(HealthReply, 200)
@document_response(HealthReply, 503)
async def health() -> ResponseReturnValue:
    """Status, version, Lambda backend, database and journal state, and a secret-free configuration summary.

    The database away is `degraded`, still 200: invocations go on and wait in the journal, and a restart would
    not bring the database back. Only a full journal, which refuses every invocation, answers 503.
    """
    services = app_services()
    report = await services.service.health()
    journal = report.journal
    if report.draining:
        status = "draining"
    elif journal.full:
        status = "unhealthy"
    elif report.database_ok and journal.database_ok:
        status = "healthy"
    else:
        status = "degraded"
    body = {
        "status": status,
        "module": MODULE_NAME,
        "version": MODULE_VERSION,
        "lambda": report.lambda_backend,
        "database": {"ok": report.database_ok, "kind": services.settings.database_kind},
        "journal": {
            "unshipped_bytes": journal.unshipped_bytes,
            "lag_seconds": journal.lag_seconds,
            "full": journal.full,
            "max_bytes": journal.max_bytes,
            "database_takes_records": journal.database_ok,
        },
        "in_flight": report.in_flight,
        "config": services.settings.summary(),
    }
    return body, 503 if journal.full or report.draining else 200


class LivenessReply(BaseModel):
    status: str = "alive"
    module: str = MODULE_NAME


@blueprint.get("/health/live")
@document_response(LivenessReply, 200)
async def liveness() -> ResponseReturnValue:
    """200 whenever the process answers: for a liveness probe. A database away or a full journal is not cured by
    a restart, so unlike /health this never fails for them."""
    return LivenessReply().model_dump()
