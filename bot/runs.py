"""Starting, watching, cancelling and resuming workflow runs.

Every run is a task owned by :class:`RunManager` (kept in a dict until it ends).
The run row is written before the run starts and its final status before the
thread is told the result. On start-up, :meth:`RunManager.resume_unfinished`
picks up runs left ``queued``/``running`` by a crash and executes them again from
their checkpoints (completed steps are not repeated; see :mod:`engine.run`).

Shutdown versus cancel: ``/cancel`` marks the run ``cancelled``; a process
shutdown cancels the task too but leaves the run ``running`` so the next start
resumes it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from bot import texts
from bot.core import Outlet, send_run_result
from bot.texts import final_outputs, result_text
from bot.store import RunStore, SessionStore, StoreError, ThreadKey
from bot.tasks import TaskOwner
from engine.children import ChildRegistry, Orphan
from engine.events import StepRecord
from engine.graph import Graph, split_instance
from engine.run import Executor, RunResult

log = logging.getLogger("baton.runs")

__all__ = ["ActiveRun", "RunManager", "final_outputs", "result_text"]


@dataclass
class ActiveRun:
    """A run this process is executing."""

    id: int
    key: ThreadKey
    title: str
    task: asyncio.Task[RunResult | None]


class RunManager:
    """Owns the run tasks.

    Args:
        runs, sessions: the stores.
        executor: runs graphs with checkpoints into ``runs``.
        outlets: platform name → the adapter's outlet (where results go).
        children: the shell children's records; the first :meth:`resume_unfinished` reaps
            those a previous process left running (:mod:`engine.children`).
    """

    def __init__(
        self,
        runs: RunStore,
        sessions: SessionStore,
        executor: Executor,
        outlets: Mapping[str, Outlet],
        *,
        children: ChildRegistry | None = None,
    ) -> None:
        self._run_tasks = TaskOwner("runs", logger=log)
        self.runs = runs
        self.children = children
        self._orphans: dict[str, dict[str, Orphan]] | None = None  # run id → step id → orphan (reaped once)
        self.sessions = sessions
        self.executor = executor
        self.outlets = dict(outlets)
        self.active: dict[int, ActiveRun] = {}
        self._user_cancelled: set[int] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self.queue: Any = None
        """The in-process worker (:class:`bot.queue.local.LocalWorker`) once the App wired it."""
        self.final_hook: Any = None
        """``(run_id, status, error) -> TxHook`` or ``None``: when set (a ``baton worker`` on
        PostgreSQL) and no :attr:`RunStore.hooks` are installed, a run's final status is written
        by this hook in the transaction that stores its result message (one transaction less)."""

    def in_thread(self, key: ThreadKey) -> list[ActiveRun]:
        """Runs of this process active in thread ``key``."""
        return [r for r in self.active.values() if r.key == key]

    async def start(
        self,
        key: ThreadKey,
        graph: Graph,
        *,
        requested_by: str,
        prior: Mapping[str, StepRecord] | None = None,
        rerun_of: int | None = None,
        fired_by: str | None = None,
    ) -> ActiveRun:
        """Persist a new run and start it; returns at once with the active run.
        A rerun (``rerun_of``) bypasses the step cache."""
        thread_id = await self.sessions.thread_id(key)
        run_id = await self.runs.create_run(thread_id, graph.source, graph, requested_by, name=graph.name, rerun_of=rerun_of)
        if prior:
            await self.runs.save_steps([_reuse(r, run_id) for r in prior.values()])
        reused = {k: _reuse(v, run_id) for k, v in (prior or {}).items()}
        return self._launch(run_id, key, graph, reused, fired_by, use_cache=rerun_of is None)

    def launch(self, run_id: int, key: ThreadKey, graph: Graph, prior: Mapping[str, StepRecord] | None = None) -> ActiveRun:
        """Start executing run ``run_id`` whose row was already written (state ``queued``),
        e.g. by the API's admission transaction; returns at once with the active run."""
        return self._launch(run_id, key, graph, {k: _reuse(v, run_id) for k, v in (prior or {}).items()})

    def _launch(
        self,
        run_id: int,
        key: ThreadKey,
        graph: Graph,
        prior: Mapping[str, StepRecord],
        fired_by: str | None = None,
        *,
        use_cache: bool = True,
        claimed: bool = False,
    ) -> ActiveRun:
        """``claimed``: the run row is ``running`` already (a worker's claim wrote it)."""
        title = graph.name or graph.source
        # the manager owns run tasks (ActiveRun.task; shutdown() cancels them); TaskOwner logs a failure
        task = self._run_tasks.start(self._drive(run_id, key, graph, prior, fired_by, use_cache, claimed), name=f"run-{run_id}")
        active = ActiveRun(run_id, key, title, task)
        self.active[run_id] = active
        self._idle.clear()
        task.add_done_callback(lambda t: self._done(run_id))
        return active

    def _done(self, run_id: int) -> None:
        self.active.pop(run_id, None)
        self._user_cancelled.discard(run_id)
        if not self.active:
            self._idle.set()

    async def _drive(
        self, run_id: int, key: ThreadKey, graph: Graph, prior: Mapping[str, StepRecord], fired_by: str | None, use_cache: bool = True,
        claimed: bool = False,
    ) -> RunResult | None:
        outlet = self.outlets.get(key.platform)
        view = outlet.run_view(key, run_id, graph.name or graph.source) if outlet else None
        try:
            if not claimed or self.runs.hooks:  # hooks (webhook outbox) see every start
                await self.runs.set_status(run_id, "running")
            result = await self.executor.execute(
                str(run_id), graph, prior=prior, on_event=view.on_event if view else None, use_cache=use_cache
            )
            text = result_text(run_id, result, graph, fired_by=fired_by)
            stored = await self._finish(run_id, key, result, text)
        except asyncio.CancelledError:
            user = run_id in self._user_cancelled
            await asyncio.shield(self._after_cancel(run_id, key, view, user))
            raise
        except Exception as exc:
            # A checkpoint write that fails inside a step task reaches us wrapped in the
            # executor's task group (fault 14.3): unwrap it. Anything else is a bug, logged
            # with its traceback and told in the thread; the run is never left silent.
            e = _store_error(exc)
            if e is not None:
                log.error("run %s: %s", run_id, e)
                text = texts.run_stopped(run_id, e)
            else:
                log.exception("run %s failed inside the run manager", run_id)
                inner = exc.exceptions[0] if isinstance(exc, BaseExceptionGroup) else exc
                text = texts.run_stopped_internal(run_id, inner)
            if view:
                await view.aclose()
            await self._tell(key, text)
            return None
        if view:
            await view.aclose()
        await self._tell(key, text, run=(run_id, result.status), stored=stored)
        return result

    async def _finish(self, run_id: int, key: ThreadKey, result: RunResult, text: str) -> bool:
        """Record the final status; returns whether ``text`` was stored with it (:attr:`final_hook`)."""
        if self.final_hook is not None and not self.runs.hooks:
            try:
                hook = self.final_hook(run_id, result.status, result.error)
                await self.sessions.append_once(key, "assistant", "baton", text, dedupe_ids=(), then=hook)
                return True
            except StoreError as e:
                log.warning("run %s: storing the final status with the result failed (%s); trying apart", run_id, e)
        await self.runs.set_status(run_id, result.status, error=result.error)
        return False

    async def _after_cancel(self, run_id: int, key: ThreadKey, view, user: bool) -> None:  # type: ignore[no-untyped-def]
        try:
            if view:
                await view.aclose()
            if user:
                await self.runs.set_status(run_id, "cancelled", error="cancelled by request")
                await self._tell(key, texts.run_cancelled(run_id))
        except Exception:
            log.exception("run %s: recording the cancellation failed", run_id)

    async def _tell(self, key: ThreadKey, text: str, *, run: tuple[int, str] | None = None, stored: bool = False) -> None:
        """Store (unless ``stored``) and post ``text``; ``run=(run_id, status)`` marks a run's result, which an
        outlet with :attr:`~bot.core.Ability.RESULT_CONTROLS` shows with its own controls (e.g. Retry on a failure)."""
        try:
            if not stored:
                await self.sessions.append(key, "assistant", "baton", text)
        except StoreError as e:
            log.error("storing a reply failed: %s", e)
        outlet = self.outlets.get(key.platform)
        if outlet is None:
            return
        if run is not None:
            await send_run_result(outlet, key, text, run[0], run[1])
        else:
            await outlet.send(key, text)

    async def tell_run(self, run_id: str, text: str) -> None:
        """Post ``text`` in the thread of active run ``run_id`` (e.g. a budget alert)."""
        active = self.active.get(int(run_id))
        if active is not None:
            await self._tell(active.key, text)

    async def cancel(self, run_id: int) -> bool:
        """Cancel a run of this process; False when it is not active here."""
        active = self.active.get(run_id)
        if active is None:
            return False
        self._user_cancelled.add(run_id)
        active.task.cancel()
        try:
            await active.task
        except asyncio.CancelledError:
            if asyncio.current_task().cancelling():  # type: ignore[union-attr]
                raise
        return True

    async def resume_unfinished(self, platforms: set[str]) -> list[int]:
        """Start again every unfinished run of the given platforms; returns their ids.

        With the run queue wired (``self.queue``), runs are queued again in id order per
        thread (a queued run waits for the interrupted one before it)."""
        if self.queue is not None:
            ids = await self.queue.recover(platforms)
            await self._report_untold(platforms)
            return ids
        resumed = []
        for row in reversed(await self.runs.list(unfinished=True, limit=1000)):
            if row.id in self.active:
                continue
            key = await self.sessions.key_for(row.thread_id)
            if key.platform not in platforms:
                continue
            got = await self.runs.get(row.id)
            assert got is not None
            _, steps = got
            text, prior = await self.resume_plan(row.id, row.graph, steps)
            await self._tell(key, text)
            self._launch(row.id, key, row.graph, prior)
            resumed.append(row.id)
        await self._report_untold(platforms)
        return resumed

    async def _report_untold(self, platforms: set[str], newest: int = 20) -> None:
        """Post the result of recently finished runs whose result reply was never stored.

        A crash between recording a run's final status and storing its reply leaves a finished
        run nobody was told about (the chaos suite's kill loop found it); a restart tells it.
        Only the ``newest`` runs are looked at, and a run is skipped when the thread's recent
        messages do not reach back to its end (it was told long ago, or cannot be checked).
        """
        for row in await self.runs.list(limit=newest):
            if row.status not in ("succeeded", "failed", "cancelled") or row.id in self.active or row.finished_at is None:
                continue
            key = await self.sessions.key_for(row.thread_id)
            if key.platform not in platforms:
                continue
            recent = await self.sessions.history(key, limit=50)
            if not recent or recent[0].created_at > row.finished_at:
                continue
            if any(m.role == "assistant" and m.text.startswith(f"Run #{row.id} ") for m in recent):
                continue
            got = await self.runs.get(row.id)
            assert got is not None
            by_node = {s.node_id: s for s in got[1]}
            steps = tuple(by_node[n.id] for n in row.graph.nodes if n.id in by_node and not n.is_gate)
            result = RunResult(str(row.id), row.status, steps, row.error)  # type: ignore[arg-type]
            log.warning("run %s finished without its result being told; telling it now", row.id)
            await self._tell(key, result_text(row.id, result, row.graph), run=(row.id, row.status))

    async def resume_plan(self, run_id: int, graph: Graph, steps: list[StepRecord]) -> tuple[str, dict[str, StepRecord]]:
        """What to say and which prior records to use when resuming run ``run_id`` after a
        restart: shell children a dead process left running are reaped (once per process)
        and reported in the text and in the interrupted step's record."""
        if self._orphans is None:
            self._orphans = {}
            for o in await self.children.reap_orphans() if self.children is not None else []:
                self._orphans.setdefault(o.run_id, {})[o.node_id] = o
        prior = {s.node_id: s for s in steps}
        done = sum(1 for s in steps if s.status in ("succeeded", "failed"))
        loops = [
            (lp.name, max((split_instance(s.node_id)[1] for s in steps if split_instance(s.node_id)[0] in lp.nodes), default=0))
            for lp in graph.loops()
        ]
        text = texts.resuming(run_id, done, len(graph.steps), loops)
        for node_id, orphan in sorted(self._orphans.pop(str(run_id), {}).items()):
            text += f"\nStep {node_id}: {orphan.note}."
            rec = prior.get(node_id)
            if rec is not None and rec.status == "running":  # the executor adds it to the step's error
                prior[node_id] = replace(rec, error=orphan.note)
        return text, prior

    async def wait_idle(self) -> None:
        """Return once no run is active or queued here (runs started meanwhile are waited for too)."""
        while self.active or (self.queue is not None and self.queue.busy):
            if self.queue is not None:
                await self.queue.wait_idle()
            await asyncio.gather(*(r.task for r in list(self.active.values())), return_exceptions=True)

    async def shutdown(self) -> None:
        """Stop every run task, leaving the runs resumable."""
        tasks = [r.task for r in self.active.values()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _store_error(exc: BaseException) -> StoreError | None:
    """``exc`` itself when it is a :class:`StoreError`, else the first one inside an exception
    group (nested groups included), else ``None``."""
    if isinstance(exc, StoreError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _store_error(inner)
            if found is not None:
                return found
    return None


def _reuse(rec: StepRecord, run_id: int) -> StepRecord:
    """A step record copied into a new run by ``/rerun … from``."""
    return replace(rec, run_id=str(run_id), reused=True)
