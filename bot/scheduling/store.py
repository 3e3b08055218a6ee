"""The store of the ``schedules`` table (defined in :mod:`bot.store.tables`): the source of truth for schedules.

Every instant is aware UTC in the database. Several processes may share one
database: a firing is recorded with a compare-and-set on the scheduled instant
(:meth:`ScheduleStore.claim_firings`), so exactly one of them runs it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import bindparam, case, delete, or_, select, update

from bot.core import ThreadKey
from bot.store import Database
from bot.store.tables import schedules, threads  # the table is defined once, in bot.store.tables
from bot.store.tx import Body

from .spec import ScheduleSpec

__all__ = [
    "DEFAULT_MIN_INTERVAL_S",
    "DEFAULT_MISFIRE_GRACE_S",
    "OVERLAP_POLICIES",
    "Overlap",
    "ScheduleRow",
    "ScheduleStore",
    "schedules",
]

Overlap = Literal["skip", "queue", "allow"]
OVERLAP_POLICIES: tuple[str, ...] = ("skip", "queue", "allow")
DEFAULT_MISFIRE_GRACE_S = 300
"""Seconds a firing may be late and still run (5 minutes; see the module doc)."""
DEFAULT_MIN_INTERVAL_S = 60.0
"""Default policy: no schedule may fire more often than once a minute."""


def _utc(dt: datetime | str | None) -> datetime | None:
    """Everything stored is UTC; SQLite hands back naive datetimes (or, read raw, their text)."""
    if dt is None:
        return None
    if isinstance(dt, str):
        dt = datetime.fromisoformat(dt)
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def _unfired_at(instant: Any) -> Any:
    """SQL: the row's ``last_fired_at`` is unset or earlier than ``instant`` (a firing at
    ``instant`` is not recorded yet)."""
    last = schedules.c.last_fired_at
    return or_(last.is_(None), last < instant)


def _fired_forward(instant: Any) -> Any:
    """SQL value for ``last_fired_at``: ``instant`` unless the row already holds a later one
    (it never moves backwards; a process with a stale copy must not reopen a claimed firing)."""
    return case((_unfired_at(instant), instant), else_=schedules.c.last_fired_at)


@dataclass(frozen=True, slots=True)
class ScheduleRow:
    """A schedule as stored, with its thread's key.

    Attributes:
        id: the schedule id (also the APScheduler job id, as a string).
        key: the thread the schedule was created in; its runs and notices go there.
        created_by: the platform user id of the author.
        phrase: the schedule phrase as typed (``"every weekday at 9am run standup"``).
        workflow, kind, expression, start, timezone, description: the
            :class:`ScheduleSpec` fields (see :meth:`spec`).
        status: ``active`` | ``paused`` | ``finished``.
        created_at, last_fired_at, next_fire_at: aware UTC instants (or ``None``).
        overlap: ``skip`` | ``queue`` | ``allow``.
        misfire_grace_s: how late (seconds) a firing may be and still run.
        roles: the author's roles when the schedule was made; each firing checks
            ``[permissions]`` again for ``created_by`` with them.
    """

    id: int
    thread_id: int
    key: ThreadKey
    created_by: str
    phrase: str
    workflow: str
    kind: str
    expression: str
    start: str | None
    timezone: str
    description: str
    status: str
    created_at: datetime
    last_fired_at: datetime | None
    next_fire_at: datetime | None
    overlap: str
    misfire_grace_s: int
    roles: tuple[str, ...] = ()

    def spec(self) -> ScheduleSpec:
        """Rebuild the :class:`ScheduleSpec` (raises ``ValueError`` if the stored fields are inconsistent)."""
        expr: str | int = int(self.expression) if self.kind == "interval" else self.expression
        return ScheduleSpec(
            kind=self.kind,  # type: ignore[arg-type]
            expression=expr,
            timezone=self.timezone,
            description=self.description,
            workflow=self.workflow,
            source=self.phrase,
            start=self.start,
        )




_ROW_COLS = [c for c in schedules.c]


def _row(r: Any) -> ScheduleRow:
    return ScheduleRow(
        id=int(r["id"]),
        thread_id=int(r["thread_id"]),
        key=ThreadKey(r["platform"], r["channel"], r["thread"]),
        created_by=r["created_by"],
        phrase=r["phrase"],
        workflow=r["workflow"],
        kind=r["kind"],
        expression=r["expression"],
        start=r["start"],
        timezone=r["timezone"],
        description=r["description"],
        status=r["status"],
        created_at=_utc(r["created_at"]),  # type: ignore[arg-type]
        last_fired_at=_utc(r["last_fired_at"]),
        next_fire_at=_utc(r["next_fire_at"]),
        overlap=r["overlap"],
        misfire_grace_s=int(r["misfire_grace_s"]),
        roles=_roles(r["created_roles"]),
    )


def _roles(raw: str | None) -> tuple[str, ...]:
    """The stored ``created_roles`` JSON array (``None``: a schedule older than migration 0008)."""
    if not raw:
        return ()
    try:
        got = json.loads(raw)
    except ValueError:
        return ()
    return tuple(str(r) for r in got) if isinstance(got, list) else ()


_NAMES = tuple(c.name for c in _ROW_COLS) + ("platform", "channel", "thread")
_SELECT = select(*_ROW_COLS, threads.c.platform, threads.c.channel, threads.c.thread).join(threads, threads.c.id == schedules.c.thread_id)
_GET = _SELECT.where(schedules.c.id == bindparam("sid"))
_INSERT = (
    schedules.insert()
    .values(**{c: bindparam(c) for c in (
        "thread_id", "created_by", "phrase", "workflow", "kind", "expression", "start", "timezone", "description",
        "status", "created_at", "last_fired_at", "next_fire_at", "overlap", "misfire_grace_s", "created_roles",
    )})
    .returning(schedules.c.id)
)
_STATE = update(schedules).where(schedules.c.id == bindparam("b_id"))
_SET_STATE = {  # by whether a firing is recorded: last_fired_at only ever moves forward
    False: _STATE.values(status=bindparam("b_status"), next_fire_at=bindparam("b_next")),
    True: _STATE.values(status=bindparam("b_status"), next_fire_at=bindparam("b_next"), last_fired_at=_fired_forward(bindparam("b_last"))),
}
_CLAIM = (  # compare-and-set on the scheduled instant
    update(schedules)
    .where(schedules.c.id == bindparam("b_id"), schedules.c.status == "active", _unfired_at(bindparam("b_last")))
    .values(status=bindparam("b_status"), next_fire_at=bindparam("b_next"), last_fired_at=bindparam("b_last"))
)
_DELETE = delete(schedules).where(schedules.c.id == bindparam("sid"))
_LIST: dict[tuple[bool, bool, int | None], Any] = {}
_INSERT_MANY: dict[tuple[str, ...], Any] = {}


def _list_stmt(platform: bool, channel: bool, statuses: int | None) -> Any:
    """The ``ScheduleStore.list`` query for one combination of filters (built once each)."""
    got = _LIST.get((platform, channel, statuses))
    if got is None:
        q = _SELECT.order_by(schedules.c.id)
        if platform:
            q = q.where(threads.c.platform == bindparam("platform"))
        if channel:
            q = q.where(threads.c.channel == bindparam("channel"))
        if statuses is not None:
            q = q.where(schedules.c.status.in_([bindparam(f"s{i}") for i in range(statuses)]))
        got = _LIST[(platform, channel, statuses)] = q
    return got


def _state(r: ScheduleRow) -> dict[str, Any]:
    return {"b_id": r.id, "b_status": r.status, "b_next": _utc(r.next_fire_at), "b_last": _utc(r.last_fired_at)}


class ScheduleStore:
    """The ``schedules`` table through SQLAlchemy Core (SQLite and PostgreSQL alike: one
    statement each, run by :meth:`bot.store.db.Database.run`, on SQLite on the file's one
    writer thread).

    Every method is one transaction; database failures raise :class:`StoreError`.
    """

    def __init__(self, db: Database) -> None:
        self.db = db

    async def insert(self, *, thread_id: int, created_by: str, spec: ScheduleSpec, created_at: datetime,
                     next_fire_at: datetime | None, overlap: str, misfire_grace_s: int,
                     roles: Sequence[str] = ()) -> int:
        """Store a new active schedule (``roles``: the author's, kept for the permission check
        at each firing); returns its id."""
        params = {
            "thread_id": thread_id, "created_by": created_by, "phrase": spec.source, "workflow": spec.workflow,
            "kind": spec.kind, "expression": str(spec.expression), "start": spec.start, "timezone": spec.timezone,
            "description": spec.description, "status": "active", "created_at": _utc(created_at), "last_fired_at": None,
            "next_fire_at": _utc(next_fire_at), "overlap": overlap, "misfire_grace_s": int(misfire_grace_s),
            "created_roles": json.dumps(list(roles)),
        }
        return int((await self.db.execute(_INSERT, params, what="storing a schedule"))[0][0])

    async def insert_many(self, rows: Iterable[dict[str, Any]]) -> None:
        """Bulk insert raw column dicts, all with the same keys (benchmarks, imports); one transaction."""
        batch = list(rows)
        if not batch:
            return
        cols = tuple(batch[0])
        stmt = _INSERT_MANY.get(cols)
        if stmt is None:
            stmt = _INSERT_MANY[cols] = schedules.insert().values(**{c: bindparam(c) for c in cols})

        def body() -> Body[None]:
            yield stmt, batch

        await self.db.run(body, "storing schedules")

    async def get(self, schedule_id: int) -> ScheduleRow | None:
        """One schedule, or ``None``."""
        rows = await self.db.execute(_GET, {"sid": schedule_id}, what=f"reading schedule {schedule_id}")
        return _row(dict(zip(_NAMES, rows[0]))) if rows else None

    async def list(self, *, platform: str | None = None, channel: str | None = None,
                   statuses: Iterable[str] | None = None) -> list[ScheduleRow]:
        """Schedules (optionally of one platform/channel and with given statuses), by id."""
        params: dict[str, Any] = {"platform": platform, "channel": channel}
        st = None if statuses is None else tuple(statuses)
        if st is not None:
            params.update((f"s{i}", x) for i, x in enumerate(st))
        stmt = _list_stmt(platform is not None, channel is not None, None if st is None else len(st))
        rows = await self.db.execute(stmt, params, what="listing schedules")
        return [_row(dict(zip(_NAMES, r))) for r in rows]

    async def set_state(self, schedule_id: int, *, status: str, next_fire_at: datetime | None,
                        last_fired_at: datetime | None) -> bool:
        """Write one schedule's status and times (``last_fired_at`` only forward); False when there is no such row."""
        params = {"b_id": schedule_id, "b_status": status, "b_next": _utc(next_fire_at), "b_last": _utc(last_fired_at)}

        def body() -> Body[int]:
            return (yield _SET_STATE[last_fired_at is not None], params).rowcount

        return bool(await self.db.run(body, f"updating schedule {schedule_id}", atomic=False))

    async def set_states(self, rows: Iterable[ScheduleRow]) -> None:
        """Write the status and times of many schedules in one transaction (group commit);
        ``last_fired_at`` only ever moves forward."""
        params = [_state(r) for r in rows]
        if params:
            await self.db.execute(_SET_STATE[True], params, what="recording schedule firings")

    async def claim_firings(self, rows: Iterable[ScheduleRow]) -> set[int]:
        """Record firings (``last_fired_at`` = the scheduled instant), each only if it is still
        unclaimed: a compare-and-set ``UPDATE … WHERE status = 'active' AND (last_fired_at IS NULL
        OR last_fired_at < :instant)``, all in one transaction. Returns the ids claimed here.

        Several processes sharing a database (PostgreSQL behind a load balancer, or two bots on
        one SQLite file) each hold the schedules in memory and wake at the same instant; only
        the first to record a firing runs it. A schedule paused, removed or finished by another
        process is not claimed either."""
        params = [_state(r) for r in rows]
        if not params:
            return set()

        def body() -> Body[set[int]]:
            claimed = set()
            for p in params:
                if (yield _CLAIM, p).rowcount:
                    claimed.add(p["b_id"])
            return claimed

        return await self.db.run(body, "recording schedule firings")

    async def delete(self, schedule_id: int) -> bool:
        """Delete a schedule; False when there was none."""

        def body() -> Body[int]:
            return (yield _DELETE, {"sid": schedule_id}).rowcount

        return bool(await self.db.run(body, f"deleting schedule {schedule_id}", atomic=False))
