"""The checkpoint seam: what the executor needs from a durable store, and an in-memory backend.

The executor (:mod:`engine.run`) reads and writes step records through
:class:`CheckpointStore` only; pattern after LangGraph's checkpointers (one protocol,
several savers, one conformance suite). Backends:

* :class:`MemoryCheckpointStore` (here): tests and ephemeral runs.
* ``bot.store.checkpoints.SqliteCheckpointStore``: the embedded default, on the
  database's one writer thread.
* ``bot.store.checkpoints.PostgresCheckpointStore``: group commit over asyncpg.

Every backend passes ``tests/store/test_checkpoint_conformance.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from engine.events import StepRecord


@runtime_checkable
class CheckpointStore(Protocol):
    """Durable step records of runs (run ids are strings to the engine).

    Rules every backend keeps (checked by the conformance suite):

    * ``save_steps`` upserts on ``(run_id, node_id)`` and returns only once the
      records are durable; concurrent calls may be committed together.
    * ``load`` returns the latest record of every step of a run, by node id
      (``{}`` for an unknown run).
    * ``mark_running`` records that an attempt at the run started (status
      ``running``, start time set when it was not yet).
    """

    async def save_steps(self, records: Sequence[StepRecord]) -> None: ...

    async def load(self, run_id: str) -> dict[str, StepRecord]: ...

    async def mark_running(self, run_id: str) -> None: ...


class MemoryCheckpointStore:
    """Checkpoints in a dict: nothing survives the process (tests, dry runs).

    ``running`` holds the ids of runs marked running.
    """

    def __init__(self) -> None:
        self.steps: dict[str, dict[str, StepRecord]] = {}
        self.running: set[str] = set()

    async def save_steps(self, records: Sequence[StepRecord]) -> None:
        """Upsert ``records`` (immediately "durable")."""
        for r in records:
            self.steps.setdefault(r.run_id, {})[r.node_id] = r

    async def load(self, run_id: str) -> dict[str, StepRecord]:
        """The latest record of each step of ``run_id``."""
        return dict(self.steps.get(run_id, {}))

    async def mark_running(self, run_id: str) -> None:
        """Remember that ``run_id`` started."""
        self.running.add(run_id)


__all__ = ["CheckpointStore", "MemoryCheckpointStore"]
