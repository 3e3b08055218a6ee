"""A schedule firing through admission: the same path as a chat request (issue 15).

At each firing the schedule's author is checked against ``[permissions]`` again (with
the roles they had when they made the schedule, :attr:`ScheduleRow.roles`): a user
whose permission was removed no longer has their schedule start runs. A refusal is
told in the schedule's thread and recorded in the audit trail (``permission.denied``,
target ``schedule:ID``). Then :meth:`bot.queue.Admission.admit` commits a ``queued``
run (``requested_by = "schedule #ID"``, ``fired_by`` = the note above the result) under
the thread's ``busy_policy`` (``reject`` refuses while the thread has an active run;
``queue`` runs it after them, in admission order), and the process's queue executes it
(the in-process worker, or a procrastinate job for ``baton worker`` processes).

Each firing reaches this module once across processes: the scheduler's compare-and-set
claim (:meth:`ScheduleStore.claim_firings`) comes first.

The overlap policy needs to know when a firing's run has ended. The in-process worker says
so (its ``submit`` future); in scale-out mode another process executes the run, so a small
watcher task (started through the scheduler's task owner) reads the run's status every
:data:`WATCH_INTERVAL_S` seconds until it is no longer ``queued``/``running``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import bindparam, select

from bot.core import ThreadKey
from bot.store import StoreError
from bot.store.audit import AuditEntry
from bot.store.tables import runs

from .triggers import format_when

if TYPE_CHECKING:
    from bot.queue.admission import Admission
    from bot.store.audit import AuditStore
    from engine.graph import Graph

    from .store import ScheduleRow

log = logging.getLogger("baton.scheduling")

__all__ = ["WATCH_INTERVAL_S", "FiringAdmission", "Queued", "RunQueue"]

WATCH_INTERVAL_S = 1.0
"""How often (seconds) the end of a run executed by another process is looked for."""

_STATUS = select(runs.c.status).where(runs.c.id == bindparam("rid"))


class RunQueue(Protocol):
    """The process's queue (:class:`bot.queue.local.LocalWorker` or :class:`bot.queue.scale.ScaleOut`;
    the latter's future is done at once: the run is executed elsewhere)."""

    def submit(self, run_id: int, key: ThreadKey, **kw: Any) -> asyncio.Future[None]: ...


@dataclass(frozen=True)
class Queued:
    """What a firing started: run ``id``, and ``task``, a future done when the run has ended
    (wherever it was executed)."""

    id: int
    task: asyncio.Future[Any]


@dataclass
class FiringAdmission:
    """Admits schedule firings (see the module doc).

    Args:
        admission: the app's admission (``[permissions]``, ``busy_policy``, the runs table).
        queue: executes admitted runs (``submit(run_id, key)`` → a future done when it ends).
        audit: the audit trail (``None``: not recorded).
        say: ``(thread key, text)`` → stores and posts a notice in the schedule's thread.
        spawn: starts a task its owner keeps (``spawn(coro, name)``): the watchers of runs
            executed by other processes.
    """

    admission: Admission
    queue: RunQueue
    audit: AuditStore | None
    say: Callable[[ThreadKey, str], Awaitable[None]]
    spawn: Callable[[Coroutine[Any, Any, Any], str], asyncio.Task[Any]]

    async def fire(self, row: ScheduleRow, scheduled_at: datetime, graph: Graph) -> Queued | None:
        """Check the author's permission, then admit and queue one run of ``graph`` for
        ``row``'s firing at ``scheduled_at``. ``None`` when nothing was queued (the thread
        was told why).

        Raises:
            StoreError: the run could not be recorded (nothing was queued).
        """
        when = format_when(scheduled_at, row.timezone)
        denied = self.admission.check(row.created_by, row.roles, graph)
        if denied is not None:
            log.warning("schedule #%s: firing at %s refused: %s", row.id, scheduled_at.isoformat(), denied)
            await self._record(row, "permission.denied", "denied", None, f"schedule firing {when}: {denied}")
            await self.say(row.key, f"Schedule #{row.id} did not run {row.workflow!r} at {when}: {denied} "
                                    f"(checked for {row.created_by}, who made the schedule).")
            return None
        admitted = await self.admission.admit(
            row.key, graph, requested_by=f"schedule #{row.id}", check_permission=False,
            fired_by=f"Fired by schedule #{row.id}: {row.description}",
        )  # fmt: skip
        if admitted.run_id is None:  # the busy policy (reject) refused it
            await self._record(row, "run.start", "denied", None, f"schedule firing {when}: {admitted.refusal}")
            await self.say(row.key, f"Schedule #{row.id} did not run {row.workflow!r} at {when}: {admitted.refusal}")
            return None
        await self._record(row, "run.start", "ok", f"run:{admitted.run_id}", f"schedule #{row.id}: {(graph.name or graph.source)[:200]}")
        done = self.queue.submit(admitted.run_id, row.key)  # read back: the worker posts the fired_by note
        if done.done():  # executed by another process (scale-out): watch the runs table for its end
            done = self.spawn(self._watch(admitted.run_id), f"schedule-watch-{row.id}")
        return Queued(admitted.run_id, done)

    async def _watch(self, run_id: int) -> None:
        """Return once run ``run_id`` is no longer ``queued``/``running`` (or is gone)."""
        while True:
            try:
                got = await self.admission.db.execute(_STATUS, {"rid": run_id}, what=f"reading the status of run {run_id}")
            except StoreError as e:
                log.warning("run %s: reading its status failed (%s); trying again", run_id, e)
            else:
                if not got or got[0][0] not in ("queued", "running"):
                    return
            await asyncio.sleep(WATCH_INTERVAL_S)

    async def _record(self, row: ScheduleRow, action: str, outcome: str, target: str | None, detail: str) -> None:
        if self.audit is None:
            return
        entry = AuditEntry(
            actor=row.created_by, platform=row.key.platform, action=action, outcome=outcome, channel=row.key.channel,
            thread=row.key.thread, target=target or f"schedule:{row.id}", detail=detail,
        )  # fmt: skip
        try:
            await self.audit.record(entry)
        except StoreError as e:
            log.error("schedule #%s: recording the audit row failed: %s", row.id, e)
