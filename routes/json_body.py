"""Request bodies parsed by the module's JSON rules (services/json_rules.py), so a bad body is a 400 that says why."""

from __future__ import annotations

from typing import Any

from quart import Request

from services.errors import InvalidRequest
from services.json_rules import MAX_JSON_DEPTH, parse_json

# A payload sits this many levels inside a request body (batch: the body, `invocations`, an item).
BODY_ENVELOPE_LEVELS = 3

_NOT_PARSED: Any = object()


class JsonRulesRequest(Request):
    """Quart's request, but its JSON body must be UTF-8, hold only standard numbers and nest within the limit."""

    _parsed_json: Any = _NOT_PARSED

    async def get_json(self, force: bool = False, silent: bool = False, cache: bool = True) -> Any:
        if not (force or self.is_json):
            return None
        if cache and self._parsed_json is not _NOT_PARSED:
            return self._parsed_json
        raw = await self.get_data(cache=cache, as_text=False)
        try:
            result = parse_json(raw, "the request body", max_depth=MAX_JSON_DEPTH + BODY_ENVELOPE_LEVELS)
        except InvalidRequest:
            if silent:
                return None
            raise
        if cache:
            self._parsed_json = result
        return result
