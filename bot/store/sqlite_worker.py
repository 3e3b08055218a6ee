"""One thread that owns one SQLite connection: the hot path for the embedded database.

Why: through SQLAlchemy's async engine, aiosqlite hops to its own thread for every
call (begin, execute, commit), which costs 0.5–4 ms per small transaction on a busy
2-core machine. Here a transaction is one hop: the event loop hands a function to
this thread and awaits a future. Writes that arrive while the thread is busy are
committed together (group commit), so a 50-way fan-out finishing at once pays one
commit. SQLite allows one writer at a time anyway; one writer thread per process
also removes lock contention between our own connections. Reads run on the same
thread (they are short; WAL lets other processes read concurrently).

The event loop never blocks: it only enqueues and awaits.

Transactions are grouped too (:meth:`SqliteWorker.transact`): the transactions queued
while the thread was busy run one after another inside one ``BEGIN IMMEDIATE … COMMIT``,
each in its own ``SAVEPOINT`` (one that fails is rolled back alone), and none is reported
done before that ``COMMIT``. A commit writes every page the transaction dirtied to the WAL:
about 0.2 ms of the ~0.5 ms a Slack delivery's admission transaction costs this thread,
paid once per group instead of once per transaction under a burst.

Checkpoints: by default SQLite checkpoints the WAL inside whichever commit pushes it
past 1,000 pages, so one commit in a few hundred pays an fsync of the database file
(milliseconds). The worker's connection turns that off and a second thread runs a
``PASSIVE`` checkpoint once a second while there are writes
(https://www.sqlite.org/wal.html#ckpt: passive checkpoints never block writers).
If that thread cannot keep up, a ``TRUNCATE`` checkpoint runs when the WAL passes
``WAL_LIMIT_PAGES``, so the file stays bounded.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from bot.store.errors import StoreError

T = TypeVar("T")

_STOP = object()
GROUP_MAX = 64
"""At most this many queued transactions (or writes) share one commit."""
CHECKPOINT_INTERVAL_S = 1.0
WAL_LIMIT_PAGES = 20000


class SqliteWorkerError(StoreError):
    """A statement failed in the worker; the message names what was being done."""


class _GroupLost(Exception):
    """SQLite ended a group's transaction itself (its transactions are run again one by one)."""


