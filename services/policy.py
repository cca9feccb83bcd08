"""Which caller may reach which function: the module's prefix guard, narrowed by a client's patterns."""

from __future__ import annotations

import fnmatch

from services.domain import Caller, function_name_of
from services.errors import Forbidden


def may_reach(caller: Caller, name: str, prefix: str) -> bool:
    """True when `caller` may invoke or see the function called `name` (a bare name)."""
    if prefix and not name.startswith(prefix):
        return False
    if caller.allowed_patterns:
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in caller.allowed_patterns)
    return True


def check_access(caller: Caller, function_name: str, prefix: str) -> str:
    """Validate the name and raise Forbidden when `caller` may not reach it; return the bare name."""
    name = function_name_of(function_name)
    if prefix and not name.startswith(prefix):
        raise Forbidden(f"function {name!r} is outside this module's reach: names must start with {prefix!r}")
    if not may_reach(caller, name, prefix):
        raise Forbidden(f"{caller.kind} {caller.name!r} is not allowed to reach function {name!r}")
    return name
