"""SQLAlchemy Core statements compiled once and run on the SQLite worker thread.

The embedded database has one writer connection per file (the
:class:`bot.store.sqlite_worker.SqliteWorker`), and its SQL is generated from the
same Core statements the PostgreSQL path executes: a statement is compiled for the
SQLite dialect once, and its parameters and result columns go through the column
types' own bind/result processors (public ``TypeEngine`` API), so rows written here
read back identically through SQLAlchemy and the other way round.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy.engine import Dialect
from sqlalchemy.sql import Executable


class Compiled:
    """One Core statement compiled for ``dialect``.

    Args:
        stmt: an insert/update/delete/select; parameters are named by
            ``bindparam(...)`` or (inserts without values) by column name.
        dialect: the SQLite dialect of the database's engine.

    Attributes:
        sql: the SQL text with ``?`` placeholders.
        keys: parameter names in placeholder order.
    """

    def __init__(self, stmt: Executable, dialect: Dialect) -> None:
        c = stmt.compile(dialect=dialect)  # type: ignore[attr-defined]
        self.sql = str(c)
        self.keys: tuple[str, ...] = tuple(c.positiontup or ())
        self._procs = tuple(c.binds[k].type.dialect_impl(dialect).bind_processor(dialect) for k in self.keys)
        self._fixed = {k: c.binds[k].value for k in self.keys if c.binds[k].value is not None or not c.binds[k].required}
        cols = getattr(stmt, "exported_columns", None)  # select columns, or an insert's RETURNING
        self._result = tuple(col.type.dialect_impl(dialect).result_processor(dialect, None) for col in cols) if cols is not None else ()

    def params(self, values: Mapping[str, Any]) -> tuple[Any, ...]:
        """Positional parameters from ``values`` (by name), through the bind processors.

        Raises:
            KeyError: a parameter without a value (and without one in the statement).
        """
        out = []
        for k, p in zip(self.keys, self._procs):
            v = values[k] if k in values else self._fixed[k]
            out.append(p(v) if p is not None else v)
        return tuple(out)

    def rows(self, raw: Sequence[Sequence[Any]]) -> list[tuple[Any, ...]]:
        """Result rows through the selected columns' result processors."""
        procs = self._result
        return [tuple(p(v) if p is not None else v for p, v in zip(procs, r)) for r in raw]


__all__ = ["Compiled"]
