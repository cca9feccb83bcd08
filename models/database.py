"""Connect to the database, define the tables, and create them once, safely, from many processes."""

from __future__ import annotations

import logging
import re
from pathlib import Path

from pydal import DAL, Field
from pydal.objects import Table

logger = logging.getLogger(__name__)

# pg_advisory_xact_lock key that serialises schema creation across processes sharing one PostgreSQL.
_SCHEMA_LOCK_KEY = 0x1A4DA_AC7
_CONNECT_TIMEOUT_SECONDS = 5
_UNANSWERED_TIMEOUT_MS = 10_000
_SQLITE_BUSY_TIMEOUT_MS = 10_000
# An Idempotency-Key is at most 255 characters; a batch item's adds '#' and the item's index.
IDEMPOTENCY_KEY_COLUMN_LENGTH = 300


def describe_url(url: str) -> str:
    """The database URL as a user writes it (postgresql://), with any password masked, for logs and errors."""
    url = re.sub(r"^postgres3://", "postgresql://", url)
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def _after_connection(adapter) -> None:
    if adapter.dbengine == "sqlite":
        # WAL lets readers and one writer work at once; busy_timeout makes writers wait instead of failing.
        adapter.execute("PRAGMA journal_mode=WAL;")
        adapter.execute(f"PRAGMA busy_timeout={_SQLITE_BUSY_TIMEOUT_MS};")
        adapter.execute("PRAGMA synchronous=NORMAL;")


def connect(url: str) -> DAL:
    """Open the database at a normalised URL (`postgres3://...` or `sqlite:///...`) with the tables defined."""
    driver_args: dict[str, object] = {}
    if url.startswith("sqlite://"):
        Path(url[len("sqlite://") :]).parent.mkdir(parents=True, exist_ok=True)
        driver_args["timeout"] = _SQLITE_BUSY_TIMEOUT_MS / 1000
    else:
        driver_args["connect_timeout"] = _CONNECT_TIMEOUT_SECONDS
        driver_args["application_name"] = "lambda-action"
        # A server that stops answering (a network partition swallows the packets) fails the statement in
        # seconds instead of TCP's quarter of an hour: the shipper retries and nothing waits behind it.
        driver_args["keepalives"] = 1
        driver_args["keepalives_idle"] = 5
        driver_args["keepalives_interval"] = 2
        driver_args["keepalives_count"] = 3
        driver_args["tcp_user_timeout"] = _UNANSWERED_TIMEOUT_MS
    # Tables are created by create_schema (IF NOT EXISTS, under a lock), never by PyDAL's file-based migrations,
    # which keep state in a local folder that replicas do not share.
    db = DAL(
        url,
        migrate=False,
        migrate_enabled=False,
        pool_size=0,
        attempts=1,
        driver_args=driver_args,
        after_connection=_after_connection,
    )
    define_tables(db)
    return db


