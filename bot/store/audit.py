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

from sqlalchemy import delete, select

from bot.store.db import Database, _aware
from bot.store.tables import audit_log, webhook_deliveries, webhook_outbox

_TS = "%Y-%m-%d %H:%M:%S.%f"


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


AUDIT_SQL = (
    "INSERT INTO audit_log(at, actor, platform, channel, thread, action, target, outcome, detail) VALUES (?,?,?,?,?,?,?,?,?)"
)


def sqlite_params(e: AuditEntry) -> tuple[Any, ...]:
    """Parameters of :data:`AUDIT_SQL` (SQLite worker path; timestamps as SQLAlchemy stores them)."""
    r = e.row()
    return (_ts(r["at"]), r["actor"], r["platform"], r["channel"], r["thread"], r["action"], r["target"], r["outcome"], r["detail"])


def _ts(dt: datetime) -> str:
    return dt.astimezone(UTC).replace(tzinfo=None).strftime(_TS)


class AuditStore:
    """Audit rows in the ``audit_log`` table.

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
        if self.db.dialect == "sqlite":
            params = sqlite_params(entry)
            await self.db.worker.call(lambda c: c.execute(AUDIT_SQL, params), "recording an audit row")
            return
        async with self.db.begin("recording an audit row") as conn:
            await conn.execute(audit_log.insert().values(**entry.row()))

    async def recent(self, limit: int = 20, *, before: int | None = None, actor: str | None = None, action: str | None = None) -> list[AuditEntry]:
        """Newest rows first; ``before`` is an id cursor."""
        q = select(audit_log).order_by(audit_log.c.id.desc()).limit(limit)
        if before is not None:
            q = q.where(audit_log.c.id < before)
        if actor:
            q = q.where(audit_log.c.actor == actor)
        if action:
            q = q.where(audit_log.c.action == action)
        async with self.db.begin("reading the audit trail") as conn:
            rows = (await conn.execute(q)).mappings().all()
        return [
            AuditEntry(
                r["actor"], r["platform"], r["action"], r["outcome"], r["channel"], r["thread"], r["target"], r["detail"], _aware(r["at"]), r["id"]
            )
            for r in rows
        ]

    async def prune(self, days: float) -> int:
        """Delete audit rows, delivery records and settled outbox rows older than ``days``; returns audit rows deleted."""
        if days <= 0:
            return 0
        cutoff = datetime.now(UTC) - timedelta(days=days)
        async with self.db.begin("pruning the audit trail") as conn:
            n = (await conn.execute(delete(audit_log).where(audit_log.c.at < cutoff))).rowcount
            await conn.execute(delete(webhook_deliveries).where(webhook_deliveries.c.at < cutoff))
            await conn.execute(delete(webhook_outbox).where(webhook_outbox.c.created_at < cutoff, webhook_outbox.c.status != "pending"))
        return int(n or 0)


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
