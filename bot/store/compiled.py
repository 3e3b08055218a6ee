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
        procs = [col.type.dialect_impl(dialect).result_processor(dialect, None) for col in cols] if cols is not None else []
        self._result = tuple((i, p) for i, p in enumerate(procs) if p is not None)

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
        """Result rows through the selected columns' result processors (a hot path: tail reads)."""
        conv = self._result
        if not conv:
            return [tuple(r) for r in raw] if raw and type(raw[0]) is not tuple else list(raw)  # type: ignore[arg-type]
        if len(conv) == 1:
            (i, p), j = conv[0], conv[0][0] + 1
            return [(*r[:i], p(r[i]), *r[j:]) for r in raw]
        out = []
        for r in raw:
            row = list(r)
            for i, p in conv:
                row[i] = p(row[i])
            out.append(tuple(row))
        return out


__all__ = ["Compiled"]