def define_tables(db: DAL) -> None:
    """Define `api_clients`, `lambda_invocations` and `idempotency_keys` on a connection."""
    db.define_table(
        "api_clients",
        Field("client_id", "string", length=128, notnull=True, unique=True),
        Field("secret_hash", "string", length=512, notnull=True),
        Field("active", "boolean", notnull=True, default=True),
        Field("allowed_functions", "text", default=""),
        Field("description", "string", length=512, default=""),
        Field("created_at", "datetime", notnull=True),
        Field("updated_at", "datetime", notnull=True),
        migrate=False,
    )
    db.define_table(
        "lambda_invocations",
        Field("invocation_id", "string", length=64, notnull=True, unique=True),
        Field("function_name", "string", length=256, notnull=True),
        Field("invocation_type", "string", length=32, notnull=True),
        Field("payload", "text"),
        Field("alias", "string", length=128),
        Field("version", "string", length=32),
        Field("status_code", "integer"),
        Field("response_payload", "text"),
        Field("function_error", "string", length=256),
        Field("executed_version", "string", length=32),
        Field("request_id", "string", length=128),
        Field("success", "boolean"),
        Field("error_message", "text"),
        Field("error_code", "string", length=64),
        Field("caller", "string", length=256),
        Field("transport", "string", length=16),
        Field("invoked_at", "datetime", notnull=True),
        Field("completed_at", "datetime"),
        Field("duration_ms", "double"),
        # Added. The fields whose text was changed to be stored (a NUL or a lone surrogate replaced, or cut to the
        # column's length), comma-separated; empty when the row holds exactly what was journaled.
        Field("altered_fields", "string", length=256),
        # Added. The caller's Idempotency-Key (a batch item's: the key, '#' and the item's index), when it gave one.
        Field("idempotency_key", "string", length=IDEMPOTENCY_KEY_COLUMN_LENGTH),
        # Added. The end of the function's log for this invocation (Lambda's LogType=Tail, at most 4 KB).
        Field("log_tail", "text"),
        # Added. The call's request id (the caller's X-Request-Id or x-request-id, else one the module made).
        Field("x_request_id", "string", length=128),
        migrate=False,
    )
    # Which invocation each (caller, Idempotency-Key) started, within IDEMPOTENCY_WINDOW_SECONDS: written before
    # Lambda is called, so that replicas sharing the database agree on who runs a keyed request.
    db.define_table(
        "idempotency_keys",
        Field("caller", "string", length=256, notnull=True),
        Field("idempotency_key", "string", length=IDEMPOTENCY_KEY_COLUMN_LENGTH, notnull=True),
        # SHA-256 of the request the key was first given with: the same key with another request is refused.
        Field("fingerprint", "string", length=64, notnull=True),
        Field("invocation_id", "string", length=64, notnull=True),
        Field("claimed_at", "datetime", notnull=True),
        migrate=False,
    )


# (name, table, columns, unique)
_INDEXES = (
    ("idx_lambda_invocations_function_invoked", "lambda_invocations", "function_name, invoked_at", False),
    ("idx_lambda_invocations_invoked", "lambda_invocations", "invoked_at", False),
    # The history's keyset pages: a client's own invocations, newest first.
    ("idx_lambda_invocations_caller_invoked", "lambda_invocations", "caller, invoked_at, id", False),
    ("idx_idempotency_keys_caller_key", "idempotency_keys", "caller, idempotency_key", True),
    ("idx_idempotency_keys_claimed", "idempotency_keys", "claimed_at", False),
)


def _add_missing_columns(db: DAL, table: Table) -> None:
    """Add the columns a newer version defines to a table an older one created (nullable ones only: additive)."""
    if db._adapter.dbengine == "sqlite":
        existing = {row[1] for row in db.executesql(f"PRAGMA table_info({table._rname});")}
    else:
        rows = db.executesql(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND table_name = %s;",
            placeholders=[table._tablename],
        )
        existing = {row[0] for row in rows}
    for field in table:
        if field.name == "id" or field.name in existing:
            continue
        column_type = db._adapter.types[field.type] % {"length": field.length}
        db.executesql(f"ALTER TABLE {table._rname} ADD COLUMN {field._rname} {column_type};")
        logger.info("added column %s.%s", table._rname, field._rname)


def create_schema(db: DAL) -> None:
    """Create the tables and indexes that do not exist yet; safe to run from many processes at once."""
    adapter = db._adapter
    try:
        if adapter.dbengine == "postgres":
            # CREATE TABLE IF NOT EXISTS alone still races in PostgreSQL (two creators collide on pg_type);
            # a transaction-scoped advisory lock makes concurrent start-ups take turns.
            db.executesql(f"SELECT pg_advisory_xact_lock({_SCHEMA_LOCK_KEY});")
        for table in (db.api_clients, db.lambda_invocations, db.idempotency_keys):
            ddl = adapter.migrator.create_table(table, migrate=False)
            db.executesql(ddl.replace("CREATE TABLE ", "CREATE TABLE IF NOT EXISTS ", 1))
            _add_missing_columns(db, table)
        for name, table, columns, unique in _INDEXES:
            kind = "UNIQUE INDEX" if unique else "INDEX"
            db.executesql(f"CREATE {kind} IF NOT EXISTS {name} ON {table} ({columns});")
        db.commit()
    except Exception:
        db.rollback()
        raise
    logger.info("database schema ready (%s)", adapter.dbengine)
