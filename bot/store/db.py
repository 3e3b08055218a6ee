"""Database engine, migrations and the retry policy for transactions.

SQLite is the embedded default: WAL journal, ``synchronous=NORMAL``
(a committed transaction survives a killed process; only a power loss can lose
the last commits, see https://www.sqlite.org/wal.html), foreign keys on, and a
busy timeout. PostgreSQL (asyncpg) is the scaled-out backend; the same Alembic
history serves both.

The stores run their SQLAlchemy Core statements through :meth:`Database.run` and
:meth:`Database.execute` (:mod:`bot.store.tx`): on SQLite on the file's one writer
thread (:class:`bot.store.sqlite_worker.SqliteWorker`), elsewhere through the async
engine. On SQLite the aiosqlite engine serves migrations and the remaining callers of
:meth:`Database.begin`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.exc import DBAPIError, DisconnectionError, IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

import migrations
from bot.store.compiled import Compiled
from bot.store.errors import ConstraintError, StoreError
from bot.store.sqlite_worker import SqliteWorker, apply_pragmas
from bot.store.tx import Body, drive_sa, drive_sqlite, one

log = logging.getLogger("baton.store")

T = TypeVar("T")

COMPILED_CACHE_MAX = 1000
"""Compiled statements kept per database (statements are module constants; this only bounds mistakes)."""


# Errors that reach us *unwrapped* when the server cannot be reached: SQLAlchemy wraps what a
# statement raises, but not what asyncpg's connect raises (refused, reset, "not currently
# accepting connections", "the database system is starting up / shutting down"), fault 14.4.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # ConnectionRefusedError, ConnectionResetError, socket.gaierror, …
    TimeoutError,
    asyncpg.exceptions.PostgresConnectionError,  # CannotConnectNowError, ConnectionDoesNotExistError, …
    asyncpg.exceptions.ObjectNotInPrerequisiteStateError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.InternalClientError,
)


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, (OperationalError, *CONNECTION_ERRORS)):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


def store_error(what: str, exc: BaseException) -> StoreError:
    """A :class:`StoreError` for ``exc`` (a SQLAlchemy or connection-level error) while doing ``what``;
    the original is its ``__cause__`` (the retry policy looks there)."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip() or type(orig).__name__
    if isinstance(orig, CONNECTION_ERRORS):
        text = f"cannot reach the database ({type(orig).__name__}: {text})"
    err = (ConstraintError if isinstance(exc, IntegrityError) else StoreError)(f"database error while {what}: {text}")
    err.__cause__ = exc
    return err


def _ensure_sqlite_folder(url: str) -> None:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)


def make_engine(url: str) -> AsyncEngine:
    """Create the async engine; SQLite files get WAL and their folder is created."""
    if url.startswith("sqlite"):
        _ensure_sqlite_folder(url)
        engine = create_async_engine(url, connect_args={"timeout": 30})
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    # 10 kept open: a `baton worker` executing 20 runs at once would otherwise open and
    # close an overflow connection (a PostgreSQL backend) for most of its transactions
    if url.startswith("postgresql+asyncpg"):
        # No pool_pre_ping: SQLAlchemy's asyncpg ping is BEGIN; ping; ROLLBACK (three round trips
        # per transaction, sqlalchemy#10226). A connection the server closed (restart,
        # pg_terminate_backend) is known to asyncpg without a round trip; the pool replaces it.
        engine = create_async_engine(url, pool_size=10, max_overflow=20)
        event.listen(engine.sync_engine.pool, "checkout", _asyncpg_alive)
        return engine
    return create_async_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def _asyncpg_alive(_dbapi_conn, record, _proxy) -> None:  # type: ignore[no-untyped-def]
    """Pool ``checkout`` hook: a connection the server closed is replaced (pessimistic disconnect
    handling without a round trip; ``asyncpg.Connection.is_closed``)."""
    conn = record.driver_connection
    if conn is None or conn.is_closed():
        raise DisconnectionError("the server closed this connection")


