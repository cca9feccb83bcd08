"""Request bodies and headers checked against their models, as quart-schema's `validate_request` and
`validate_headers` check them (the same OpenAPI entries, the same 400 answers), for the invocation routes.

quart-schema builds a new pydantic TypeAdapter for every request it validates, and turns every header name of the
request into a field name to find the few the model has; on the routes every invocation takes, that was a
measurable part of each call's cost. Here the model validates itself and only its own headers are read.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel, ValidationError
from quart import request
from quart_schema import RequestSchemaValidationError, document_headers, document_request
from quart_schema.validation import RequestHeadersValidationError

View = Callable[..., Awaitable[Any]]


def body_of(model: type[BaseModel]) -> Callable[[View], View]:
    """Pass the JSON body, validated by `model`, as the view's `data`; a body it does not fit answers 400."""

    def decorator(view: View) -> View:
        document_request(model)(view)

        @functools.wraps(view)
        async def validated(*args: Any, **kwargs: Any) -> Any:
            data = await request.get_json()
            try:
                parsed = model.model_validate(data)
            except ValidationError as error:
                raise RequestSchemaValidationError(error) from None
            return await view(*args, data=parsed, **kwargs)

        return validated

    return decorator


def headers_of(model: type[BaseModel]) -> Callable[[View], View]:
    """Pass the request's headers that `model` names (`idempotency_key` is the header Idempotency-Key; a header
    sent more than once is joined with commas) as the view's `headers`; ones it refuses answer 400."""
    names = {field: field.replace("_", "-") for field in model.model_fields}

    def decorator(view: View) -> View:
        document_headers(model)(view)

        @functools.wraps(view)
        async def validated(*args: Any, **kwargs: Any) -> Any:
            found = {
                field: ",".join(values)
                for field, header in names.items()
                if (values := request.headers.getlist(header))
            }
            try:
                parsed = model(**found)
            except ValidationError as error:
                raise RequestHeadersValidationError(error) from None
            return await view(*args, headers=parsed, **kwargs)

        return validated

    return decorator
