"""The REST wire types (validated by quart-schema, shown in /openapi.json) and their domain conversions."""

from __future__ import annotations

import dataclasses
import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema
from pydantic.json_schema import JsonDict

from routes.errors import ErrorReply, http_status_for
from services.domain import (
    ALIAS_MAX_LENGTH,
    ALIAS_PATTERN,
    FUNCTION_REFERENCE_MAX_LENGTH,
    FUNCTION_REFERENCE_PATTERN,
    VERSION_PATTERN,
    FunctionInfo,
    FunctionPage,
    InvokeRequest,
    InvokeResult,
)
from services.errors import ServiceError
from services.idempotency import IDEMPOTENCY_KEY_MAX_LENGTH
from services.lambda_service import encode_client_context


class TokenBody(BaseModel):
    """Client credentials, exchanged for a bearer token."""

    model_config = ConfigDict(extra="forbid")

    client_id: str = Field(min_length=1, max_length=128)
    client_secret: str = Field(min_length=1, max_length=512)


class IdempotencyHeaders(BaseModel):
    """The optional Idempotency-Key header (checked by the service, which says what a key must be)."""

    idempotency_key: str | None = Field(
        default=None,
        json_schema_extra={
            "pattern": f"^[\\x21-\\x7e]{{1,{IDEMPOTENCY_KEY_MAX_LENGTH}}}$",
            "description": "Makes a repeat of this request within IDEMPOTENCY_WINDOW_SECONDS (default an hour) "
            "answer with the first invocation's recorded outcome (header Idempotent-Replayed: true) instead of "
            "invoking again; 409 InvocationInProgress while it runs; 422 when the key came with another body. "
            "1 to 255 visible ASCII characters; a UUID is a good key.",
        },
    )


class ReplayedHeaders(BaseModel):
    """Sent with an answer that replays an earlier invocation's outcome."""

    idempotent_replayed: Literal["true"] | None = None


class TokenReply(BaseModel):
    token: str
    expires_in: int
    token_type: str = "Bearer"


def whole(pattern: str) -> str:
    """A domain pattern as a JSON Schema `pattern`, which matches anywhere unless anchored."""
    return f"^(?:{pattern})$"


# The rules services/domain.py applies, shown in the document (validation stays there, with its messages).
FUNCTION_NAME_SCHEMA: JsonDict = {"pattern": whole(FUNCTION_REFERENCE_PATTERN)}
# An empty alias, version or qualifier means none, as an absent one does.
ALIAS_SCHEMA: JsonDict = {"pattern": f"^(?:{ALIAS_PATTERN})?$"}
VERSION_SCHEMA: JsonDict = {"pattern": f"^(?:{VERSION_PATTERN})?$"}
# Lambda runs one qualifier: an alias and a version together are refused.
_ALIAS_OR_VERSION: JsonDict = {
    "not": {
        "properties": {"alias": {"type": "string", "minLength": 1}, "version": {"type": "string", "minLength": 1}},
        "required": ["alias", "version"],
    }
}
QUALIFIER_SCHEMA: JsonDict = {"pattern": f"^(?:{ALIAS_PATTERN}|{VERSION_PATTERN})?$"}


# A payload is any JSON value; a string is taken as JSON text (as routers have always sent it), so it must hold JSON.
_PAYLOAD_SCHEMA: JsonDict = {
    "anyOf": [
        {"type": ["object", "array", "number", "integer", "boolean", "null"]},
        {"type": "string", "contentMediaType": "application/json"},
    ],
    "description": "The event: any JSON value, or a string holding JSON text (an empty string means {}). Standard "
    "JSON only: NaN, Infinity and numbers beyond a double are refused, and so is nesting deeper than 64 levels.",
}
Payload = Annotated[Any, WithJsonSchema(_PAYLOAD_SCHEMA)]


