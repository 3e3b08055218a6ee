"""Transactions written once, run on either backend.

A store method describes its transaction as a *body*: a generator that yields
``(statement, params)`` pairs of SQLAlchemy Core statements and receives each one's
:class:`Result`, deciding what to run next from it (a thread id looked up, a row
count checked)::

    def body():
        row = (yield select_thread, {"platform": "slack", ...}).first()
        if row is None:
            return None
        return (yield insert_message, {"tid": row[0], ...}).inserted_id

    message_id = await db.run(body, "storing a message")

:meth:`bot.store.db.Database.run` drives the body:

* SQLite: on the file's one writer thread (:mod:`bot.store.sqlite_worker`), the
  whole body in one hop, each statement compiled once
  (:class:`bot.store.compiled.Compiled`); ``BEGIN IMMEDIATE … COMMIT`` around it
  when it is atomic.
* PostgreSQL (any other URL): the same statements on one ``AsyncConnection`` in one
  transaction.

``params`` is a mapping (one execution) or a list of mappings (executemany; the
result has no rows). :class:`Raw` is the escape hatch for work that is different
per backend by nature (a :class:`bot.store.sessions.TxHook`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Generator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

from bot.store.compiled import Compiled
from bot.store.errors import ConstraintError

T = TypeVar("T")

_NONE: Mapping[str, Any] = {}


class Result:
    """What one statement returned.

    Attributes:
        rows: result rows as tuples (``[]`` for statements without rows); column
            values converted by the column types (aware or naive datetimes, as the
            backend's driver gives them).
        rowcount: rows changed (``-1`` when the driver does not know).
    """

    __slots__ = ("_id", "rowcount", "rows")

    def __init__(self, rows: list[tuple[Any, ...]], rowcount: int, inserted: Any = None) -> None:
        self.rows = rows
        self.rowcount = rowcount
        self._id = inserted

    @property
    def inserted_id(self) -> int:
        """The primary key of the row a single-row ``INSERT`` (without ``ON CONFLICT``) just wrote:
        SQLite's ``lastrowid`` (cheaper than ``RETURNING``), SQLAlchemy's ``inserted_primary_key`` elsewhere."""
        got = self._id
        return int(got if type(got) is int else got.inserted_primary_key[0])

    def first(self) -> tuple[Any, ...] | None:
        """The first row, or ``None``."""
        return self.rows[0] if self.rows else None

    def scalar(self) -> Any:
        """The first column of the first row, or ``None``."""
        return self.rows[0][0] if self.rows else None


@dataclass(frozen=True, slots=True)
class Raw:
    """Backend-specific work yielded by a body; the body receives what the callable returned.

    Attributes:
        sqlite: called on the worker thread with its ``sqlite3.Connection``.
        sa: awaited with the transaction's ``AsyncConnection``.
    """

    sqlite: Callable[[sqlite3.Connection], Any]
    sa: Callable[[AsyncConnection], Awaitable[Any]]


Body = Generator[Any, Any, T]
"""A transaction body (see the module docs)."""


def one(stmt: Any, params: Any = None) -> Body[list[tuple[Any, ...]]]:
    """A body of one statement; returns its rows."""
    return (yield stmt, params).rows


def drive_sqlite(conn: sqlite3.Connection, body: Body[T], compiled: Callable[[Any], Compiled], what: str) -> T:
    """Run ``body`` on ``conn`` (the worker thread); ``compiled(stmt)`` gives a statement's SQL,
    ``what`` names the work in errors.

    Raises:
        ConstraintError: a statement broke a constraint (the transaction is rolled back by the caller).
        sqlite3.Error: any other database error (the worker reports it as a StoreError).
    """
    try:
        op = next(body)
        while True:
            if type(op) is Raw:
                res: Any = op.sqlite(conn)
            else:
                stmt, params = op
                c = compiled(stmt)
                if type(params) is list:
                    cur = conn.executemany(c.sql, [c.params(p) for p in params])
                    res = Result([], cur.rowcount)
                else:
                    cur = conn.execute(c.sql, c.params(params or _NONE))
                    raw = cur.fetchall()
                    res = Result(c.rows(raw) if raw else [], cur.rowcount, cur.lastrowid)
            op = body.send(res)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    except sqlite3.IntegrityError as e:
        raise ConstraintError(f"database error while {what}: {e}") from e


async def drive_sa(conn: AsyncConnection, body: Body[T]) -> T:
    """Run ``body`` on ``conn`` (one transaction, begun and ended by the caller)."""
    try:
        op = next(body)
        while True:
            if type(op) is Raw:
                res: Any = await op.sa(conn)
            else:
                stmt, params = op
                cr = await conn.execute(stmt, params)
                res = Result([tuple(r) for r in cr.all()] if cr.returns_rows else [], cr.rowcount, cr)
            op = body.send(res)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


__all__ = ["Body", "Raw", "Result", "drive_sa", "drive_sqlite", "one"]
