"""The audit trail: who did what, where, when, and how it ended.

Actions recorded: ``run.start``, ``run.cancel``, ``run.rerun``, ``run.approve``,
``run.reject``, ``schedule.create``/``schedule.delete``/…, ``token.create``,
``token.revoke`` and ``permission.denied`` (a refused request, with the rule in
``detail``). Outcomes: ``ok``, ``denied``, ``failed``. ``actor`` is the platform user
id, or ``api:NAME`` for an API token, or ``cli`` for the ``baton`` command.

Rows older than ``[retention] audit_days`` are deleted by :meth:`AuditStore.prune`
(the server runs it periodically, together with the webhook delivery log).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, delete, select
from sqlalchemy.dialects import sqlite

from bot.store.compiled import Compiled
from bot.store.db import Database, _aware
from bot.store.tables import audit_log, webhook_deliveries, webhook_outbox
from bot.store.tx import Body


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One audit row."""

    actor: str
    platform: str
    action: str
    outcome: str = "ok"
    channel: str | None = None
    thread: str | None = None
    target: str | None = None
    detail: str | None = None
    at: datetime | None = None
    id: int | None = None

    def row(self) -> dict[str, Any]:
        """The row's columns (``at`` defaults to now)."""
        return {
            "at": self.at or datetime.now(UTC),
            "actor": self.actor,
            "platform": self.platform,
            "channel": self.channel,
            "thread": self.thread,
            "action": self.action,
            "target": self.target,
            "outcome": self.outcome,
            "detail": self.detail,
        }

    def json(self) -> dict[str, Any]:
        """As the API returns it."""
        d = self.row()
        d["at"] = d["at"].isoformat()
        d["id"] = self.id
        return d


_COLS = ("at", "actor", "platform", "channel", "thread", "action", "target", "outcome", "detail")
_RECORD = audit_log.insert().values(**{c: bindparam(c) for c in _COLS})
_SQLITE_RECORD = Compiled(_RECORD, sqlite.dialect())
_PRUNE = (
    delete(audit_log).where(audit_log.c.at < bindparam("cut", type_=audit_log.c.at.type)),
    delete(webhook_deliveries).where(webhook_deliveries.c.at < bindparam("cut", type_=webhook_deliveries.c.at.type)),
    delete(webhook_outbox).where(webhook_outbox.c.created_at < bindparam("cut", type_=webhook_outbox.c.created_at.type), webhook_outbox.c.status != "pending"),
)
_RECENT: dict[tuple[bool, bool, bool], Any] = {}

AUDIT_SQL = _SQLITE_RECORD.sql
"""The audit row insert as SQLite SQL (``?`` placeholders, :func:`sqlite_params` order), compiled from
the same Core statement :meth:`AuditStore.record` runs; for callers writing it inside their own
transaction on the SQLite worker thread."""


def sqlite_params(e: AuditEntry) -> tuple[Any, ...]:
    """Parameters of :data:`AUDIT_SQL` (converted by the column types, as SQLAlchemy stores them)."""
    return _SQLITE_RECORD.params(e.row())


def _recent_stmt(before: bool, actor: bool, action: bool) -> Any:
    got = _RECENT.get((before, actor, action))
    if got is None:
        q = select(*(audit_log.c[c] for c in (*_COLS, "id"))).order_by(audit_log.c.id.desc()).limit(bindparam("limit"))
        if before:
            q = q.where(audit_log.c.id < bindparam("before"))
        if actor:
            q = q.where(audit_log.c.actor == bindparam("actor"))
        if action:
            q = q.where(audit_log.c.action == bindparam("action"))
        got = _RECENT[(before, actor, action)] = q
    return got


class AuditStore:
    """Audit rows in the ``audit_log`` table (on SQLite through the file's one writer thread).

    Args:
        db: the database.
    """

    def __init__(self, db: Database) -> None:
        self.db = db

    async def record(self, entry: AuditEntry) -> None:
        """Append one row (its own transaction).

        Raises:
            StoreError: the database failed.
        """
        await self.db.execute(_RECORD, entry.row(), what="recording an audit row")

    async def recent(self, limit: int = 20, *, before: int | None = None, actor: str | None = None, action: str | None = None) -> list[AuditEntry]:
        """Newest rows first; ``before`` is an id cursor."""
        stmt = _recent_stmt(before is not None, bool(actor), bool(action))
        rows = await self.db.execute(stmt, {"limit": limit, "before": before, "actor": actor, "action": action}, what="reading the audit trail")
        out = []
        for r in rows:
            m = dict(zip((*_COLS, "id"), r))
            out.append(
                AuditEntry(m["actor"], m["platform"], m["action"], m["outcome"], m["channel"], m["thread"], m["target"], m["detail"], _aware(m["at"]), m["id"])
            )
        return out

    async def prune(self, days: float) -> int:
        """Delete audit rows, delivery records and settled outbox rows older than ``days``; returns audit rows deleted."""
        if days <= 0:
            return 0
        cut = datetime.now(UTC) - timedelta(days=days)

        def body() -> Body[int]:
            n = (yield _PRUNE[0], {"cut": cut}).rowcount
            for stmt in _PRUNE[1:]:
                yield stmt, {"cut": cut}
            return int(n or 0)

        return await self.db.run(body, "pruning the audit trail")


def format_entries(entries: list[AuditEntry]) -> str:
    """The ``/audit`` chat reply: one line per row, newest first."""
    if not entries:
        return "The audit trail is empty."
    lines = []
    for e in entries:
        where = ":".join(x for x in (e.platform, e.channel or "", e.thread or "") if x)
        at = e.at.strftime("%Y-%m-%d %H:%M:%S") if e.at else "-"
        tail = f" — {e.detail}" if e.detail else ""
        lines.append(f"{at} {e.actor} {e.action} {e.target or ''} [{e.outcome}] @{where}{tail}")
    return "\n".join(lines)


__all__ = ["AUDIT_SQL", "AuditEntry", "AuditStore", "format_entries", "sqlite_params"]