def apply_pragmas(conn: Any) -> None:
    """Baton's SQLite settings on any DB-API connection (sqlite3, or aiosqlite through SQLAlchemy):
    WAL journal, synchronous=NORMAL, foreign keys on, a 30 s busy timeout."""
    cur = conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def connect(path: str) -> sqlite3.Connection:
    """Open ``path`` with Baton's pragmas (:func:`apply_pragmas`)."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    apply_pragmas(conn)
    return conn


class SqliteWorker:
    """Runs functions against one SQLite connection on a dedicated thread.

    Args:
        path: the database file.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._q: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._main, name="baton-sqlite", daemon=True)
        self._ready = threading.Event()
        self._open_error: BaseException | None = None
        self._dirty = threading.Event()
        self._stopping = threading.Event()
        # close() sets ``_closed`` and queues the stop under this lock, and work is queued under
        # it only while not closed: nothing lands behind the stop (where no thread would take it)
        self._put_lock = threading.Lock()
        self._closed = False
        self._thread.start()
        self._ready.wait()
        if self._open_error is not None:
            raise SqliteWorkerError(f"cannot open {path}: {self._open_error}") from self._open_error
        self._checkpointer = threading.Thread(target=self._checkpoints, name="baton-sqlite-checkpoint", daemon=True)
        self._checkpointer.start()

    async def call(self, fn: Callable[[sqlite3.Connection], T], what: str) -> T:
        """Run ``fn(conn)`` on the worker thread and return its result.

        ``fn`` runs in autocommit mode: it issues ``BEGIN``/``COMMIT`` itself when it
        writes more than one statement (use :func:`transaction`).

        Raises:
            SqliteWorkerError: ``fn`` raised ``sqlite3.Error`` (after retrying a
                locked/busy database twice); the message names ``what``.
        """
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._put(("call", fn, what, fut, loop))
        return await asyncio.shield(fut)

    async def transact(self, fn: Callable[[sqlite3.Connection], T], what: str) -> T:
        """Run ``fn(conn)`` as one transaction on the worker thread and return its result
        once it is committed.

        Transactions queued while the thread is busy are committed together (see the
        module docs): each runs in its own ``SAVEPOINT`` inside a shared ``BEGIN IMMEDIATE …
        COMMIT``, sees the writes of those before it in the group, and is rolled back alone
        when it raises. ``fn`` must not begin or end transactions itself, and must be safe
        to run again (a group whose commit fails runs each of its transactions again on its own).

        Raises:
            SqliteWorkerError: a statement failed (the message names ``what``); nothing of
                ``fn`` was committed.
            Whatever ``fn`` raises (its writes are rolled back).
        """
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._put(("tx", fn, what, fut, loop))
        return await asyncio.shield(fut)

    async def write(self, sql: str, rows: Sequence[Sequence[Any]], what: str) -> None:
        """``executemany(sql, rows)``, committed together with other writes queued meanwhile."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._put(("write", (sql, rows), what, fut, loop))
        await asyncio.shield(fut)

    def _put(self, item: tuple[Any, ...]) -> None:
        """Queue ``item`` for the thread.

        Raises:
            SqliteWorkerError: :meth:`close` has begun (the thread takes nothing queued after
                its stop: the caller would wait forever).
        """
        with self._put_lock:
            if self._closed:
                raise SqliteWorkerError(f"database error while {item[2]}: {self.path} is closed")
            self._q.put(item)

    def close(self) -> None:
        """Finish queued work, then close the connection and stop the threads (a last checkpoint
        runs). Work submitted from now on raises :class:`SqliteWorkerError`."""
        with self._put_lock:
            self._closed = True
            self._q.put(_STOP)
        if self._thread.is_alive():
            self._thread.join()
        # Order matters: ``_stopping`` first, then the wake-up. The checkpoint thread reads
        # ``_stopping`` *after* clearing ``_dirty``, so a wake-up that its clear() wipes
        # was preceded by ``_stopping.set()`` and is seen (fault 14.11).
        self._stopping.set()
        self._dirty.set()
        if self._checkpointer.is_alive():
            self._checkpointer.join()

    def _checkpoints(self) -> None:
        try:
            conn = connect(self.path)
        except sqlite3.Error:
            return  # the worker reports open errors; without this thread SQLite's defaults would be better
        try:
            while True:
                self._dirty.wait()
                self._stopping.wait(CHECKPOINT_INTERVAL_S)  # gather a second of writes, or stop early
                self._dirty.clear()
                # Read after the clear, never before it: close() may have signalled between the
                # timed-out wait and the clear, wiping its wake-up; its earlier ``_stopping.set()``
                # is seen here (a flag read before the clear would miss it and wait forever).
                stopping = self._stopping.is_set()
                try:
                    busy, wal_pages, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    if wal_pages > WAL_LIMIT_PAGES or stopping:
                        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                except sqlite3.Error:
                    pass  # busy or locked: the next round retries
                if stopping:
                    return
        finally:
            conn.close()

    # -- the thread ------------------------------------------------------

    def _main(self) -> None:
        try:
            conn = connect(self.path)
            conn.execute("PRAGMA wal_autocheckpoint=0")  # checkpoints run on their own thread (see module docs)
        except BaseException as e:  # reported to the constructor
            self._open_error = e
            self._ready.set()
            return
        self._ready.set()
        try:
            pending: Any = None
            while True:
                item = pending if pending is not None else self._q.get()
                pending = None
                if item is _STOP:
                    return
                self._dirty.set()
                kind = item[0]
                if kind == "call":
                    self._run_call(conn, item)
                    continue
                batch = [item]
                while len(batch) < GROUP_MAX:
                    try:
                        nxt = self._q.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is _STOP or nxt[0] != kind:
                        pending = nxt
                        break
                    batch.append(nxt)
                if kind == "tx":
                    self._run_group(conn, batch)
                else:
                    self._run_writes(conn, batch)
        finally:
            conn.close()

    @staticmethod
    def _settle_all(items: list[Any], outcomes: list[tuple[Any, BaseException | None]]) -> None:
        """Report a group's outcomes: one wake-up of each waiting loop, not one per transaction."""
        by_loop: dict[Any, list[tuple[Any, Any, BaseException | None]]] = {}
        for item, (result, error) in zip(items, outcomes, strict=True):
            by_loop.setdefault(item[4], []).append((item[3], result, error))
        for loop, done in by_loop.items():
            try:
                loop.call_soon_threadsafe(_resolve_all, done)
            except RuntimeError:  # the loop is closed; nobody is waiting any more
                pass

    def _run_group(self, conn: sqlite3.Connection, batch: list[Any]) -> None:
        """Transactions of :meth:`transact`: one ``BEGIN IMMEDIATE … COMMIT``, a savepoint each."""
        if len(batch) == 1:
            _, fn, what, fut, loop = batch[0]
            self._run_call(conn, ("call", lambda c: transaction(c, fn), what, fut, loop))
            return
        for attempt in range(3):
            try:
                conn.execute("BEGIN IMMEDIATE")
                break
            except sqlite3.Error as e:  # any error (busy, corrupt file, not a database): the callers hear it
                _rollback(conn)
                if isinstance(e, sqlite3.OperationalError) and _busy(e) and attempt < 2:
                    time.sleep(0.05 * 2**attempt)
                    continue
                self._settle_all(batch, [(None, SqliteWorkerError(f"database error while {it[2]}: {e}")) for it in batch])
                return
        outcomes: list[tuple[Any, BaseException | None]] = []
        try:
            for _, fn, what, _, _ in batch:
                conn.execute("SAVEPOINT baton_tx")
                try:
                    result = fn(conn)
                except BaseException as e:
                    if not conn.in_transaction:  # SQLite rolled the whole group back (I/O error, full disk…)
                        raise _GroupLost from e
                    conn.execute("ROLLBACK TO baton_tx")
                    conn.execute("RELEASE baton_tx")
                    err = SqliteWorkerError(f"database error while {what}: {e}") if isinstance(e, sqlite3.Error) else e
                    outcomes.append((None, err))
                    continue
                conn.execute("RELEASE baton_tx")
                outcomes.append((result, None))
            conn.execute("COMMIT")
        except (sqlite3.Error, _GroupLost):
            # the group as a whole failed: nothing of it was committed; each transaction
            # runs again on its own, so only the one at fault reports an error
            _rollback(conn)
            for _, fn, what, fut, loop in batch:
                self._run_call(conn, ("call", lambda c, fn=fn: transaction(c, fn), what, fut, loop))
            return
        self._settle_all(batch, outcomes)

    @staticmethod
    def _settle(item: Any, result: Any = None, error: BaseException | None = None) -> None:
        _, _, _, fut, loop = item
        try:
            loop.call_soon_threadsafe(_resolve, fut, result, error)
        except RuntimeError:  # the loop is closed; nobody is waiting any more
            pass

    def _run_call(self, conn: sqlite3.Connection, item: Any) -> None:
        _, fn, what, _, _ = item
        for attempt in range(3):
            try:
                result = fn(conn)
            except sqlite3.OperationalError as e:
                _rollback(conn)
                if _busy(e) and attempt < 2:
                    time.sleep(0.05 * 2**attempt)
                    continue
                self._settle(item, error=SqliteWorkerError(f"database error while {what}: {e}"))
                return
            except sqlite3.Error as e:
                _rollback(conn)
                self._settle(item, error=SqliteWorkerError(f"database error while {what}: {e}"))
                return
            except BaseException as e:
                _rollback(conn)
                self._settle(item, error=e)
                return
            self._settle(item, result)
            return

    def _run_writes(self, conn: sqlite3.Connection, batch: list[Any]) -> None:
        error: BaseException | None = None
        for attempt in range(3):
            try:
                conn.execute("BEGIN IMMEDIATE")
                for _, (sql, rows), _, _, _ in batch:
                    conn.executemany(sql, rows)
                conn.execute("COMMIT")
                error = None
                break
            except sqlite3.Error as e:
                _rollback(conn)
                error = e
                if isinstance(e, sqlite3.OperationalError) and _busy(e) and attempt < 2:
                    time.sleep(0.05 * 2**attempt)
                    continue
                break
        if error is None:
            for item in batch:
                self._settle(item)
            return
        if len(batch) > 1:  # one bad write must not fail its neighbours: retry one by one
            for item in batch:
                self._run_writes(conn, [item])
            return
        self._settle(batch[0], error=SqliteWorkerError(f"database error while {batch[0][2]}: {error}"))


def transaction(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    """Run ``fn`` inside ``BEGIN IMMEDIATE … COMMIT`` (rolled back on error)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        out = fn(conn)
    except BaseException:
        _rollback(conn)
        raise
    conn.execute("COMMIT")
    return out


def _busy(e: sqlite3.OperationalError) -> bool:
    msg = str(e).lower()
    return "locked" in msg or "busy" in msg


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass


def _resolve_all(done: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for fut, result, error in done:
        _resolve(fut, result, error)


def _resolve(fut: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if fut.done():
        return
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result(result)