def _aware(dt: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; everything we store is UTC."""
    if dt is not None and dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)
    return dt


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
    apply_pragmas(dbapi_conn)


def alembic_config(url: str) -> Config:
    """An Alembic config pointing at the shipped ``migrations`` package."""
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


async def upgrade(url: str, revision: str = "head") -> None:
    """Apply migrations up to ``revision`` (in a worker thread: Alembic is synchronous).

    Raises:
        StoreError: the database could not be reached or migrated.
    """
    _ensure_sqlite_folder(url)
    try:
        await asyncio.to_thread(command.upgrade, alembic_config(url), revision)
    except Exception as e:
        raise StoreError(f"migrating the database failed: {type(e).__name__}: {e}") from e


class Database:
    """The engine plus a retrying transaction helper shared by the stores.

    Args:
        url: SQLAlchemy async URL (``sqlite+aiosqlite:///…`` or ``postgresql+asyncpg://…``).
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.dialect = self.engine.dialect.name
        # SQLite: the worker thread opens the file now, at construction (start-up; the App
        # constructs the Database off the event loop), never later inside a request.
        self._worker: SqliteWorker | None = SqliteWorker(self.url.split("///", 1)[1]) if self.dialect == "sqlite" else None
        self._compiled: dict[int, tuple[Any, Any]] = {}
        # the same pool, statements committing on their own (asyncpg: no BEGIN/COMMIT round trips)
        self._autocommit = None if self.dialect == "sqlite" else self.engine.execution_options(isolation_level="AUTOCOMMIT")

    @property
    def worker(self) -> SqliteWorker:
        """The SQLite worker thread (SQLite URLs only), started with the Database."""
        if self._worker is None:
            if self.dialect != "sqlite":
                raise RuntimeError("the SQLite worker serves SQLite databases only")
            self._worker = SqliteWorker(self.url.split("///", 1)[1])
        return self._worker

    @asynccontextmanager
    async def begin(self, what: str) -> AsyncIterator[AsyncConnection]:
        """One transaction; connection-level failures become :class:`StoreError` naming ``what``.

        Raises:
            StoreError: SQLAlchemy's errors and the unwrapped connection errors of
                :data:`CONNECTION_ERRORS` (a PostgreSQL outage), with the original as ``__cause__``.
        """
        try:
            async with self.engine.begin() as conn:
                yield conn
        except (OperationalError, DBAPIError, *CONNECTION_ERRORS) as e:
            raise store_error(what, e) from e

    @property
    def autocommit_engine(self) -> AsyncEngine:
        """The engine's pool with connections in autocommit mode (not SQLite), for holders of a
        long-lived connection (a worker's claims, the checkpoint writer); see :meth:`autocommit`.

        Raises:
            RuntimeError: the database is SQLite (its one writer connection is the worker thread's).
        """
        if self._autocommit is None:
            raise RuntimeError("SQLite statements run on the worker thread (Database.run)")
        return self._autocommit

    @asynccontextmanager
    async def autocommit(self, what: str) -> AsyncIterator[AsyncConnection]:
        """A pooled connection in autocommit mode (not SQLite): each statement is its own
        transaction, without the ``BEGIN`` and ``COMMIT`` round trips; connection-level
        failures become :class:`StoreError` as in :meth:`begin`.

        Raises:
            StoreError: as :meth:`begin`.
            RuntimeError: the database is SQLite (its one writer connection is the worker thread's).
        """
        engine = self.autocommit_engine
        try:
            async with engine.connect() as conn:
                yield conn
        except (OperationalError, DBAPIError, *CONNECTION_ERRORS) as e:
            raise store_error(what, e) from e

    def compiled(self, stmt: Any) -> Compiled:
        """``stmt`` compiled for this SQLite database, once per statement object (a bounded cache:
        build statements once, with ``bindparam``, not per call)."""
        c = self._compiled.get(id(stmt))
        if c is None or c[0] is not stmt:
            if len(self._compiled) >= COMPILED_CACHE_MAX:
                self._compiled.clear()
            c = self._compiled[id(stmt)] = (stmt, Compiled(stmt, self.engine.sync_engine.dialect))
        return c[1]  # type: ignore[no-any-return]

    async def run(self, body: Callable[[], Body[T]], what: str, *, atomic: bool = True, retry: bool = False) -> T:
        """Run a transaction body (:mod:`bot.store.tx`) and return what it returns.

        ``body`` is called once per attempt (a generator function, or a lambda making one).
        SQLite: the whole body runs on the worker thread (the file's one writer connection)
        in one hop; when ``atomic``, as one transaction that may share its ``COMMIT`` with
        others queued meanwhile (:meth:`SqliteWorker.transact`: a savepoint each; pass
        ``False`` for reads and single statements: autocommit). Elsewhere: one transaction on one
        connection when ``atomic``, else one autocommit connection (:meth:`autocommit`: each
        statement commits on its own, as on SQLite, and costs one round trip instead of three;
        under PostgreSQL's READ COMMITTED each statement had its own snapshot anyway);
        ``retry`` repeats the body after transient errors (only for bodies safe to repeat).

        Raises:
            ConstraintError: a statement broke a constraint (nothing was committed).
            StoreError: the database failed; the message names ``what``.
            Whatever the body raises (the transaction is rolled back).
        """
        if self.dialect == "sqlite":
            compiled = self.compiled
            if atomic:
                # committed together with the transactions queued meanwhile (group commit, savepoint each)
                return await self.worker.transact(lambda c: drive_sqlite(c, body(), compiled, what), what)
            return await self.worker.call(lambda c: drive_sqlite(c, body(), compiled, what), what)
        opened = self.begin if atomic else self.autocommit
        if not retry:
            async with opened(what) as conn:
                return await drive_sa(conn, body())
        async for attempt in self.retrying():
            with attempt:
                async with opened(what) as conn:
                    return await drive_sa(conn, body())
        raise AssertionError("unreachable: the retry policy re-raises the last error")

    async def execute(self, stmt: Any, params: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None, *, what: str) -> list[tuple[Any, ...]]:
        """Run one Core statement in its own transaction; returns its rows (``[]`` without rows).

        On SQLite it runs on the worker thread (the file's one writer connection),
        compiled once per statement object (:meth:`compiled`); a list of parameter
        mappings is an executemany committed together with other writes queued meanwhile
        (group commit). Elsewhere through the engine: one statement in autocommit, a list
        of mappings in one transaction.

        Raises:
            StoreError: the database failed; the message names ``what``.
        """
        if self.dialect == "sqlite" and (type(params) is list or (isinstance(params, Sequence) and not isinstance(params, Mapping))):
            comp = self.compiled(stmt)
            await self.worker.write(comp.sql, [comp.params(p) for p in params], what)
            return []
        many = params is not None and not isinstance(params, Mapping)
        # one statement: autocommit; an executemany stays one transaction whatever the driver
        # (asyncpg's executemany is atomic by itself, not every driver's is)
        return await self.run(lambda: one(stmt, params), what, atomic=many)

    def retrying(self, attempts: int = 3) -> AsyncRetrying:
        """Retry policy for transactions that are safe to repeat (transient errors only)."""
        return AsyncRetrying(
            stop=stop_after_attempt(attempts),
            wait=wait_exponential_jitter(multiplier=0.05, max=1.0, jitter=0.05),
            retry=retry_if_exception(lambda e: isinstance(e, StoreError) and _transient(e.__cause__ or e)),
            reraise=True,
        )

    async def dispose(self) -> None:
        """Stop the worker (after its queued work) and close the engine's connections."""
        if self._worker is not None:
            await asyncio.to_thread(self._worker.close)
            self._worker = None
        await self.engine.dispose()
