"""Approval steps: a run pauses at ``approve [question]`` until an allowed person decides.

Durability: the waiting step is checkpointed with status ``waiting``; a restart
resumes the run and the step waits again (it is idempotent), so nothing is
approved by accident and nothing is lost. A decision resolves the waiting step,
whose final record (``approved by X`` / ``rejected by X``) is checkpointed by the
executor like any other step.

Who may decide: ``[permissions] approve = [...]`` (user ids, ``role:NAME``, ``*``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from bot.settings import permits
from engine.errors import StepError
from engine.graph import Node


class ApprovalBroker:
    """Connects waiting ``approve`` steps with the people who decide them.

    Args:
        approvers: who may decide (``[permissions] approve``; default anyone).
    """

    def __init__(self, approvers: Sequence[str] = ("*",)) -> None:
        self.approvers = tuple(approvers)
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
            approved, who = await fut
        finally:
            self._waiting.pop(key, None)
            self.prompts.pop(key, None)
        if not approved:
            raise StepError(f"rejected by {who}", retryable=False)
        return who

    def pending(self, run_id: int | None = None) -> list[tuple[int, str, str]]:
        """Waiting approvals as ``(run id, step id, question)``, optionally of one run."""
        return [
            (int(r), n, self.prompts.get((r, n), ""))
            for (r, n) in self._waiting
            if run_id is None or int(r) == run_id
        ]

    def may_decide(self, author: str, roles: Sequence[str]) -> bool:
        """Whether ``author`` (with ``roles``) may approve or reject."""
        return permits(self.approvers, author, roles)

    def decide(self, run_id: int, step: str | None, who: str, approve: bool) -> str:
        """Resolve a waiting step; returns the reply text (also when nothing matched)."""
        waiting = [n for (r, n) in self._waiting if int(r) == run_id]
        if not waiting:
            return f"Run #{run_id} has no step waiting for approval."
        if step:
            if step not in waiting:
                return f"Run #{run_id} is not waiting on step '{step}' (waiting: {', '.join(waiting)})."
            node_id = step
        elif len(waiting) == 1:
            node_id = waiting[0]
        else:
            return f"Run #{run_id} waits on several steps ({', '.join(waiting)}); say which: /approve {run_id} STEP"
        fut = self._waiting.get((str(run_id), node_id))
        if fut is None or fut.done():
            return f"Step {node_id} of run #{run_id} was already decided."
        fut.set_result((approve, who))
        return f"{'Approved' if approve else 'Rejected'} step {node_id} of run #{run_id}."
