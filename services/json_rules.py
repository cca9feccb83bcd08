"""The JSON the module takes from callers: UTF-8 text, standard numbers only, nested at most MAX_JSON_DEPTH deep.

Lambda's own payloads are JSON, so nothing a function can use is lost: NaN, Infinity and numbers too large for a
double are not JSON (Python's parser takes them, other languages' do not), and a payload nested thousands of levels
deep is an attack on the parser, not an event.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any

from services.errors import InvalidRequest

# Levels of arrays and objects a payload or a client context may nest; generous for any real event.
MAX_JSON_DEPTH = 64


def parse_json(data: bytes | str, what: str, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """`data` parsed as JSON by the module's rules; InvalidRequest naming `what` and what to fix otherwise."""
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as error:
            raise InvalidRequest(f"{what} is not UTF-8 text (byte {error.start} is not valid UTF-8)") from None
    else:
        text = data
    try:
        value = _DECODER.decode(text)
    except _NotJsonNumber as error:
        raise InvalidRequest(f"{what} holds {error}, a number JSON does not allow") from None
    except RecursionError:
        raise _too_deep(what, max_depth) from None
    except ValueError as error:
        raise InvalidRequest(f"{what} must be JSON: {error}") from None
    check_depth(value, what, max_depth=max_depth, text=text)
    return value


def check_depth(value: Any, what: str, *, max_depth: int = MAX_JSON_DEPTH, text: str | None = None) -> None:
    """InvalidRequest when `value` nests arrays and objects more than `max_depth` deep.

    Given the `text` it was parsed from, a payload with no more brackets than the limit is not walked at all.
    """
    if text is not None and text.count("[") + text.count("{") <= max_depth:
        return
    # Iterative, so that checking a deep value cannot itself run out of stack.
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        children: Iterable[Any]
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > max_depth:
            raise _too_deep(what, max_depth)
        pending.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))


def _too_deep(what: str, max_depth: int) -> InvalidRequest:
    return InvalidRequest(f"{what} is nested more than {max_depth} levels deep (arrays and objects); flatten it")


class _NotJsonNumber(ValueError):
    pass


def _refuse_constant(name: str) -> Any:
    raise _NotJsonNumber(name)


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise _NotJsonNumber(text)
    return number


# Made once: json.loads with hooks builds a new decoder on every call.
_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)
