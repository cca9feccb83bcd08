"""Client secrets (salted scrypt hashes) and JWTs (HS256): who is calling."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import jwt

from config import Settings
from services import audit
from services.api_clients import ApiClient, ClientStore, is_client_id
from services.client_secrets import hash_secret, new_secret, verify_secret
from services.domain import Caller
from services.errors import Busy, DatabaseUnavailable, TooManyFailedAttempts, Unauthenticated

logger = logging.getLogger(__name__)

_ALGORITHM = "HS256"
# Same reply for an unknown client and a wrong secret, so the reply does not tell which ids exist.
_BAD_CREDENTIALS = "invalid client_id or client_secret"
# How long a client's active flag and patterns are trusted before the database is asked again.
_CLIENT_CACHE_SECONDS = 10.0
# How long a call waits for the database to check a client this process has not seen yet.
_CLIENT_LOOKUP_SECONDS = 3.0
# After a failed re-read, how long the known entry is used before trying again.
_CLIENT_RETRY_SECONDS = 1.0
# How many (token, source) pairs are remembered so that only a token's first use is an audit line.
_SEEN_TOKENS_KEPT = 10_000
_VERIFIED_TOKENS_KEPT = 10_000
# Secrets checked at once (scrypt takes a core for tens of milliseconds), and how many may wait for a turn:
# a flood of token requests must not take the cores the invocations need.
_SCRYPT_THREADS = 2
_SCRYPT_WAITING = 32
# Client ids and addresses whose failures are remembered (the oldest forgotten first).
_FAILURE_KEYS_KEPT = 10_000


def bearer_token_of(authorization: str) -> str | None:
    """The token of an `Authorization: Bearer <token>` value (header or metadata), or None."""
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


# Checked against when the client id is unknown, so that both failures take the same time.
_DUMMY_HASH = hash_secret(new_secret())


class FailureWindow:
    """Failed attempts per key (a client id, an address) within a sliding window of time, bounded in memory."""

    def __init__(self, limit: int, window_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._limit = limit
        self._window = window_seconds
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def retry_after(self, key: str) -> float | None:
        """Seconds until `key` may try again, or None when it may now."""
        failures = self._failures.get(key)
        if failures is None:
            return None
        now = self._clock()
        while failures and failures[0] <= now - self._window:
            failures.popleft()
        if not failures:
            del self._failures[key]
            return None
        if len(failures) < self._limit:
            return None
        return failures[0] + self._window - now

    def add(self, key: str) -> None:
        failures = self._failures.setdefault(key, deque())
        self._failures.move_to_end(key)
        failures.append(self._clock())
        if len(failures) > self._limit:
            failures.popleft()
        if len(self._failures) > _FAILURE_KEYS_KEPT:
            self._failures.popitem(last=False)


class _TooLongLived(jwt.InvalidTokenError):
    """A token whose exp is further from its iat than MAX_TOKEN_LIFETIME_SECONDS."""

    def __init__(self, lifetime: float) -> None:
        super().__init__(f"lifetime {lifetime} s")
        self.lifetime = lifetime


@dataclass(frozen=True)
class IssuedToken:
    """A token for a client and how many seconds it lives."""

    token: str
    expires_in: int
    token_type: str = "Bearer"


class Authenticator:
    """Issues tokens to API clients and turns bearer tokens into Callers."""

    def _refused(self, principal: str, source: str, reason: str) -> None:
        audit.authentication(principal, source, ok=False, reason=reason)
        if self._on_refused is not None:
            # The reason without its details ("invalid token (DecodeError)" counts as "invalid token").
            self._on_refused(reason.split(" (", 1)[0])

    def __init__(
        self,
        settings: Settings,
        clients: ClientStore,
        *,
        client_fresh_seconds: float = _CLIENT_CACHE_SECONDS,
        on_refused: Callable[[str], None] | None = None,
    ) -> None:
        self._client_fresh_seconds = client_fresh_seconds
        # Told the reason of every refused authentication (the metrics count them).
        self._on_refused = on_refused
        self._key = settings.module_secret_key
        self._expiration = settings.jwt_expiration_seconds
        self._max_lifetime = settings.max_token_lifetime_seconds
        self._leeway = settings.jwt_leeway_seconds
        self._allowed_services = frozenset(settings.allowed_services)
        self._clients = clients
        self._client_cache: dict[str, tuple[float, ApiClient | None]] = {}
        self._seen_tokens: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._refreshing: set[str] = set()
        self._refresh_tasks: set[asyncio.Task[None]] = set()
        # Tokens whose signature was checked, with their expiry and claims.
        self._verified: OrderedDict[str, tuple[float, dict]] = OrderedDict()
        window = settings.token_failure_window_seconds
        self._client_failures = FailureWindow(settings.token_failures_per_client, window)
        self._source_failures = FailureWindow(settings.token_failures_per_source, window)
        self._scrypt = ThreadPoolExecutor(max_workers=_SCRYPT_THREADS, thread_name_prefix="scrypt")
        self._scrypt_waiting = 0

    async def issue_token(self, client_id: str, client_secret: str, source: str) -> IssuedToken:
        """Check a client's secret and issue a token; Unauthenticated when the pair is wrong, TooManyFailedAttempts
        after too many wrong ones for this client id or from this address (the secret is then not even checked)."""
        self._refuse_after_failures(client_id, source)
        # A malformed id names no client: not worth a database lookup (a NUL is not even storable text).
        client = await self._clients.get(client_id) if is_client_id(client_id) else None
        stored_hash = client.secret_hash if client and client.active else _DUMMY_HASH
        matches = await self._verify(client_secret, stored_hash)
        if not (matches and client and client.active):
            self._client_failures.add(client_id)
            self._source_failures.add(source)
            self._refused(client_id, source, "bad credentials")
            raise Unauthenticated(_BAD_CREDENTIALS)
        now = int(time.time())
        token = jwt.encode({"sub": client_id, "iat": now, "exp": now + self._expiration}, self._key, _ALGORITHM)
        audit.authentication(client_id, source, ok=True, reason="token issued")
        return IssuedToken(token=token, expires_in=self._expiration)

    def _refuse_after_failures(self, client_id: str, source: str) -> None:
        for window, key, who in (
            (self._client_failures, client_id, "for this client_id"),
            (self._source_failures, source, "from this address"),
        ):
            wait = window.retry_after(key)
            if wait is not None:
                self._refused(client_id, source, f"too many failed attempts {who}")
                raise TooManyFailedAttempts(
                    f"too many wrong credentials {who} lately; retry after {math.ceil(wait)} s", retry_after=wait
                )

    async def _verify(self, secret: str, stored_hash: str) -> bool:
        """scrypt on its own small pool, off the event loop and away from the threads that call Lambda."""
        if self._scrypt_waiting >= _SCRYPT_WAITING:
            raise Busy("too many token requests are being checked at once; retry shortly", retry_after=1.0)
        self._scrypt_waiting += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._scrypt, verify_secret, secret, stored_hash)
        finally:
            self._scrypt_waiting -= 1

    def close(self) -> None:
        """Release the secret-checking threads."""
        self._scrypt.shutdown(wait=False, cancel_futures=True)

    async def authenticate(self, token: str | None, source: str) -> Caller:
        """The Caller a bearer token stands for; Unauthenticated when it is missing, bad or expired."""
        if not token:
            self._refused("-", source, "no token")
            raise Unauthenticated(
                "missing bearer token: send 'Authorization: Bearer <token>' (over gRPC, as metadata or in the "
                "message's token field); get one from POST /api/v1/token"
            )
        try:
            claims = self._verified_claims(token)
        except jwt.ExpiredSignatureError:
            self._refused("-", source, "expired token")
            raise Unauthenticated("token expired: get a new one from POST /api/v1/token") from None
        except _TooLongLived as exc:
            self._refused("-", source, "token lives too long")
            raise Unauthenticated(
                f"invalid token: it lives {exc.lifetime} s (exp - iat), longer than the "
                f"{self._max_lifetime} s this module accepts (MAX_TOKEN_LIFETIME_SECONDS)"
            ) from None
        except jwt.ImmatureSignatureError:
            self._refused("-", source, "token not yet valid")
            raise Unauthenticated(
                f"invalid token: its iat or nbf is in the future (more than {self._leeway} s of clock skew)"
            ) from None
        except jwt.MissingRequiredClaimError as exc:
            self._refused("-", source, f"invalid token (no {exc.claim})")
            raise Unauthenticated(f"invalid token: it must carry the {exc.claim!r} claim (exp and iat)") from None
        except jwt.InvalidTokenError as exc:
            self._refused("-", source, f"invalid token ({type(exc).__name__})")
            raise Unauthenticated("invalid token") from None

        service = claims.get("service")
        if service is not None:
            if not isinstance(service, str) or service not in self._allowed_services:
                self._refused(str(service), source, "service not allowed")
                raise Unauthenticated("invalid token: service not allowed")
            self._record_success(token, f"service:{service}", source)
            return Caller(kind="service", name=service)

        client_id = claims.get("sub")
        client = await self._cached_client(client_id) if isinstance(client_id, str) else None
        if client is None or not client.active or not isinstance(client_id, str):
            self._refused(str(client_id), source, "unknown or disabled client")
            raise Unauthenticated("invalid token: client unknown or disabled")
        self._record_success(token, f"client:{client_id}", source)
        return Caller(kind="client", name=client_id, allowed_patterns=client.allowed_patterns)

    def _verified_claims(self, token: str) -> dict:
        """The token's claims, its signature checked once and trusted until it expires (a router sends the same
        token with every call: checking it each time was a measurable part of each call's cost)."""
        now = time.time()
        cached = self._verified.get(token)
        if cached is not None and cached[0] > now:
            self._verified.move_to_end(token)
            return cached[1]
        # exp is checked by PyJWT, strictly; iat and nbf here, with JWT_LEEWAY_SECONDS for a signer's clock ahead.
        claims = jwt.decode(
            token,
            self._key,
            algorithms=[_ALGORITHM],
            options={"require": ["exp", "iat"], "verify_iat": False, "verify_nbf": False},
        )
        issued_at, not_before = claims["iat"], claims.get("nbf", claims["iat"])
        for moment in (issued_at, not_before):
            if not isinstance(moment, int | float) or isinstance(moment, bool):
                raise jwt.InvalidTokenError("iat and nbf must be numbers")
            if moment > now + self._leeway:
                raise jwt.ImmatureSignatureError("iat or nbf in the future")
        lifetime = claims["exp"] - issued_at
        if lifetime > self._max_lifetime:
            raise _TooLongLived(lifetime)
        expires = claims.get("exp")
        if isinstance(expires, int | float):
            self._verified[token] = (float(expires), claims)
            if len(self._verified) > _VERIFIED_TOKENS_KEPT:
                self._verified.popitem(last=False)
        return claims

    def _record_success(self, token: str, principal: str, source: str) -> None:
        # One audit line per token (and source) when first presented to this process, not one per request:
        # every authenticated identity is on record without doubling the log of every invocation.
        key = (token.rsplit(".", 1)[-1], source)
        if key in self._seen_tokens:
            self._seen_tokens.move_to_end(key)
            return
        self._seen_tokens[key] = None
        if len(self._seen_tokens) > _SEEN_TOKENS_KEPT:
            self._seen_tokens.popitem(last=False)
        audit.authentication(principal, source, ok=True, reason="bearer token accepted")

    async def _cached_client(self, client_id: str) -> ApiClient | None:
        """The client as last read, re-read at most every few seconds.

        Past its freshness an entry is still used while a re-read runs in the background: a database that is
        away or slow must not stall calls from clients already known (it cannot disable them meanwhile anyway).
        Only a client never seen by this process waits for the database, and not for long.
        """
        now = time.monotonic()
        cached = self._client_cache.get(client_id)
        if cached is not None:
            if cached[0] <= now:
                self._refresh_in_background(client_id)
            return cached[1]
        try:
            client = await asyncio.wait_for(self._clients.get(client_id), _CLIENT_LOOKUP_SECONDS)
        except TimeoutError:
            raise DatabaseUnavailable(
                f"the database did not answer within {_CLIENT_LOOKUP_SECONDS:g} s to check this client; retry shortly"
            ) from None
        self._client_cache[client_id] = (now + self._client_fresh_seconds, client)
        return client

    def _refresh_in_background(self, client_id: str) -> None:
        if client_id in self._refreshing:
            return
        self._refreshing.add(client_id)
        task = asyncio.ensure_future(self._refresh(client_id))
        self._refresh_tasks.add(task)
        task.add_done_callback(self._refresh_tasks.discard)

    async def _refresh(self, client_id: str) -> None:
        try:
            client = await asyncio.wait_for(self._clients.get(client_id), _CLIENT_CACHE_SECONDS)
        except Exception as error:
            # Keep what is known, and try again a little later rather than on every call.
            logger.warning("could not re-read client %s (%s); using what is known", client_id, error)
            known = self._client_cache.get(client_id)
            if known is not None:
                self._client_cache[client_id] = (time.monotonic() + _CLIENT_RETRY_SECONDS, known[1])
        else:
            self._client_cache[client_id] = (time.monotonic() + self._client_fresh_seconds, client)
        finally:
            self._refreshing.discard(client_id)
