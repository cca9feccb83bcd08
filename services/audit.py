"""AAA lines: one line per authentication, per denied request and per invocation; never a secret.

Each line ends with the call's request id (see services/tracing.py), so one id finds every line of one call.
"""

from __future__ import annotations

import logging

from services.tracing import current_request_id

audit_logger = logging.getLogger("lambda_action.audit")


def _field(text: str) -> str:
    """A caller-supplied value as one audit field: as is when plain, else quoted with escapes (no line breaks)."""
    return text if text.isascii() and text.isprintable() and " " not in text else ascii(text)


def authentication(principal: str, source: str, *, ok: bool, reason: str) -> None:
    """One authentication attempt: a token issued or refused, or a bearer token refused."""
    level = logging.INFO if ok else logging.WARNING
    outcome = "success" if ok else "failure"
    audit_logger.log(
        level,
        "AUTH %s principal=%s source=%s reason=%s request_id=%s",
        outcome,
        _field(principal),
        source,
        reason,
        current_request_id() or "-",
    )


def denied(caller: str, function_name: str, reason: str) -> None:
    """A request refused because the caller may not reach the function."""
    audit_logger.warning(
        "DENIED caller=%s function=%s reason=%s request_id=%s",
        _field(caller),
        _field(function_name),
        reason,
        current_request_id() or "-",
    )


def invocation(
    caller: str, transport: str, function_name: str, invocation_type: str, outcome: str, duration_ms: float
) -> None:
    """One invocation and how it ended."""
    audit_logger.info(
        "INVOKE caller=%s transport=%s function=%s type=%s outcome=%s duration_ms=%.1f request_id=%s",
        _field(caller),
        transport,
        _field(function_name),
        invocation_type,
        outcome,
        duration_ms,
        current_request_id() or "-",
    )
