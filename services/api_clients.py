"""API clients: who may ask for a token, and which functions each may reach."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime

from pydal import DAL

from config import Settings
from services.client_secrets import hash_secret, new_secret
from services.database import Database, is_unique_violation, open_database
from services.errors import InvalidRequest
from services.invocation_log import utc_now

logger = logging.getLogger(__name__)

# The client a development run (no MODULE_SECRET_KEY) makes for its user, with a new secret at each start.
DEV_CLIENT_ID = "local-dev"

_CLIENT_ID = re.compile(r"[A-Za-z0-9._-]{3,128}")
_PATTERN = re.compile(r"^[A-Za-z0-9_*?\[\]!-]{1,128}$")


@dataclass(frozen=True)
class ApiClient:
    """One row of `api_clients`, with its patterns parsed."""

    client_id: str
    secret_hash: str
    active: bool
    allowed_patterns: tuple[str, ...]
    description: str
    created_at: datetime | None


def is_client_id(client_id: str) -> bool:
    """Whether `client_id` is well formed (matched whole: no trailing newline slips through)."""
    return _CLIENT_ID.fullmatch(client_id) is not None


def validate_client_id(client_id: str) -> str:
    """Return `client_id` if well formed, else raise InvalidRequest."""
    if not is_client_id(client_id):
        raise InvalidRequest("client_id must be 3 to 128 letters, digits, '.', '_' or '-'")
    return client_id


def validate_patterns(patterns: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Return the patterns if each is a well-formed function-name glob, else raise InvalidRequest."""
    for pattern in patterns:
        if not _PATTERN.match(pattern):
            raise InvalidRequest(f"function pattern {pattern!r} must be a function name with optional * ? [] wildcards")
    return tuple(patterns)


class ClientStore:
    """Reads and writes `api_clients`."""

    def __init__(self, database: Database) -> None:
        self._database = database

    async def get(self, client_id: str) -> ApiClient | None:
        """The client with this id, or None."""
        return await self._database.run(lambda db: _get(db, client_id))

    async def list(self) -> list[ApiClient]:
        """Every client, in id order."""
        return await self._database.run(_list)

    async def save(
        self, client_id: str, secret_hash: str, patterns: tuple[str, ...] = (), description: str = ""
    ) -> bool:
        """Create the client, or replace its secret, patterns and description and re-enable it.

        Returns True when the client was created, False when it existed.
        """
        validate_client_id(client_id)
        validate_patterns(patterns)

        def save(db: DAL) -> bool:
            return _save(db, client_id, secret_hash, patterns, description)

        try:
            return await self._database.run(save)
        except Exception as error:
            if not is_unique_violation(error):
                raise
            # Another process inserted the same client between this one's update and insert (two replicas
            # starting at once with the same bootstrap client): it exists now, so the update takes it.
            return await self._database.run(save)

    async def set_secret_hash(self, client_id: str, secret_hash: str) -> bool:
        """Replace a client's secret; False when there is no such client."""
        return await self._database.run(lambda db: _update(db, client_id, secret_hash=secret_hash))

    async def set_active(self, client_id: str, active: bool) -> bool:
        """Enable or disable a client; False when there is no such client."""
        return await self._database.run(lambda db: _update(db, client_id, active=active))


def _row_to_client(row) -> ApiClient:
    patterns = tuple(p for p in (row.allowed_functions or "").split(",") if p)
    return ApiClient(
        client_id=row.client_id,
        secret_hash=row.secret_hash,
        active=bool(row.active),
        allowed_patterns=patterns,
        description=row.description or "",
        created_at=row.created_at,
    )


def _get(db: DAL, client_id: str) -> ApiClient | None:
    row = db(db.api_clients.client_id == client_id).select(limitby=(0, 1)).first()
    return _row_to_client(row) if row else None


def _list(db: DAL) -> list[ApiClient]:
    return [_row_to_client(row) for row in db(db.api_clients).select(orderby=db.api_clients.client_id)]


def _save(db: DAL, client_id: str, secret_hash: str, patterns: tuple[str, ...], description: str) -> bool:
    table = db.api_clients
    now = utc_now()
    fields = {
        "secret_hash": secret_hash,
        "active": True,
        "allowed_functions": ",".join(patterns),
        "description": description,
        "updated_at": now,
    }
    if db(table.client_id == client_id).update(**fields):
        return False
    table.insert(client_id=client_id, created_at=now, **fields)
    return True


def _update(db: DAL, client_id: str, **fields) -> bool:
    table = db.api_clients
    return bool(db(table.client_id == client_id).update(updated_at=utc_now(), **fields))


async def prepare_clients(settings: Settings, clients: ClientStore) -> None:
    """The start-up writes: the bootstrap client saved, the development client reset or, under a real key, disabled.

    Done once per start, by the process that owns the others.
    """
    if settings.bootstrap_client_id:
        created = await clients.save(settings.bootstrap_client_id, hash_secret(settings.bootstrap_client_secret))
        logger.info("bootstrap client %s %s", settings.bootstrap_client_id, "created" if created else "updated")
    if settings.secret_key_generated:
        secret = new_secret()
        await clients.save(DEV_CLIENT_ID, hash_secret(secret), description="development client, reset at each start")
        _announce_development_client(settings, secret)
    elif settings.bootstrap_client_id != DEV_CLIENT_ID:
        # A development run against this database left its client behind; with a real key it must not work.
        development = await clients.get(DEV_CLIENT_ID)
        if development is not None and development.active:
            await clients.set_active(DEV_CLIENT_ID, False)
            logger.warning("disabled the development client %s: MODULE_SECRET_KEY is configured", DEV_CLIENT_ID)


async def prepare_clients_once(settings: Settings) -> None:
    """`prepare_clients` with a database opened for it alone: a WORKERS parent's one-time start-up work."""
    async with open_database(settings, pool_size=1) as database:
        await prepare_clients(settings, ClientStore(database))


def _announce_development_client(settings: Settings, secret: str) -> None:
    # Printed, not logged: log files must never hold a secret.
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    body = f'{{"client_id": "{DEV_CLIENT_ID}", "client_secret": "{secret}"}}'
    print(
        "\n*** WARNING: MODULE_SECRET_KEY is not set: tokens are signed with a random key made for this run.\n"
        "*** Development only; set MODULE_SECRET_KEY (and ENVIRONMENT=production) for real use.\n"
        f"*** Development client: client_id={DEV_CLIENT_ID} client_secret={secret}\n"
        f"*** Get a token: curl -s -X POST http://{host}:{settings.rest_port}/api/v1/token "
        f"-H 'Content-Type: application/json' -d '{body}'\n",
        flush=True,
    )
