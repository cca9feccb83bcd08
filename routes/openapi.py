"""The OpenAPI document (/openapi.json) and its browsable page (/docs)."""

from __future__ import annotations

from quart import Quart
from quart_schema import QuartSchema

from config import MODULE_VERSION


def install_openapi(app: Quart) -> None:
    """Document every route of `app` at /openapi.json and serve the interactive page at /docs."""
    QuartSchema(
        app,
        info={"title": "Lambda Action Module", "version": MODULE_VERSION},
        security_schemes={"bearer": {"type": "http", "scheme": "bearer", "bearer_format": "JWT"}},
        redoc_ui_path=None,
        scalar_ui_path=None,
    )
