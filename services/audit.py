"""AAA lines: one line per authentication, per denied request and per invocation; never a secret."""

from __future__ import annotations

import logging

audit_logger = logging.getLogger("lambda_action.audit")


def _field(text: str) -> str:
    """A caller-supplied value as one audit field: as is when plain, else quoted with escapes (no line breaks)."""
    return text if text.isascii() and text.isprintable() and " " not in text else ascii(text)


def authentication(principal: str, source: str, *, ok: bool, reason: str) -> None:
    """One authentication attempt: a token issued or refused, or a bearer token refused."""
    level = logging.INFO if ok else logging.WARNING
    outcome = "success" if ok else "failure"
    audit_logger.log(level, "AUTH %s principal=%s source=%s reason=%s", outcome, _field(principal), source, reason)


def denied(caller: str, function_name: str, reason: str) -> None:
    """A request refused because the caller may not reach the function."""
    audit_logger.warning("DENIED caller=%s function=%s reason=%s", _field(caller), _field(function_name), reason)


def invocation(
    caller: str, transport: str, function_name: str, invocation_type: str, outcome: str, duration_ms: float
) -> None:
    """One invocation and how it ended."""
    audit_logger.info(
        "INVOKE caller=%s transport=%s function=%s type=%s outcome=%s duration_ms=%.1f",
        _field(caller),
        transport,
        _field(function_name),
        invocation_type,
        outcome,
        duration_ms,
    )
