"""The in-process worker: executes a process's queued runs, FIFO per thread.

The embedded default needs no extra process: admission commits a ``queued`` run
(:mod:`bot.queue.admission`), then hands its id here. Each thread with work has
one serving task that takes the thread's runs in id order (the admission order)
and executes each through the :class:`bot.runs.RunManager` (Baton's executor,
checkpointing every step). Under ``busy_policy = "allow"`` runs of a thread start
at once, side by side.

Admission before execution: with a :class:`bot.queue.admission.Priority` (the App
passes its admission's), each run start first waits for :meth:`Priority.turn`, so
under a burst of requests their acknowledgements are not queued behind the CPU of
runs starting. No run waits forever: under a sustained stream of requests the
oldest waiting run starts after ``Priority.max_wait``, then one every
``Priority.interval``.

On start-up :meth:`LocalWorker.recover` finds every run left ``queued`` or
``running`` (a crash, a restart) and queues them again in id order per thread: an
interrupted run resumes from its checkpoints, a queued one starts after it
(fault 1 of issue 14: a request queued behind a running run survives a crash).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Mapping
from dataclasses import replace

from bot.queue.admission import Priority
from bot.runs import ActiveRun, RunManager
from bot.store import RunStore, SessionStore, StoreError, ThreadKey
from bot.tasks import TaskOwner
from engine.events import StepRecord
from engine.graph import Graph

log = logging.getLogger("baton.queue")


class LocalWorker:
    """Serves queued runs in this process.

    Args:
        manager: starts and owns run tasks.
        runs, sessions: the stores.
        policy: ``workflow.busy_policy`` (``allow``: a thread's runs do not wait for each other).
        priority: run starts wait for its turn (admission first); default: a private one,
            which never makes a start wait.
        tasks: starts the per-thread serving tasks (the App's :class:`bot.tasks.TaskOwner`,
            so a failure is logged and shutdown cancels them); default: an owner of its own.
    """

    def __init__(
        self, manager: RunManager, runs: RunStore, sessions: SessionStore, *, policy: str = "queue", priority: Priority | None = None,
        tasks: TaskOwner | None = None,
    ) -> None:
        self.manager = manager
        self.tasks = tasks or TaskOwner("queue", logger=log)
        self.runs = runs
        self.sessions = sessions
        self.policy = policy
        self.priority = priority or Priority()
        self._queues: dict[ThreadKey, deque[tuple[int, str | None, tuple[Graph, dict[str, StepRecord]] | None]]] = {}
        self._serving: dict[ThreadKey, asyncio.Task[None]] = {}
        self._done: dict[int, asyncio.Future[None]] = {}
        self._known: set[int] = set()
        self._cancelled: set[int] = set()

    def submit(
        self,
        run_id: int,
        key: ThreadKey,
        *,
        note: str | None = None,
        graph: Graph | None = None,
        prior: Mapping[str, StepRecord] | None = None,
        rerun: bool = False,
    ) -> asyncio.Future[None]:
        """Queue committed run ``run_id`` of thread ``key``; returns a future set when it ends.

        ``note``: ``"resume"`` for a run found unfinished at start-up (the thread is told, and
        shell children a dead process left are reaped first: ``RunManager.resume_plan``).
        ``graph``/``prior``: the run's graph and reused step records as admitted (saves
        reading them back; without them the run is read from the database).
        ``rerun``: the admitted run is a ``/rerun`` (cached steps run again, like on the ordered path).
        Submitting a run already known here returns its existing future.
        """
        fut = self._done.get(run_id)
        if fut is not None:
            return fut
        fut = self._done[run_id] = asyncio.get_running_loop().create_future()
        self._known.add(run_id)
        known = (graph, {k: replace(v, run_id=str(run_id), reused=True) for k, v in (prior or {}).items()}, not rerun) if graph is not None else None
        self._queues.setdefault(key, deque()).append((run_id, note, known))
        if key not in self._serving:
            self._serving[key] = self.tasks.start(self._serve(key), name=f"queue-{key.platform}-{key.thread}")
        return fut

    @property
    def queued(self) -> int:
        """How many runs are queued here and not started yet."""
        return sum(len(q) for q in self._queues.values())

    def pending_in(self, key: ThreadKey) -> list[int]:
        """Ids of runs of ``key`` queued here and not started yet."""
        return [rid for rid, _, _ in self._queues.get(key, ())]

    async def _serve(self, key: ThreadKey) -> None:
        q = self._queues[key]
        try:
            while q:
                await self.priority.turn()  # admissions first (see the module docs)
                if not q:
                    break
                run_id, note, known = q.popleft()
                fut = self._done[run_id]
                try:
                    active = await self._start(run_id, key, note, known)
                except StoreError as e:
                    log.error("run %s: could not be started: %s", run_id, e)
                    active = None
                except Exception:
                    log.exception("run %s: could not be started", run_id)
                    active = None
                if active is None:
                    self._settle(run_id, fut)
                    continue
                active.task.add_done_callback(lambda _t, rid=run_id, f=fut: self._settle(rid, f))
                if self.policy != "allow":
                    await asyncio.gather(active.task, return_exceptions=True)
        finally:
            self._serving.pop(key, None)
            if q:  # cancelled with work left: it stays queued in the database for the next start
                for rid, _, _ in q:
                    self._settle(rid, self._done.get(rid))
                q.clear()
            self._queues.pop(key, None)

    def _settle(self, run_id: int, fut: asyncio.Future[None] | None) -> None:
        self._done.pop(run_id, None)
        if fut is not None and not fut.done():
            fut.set_result(None)

    async def _start(
        self, run_id: int, key: ThreadKey, note: str | None, known: tuple[Graph, dict[str, StepRecord], bool] | None
    ) -> ActiveRun | None:
        if run_id in self.manager.active:
            return self.manager.active[run_id]
        if run_id in self._cancelled:
            self._cancelled.discard(run_id)
            return None
        if known is not None:
            return self.manager._launch(run_id, key, known[0], known[1], None, use_cache=known[2])
        got = await self.runs.get(run_id)
        if got is None:
            return None
        row, steps = got
        if row.status not in ("queued", "running"):
            return None  # cancelled while queued, or finished elsewhere
        prior = {s.node_id: s for s in steps}
        if note:  # a restart: reap what a dead process left running, say so
            text, prior = await self.manager.resume_plan(run_id, row.graph, steps)
            await self.manager._tell(key, text)
        fired_by = await self.runs.fired_by(run_id)
        return self.manager._launch(run_id, key, row.graph, prior, fired_by, use_cache=row.rerun_of is None)

    def cancel_queued(self, run_id: int) -> bool:
        """Drop a run queued here that has not started (the caller records it ``cancelled``)."""
        for q in self._queues.values():
            if any(rid == run_id for rid, _, _ in q):
                self._cancelled.add(run_id)
                return True
        return False

    async def request_cancel(self, run_id: int) -> bool:
        """Runs of this process are cancelled through the run manager; nothing to record."""
        return False

    async def recover(self, platforms: set[str]) -> list[int]:
        """Queue every unfinished run of ``platforms`` again (id order per thread); returns their ids."""
        ids = []
        for row in reversed(await self.runs.list(unfinished=True, limit=10_000)):
            if row.id in self.manager.active or row.id in self._done:
                continue
            key = await self.sessions.key_for(row.thread_id)
            if key.platform not in platforms:
                continue
            self.submit(row.id, key, note="resume")
            ids.append(row.id)
        return ids

    @property
    def busy(self) -> bool:
        """Whether runs are queued or being served here."""
        return bool(self._serving)

    async def wait_idle(self) -> None:
        """Return once nothing is queued or being served here."""
        while self._serving:
            await asyncio.gather(*self._serving.values(), return_exceptions=True)

    async def aclose(self) -> None:
        """Stop serving (queued runs stay ``queued`` in the database)."""
        tasks = list(self._serving.values())
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


__all__ = ["LocalWorker"]
