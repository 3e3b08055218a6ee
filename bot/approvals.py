"""Approval steps: a run pauses at ``approve [question]`` until an allowed person decides.

Durability: the waiting step is checkpointed with status ``waiting``; a restart
resumes the run and the step waits again (it is idempotent), so nothing is
approved by accident and nothing is lost. A decision resolves the waiting step,
whose final record (``approved by X`` / ``rejected by X``) is checkpointed by the
executor like any other step.

Across processes (``baton worker`` scale-out, or ``baton serve`` next to a bot on one
database): a broker given the database (``db``) answers :meth:`ApprovalBroker.waiting`
from the ``waiting`` step records too, and :meth:`ApprovalBroker.decide_async` records
a decision on a step waiting in another process in ``approval_decisions`` (the first
decision on a step wins: its primary key). The waiting step polls for it every
``poll_s`` seconds (0.5 by default) and consumes (deletes) it; a decision recorded while
the run's worker was dead is found when the resumed step waits again.

Who may decide: ``[permissions] approve = [...]`` (user ids, ``role:NAME``, ``*``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, bindparam, delete, func, or_, select

from bot.settings import permits
from bot.store import StoreError
from bot.store.tables import approval_decisions, runs, step_runs
from engine.errors import StepError
from engine.graph import Graph, Node

log = logging.getLogger("baton.approvals")

_TAKE = (
    delete(approval_decisions)
    .where(approval_decisions.c.run_id == bindparam("rid"), approval_decisions.c.node_id == bindparam("node"))
    .returning(approval_decisions.c.approve, approval_decisions.c.decided_by)
)
_WAITING = (
    select(step_runs.c.run_id, step_runs.c.node_id, runs.c.graph)
    .select_from(step_runs.join(runs, runs.c.id == step_runs.c.run_id))
    .where(
        step_runs.c.run_id == bindparam("rid"),
        step_runs.c.status == "waiting",
        step_runs.c.kind == "approve",
        runs.c.status == "running",
        ~select(approval_decisions.c.run_id)
        .where(and_(approval_decisions.c.run_id == step_runs.c.run_id, approval_decisions.c.node_id == step_runs.c.node_id))
        .exists(),
    )
    .order_by(step_runs.c.node_id)
)
# a waiting record of the node (``gate``) or of one of its loop iterations (``gate#2``)
_WAITING_NODE = (
    select(step_runs.c.node_id)
    .select_from(step_runs.join(runs, runs.c.id == step_runs.c.run_id))
    .where(
        step_runs.c.run_id == bindparam("rid"),
        or_(step_runs.c.node_id == bindparam("node"), func.substr(step_runs.c.node_id, 1, bindparam("plen")) == bindparam("prefix")),
        step_runs.c.status == "waiting",
        runs.c.status == "running",
    )
)


def _base(node_id: str) -> str:
    """The node of a step record id (``gate#2``, a loop's second iteration, is node ``gate``)."""
    base, _, it = node_id.rpartition("#")
    return base if base and it.isdigit() else node_id


class ApprovalBroker:
    """Connects waiting ``approve`` steps with the people who decide them.

    Args:
        approvers: who may decide (``[permissions] approve``; default anyone).
        db: the :class:`bot.store.Database` shared with other processes; ``None`` keeps
            decisions inside this process.
        poll_s: seconds between a waiting step's looks for a decision recorded by another process.
    """

    def __init__(self, approvers: Sequence[str] = ("*",), db: Any = None, poll_s: float = 0.5) -> None:
        self.approvers = tuple(approvers)
        self.db = db
        self.poll_s = poll_s
        self._waiting: dict[tuple[str, str], asyncio.Future[tuple[bool, str]]] = {}
        self.prompts: dict[tuple[str, str], str] = {}

    async def wait(self, run_id: str, node: Node) -> str:
        """Wait for a decision on step ``node`` of run ``run_id``; returns the approver.

        Raises:
            StepError: rejected (not retryable), naming who rejected.
        """
        key = (run_id, node.id)
        fut: asyncio.Future[tuple[bool, str]] = asyncio.get_running_loop().create_future()
        self._waiting[key] = fut
        self.prompts[key] = str(node.args.get("prompt", ""))
        try:
            approved, who = await self._decision(run_id, node.id, fut)
        finally:
            self._waiting.pop(key, None)
            self.prompts.pop(key, None)
        if not approved:
            raise StepError(f"rejected by {who}", retryable=False)
        return who

    async def _decision(self, run_id: str, node_id: str, fut: asyncio.Future[tuple[bool, str]]) -> tuple[bool, str]:
        """The local decision (``fut``) or one another process recorded, whichever comes first."""
        if self.db is None:
            return await fut
        params = {"rid": int(run_id), "node": node_id}
        while True:
            got = None
            try:
                got = await self.db.execute(_TAKE, params, what=f"reading the decision on step {node_id} of run {run_id}")
            except StoreError as e:
                log.warning("run %s: looking for a decision on step %s failed: %s", run_id, node_id, e)
            if fut.done():  # decided here: a decision recorded elsewhere meanwhile was consumed above
                return fut.result()
            if got:
                return bool(got[0][0]), str(got[0][1])
            await asyncio.wait((fut,), timeout=self.poll_s)

    def pending(self, run_id: int | None = None) -> list[tuple[int, str, str]]:
        """Waiting approvals of this process as ``(run id, step id, question)``, optionally of one run."""
        return [
            (int(r), n, self.prompts.get((r, n), ""))
            for (r, n) in self._waiting
            if run_id is None or int(r) == run_id
        ]

    async def waiting(self, run_id: int) -> list[tuple[int, str, str]]:
        """Approvals run ``run_id`` waits for in any process as ``(run id, step id, question)``
        (this process's, else the ``waiting`` step records of the running run that have no
        recorded decision yet).

        Raises:
            StoreError: the database failed.
        """
        here = self.pending(run_id)
        if here or self.db is None:
            return here
        rows = await self.db.execute(_WAITING, {"rid": run_id}, what=f"reading run {run_id}'s approvals")
        out: list[tuple[int, str, str]] = []
        graph: Graph | None = None
        for rid, node_id, graph_json in rows:
            if graph is None:
                graph = Graph.from_json(graph_json)
            node = next((n for n in graph.nodes if n.id == _base(node_id)), None)
            out.append((int(rid), _base(node_id), str(node.args.get("prompt", "")) if node is not None else ""))
        return out

    def may_decide(self, author: str, roles: Sequence[str]) -> bool:
        """Whether ``author`` (with ``roles``) may approve or reject."""
        return permits(self.approvers, author, roles)

    def decide(self, run_id: int, step: str | None, who: str, approve: bool) -> str:
        """Resolve a step waiting in this process; returns the reply text (also when nothing matched)."""
        waiting = [n for (r, n) in self._waiting if int(r) == run_id]
        if not waiting:
            return f"Run #{run_id} has no step waiting for approval."
        node_id = self._choose(run_id, step, waiting)
        if node_id.startswith("Run #"):
            return node_id
        fut = self._waiting.get((str(run_id), node_id))
        if fut is None or fut.done():
            return f"Step {node_id} of run #{run_id} was already decided."
        fut.set_result((approve, who))
        return _decided(run_id, node_id, approve)

    async def decide_async(self, run_id: int, step: str | None, who: str, approve: bool) -> str:
        """Resolve a step waiting here or in another process; returns the reply text
        (``Approved …`` / ``Rejected …`` when a decision was made or recorded).

        Raises:
            StoreError: the database failed (nothing was recorded).
        """
        if self.pending(run_id) or self.db is None:
            return self.decide(run_id, step, who, approve)
        waiting = sorted({s for _, s, _ in await self.waiting(run_id)})
        if not waiting:
            return f"Run #{run_id} has no step waiting for approval."
        node_id = self._choose(run_id, step, waiting)
        if node_id.startswith("Run #"):
            return node_id
        if not await self._record(run_id, node_id, who, approve):
            return f"Step {node_id} of run #{run_id} was already decided."
        return _decided(run_id, node_id, approve)

    async def _record(self, run_id: int, node_id: str, who: str, approve: bool) -> bool:
        """Insert the decision (keyed by the node, as :meth:`wait` knows it) while a record of the
        step waits; False when a decision was recorded first or the step stopped waiting."""
        from sqlalchemy.dialects.postgresql import insert as pg_insert
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        insert = pg_insert if self.db.dialect == "postgresql" else sqlite_insert
        stmt = (
            insert(approval_decisions)
            .from_select(
                ["run_id", "node_id", "approve", "decided_by", "decided_at"],
                select(
                    bindparam("rid", type_=approval_decisions.c.run_id.type), bindparam("node", type_=approval_decisions.c.node_id.type),
                    bindparam("ok", type_=approval_decisions.c.approve.type), bindparam("who", type_=approval_decisions.c.decided_by.type),
                    bindparam("at", type_=approval_decisions.c.decided_at.type),
                ).where(_WAITING_NODE.exists()),
            )
            .on_conflict_do_nothing(index_elements=["run_id", "node_id"])
            .returning(approval_decisions.c.run_id)
        )
        params = {
            "rid": run_id, "node": node_id, "prefix": node_id + "#", "plen": len(node_id) + 1, "ok": approve, "who": who, "at": datetime.now(UTC),
        }
        got = await self.db.execute(stmt, params, what=f"recording the decision on step {node_id} of run {run_id}")
        return bool(got)

    @staticmethod
    def _choose(run_id: int, step: str | None, waiting: Sequence[str]) -> str:
        """The step to decide, or the reply explaining why none is chosen (starts with ``Run #``)."""
        if step:
            if step not in waiting:
                return f"Run #{run_id} is not waiting on step '{step}' (waiting: {', '.join(waiting)})."
            return step
        if len(waiting) == 1:
            return waiting[0]
        return f"Run #{run_id} waits on several steps ({', '.join(waiting)}); say which: /approve {run_id} STEP"


def _decided(run_id: int, node_id: str, approve: bool) -> str:
    return f"{'Approved' if approve else 'Rejected'} step {node_id} of run #{run_id}."
