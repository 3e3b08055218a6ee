"""A run's LLM spend in the database (``runs.spent_usd``, migration 0007_spine_run_queue).

``[workflow.cost_control] max_cost_per_workflow`` is enforced with *reserve, then settle*:

* before an LLM step, :meth:`RunBudget.reserve` adds the step's worst-case cost to the
  run's ``spent_usd`` in one statement, only if the total stays within the limit::

      UPDATE runs SET spent_usd = spent_usd + :est
      WHERE id = :id AND spent_usd + :est <= :limit RETURNING spent_usd

  Two parallel steps (or two processes) cannot both pass the check: the database applies
  the updates one after the other and re-evaluates the condition for the second
  (SQLite has one writer; PostgreSQL re-checks the ``WHERE`` of a row updated meanwhile).
* after it, :meth:`RunBudget.settle` replaces the reservation by the actual cost.

The spend lives with the run, so a run resumed after a restart (or on another worker)
continues from what it had spent; nothing is kept in memory. A process that dies between
reserve and settle leaves that step's reservation counted (the run is charged the step's
worst case, never less than it spent).
"""

from __future__ import annotations

from sqlalchemy import bindparam, select, update

from bot.store.db import Database
from bot.store.tables import runs

__all__ = ["RunBudget"]

_RESERVE = (
    update(runs)
    .where(runs.c.id == bindparam("rid"), runs.c.spent_usd + bindparam("est") <= bindparam("limit"))
    .values(spent_usd=runs.c.spent_usd + bindparam("est"))
    .returning(runs.c.spent_usd)
)
_SETTLE = (
    update(runs)
    .where(runs.c.id == bindparam("rid"))
    .values(spent_usd=runs.c.spent_usd - bindparam("held") + bindparam("actual"))
    .returning(runs.c.spent_usd)
)
_SPENT = select(runs.c.spent_usd).where(runs.c.id == bindparam("rid"))


class RunBudget:
    """Reserve-then-settle LLM spend of runs, in USD (see the module doc).

    Args:
        db: the database holding the ``runs`` table.

    Every method is one statement in its own transaction and raises
    :class:`~bot.store.errors.StoreError` when the database fails, :class:`LookupError`
    when there is no run ``run_id``.
    """

    def __init__(self, db: Database) -> None:
        self.db = db

    async def reserve(self, run_id: int, usd: float, limit: float) -> tuple[bool, float]:
        """Reserve ``usd`` (≥ 0) for run ``run_id`` if its spend stays ≤ ``limit`` (USD).

        Returns ``(True, spend including this reservation)`` or ``(False, spend as it is)``.
        """
        got = await self.db.execute(_RESERVE, {"rid": run_id, "est": float(usd), "limit": float(limit)}, what=f"reserving budget for run {run_id}")
        if got:
            return True, float(got[0][0])
        return False, await self.spent(run_id)

    async def settle(self, run_id: int, reserved: float, actual: float) -> float:
        """Replace a reservation of ``reserved`` USD by the ``actual`` cost (``reserved=0``:
        just record a cost); returns the run's spend afterwards."""
        got = await self.db.execute(
            _SETTLE, {"rid": run_id, "held": float(reserved), "actual": float(actual)}, what=f"recording the spend of run {run_id}"
        )
        if not got:
            raise LookupError(f"no run {run_id}")
        return float(got[0][0])

    async def spent(self, run_id: int) -> float:
        """The run's recorded spend (with reservations of steps in flight), USD."""
        got = await self.db.execute(_SPENT, {"rid": run_id}, what=f"reading the spend of run {run_id}")
        if not got:
            raise LookupError(f"no run {run_id}")
        return float(got[0][0])