class InvokeBody(BaseModel):
    """One invocation. `payload` is any JSON value, or a string holding JSON text."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_ALIAS_OR_VERSION)

    function_name: str = Field(
        min_length=1, max_length=FUNCTION_REFERENCE_MAX_LENGTH, json_schema_extra=FUNCTION_NAME_SCHEMA
    )
    payload: Payload = None
    invocation_type: Literal["RequestResponse", "Event", "DryRun"] = "RequestResponse"
    alias: str | None = Field(default=None, max_length=ALIAS_MAX_LENGTH, json_schema_extra=ALIAS_SCHEMA)
    version: str | None = Field(default=None, max_length=10, json_schema_extra=VERSION_SCHEMA)
    client_context: dict[str, Any] | None = None

    def to_domain(self) -> InvokeRequest:
        return InvokeRequest(
            function_name=self.function_name,
            payload=payload_bytes(self.payload),
            # Anything but a string was parsed from the body's JSON and encoded here: JSON by construction.
            payload_is_json=not isinstance(self.payload, str),
            invocation_type=self.invocation_type,
            alias=self.alias or None,
            version=self.version or None,
            client_context=encode_client_context(self.client_context) if self.client_context else None,
        )


class InvokeAsyncBody(BaseModel):
    """An Event invocation."""

    model_config = ConfigDict(extra="forbid")

    function_name: str = Field(
        min_length=1, max_length=FUNCTION_REFERENCE_MAX_LENGTH, json_schema_extra=FUNCTION_NAME_SCHEMA
    )
    payload: Payload = None


_BATCH_ITEM_SCHEMA = {
    "type": "object",
    "description": "An invocation, as the body of POST /api/v1/invoke. Checked on its own: an item that is not a "
    "valid invocation fails alone, with its error in its result.",
}


class BatchBody(BaseModel):
    """Invocations run together; each item has the shape of a POST /api/v1/invoke body."""

    model_config = ConfigDict(extra="forbid")

    # Each item is parsed on its own, so that a bad item fails alone (its result says why) and not the batch:
    # the batch takes any JSON object as an item, and its document says so.
    invocations: list[Annotated[dict[str, Any], WithJsonSchema(_BATCH_ITEM_SCHEMA)]] = Field(min_length=1)


class InvokeReply(BaseModel):
    """One invocation's result; `payload` is the function's response (its error object on a function error)."""

    success: bool
    status_code: int
    payload: Any = None
    function_error: str | None = None
    log_result: str | None = None
    executed_version: str | None = None
    request_id: str | None = None
    invocation_id: str
    duration_ms: float


class InvokeAsyncReply(BaseModel):
    success: bool
    status_code: int
    request_id: str | None = None
    invocation_id: str


class HealthReply(BaseModel):
    """What /health reports: 200 while this replica can take invocations; 503 when its journal is full, or while it
    stops (`draining`, for SHUTDOWN_DELAY_SECONDS before it refuses new calls)."""

    status: Literal["healthy", "degraded", "unhealthy", "draining"]
    module: str
    version: str
    # backend, chosen_by, endpoint, region
    lambda_: dict[str, str] = Field(alias="lambda")
    # ok, kind
    database: dict[str, Any]
    # unshipped_bytes, lag_seconds, full, max_bytes, database_takes_records
    journal: dict[str, Any]
    in_flight: int
    config: dict[str, Any]


class BatchItemError(ErrorReply):
    """A batch item that failed on its own; `status_code` is the HTTP status it would have had alone."""

    status_code: int


class BatchReply(BaseModel):
    success: bool = True
    results: list[InvokeReply | BatchItemError]


class FunctionConfig(BaseModel):
    """A function's configuration, without its environment variables (they may hold secrets)."""

    function_name: str
    function_arn: str
    runtime: str
    role: str
    handler: str
    code_size: int
    description: str
    timeout: int
    memory_size: int
    last_modified: str
    version: str
    state: str
    architectures: list[str]


class FunctionReply(BaseModel):
    success: bool = True
    function: FunctionConfig


class FunctionPageReply(BaseModel):
    success: bool = True
    functions: list[FunctionConfig]
    next_marker: str | None = None


class ListQuery(BaseModel):
    max_items: int = Field(default=50, ge=1, le=50)
    next_marker: str | None = Field(default=None, max_length=1024)


class ConfigQuery(BaseModel):
    qualifier: str | None = Field(default=None, max_length=ALIAS_MAX_LENGTH, json_schema_extra=QUALIFIER_SCHEMA)


def payload_bytes(payload: Any) -> bytes:
    """The bytes Lambda gets: a string is taken as JSON text, any other value is encoded as JSON."""
    # None and "" mean no event, as an empty payload does over gRPC.
    if payload is None or payload == "":
        return b"{}"
    if isinstance(payload, str):
        return payload.encode("utf-8")
    return json.dumps(payload, separators=(",", ":")).encode("utf-8")


def invoke_reply(result: InvokeResult) -> InvokeReply:
    """The reply for one invocation's result."""
    return InvokeReply(
        success=result.success,
        status_code=result.status_code,
        payload=result.payload_value,
        function_error=result.function_error,
        log_result=result.log_result,
        executed_version=result.executed_version,
        request_id=result.request_id,
        invocation_id=result.invocation_id,
        duration_ms=round(result.duration_ms, 3),
    )


def batch_item_error(error: ServiceError) -> BatchItemError:
    """The reply for a batch item that failed on its own."""
    return BatchItemError(success=False, error=error.message, code=error.code, status_code=http_status_for(error))


def function_config(info: FunctionInfo) -> FunctionConfig:
    """The reply for one function's configuration."""
    return FunctionConfig(**{**dataclasses.asdict(info), "architectures": list(info.architectures)})


def function_page(page: FunctionPage) -> FunctionPageReply:
    """The reply for one page of functions."""
    return FunctionPageReply(functions=[function_config(info) for info in page.functions], next_marker=page.next_marker)
