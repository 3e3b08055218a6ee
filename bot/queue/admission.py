"""Admission: a request that starts work becomes a ``queued`` run in the database before anyone is told.

One transaction stores the message (with its delivery ids: Slack ``event_id``,
Discord interaction id, recorded in ``processed_events``), decides the thread's
``busy_policy`` from the runs table (not from memory), and inserts the ``queued``
run (with the step records a ``/rerun … from`` reuses). Only after it committed is
the request acknowledged; a crash before the commit leaves nothing (the platform
redelivers an unacknowledged event), a crash after it leaves a queued run that the
next start (or another worker) executes. Thread order is the order of run ids:
runs of one thread are executed FIFO (issue 15).

This is the one entry point for everything that starts a run: chat (``run:``,
``/run``, ``/rerun``, routed workflows), schedule firings and the HTTP API::

    admitted = await app.admission.admit(key, graph, requested_by="U1", roles=("ops",))
    if admitted.run_id is None: ...  # admitted.refusal says why (permission, busy)

SQL: SQLAlchemy Core statements; on SQLite they are compiled once and run on the
file's one writer thread inside the message's transaction, on PostgreSQL through
the same ``AsyncConnection``.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from bot import texts
from bot.settings import Settings, permits
from bot.store import Database, RunStore, SessionStore, StoredMessage, ThreadKey
from bot.store.checkpoints import step_row
from bot.store.compiled import Compiled
from bot.store.sqlite_worker import transaction
from bot.store.tables import runs, step_runs
from engine.events import StepRecord
from engine.graph import Graph

BUSY_POLICIES = ("queue", "reject", "allow")

_ACTIVE = (
    select(runs.c.id)
    .where(runs.c.thread_id == bindparam("tid"), or_(runs.c.status == "queued", runs.c.status == "running"))
    .order_by(runs.c.id)
)
_INSERT_RUN = (
    runs.insert()
    .values(
        thread_id=bindparam("thread_id"), source=bindparam("source"), name=bindparam("name"), graph=bindparam("graph"),
        status="queued", requested_by=bindparam("requested_by"), rerun_of=bindparam("rerun_of"),
        created_at=bindparam("created_at"), message_id=bindparam("message_id"), fired_by=bindparam("fired_by"),
    )
    .returning(runs.c.id)
)
_INSERT_STEP = step_runs.insert()


@dataclass(frozen=True)
class Admitted:
    """What admission decided.

    Attributes:
        run_id: the queued run, or ``None`` when none was created (see ``refusal``).
        message: the stored message (``None`` when admitting without one, or for a
            redelivery).
        ahead: ids of the thread's runs queued or running before this one.
        refusal: why no run was created: a permission rule or the busy policy
            (``reject``); ``None`` when a run was queued.
        duplicate: the delivery was recorded before (nothing was stored).
    """

    run_id: int | None
    message: StoredMessage | None = None
    ahead: tuple[int, ...] = ()
    refusal: str | None = None
    duplicate: bool = False


def permission_problem(settings: Settings, author: str, roles: Sequence[str], graph: Graph) -> str | None:
    """``None`` when ``author`` (with ``roles``) may run ``graph`` under ``[permissions]``,
    else the reason naming the rule (config/baton.toml)."""
    rules = settings.permissions
    for name in graph.uses or ("*",):
        allowed = rules.get(name, rules.get("*", ["*"]))
        if permits(allowed, author, roles):
            continue
        return texts.permission_denied(name, allowed)
    return None


@dataclass
class _QueueRun:
    """The run insert as a :class:`bot.store.sessions.TxHook` (also used without a message)."""

    db: Database
    graph: Graph
    requested_by: str
    policy: str
    rerun_of: int | None
    fired_by: str | None
    prior: Sequence[StepRecord]
    compiled: dict[int, Compiled]
    run_id: int | None = None
    ahead: tuple[int, ...] = ()
    refusal: str | None = None
    now: datetime = field(default_factory=lambda: datetime.now(UTC))

    def _params(self, thread_id: int, message_id: int | None) -> dict[str, Any]:
        g = self.graph
        return {
            "thread_id": thread_id, "source": g.source, "name": g.name, "graph": g.to_json(), "requested_by": self.requested_by,
            "rerun_of": self.rerun_of, "created_at": self.now, "message_id": message_id, "fired_by": self.fired_by,
        }

    def _busy(self, ahead: Sequence[int]) -> bool:
        self.ahead = tuple(int(a) for a in ahead)
        if self.ahead and self.policy == "reject":
            ids = ", ".join(f"#{a}" for a in self.ahead)
            self.refusal = f"Run {ids} is still active in this thread; wait for it or /cancel it."
            return True
        return False

    def _steps(self, run_id: int) -> list[dict[str, object]]:
        return [step_row(replace(r, run_id=str(run_id), reused=True)) for r in self.prior]

    def _c(self, stmt: Any, conn: sqlite3.Connection) -> Compiled:
        got = self.compiled.get(id(stmt))
        if got is None:
            got = self.compiled[id(stmt)] = Compiled(stmt, self.db.engine.sync_engine.dialect)
        return got

    def sqlite(self, conn: sqlite3.Connection, thread_id: int, message_id: int | None) -> None:
        active = self._c(_ACTIVE, conn)
        if self._busy([r[0] for r in conn.execute(active.sql, active.params({"tid": thread_id})).fetchall()]):
            return
        ins = self._c(_INSERT_RUN, conn)
        self.run_id = int(conn.execute(ins.sql, ins.params(self._params(thread_id, message_id))).fetchone()[0])
        if self.prior:
            st = self._c(_INSERT_STEP, conn)
            conn.executemany(st.sql, [st.params(r) for r in self._steps(self.run_id)])

    async def sa(self, conn: AsyncConnection, thread_id: int, message_id: int | None) -> None:
        if self._busy([r[0] for r in (await conn.execute(_ACTIVE, {"tid": thread_id})).all()]):
            return
        self.run_id = int((await conn.execute(_INSERT_RUN, self._params(thread_id, message_id))).scalar_one())
        if self.prior:
            await conn.execute(_INSERT_STEP, self._steps(self.run_id))


class Admission:
    """Turns requests into queued runs (see the module docs).

    Args:
        settings: ``[permissions]`` and ``workflow.busy_policy``.
        sessions, runs: the stores (same database).
        on_queued: called with ``(run_id, key)`` after a run was committed
            (the process's worker wakes up; in scale-out mode a job is enqueued).
    """

    def __init__(
        self,
        settings: Settings,
        sessions: SessionStore,
        runs: RunStore,
        on_queued: Callable[[int, ThreadKey], Awaitable[None]] | None = None,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.runs = runs
        self.db = runs.db
        self.on_queued = on_queued
        self._compiled: dict[int, Compiled] = {}
        self._locks: dict[ThreadKey, tuple[asyncio.Lock, list[int]]] = {}

    def check(self, author: str, roles: Sequence[str], graph: Graph) -> str | None:
        """The permission rule for ``graph`` (``None``: allowed); see :func:`permission_problem`."""
        return permission_problem(self.settings, author, roles, graph)

    async def admit(
        self,
        key: ThreadKey,
        graph: Graph,
        *,
        requested_by: str,
        roles: Sequence[str] = (),
        text: str | None = None,
        author: str | None = None,
        dedupe_ids: Sequence[str] = (),
        event_id: str | None = None,
        created_at: datetime | None = None,
        prior: Mapping[str, StepRecord] | None = None,
        rerun_of: int | None = None,
        fired_by: str | None = None,
        busy_policy: str | None = None,
        check_permission: bool = True,
        kind: str | None = None,
    ) -> Admitted:
        """Check permission, then store ``text`` (when given, as ``author``'s message with
        ``dedupe_ids``) and a ``queued`` run of ``graph`` in one transaction.

        Args:
            requested_by: who the run is for (permissions are checked for them with ``roles``).
            prior: step records reused by ``/rerun … from`` (copied into the new run).
            kind: the stored message's ``messages.kind`` (``command`` for a ``/run``; bot.store.sessions).
            busy_policy: ``queue`` | ``reject`` | ``allow``; default ``workflow.busy_policy``.
                ``reject`` refuses when the thread has a queued or running run.

        Returns:
            :class:`Admitted`. A permission refusal still stores the message.

        Raises:
            StoreError: the database failed; nothing was recorded, the request must not
                be acknowledged (or the user is told "not recorded, nothing was run").
        """
        policy = busy_policy or self.settings.workflow.busy_policy
        denied = self.check(requested_by, roles, graph) if check_permission else None
        if denied is not None:
            stored = None
            if text is not None:
                stored = await self.sessions.append_once(
                    key, "user", author or requested_by, text, dedupe_ids=dedupe_ids, event_id=event_id, created_at=created_at, kind=kind
                )
                if stored is None:
                    return Admitted(None, duplicate=True)
            return Admitted(None, stored, refusal=f"Not run: {denied}.")
        async with self._thread_lock(key):  # a thread's runs are committed and handed on in one order
            return await self._admit(key, graph, requested_by, policy, text, author, dedupe_ids, event_id, created_at, prior, rerun_of, fired_by, kind)

    @asynccontextmanager
    async def _thread_lock(self, key: ThreadKey) -> AsyncIterator[None]:
        lock, users = self._locks.setdefault(key, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if users[0] == 0:
                self._locks.pop(key, None)

    async def _admit(
        self, key: ThreadKey, graph: Graph, requested_by: str, policy: str, text: str | None, author: str | None,
        dedupe_ids: Sequence[str], event_id: str | None, created_at: datetime | None, prior: Mapping[str, StepRecord] | None,
        rerun_of: int | None, fired_by: str | None, kind: str | None = None,
    ) -> Admitted:
        hook = _QueueRun(self.db, graph, requested_by, policy, rerun_of, fired_by, list((prior or {}).values()), self._compiled)
        if text is not None:
            stored = await self.sessions.append_once(
                key, "user", author or requested_by, text, dedupe_ids=dedupe_ids, event_id=event_id, created_at=created_at, then=hook, kind=kind
            )
            if stored is None:
                return Admitted(None, duplicate=True)
        else:
            stored = None
            tid = await self.sessions.thread_id(key)
            if self.db.dialect == "sqlite":
                await self.db.worker.call(lambda c: transaction(c, lambda c: hook.sqlite(c, tid, None)), "queueing a run")
            else:
                async for attempt in self.db.retrying():
                    with attempt:
                        async with self.db.begin("queueing a run") as conn:
                            await hook.sa(conn, tid, None)
        if hook.run_id is not None and self.on_queued is not None:
            await self.on_queued(hook.run_id, key)
        return Admitted(hook.run_id, stored, hook.ahead, hook.refusal)


__all__ = ["Admission", "Admitted", "BUSY_POLICIES", "permission_problem"]
