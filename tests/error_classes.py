"""Every domain error class, for the tests that check each transport maps all of them."""

from __future__ import annotations

from services import errors


def domain_errors(cls: type[errors.ServiceError] = errors.ServiceError) -> list[type[errors.ServiceError]]:
    """Every subclass of `cls` that services/errors.py defines, subclasses of subclasses included."""
    found: list[type[errors.ServiceError]] = []
    for subclass in cls.__subclasses__():
        if subclass.__module__ == errors.__name__:
            found.append(subclass)
        found += domain_errors(subclass)
    return found
