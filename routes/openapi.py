"""The OpenAPI document (/openapi.json) and its browsable page (/docs), served without anything from the internet."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from quart import Blueprint, Quart, abort, send_from_directory
from quart.typing import ResponseReturnValue
from quart_schema import QuartSchema, hide

from config import MODULE_VERSION

DOCS_ASSETS_PATH = "/docs/static"
# What the /docs page loads; nothing else of the package is served.
_ASSETS = frozenset({"swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png", "favicon-16x16.png"})


def install_openapi(app: Quart) -> None:
    """Document every route of `app` at /openapi.json and serve the interactive page at /docs."""
    app.config["QUART_SCHEMA_SWAGGER_JS_URL"] = f"{DOCS_ASSETS_PATH}/swagger-ui-bundle.js"
    app.config["QUART_SCHEMA_SWAGGER_CSS_URL"] = f"{DOCS_ASSETS_PATH}/swagger-ui.css"
    QuartSchema(
        app,
        info={"title": "Lambda Action Module", "version": MODULE_VERSION},
        security_schemes={"bearer": {"type": "http", "scheme": "bearer", "bearer_format": "JWT"}},
        redoc_ui_path=None,
        scalar_ui_path=None,
    )
    app.register_blueprint(_docs_assets_blueprint(_swagger_ui_dist()))


def _swagger_ui_dist() -> Path:
    """Swagger UI's distribution folder, from the package that ships it (found, not imported: it imports Flask)."""
    spec = importlib.util.find_spec("flask_swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("flask-swagger-ui is not installed: it ships the files /docs serves (requirements.txt)")
    return Path(next(iter(spec.submodule_search_locations))) / "dist"


def _docs_assets_blueprint(dist: Path) -> Blueprint:
    blueprint = Blueprint("docs_assets", __name__)

    @blueprint.get(f"{DOCS_ASSETS_PATH}/<name>")
    @hide
    async def docs_asset(name: str) -> ResponseReturnValue:
        """One of Swagger UI's files, for the /docs page."""
        if name not in _ASSETS:
            abort(404)
        return await send_from_directory(dist, name)

    return blueprint
