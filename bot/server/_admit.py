"""Admission: the one place the API starts a run.

The ``spine`` work (issue 15) replaces this with the durable run queue's admission
function (message + delivery id + queued run in one transaction, executed by a
worker). Until then :meth:`Admission.admit` writes the ``queued`` run row and its
audit row in one transaction and hands the run to this process's
:class:`bot.runs.RunManager`; switching to the spine's admission is a change here only.

Thread order and ``[workflow] busy_policy`` are kept as in chat: ``reject`` refuses a
run while another is active in the same thread (:class:`Busy`), ``queue`` admits it
now and starts it when the thread's active runs have ended, ``allow`` starts it at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy import select

from bot.server import metrics
from bot.server.audit import AUDIT_SQL, AuditEntry, sqlite_params
from bot.store import ThreadKey
from bot.store.sqlite_worker import transaction
from bot.store.tables import audit_log, runs, threads
from engine.events import StepRecord
from engine.graph import Graph

if TYPE_CHECKING:
    from bot.app import App
    from bot.server.events import ServiceHook

log = logging.getLogger("baton.server.admit")

_TS = "%Y-%m-%d %H:%M:%S.%f"


class Busy(Exception):
    """``busy_policy = "reject"`` and runs are active in the thread (their ids in ``run_ids``)."""

    def __init__(self, run_ids: list[int]) -> None:
        super().__init__(f"run {', '.join(f'#{i}' for i in run_ids)} is still active in this thread")
        self.run_ids = run_ids


class Admission:
    """Admits runs for the API and owns the tasks of runs waiting for their thread.

    Args:
        app: the running Baton.
        hook: told about each admitted run (webhook events and metrics need its name and thread).
    """

    def __init__(self, app: App, hook: ServiceHook | None = None) -> None:
        self.app = app
        self.hook = hook
        self._waiting: set[asyncio.Task[None]] = set()
        self._graph_json: dict[int, tuple[Graph, str]] = {}

    async def admit(
        self,
        key: ThreadKey,
        graph: Graph,
        *,
        requested_by: str,
        audit: AuditEntry,
        prior: Mapping[str, StepRecord] | None = None,
        rerun_of: int | None = None,
    ) -> int:
        """Write the ``queued`` run (and ``audit``) in one transaction, then start it; returns its id.

        Raises:
            Busy: the thread is busy and the policy is ``reject``.
            StoreError: the database failed; nothing was admitted.
        """
        manager = self.app.manager
        busy = manager.in_thread(key)
        policy = self.app.settings.workflow.busy_policy
        if busy and policy == "reject":
            raise Busy([r.id for r in busy])
        created = datetime.now(UTC)
        run_id = await self._write(key, graph, requested_by, rerun_of, audit, created)
        if self.hook is not None:
            self.hook.remember_run(run_id, key, graph, created)
        if prior:
            await self.app.runs.save_steps([_reused(r, run_id) for r in prior.values()])
        if busy and policy == "queue":
            metrics.QUEUE_DEPTH.inc()
            t = asyncio.create_task(self._after(busy_tasks=[r.task for r in busy], run_id=run_id, key=key, graph=graph, prior=prior), name=f"admit-wait-{run_id}")
            self._waiting.add(t)
            t.add_done_callback(self._waiting.discard)
        else:
            manager.launch(run_id, key, graph, prior)
        return run_id

    async def _after(self, *, busy_tasks, run_id: int, key: ThreadKey, graph: Graph, prior) -> None:  # type: ignore[no-untyped-def]
        try:
            await asyncio.gather(*busy_tasks, return_exceptions=True)
        finally:
            metrics.QUEUE_DEPTH.dec()
        self.app.manager.launch(run_id, key, graph, prior)

    async def _write(self, key: ThreadKey, graph: Graph, requested_by: str, rerun_of: int | None, audit: AuditEntry, now: datetime) -> int:
        db = self.app.db
        gjson = self._json(graph)
        if db.dialect == "sqlite":
            ts = now.astimezone(UTC).replace(tzinfo=None).strftime(_TS)

            def body(c):  # type: ignore[no-untyped-def]
                c.execute(
                    "INSERT INTO threads(platform, channel, thread, created_at, updated_at) VALUES (?,?,?,?,?) ON CONFLICT DO NOTHING",
                    (key.platform, key.channel, key.thread, ts, ts),
                )
                tid = c.execute(
                    "SELECT id FROM threads WHERE platform=? AND channel=? AND thread=?", (key.platform, key.channel, key.thread)
                ).fetchone()[0]
                rid = c.execute(
                    "INSERT INTO runs(thread_id, source, name, graph, status, requested_by, rerun_of, created_at) VALUES (?,?,?,?,?,?,?,?)",
                    (tid, graph.source, graph.name, gjson, "queued", requested_by, rerun_of, ts),
                ).lastrowid
                c.execute(AUDIT_SQL, sqlite_params(_with_target(audit, rid, now)))
                return int(rid)

            return await db.worker.call(lambda c: transaction(c, body), "admitting a run")
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        async with db.begin("admitting a run") as conn:
            await conn.execute(
                pg_insert(threads)
                .values(platform=key.platform, channel=key.channel, thread=key.thread, created_at=now, updated_at=now)
                .on_conflict_do_nothing(index_elements=["platform", "channel", "thread"])
            )
            tid = (
                await conn.execute(
                    select(threads.c.id).where(threads.c.platform == key.platform, threads.c.channel == key.channel, threads.c.thread == key.thread)
                )
            ).scalar_one()
            res = await conn.execute(
                runs.insert().values(
                    thread_id=tid, source=graph.source, name=graph.name, graph=gjson, status="queued",
                    requested_by=requested_by, rerun_of=rerun_of, created_at=now,
                )
            )
            rid = int(res.inserted_primary_key[0])
            await conn.execute(audit_log.insert().values(**_with_target(audit, rid, now).row()))
            return rid

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

    async def aclose(self) -> None:
        """Cancel the waits of runs not started yet (their rows stay ``queued``; a restart resumes them)."""
        for t in list(self._waiting):
            t.cancel()
        await asyncio.gather(*self._waiting, return_exceptions=True)


def _with_target(e: AuditEntry, run_id: int, now: datetime) -> AuditEntry:
    from dataclasses import replace

    return replace(e, target=e.target or f"run:{run_id}", at=now)


def _reused(rec: StepRecord, run_id: int) -> StepRecord:
    from dataclasses import replace

    return replace(rec, run_id=str(run_id), reused=True)
