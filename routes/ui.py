"""GET /ui: the operators' page (plain HTML, a small script, no asset from elsewhere), served from routes/ui_static.

The page holds no data: it signs in through POST /api/v1/token (or takes a token), keeps the token in the
browser tab's session storage (never in a URL), and reads the stats and history endpoints with it, so it sees
exactly what that client may see.
"""

from __future__ import annotations

from pathlib import Path

from quart import Blueprint, Response, abort, send_from_directory
from quart.typing import ResponseReturnValue
from quart_schema import hide

STATIC = Path(__file__).resolve().parent / "ui_static"
_ASSETS = frozenset({"app.js", "app.css"})
# Only the module's own files, no inline script or style, no framing, nothing sent to another origin.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)

blueprint = Blueprint("ui", __name__)


@blueprint.get("/ui")
@hide
async def page() -> ResponseReturnValue:
    """The page."""
    response: Response = await send_from_directory(STATIC, "index.html")
    return _hardened(response)


@blueprint.get("/ui/static/<name>")
@hide
async def asset(name: str) -> ResponseReturnValue:
    """The page's script and style sheet (nothing else of the folder)."""
    if name not in _ASSETS:
        abort(404)  # answered in the one error shape by routes/errors.py
    response: Response = await send_from_directory(STATIC, name)
    return _hardened(response)


def _hardened(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-cache"
    return response
