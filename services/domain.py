"""Plain types the services speak; transports convert their wire types to and from these."""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from services.errors import InvalidRequest

InvocationType = Literal["RequestResponse", "Event", "DryRun"]
INVOCATION_TYPES: tuple[InvocationType, ...] = get_args(InvocationType)
Transport = Literal["rest", "grpc"]

# Lambda's own limits: a name is at most 64 characters, a function ARN at most 140; a partial ARN
# ("123456789012:function:name") is accepted as Lambda accepts it.
FUNCTION_NAME_MAX_LENGTH = 64
FUNCTION_REFERENCE_MAX_LENGTH = 140
ALIAS_MAX_LENGTH = 128
VERSION_MAX_LENGTH = 10
# ListFunctions pages: Lambda's own maximum, and what a caller gets when it asks for no size.
MAX_LIST_PAGE = 50

FUNCTION_NAME_PATTERN = rf"[A-Za-z0-9_-]{{1,{FUNCTION_NAME_MAX_LENGTH}}}"
# A function ARN or partial ARN, or none: what may come before the name.
_ARN_PREFIX = r"(?:arn:aws[a-zA-Z-]*:lambda:[a-z0-9-]+:\d{12}:function:|\d{12}:function:)?"
FUNCTION_REFERENCE_PATTERN = _ARN_PREFIX + FUNCTION_NAME_PATTERN
ALIAS_PATTERN = rf"(?!\d+$)[A-Za-z0-9_-]{{1,{ALIAS_MAX_LENGTH}}}"
VERSION_PATTERN = rf"\$LATEST|\d{{1,{VERSION_MAX_LENGTH}}}"

_FUNCTION_REFERENCE = re.compile(rf"{_ARN_PREFIX}(?P<name>{FUNCTION_NAME_PATTERN})")
_ARN_OWNER = re.compile(r"arn:(?P<partition>aws[a-zA-Z-]*):lambda:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):function:")
_PARTIAL_ARN_OWNER = re.compile(r"(?P<account>\d{12}):function:")
_ALIAS = re.compile(ALIAS_PATTERN)
_VERSION = re.compile(VERSION_PATTERN)


def function_name_of(reference: str) -> str:
    """The bare name of a function given by name, ARN or partial ARN; InvalidRequest for anything else.

    Every pattern is matched whole: a trailing newline is not a name.
    """
    match = _FUNCTION_REFERENCE.fullmatch(reference) if len(reference) <= FUNCTION_REFERENCE_MAX_LENGTH else None
    if match is None:
        raise InvalidRequest(
            f"function_name must be a Lambda function name (letters, digits, '-' and '_', at most "
            f"{FUNCTION_NAME_MAX_LENGTH}), a function ARN or a partial ARN (123456789012:function:name), at most "
            f"{FUNCTION_REFERENCE_MAX_LENGTH} characters and without a qualifier; pass an alias or version in their "
            "own fields"
        )
    return match.group("name")


@dataclass(frozen=True)
class FunctionOwner:
    """Where a function lives, as an ARN names it: a partial ARN names only the account."""

    account: str
    region: str | None = None
    partition: str | None = None


def owner_named_by(reference: str) -> FunctionOwner | None:
    """The account (and region and partition) a function ARN or partial ARN names; None for a bare name."""
    full = _ARN_OWNER.match(reference)
    if full is not None:
        return FunctionOwner(full["account"], full["region"], full["partition"])
    partial = _PARTIAL_ARN_OWNER.match(reference)
    return FunctionOwner(partial["account"]) if partial is not None else None


def partition_of(region: str) -> str:
    """The AWS partition a region belongs to."""
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    if region.startswith("us-iso"):
        return "aws-iso-b" if region.startswith("us-isob") else "aws-iso"
    return "aws"


def check_alias(alias: str) -> None:
    """InvalidRequest unless `alias` is a Lambda alias name."""
    if not _ALIAS.fullmatch(alias):
        raise InvalidRequest(f"alias must be 1 to {ALIAS_MAX_LENGTH} letters, digits, '-' or '_', and not only digits")


def check_version(version: str) -> None:
    """InvalidRequest unless `version` is $LATEST or a version number."""
    if not _VERSION.fullmatch(version):
        raise InvalidRequest("version must be $LATEST or a version number such as 3")


def check_qualifier(qualifier: str) -> None:
    """InvalidRequest unless `qualifier` is $LATEST, a version number or an alias name."""
    if not (_ALIAS.fullmatch(qualifier) or _VERSION.fullmatch(qualifier)):
        raise InvalidRequest("qualifier must be $LATEST, a version number or an alias name")


def invocation_type_of(value: str) -> InvocationType:
    """`value` as an InvocationType; InvalidRequest when Lambda has no such type."""
    if value not in INVOCATION_TYPES:
        raise InvalidRequest(f"invocation_type must be one of {', '.join(INVOCATION_TYPES)}")
    return value


def check_page_size(max_items: int) -> None:
    """InvalidRequest unless 1 <= max_items <= MAX_LIST_PAGE."""
    if not 1 <= max_items <= MAX_LIST_PAGE:
        raise InvalidRequest(f"max_items must be between 1 and {MAX_LIST_PAGE}")


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
    invocation_type: InvocationType = "RequestResponse"
    alias: str | None = None
    version: str | None = None
    # Base64 of a JSON object, passed to the function as Lambda's client context.
    client_context: str | None = None
    # True when the transport encoded `payload` itself from an already parsed JSON value: it is JSON by
    # construction, and parsing it again only to check would cost a second pass over up to 6 MB.
    payload_is_json: bool = False
    # The caller's Idempotency-Key: a repeat within IDEMPOTENCY_WINDOW_SECONDS gets this invocation's outcome.
    idempotency_key: str | None = None

    @property
    def qualifier(self) -> str | None:
        return self.alias or self.version


@dataclass(frozen=True)
class InvokeResult:
    """What Lambda answered, plus the id of the invocation's record."""

    invocation_id: str
    function_name: str
    invocation_type: InvocationType
    status_code: int
    payload: str = ""
    function_error: str | None = None
    log_result: str | None = None
    executed_version: str | None = None
    request_id: str | None = None
    duration_ms: float = 0.0
    # True when this is the recorded outcome of an earlier request with the same Idempotency-Key, not a new run.
    replayed: bool = False

    @property
    def success(self) -> bool:
        return self.function_error is None and 200 <= self.status_code < 300

    @functools.cached_property
    def payload_value(self) -> Any:
        """The answer as a JSON value (the text itself when it is not JSON, None when empty), parsed once."""
        if not self.payload:
            return None
        try:
            return json.loads(self.payload)
        except ValueError:
            return self.payload


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
