"""GET /metrics: the Prometheus exposition, open or behind METRICS_TOKEN."""

from __future__ import annotations

import hmac

from quart import Blueprint, Response
from quart_schema import hide

from routes.context import app_services, bearer_token
from services.errors import Unauthenticated
from services.metrics import CONTENT_TYPE

blueprint = Blueprint("metrics", __name__)


@blueprint.get("/metrics")
@hide
async def metrics() -> Response:
    """Every metric of the module (of every worker when WORKERS > 1), in Prometheus's text format."""
    services = app_services()
    expected = services.settings.metrics_token
    if expected:
        given = bearer_token() or ""
        # Compared in constant time: the token is a secret, and timing would tell how much of it was right.
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise Unauthenticated("GET /metrics needs 'Authorization: Bearer <METRICS_TOKEN>'")
    return Response(services.metrics.render(), content_type=CONTENT_TYPE)
