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
file's one writer thread inside the message's transaction (a run without a message
creates its thread in the same transaction), on PostgreSQL through the same
``AsyncConnection``. An ``audit`` entry (the HTTP API's ``run.start``) commits with
the run, or neither does.

Admission before execution: every admission holds :attr:`Admission.priority` while it
is under way (callers may hold it from the request's arrival, see
:meth:`Priority.arriving`), and the in-process worker starts a queued run only when
:meth:`Priority.turn` lets it (:mod:`bot.queue.local`): at once while nothing is being
admitted, else at a bounded rate. The steps of runs already running wait for a turn too
before they start (``Executor.before_step``), and full garbage collections run in its quiet
moments (:mod:`bot.gcquiet`, :meth:`Priority.quiet_for`). Requests are acknowledged quickly under a burst
while the runs they queued wait a little; no run waits forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, func, or_, select
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.ext.asyncio import AsyncConnection

from bot import texts
from bot.settings import Settings, permits
from bot.store import Database, RunStore, SessionStore, StoredMessage, ThreadKey
from bot.store.audit import AUDIT_SQL, AuditEntry, sqlite_params
from bot.store.checkpoints import step_row
from bot.store.compiled import Compiled
from bot.store.runs import INSERT_QUEUED_RUN
from bot.store.tables import audit_log, runs, step_runs
from bot.store.tx import Body, Raw
from engine.events import StepRecord
from engine.graph import Graph

BUSY_POLICIES = ("queue", "reject", "allow")

_ACTIVE = (
    select(runs.c.id)
    .where(runs.c.thread_id == bindparam("tid"), or_(runs.c.status == "queued", runs.c.status == "running"))
    .order_by(runs.c.id)
)
_INSERT_RUN = INSERT_QUEUED_RUN.returning(runs.c.id)
_AHEAD = runs.alias("ahead")
_INSERT_RUN_AHEAD = _INSERT_RUN.returning(
    select(func.array_agg(aggregate_order_by(_AHEAD.c.id, _AHEAD.c.id)))
    .where(_AHEAD.c.thread_id == bindparam("thread_id"), _AHEAD.c.status.in_(("queued", "running")))
    .scalar_subquery()
)
"""PostgreSQL, unless the policy is ``reject``: the insert also returns the thread's active runs
(``RETURNING`` sees the rows as they were before the insert), one round trip for both."""
_INSERT_STEP = step_runs.insert()
_THREAD_NEW = "INSERT INTO threads(platform, channel, thread, created_at, updated_at) VALUES (?,?,?,?,?) ON CONFLICT DO NOTHING"
_THREAD_ID = "SELECT id FROM threads WHERE platform=? AND channel=? AND thread=?"
_TS = "%Y-%m-%d %H:%M:%S.%f"  # how SQLAlchemy stores DateTime on SQLite


class Priority:
    """Admission before execution: run starts yield while requests are being admitted.

    Everything runs on one event loop, so a run started during a burst of requests
    spends CPU the requests' acknowledgements wait for (a shell step's fork and exec,
    Web API calls). Requests mark themselves with :meth:`arriving` (admission does, for
    its own part); the worker awaits :meth:`turn` before it starts a run. Turns are
    given in FIFO order, one per loop iteration, once no request has been under way for
    ``quiet`` seconds. While requests keep arriving, a caller that has waited
    ``max_wait`` seconds gets its turn all the same, and then one more every
    ``interval`` seconds: no run waits forever, and at least ``1 / interval`` runs start
    per second under any load.

    Args:
        interval: seconds between turns given while requests keep arriving.
        quiet: how long no request must have been under way before turns are given freely.
        max_wait: how long a turn may be held back while requests keep arriving.
    """

    def __init__(self, interval: float = 0.1, quiet: float = 0.02, max_wait: float = 1.0) -> None:
        self.interval = interval
        self.quiet = quiet
        self.max_wait = max_wait
        self.arriving_now = 0
        self._begun = 0
        self._last = float("-inf")
        self._waiters: deque[tuple[asyncio.Future[None], float]] = deque()
        self._release_pending = False
        self._tick: asyncio.TimerHandle | None = None

    @contextmanager
    def arriving(self) -> Iterator[None]:
        """Mark a request under way until the block ends (nestable; costs two increments)."""
        self.arriving_now += 1
        self._begun += 1
        try:
            yield
        finally:
            self.arriving_now -= 1
            self._last = time.monotonic()
            if self.arriving_now == 0 and self._waiters:
                self._release_soon()

    def quiet_for(self, now: float | None = None) -> float:
        """Seconds since the last request ended (``time.monotonic``); 0 while one is under way
        (a quiet moment for work that should not stop the loop mid-burst, e.g. :mod:`bot.gcquiet`)."""
        if self.arriving_now:
            return 0.0
        return (time.monotonic() if now is None else now) - self._last

    @property
    def waiting(self) -> int:
        """How many callers of :meth:`turn` wait for their turn."""
        return len(self._waiters)

    async def turn(self) -> None:
        """Return when the caller may start its work (at once when nothing is arriving)."""
        now = time.monotonic()
        if not self._waiters and self.arriving_now == 0 and now - self._last >= self.quiet:
            return
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        entry = (fut, now)
        self._waiters.append(entry)
        self._release_soon()
        if self._tick is None:
            self._tick = loop.call_at(loop.time() + self.max_wait, self._on_tick)
        try:
            await fut
        finally:
            if not fut.done():  # cancelled while waiting
                with contextlib.suppress(ValueError):
                    self._waiters.remove(entry)
            # pass the turn on, next loop iteration; also when cancelled after the turn was
            # given (a fail-fast stop cancels sibling steps waiting here): the others would
            # otherwise wait for the max_wait tick
            self._release_soon()

    def _release_soon(self) -> None:
        if self._release_pending or not self._waiters or self.arriving_now:
            return
        self._release_pending = True
        loop = asyncio.get_running_loop()
        wait = self.quiet - (time.monotonic() - self._last)
        if wait > 0:
            loop.call_later(wait, self._release, False)
        else:
            loop.call_soon(self._release, False)

    def _on_tick(self) -> None:
        self._tick = None
        while self._waiters and self._waiters[0][0].done():
            self._waiters.popleft()
        if not self._waiters:
            return
        waited = time.monotonic() - self._waiters[0][1]
        if waited >= self.max_wait:
            self._release(True)
            delay = self.interval
        else:
            delay = self.max_wait - waited
        if self._waiters:
            self._tick = asyncio.get_running_loop().call_later(delay, self._on_tick)

    def _release(self, forced: bool) -> None:
        if not forced:
            if self.arriving_now:
                self._release_pending = False
                return  # the last request to end schedules the next try
            if time.monotonic() - self._last < self.quiet:
                self._release_pending = False
                self._release_soon()
                return
            # One more loop iteration first: requests whose bytes arrived in this iteration (a
            # process that was not scheduled for a while finds several) start their tasks in
            # the next one, before this confirmation runs.
            asyncio.get_running_loop().call_soon(self._confirm, self._begun)
            return
        self._give()

    def _confirm(self, begun: int) -> None:
        self._release_pending = False
        if self.arriving_now or self._begun != begun:
            if not self.arriving_now:
                self._release_soon()
            return
        self._give()

    def _give(self) -> None:
        while self._waiters:
            fut, _ = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return


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
        created_at: the run's ``created_at`` (``None`` when no run was created).
        audited: the ``audit`` entry given to :meth:`Admission.admit` was committed with the run.
    """

    run_id: int | None
    message: StoredMessage | None = None
    ahead: tuple[int, ...] = ()
    refusal: str | None = None
    duplicate: bool = False
    created_at: datetime | None = None
    audited: bool = False


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
    graph_json: str
    requested_by: str
    policy: str
    rerun_of: int | None
    fired_by: str | None
    prior: Sequence[StepRecord]
    compiled: dict[int, Compiled]
    audit: AuditEntry | None = None
    run_id: int | None = None
    ahead: tuple[int, ...] = ()
    refusal: str | None = None
    now: datetime = field(default_factory=lambda: datetime.now(UTC))

    def _params(self, thread_id: int, message_id: int | None) -> dict[str, Any]:
        g = self.graph
        return {
            "thread_id": thread_id, "source": g.source, "name": g.name, "graph": self.graph_json, "requested_by": self.requested_by,
            "rerun_of": self.rerun_of, "created_at": self.now, "message_id": message_id, "fired_by": self.fired_by,
        }

    def _busy(self, ahead: Sequence[int]) -> bool:
        self.ahead = tuple(int(a) for a in ahead)
        if self.ahead and self.policy == "reject":
            self.refusal = texts.busy(list(self.ahead))
            return True
        return False

    def _steps(self, run_id: int) -> list[dict[str, object]]:
        return [step_row(replace(r, run_id=str(run_id), reused=True)) for r in self.prior]

    def _audit(self, run_id: int) -> AuditEntry | None:
        a = self.audit
        return None if a is None else replace(a, target=a.target or f"run:{run_id}", at=self.now)

    def _c(self, stmt: Any, conn: sqlite3.Connection) -> Compiled:
        got = self.compiled.get(id(stmt))
        if got is None:
            got = self.compiled[id(stmt)] = Compiled(stmt, self.db.engine.sync_engine.dialect)
        return got

    def sqlite_thread(self, conn: sqlite3.Connection, key: ThreadKey) -> None:
        """Without a message: create the thread (if new) and queue the run, in the caller's transaction."""
        ts = self.now.astimezone(UTC).replace(tzinfo=None).strftime(_TS)
        conn.execute(_THREAD_NEW, (key.platform, key.channel, key.thread, ts, ts))
        tid = int(conn.execute(_THREAD_ID, (key.platform, key.channel, key.thread)).fetchone()[0])
        self.sqlite(conn, tid, None)

    def sqlite(self, conn: sqlite3.Connection, thread_id: int, message_id: int | None) -> None:
        # a transaction run again starts over (SqliteWorker.transact runs a group's transactions
        # again one by one when its COMMIT fails: a run inserted by the first try was rolled back)
        self.run_id, self.refusal, self.ahead = None, None, ()
        active = self._c(_ACTIVE, conn)
        if self._busy([r[0] for r in conn.execute(active.sql, active.params({"tid": thread_id})).fetchall()]):
            return
        ins = self._c(_INSERT_RUN, conn)
        self.run_id = int(conn.execute(ins.sql, ins.params(self._params(thread_id, message_id))).fetchone()[0])
        if self.prior:
            st = self._c(_INSERT_STEP, conn)
            conn.executemany(st.sql, [st.params(r) for r in self._steps(self.run_id)])
        entry = self._audit(self.run_id)
        if entry is not None:
            conn.execute(AUDIT_SQL, sqlite_params(entry))

    def sa_body(self, thread_id: int) -> Body[None]:
        """Without a message: :meth:`sa` as a step of a transaction body (:mod:`bot.store.tx`)."""
        yield Raw(lambda c: self.sqlite(c, thread_id, None), lambda c: self.sa(c, thread_id, None))

    async def sa(self, conn: AsyncConnection, thread_id: int, message_id: int | None) -> None:
        self.run_id, self.refusal, self.ahead = None, None, ()  # a retried transaction starts over
        if self.policy != "reject":
            row = (await conn.execute(_INSERT_RUN_AHEAD, self._params(thread_id, message_id))).one()
            self.run_id = int(row[0])
            self._busy(row[1] or ())
        elif self._busy([r[0] for r in (await conn.execute(_ACTIVE, {"tid": thread_id})).all()]):
            return
        else:
            self.run_id = int((await conn.execute(_INSERT_RUN, self._params(thread_id, message_id))).scalar_one())
        if self.prior:
            await conn.execute(_INSERT_STEP, self._steps(self.run_id))
        entry = self._audit(self.run_id)
        if entry is not None:
            await conn.execute(audit_log.insert().values(**entry.row()))


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
        self.priority = Priority()
        """Held while requests are admitted; the in-process worker's run starts yield to it."""
        self._compiled: dict[int, Compiled] = {}
        self._locks: dict[ThreadKey, tuple[asyncio.Lock, list[int]]] = {}
        self._graph_json: dict[int, tuple[Graph, str]] = {}

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
        audit: AuditEntry | None = None,
    ) -> Admitted:
        """Check permission, then store ``text`` (when given, as ``author``'s message with
        ``dedupe_ids``) and a ``queued`` run of ``graph`` in one transaction.

        Args:
            requested_by: who the run is for (permissions are checked for them with ``roles``).
            prior: step records reused by ``/rerun … from`` (copied into the new run).
            kind: the stored message's ``messages.kind`` (``command`` for a ``/run``; bot.store.sessions).
            audit: an audit row committed with the run (its ``target`` defaults to ``run:ID``,
                its time to the run's ``created_at``); not written when no run is created.
            busy_policy: ``queue`` | ``reject`` | ``allow``; default ``workflow.busy_policy``.
                ``reject`` refuses when the thread has a queued or running run.

        Returns:
            :class:`Admitted`. A permission refusal still stores the message.

        Raises:
            StoreError: the database failed; nothing was recorded, the request must not
                be acknowledged (or the user is told "not recorded, nothing was run").
        """
        with self.priority.arriving():
            return await self._checked(
                key, graph, requested_by, roles, text, author, dedupe_ids, event_id, created_at, prior, rerun_of, fired_by,
                busy_policy, check_permission, kind, audit,
            )

    async def _checked(
        self, key: ThreadKey, graph: Graph, requested_by: str, roles: Sequence[str], text: str | None, author: str | None,
        dedupe_ids: Sequence[str], event_id: str | None, created_at: datetime | None, prior: Mapping[str, StepRecord] | None,
        rerun_of: int | None, fired_by: str | None, busy_policy: str | None, check_permission: bool, kind: str | None,
        audit: AuditEntry | None,
    ) -> Admitted:
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
            return await self._admit(
                key, graph, requested_by, policy, text, author, dedupe_ids, event_id, created_at, prior, rerun_of, fired_by, kind, audit
            )

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
        rerun_of: int | None, fired_by: str | None, kind: str | None = None, audit: AuditEntry | None = None,
    ) -> Admitted:
        hook = _QueueRun(
            self.db, graph, self._json(graph), requested_by, policy, rerun_of, fired_by, list((prior or {}).values()), self._compiled, audit
        )
        if text is not None:
            stored = await self.sessions.append_once(
                key, "user", author or requested_by, text, dedupe_ids=dedupe_ids, event_id=event_id, created_at=created_at, then=hook, kind=kind
            )
            if stored is None:
                return Admitted(None, duplicate=True)
        else:
            stored = None
            if self.db.dialect == "sqlite":  # the thread, the run (and its audit row) in one transaction
                await self.db.worker.transact(lambda c: hook.sqlite_thread(c, key), "queueing a run")
            else:  # the thread's lookup (or creation), the run and its audit row: one transaction
                await self.sessions.with_thread(key, hook.sa_body, "queueing a run", now=hook.now)
        if hook.run_id is not None and self.on_queued is not None:
            await self.on_queued(hook.run_id, key)
        made = hook.run_id is not None
        return Admitted(hook.run_id, stored, hook.ahead, hook.refusal, created_at=hook.now if made else None, audited=made and audit is not None)

    def _json(self, graph: Graph) -> str:
        """``graph.to_json()``, cached per graph object (compiled graphs are cached and immutable)."""
        hit = self._graph_json.get(id(graph))
        if hit is not None and hit[0] is graph:
            return hit[1]
        if len(self._graph_json) >= 256:
            self._graph_json.clear()
        j = graph.to_json()
        self._graph_json[id(graph)] = (graph, j)
        return j


__all__ = ["Admission", "Admitted", "BUSY_POLICIES", "Priority", "permission_problem"]
