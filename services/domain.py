"""Plain types the services speak; transports convert their wire types to and from these."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

InvocationType = Literal["RequestResponse", "Event", "DryRun"]
INVOCATION_TYPES: tuple[str, ...] = ("RequestResponse", "Event", "DryRun")
Transport = Literal["rest", "grpc"]


@dataclass(frozen=True)
class Caller:
    """Who is calling: an API client (`client`) or a WaddleBot service such as the router (`service`)."""

    kind: Literal["client", "service"]
    name: str
    # fnmatch patterns of function names this caller may reach; empty means any name under the prefix.
    allowed_patterns: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.name}"


@dataclass(frozen=True)
class InvokeRequest:
    """One invocation as a caller asked for it; LambdaService validates it."""

    function_name: str
    payload: bytes = b"{}"
    invocation_type: str = "RequestResponse"
    alias: str | None = None
    version: str | None = None
    # Base64 of a JSON object, passed to the function as Lambda's client context.
    client_context: str | None = None

    @property
    def qualifier(self) -> str | None:
        return self.alias or self.version


@dataclass(frozen=True)
class InvokeResult:
    """What Lambda answered, plus the id of the invocation's record."""

    invocation_id: str
    function_name: str
    invocation_type: str
    status_code: int
    payload: str = ""
    function_error: str | None = None
    log_result: str | None = None
    executed_version: str | None = None
    request_id: str | None = None
    duration_ms: float = 0.0

    @property
    def success(self) -> bool:
        return self.function_error is None and 200 <= self.status_code < 300


@dataclass(frozen=True)
class FunctionInfo:
    """A function's configuration, as much of it as callers may see (never its environment)."""

    function_name: str
    function_arn: str = ""
    runtime: str = ""
    role: str = ""
    handler: str = ""
    code_size: int = 0
    description: str = ""
    timeout: int = 0
    memory_size: int = 0
    last_modified: str = ""
    version: str = ""
    state: str = ""
    architectures: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class FunctionPage:
    """One page of functions and the marker for the next page (None on the last)."""

    functions: list[FunctionInfo]
    next_marker: str | None = None
