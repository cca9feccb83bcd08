"""The database as the services use it: PyDAL work run on a small executor of its own."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from pydal import DAL

from config import Settings
from models import connect, create_schema, describe_url
from services.errors import DatabaseUnavailable

logger = logging.getLogger(__name__)

T = TypeVar("T")

# How long a health probe waits for `SELECT 1` before calling the database down.
_PING_TIMEOUT_SECONDS = 3.0


class Database:
    """Owns the DAL and the threads that use it; each thread keeps its own connection.

    PyDAL keeps connections per thread, so a few dedicated threads (DATABASE_POOL_SIZE) bound the number
    of connections a replica holds, however many Lambda calls are in flight.
    """

    def __init__(self, url: str, pool_size: int) -> None:
        self.url = url
        self._executor = ThreadPoolExecutor(max_workers=pool_size, thread_name_prefix="database")
        self._local = threading.local()
        self._closed = False
        self._main_db = self._open()
        create_schema(self._main_db)

    @property
    def engine(self) -> str:
        return self._main_db._adapter.dbengine

    def _open(self) -> DAL:
        try:
            return connect(self.url)
        except Exception as exc:
            raise DatabaseUnavailable(
                f"cannot open the database at DATABASE_URL={describe_url(self.url)}: {_root_cause(exc)}"
            ) from exc

    def _thread_db(self) -> DAL:
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = self._open()
        return db

    async def run(self, work: Callable[[DAL], T]) -> T:
        """Run `work(db)` on a database thread as one transaction."""
        if self._closed:
            raise DatabaseUnavailable("the database connection is closed (the module is shutting down)")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._run_in_thread, work)

    def _run_in_thread(self, work: Callable[[DAL], T]) -> T:
        had_connection = getattr(self._local, "db", None) is not None
        try:
            return self._transaction(self._thread_db(), work)
        except DatabaseUnavailable:
            self._drop_thread_db()
            if not had_connection:
                raise
        # The thread's connection was stale (the server restarted, a proxy closed it): try once more on a new
        # one. Writes are keyed by unique ids, so a repeated one cannot double a row.
        try:
            return self._transaction(self._thread_db(), work)
        except DatabaseUnavailable:
            self._drop_thread_db()
            raise

    def _drop_thread_db(self) -> None:
        db = getattr(self._local, "db", None)
        self._local.db = None
        if db is not None:
            _close_quietly(db)

    @staticmethod
    def _transaction(db: DAL, work: Callable[[DAL], T]) -> T:
        try:
            result = work(db)
            db.commit()
            return result
        except Exception as exc:
            try:
                db.rollback()
            except Exception:
                logger.debug("rollback failed", exc_info=True)
            if is_connection_error(exc):
                raise DatabaseUnavailable(f"the database did not answer: {exc}") from exc
            raise

    async def ping(self) -> bool:
        """True when the database answers `SELECT 1` promptly."""
        try:
            await asyncio.wait_for(self.run(lambda db: db.executesql("SELECT 1;")), _PING_TIMEOUT_SECONDS)
            return True
        except Exception as exc:
            logger.warning("database health check failed: %s", exc)
            return False

    def close(self) -> None:
        """Stop the database threads and close their connections."""
        if self._closed:
            return
        self._closed = True
        # Each database thread's connection is closed with its thread-local storage when the thread ends.
        self._executor.shutdown(wait=True)
        _close_quietly(self._main_db)


async def connect_database(settings: Settings, *, pool_size: int | None = None) -> Database:
    """DATABASE_URL opened (tables created), with DATABASE_POOL_SIZE threads unless `pool_size`; close() it."""
    return await asyncio.to_thread(Database, settings.database_url, pool_size or settings.database_pool_size)


@contextlib.asynccontextmanager
async def open_database(settings: Settings, *, pool_size: int | None = None) -> AsyncIterator[Database]:
    """`connect_database` for the block, closed after it."""
    database = await connect_database(settings, pool_size=pool_size)
    try:
        yield database
    finally:
        await asyncio.to_thread(database.close)


def _close_quietly(db: DAL) -> None:
    try:
        db.close()
    except Exception:
        logger.debug("closing a database connection failed", exc_info=True)


def is_unique_violation(error: BaseException) -> bool:
    """Whether the database refused a write because a row with the same unique key exists (PostgreSQL or SQLite)."""
    if getattr(error, "pgcode", None) == "23505":  # psycopg2's unique_violation
        return True
    return type(error).__name__ == "IntegrityError" and "UNIQUE" in str(error).upper()


def is_connection_error(exc: BaseException) -> bool:
    """True for errors that mean the connection is unusable rather than the statement wrong."""
    names = {type(exc).__name__ for exc in _chain(exc)}
    return bool(names & {"OperationalError", "InterfaceError", "DatabaseUnavailable"})


def _chain(exc: BaseException) -> Iterator[BaseException]:
    current: BaseException | None = exc
    while current is not None:
        yield current
        current = current.__cause__ or current.__context__


_EXCEPTION_LINE = re.compile(r"^[\w.]+(?:Error|Exception): ")


def _root_cause(error: Exception) -> str:
    """The driver's own words: PyDAL wraps a failed connect in a RuntimeError holding a whole traceback."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    starts = [index for index, line in enumerate(lines) if _EXCEPTION_LINE.match(line)]
    if lines and lines[0].startswith("Failure to connect") and starts:
        # The last exception of the traceback, without its class name, with the lines it goes on over.
        return " ".join([_EXCEPTION_LINE.sub("", lines[starts[-1]]), *lines[starts[-1] + 1 :]])
    return " ".join(lines) or type(error).__name__
