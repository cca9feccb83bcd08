"""Idempotency keys: a request repeated with the same key gets the first invocation's outcome, not a second run.

A keyed request claims its (caller, key) in `idempotency_keys` before Lambda is called, in one transaction that
replicas sharing the database serialise on the unique index. A later request with the key then finds the claim
and the invocation it names: recorded, it is answered from the record; not yet recorded, it is still under way.
A claim whose invocation ended without running the function (refused, throttled, not found) is released, so a
retry runs; one whose invocation may have run stays until IDEMPOTENCY_WINDOW_SECONDS have passed.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydal import DAL

from services.database import is_unique_violation
from services.errors import InvalidRequest

logger = logging.getLogger(__name__)

IDEMPOTENCY_KEY_MAX_LENGTH = 255
# Visible ASCII: a key travels in an HTTP header and in gRPC metadata, and is shown in logs and records.
_KEY = re.compile(rf"[\x21-\x7e]{{1,{IDEMPOTENCY_KEY_MAX_LENGTH}}}")
# Outcomes after which the function may have run: their claim is kept, and a repeat is told so.
MAY_HAVE_RUN_CODES = frozenset({"OutcomeUnknown", "Interrupted"})
# Expired claims are deleted this many at a time.
PURGE_BATCH = 1000
_CLAIM_ATTEMPTS = 3

_RECORD_FIELDS = (
    "invocation_id",
    "function_name",
    "invocation_type",
    "status_code",
    "response_payload",
    "function_error",
    "executed_version",
    "request_id",
    "success",
    "error_code",
    "error_message",
    "completed_at",
    "duration_ms",
    "log_tail",
)


def check_idempotency_key(key: str) -> None:
    """InvalidRequest unless `key` is 1 to 255 visible ASCII characters."""
    if not _KEY.fullmatch(key):
        raise InvalidRequest(
            f"the Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_MAX_LENGTH} visible ASCII characters (no spaces); "
            "a UUID is a good key"
        )


def fingerprint(*parts: bytes | str | None) -> str:
    """SHA-256 of the parts that make a request what it is, each told apart from its neighbours."""
    digest = hashlib.sha256()
    for part in parts:
        if part is None:
            digest.update(b"\x00")
            continue
        data = part.encode("utf-8", "surrogatepass") if isinstance(part, str) else part
        digest.update(b"\x01" + len(data).to_bytes(8, "big") + data)
    return digest.hexdigest()


@dataclass(frozen=True)
class KeyClaim:
    """A keyed request about to start invocation `invocation_id`."""

    caller: str
    key: str
    fingerprint: str
    invocation_id: str


@dataclass(frozen=True)
class EarlierInvocation:
    """The invocation an earlier request with the same key started, as far as the database knows it."""

    invocation_id: str
    fingerprint: str
    # The invocation's row when the shipper has written it (its outcome columns empty while it runs).
    record: dict[str, Any] | None

    @property
    def ended(self) -> bool:
        return self.record is not None and self.record.get("completed_at") is not None

    @property
    def may_have_run(self) -> bool:
        """Whether the function may have run: it answered, or its outcome is unknown."""
        if self.record is None or not self.ended:
            return True
        return self.record.get("error_code") is None or self.record.get("error_code") in MAY_HAVE_RUN_CODES


def claim_in(db: DAL, claim: KeyClaim, now: datetime, window_seconds: float) -> EarlierInvocation | None:
    """Claim the key for `claim.invocation_id` in the caller's transaction: None when claimed, else the earlier
    invocation that holds it (the caller decides: replay, in progress, or a different request)."""
    table = db.idempotency_keys
    query = (table.caller == claim.caller) & (table.idempotency_key == claim.key)
    for _ in range(_CLAIM_ATTEMPTS):
        try:
            table.insert(
                caller=claim.caller,
                idempotency_key=claim.key,
                fingerprint=claim.fingerprint,
                invocation_id=claim.invocation_id,
                claimed_at=now,
            )
            return None
        except Exception as error:
            if not is_unique_violation(error):
                raise
            # PostgreSQL refuses every statement after a failed one until the transaction ends.
            db.rollback()
        holder = db(query).select(table.id, table.fingerprint, table.invocation_id, table.claimed_at).first()
        if holder is None:
            continue  # released meanwhile: claim it afresh
        earlier = EarlierInvocation(holder.invocation_id, holder.fingerprint, _record_of(db, holder.invocation_id))
        expired = holder.claimed_at < now - timedelta(seconds=window_seconds)
        if not expired and (earlier.fingerprint != claim.fingerprint or earlier.may_have_run):
            return earlier
        # Expired, or its invocation ended without running the function: the key is free for this request.
        taken = db((table.id == holder.id) & (table.invocation_id == holder.invocation_id)).update(
            fingerprint=claim.fingerprint, invocation_id=claim.invocation_id, claimed_at=now
        )
        if taken:
            return None
    raise RuntimeError(f"the idempotency key of invocation {claim.invocation_id} changed hands {_CLAIM_ATTEMPTS} times")


def release_in(db: DAL, claim: KeyClaim) -> None:
    """Give the key up (its invocation ended without running the function), unless another request took it."""
    table = db.idempotency_keys
    db(
        (table.caller == claim.caller)
        & (table.idempotency_key == claim.key)
        & (table.invocation_id == claim.invocation_id)
    ).delete()


def peek_in(db: DAL, caller: str, key: str, now: datetime, window_seconds: float) -> EarlierInvocation | None:
    """The unexpired claim on a key, without claiming it."""
    table = db.idempotency_keys
    holder = (
        db((table.caller == caller) & (table.idempotency_key == key))
        .select(table.fingerprint, table.invocation_id, table.claimed_at)
        .first()
    )
    if holder is None or holder.claimed_at < now - timedelta(seconds=window_seconds):
        return None
    return EarlierInvocation(holder.invocation_id, holder.fingerprint, None)


def purge_in(db: DAL, now: datetime, window_seconds: float) -> int:
    """Delete up to PURGE_BATCH claims older than the window; how many were deleted."""
    table = db.idempotency_keys
    expired = db(table.claimed_at < now - timedelta(seconds=window_seconds))._select(table.id, limitby=(0, PURGE_BATCH))
    return int(db(table.id.belongs(expired)).delete() or 0)


def _record_of(db: DAL, invocation_id: str) -> dict[str, Any] | None:
    invocations = db.lambda_invocations
    row = (
        db(invocations.invocation_id == invocation_id)
        .select(*(invocations[name] for name in _RECORD_FIELDS), limitby=(0, 1))
        .first()
    )
    return row.as_dict() if row is not None else None
