"""The OpenAPI document (/openapi.json) and its browsable page (/docs), served without anything from the internet."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from quart import Blueprint, Quart, abort, send_from_directory
from quart.typing import ResponseReturnValue
from quart_schema import QuartSchema, hide
from quart_schema.openapi import OpenAPIProvider

from config import MODULE_VERSION
from routes.context import EXTENSION_KEY
from routes.schemas import FUNCTION_NAME_SCHEMA
from services.domain import FUNCTION_REFERENCE_MAX_LENGTH

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
        openapi_provider_class=ModuleOpenAPIProvider,
    )
    app.register_blueprint(_docs_assets_blueprint(_swagger_ui_dist()))


class ModuleOpenAPIProvider(OpenAPIProvider):
    """quart-schema's document, made to say exactly what the routes take (what its models alone cannot say)."""

    def schema(self) -> dict[str, Any]:
        document = super().schema()
        for path, operations in document["paths"].items():
            for operation in operations.values():
                if "requestBody" in operation:
                    # Every body-taking route needs its body: without one the answer is 400.
                    operation["requestBody"]["required"] = True
                for parameter in operation.get("parameters", []):
                    if parameter.get("in") == "path" and parameter.get("name") == "function_name":
                        parameter["schema"] = {
                            "type": "string",
                            "minLength": 1,
                            "maxLength": FUNCTION_REFERENCE_MAX_LENGTH,
                            **FUNCTION_NAME_SCHEMA,
                        }
                    if parameter.get("in") == "path" and parameter.get("name") == "invocation_id":
                        parameter["schema"] = {"type": "string", "pattern": "^[0-9a-f]{32}$"}
            if path == "/api/v1/batch":
                self._limit_batch(document, operations)
        return document

    def build_response_object(
        self, model: type[Any], headers_model: type[Any] | None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """quart-schema nests a response's headers in its `content`, as if a media type; OpenAPI has them beside it."""
        response, definitions = super().build_response_object(model, headers_model)
        headers = response.get("content", {}).pop("headers", None)
        if headers:
            response["headers"] = headers
        return response, definitions

    def _limit_batch(self, document: dict[str, Any], operations: dict[str, Any]) -> None:
        """The batch's largest size is this deployment's MAX_BATCH_SIZE."""
        services = self._app.extensions.get(EXTENSION_KEY)
        if services is None:
            return
        body = operations["post"]["requestBody"]["content"]["application/json"]["schema"]
        name = body.get("$ref", "").rsplit("/", 1)[-1]
        model = document["components"]["schemas"].get(name, body)
        model["properties"]["invocations"]["maxItems"] = services.settings.max_batch_size


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
