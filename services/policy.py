"""Which caller may reach which function: the module's prefix guard, narrowed by a client's patterns."""

from __future__ import annotations

import fnmatch
import re

from services.domain import Caller
from services.errors import Forbidden, InvalidRequest

_NAME = r"[A-Za-z0-9_-]{1,64}"
_FUNCTION_NAME = re.compile(rf"^{_NAME}$")
_FUNCTION_ARN = re.compile(rf"^arn:aws[a-zA-Z-]*:lambda:[a-z0-9-]+:\d{{12}}:function:(?P<name>{_NAME})$")


def bare_function_name(function_name: str) -> str:
    """The function's name from a name or a full function ARN; InvalidRequest for anything else."""
    if _FUNCTION_NAME.match(function_name):
        return function_name
    match = _FUNCTION_ARN.match(function_name)
    if match:
        return match.group("name")
    raise InvalidRequest(
        "function_name must be a Lambda function name (letters, digits, '-' and '_', at most 64) "
        "or a function ARN without a qualifier; pass an alias or version in their own fields"
    )


def may_reach(caller: Caller, name: str, prefix: str) -> bool:
    """True when `caller` may invoke or see the function called `name` (a bare name)."""
    if prefix and not name.startswith(prefix):
        return False
    if caller.allowed_patterns:
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in caller.allowed_patterns)
    return True


def check_access(caller: Caller, function_name: str, prefix: str) -> str:
    """Validate the name and raise Forbidden when `caller` may not reach it; return the bare name."""
    name = bare_function_name(function_name)
    if prefix and not name.startswith(prefix):
        raise Forbidden(f"function {name!r} is outside this module's reach: names must start with {prefix!r}")
    if not may_reach(caller, name, prefix):
        raise Forbidden(f"{caller.kind} {caller.name!r} is not allowed to reach function {name!r}")
    return name
