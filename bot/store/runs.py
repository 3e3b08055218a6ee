"""Runs and their step checkpoints.

:class:`RunStore` implements the engine's ``CheckpointStore`` with *group commit*
(:mod:`bot.store.checkpoints`): concurrent ``save_steps`` calls (a 50-way fan-out
finishing together) are committed in one transaction, and each caller returns only
after the transaction that holds its records committed. A lone step pays one commit.
Every statement is SQLAlchemy Core, run by :meth:`bot.store.db.Database.run` (on
SQLite on the file's one writer thread).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import bindparam, or_, select, update

from bot.store.checkpoints import OUTBOX_INSERT, STEPS_OF_RUN, checkpoint_store, step_record
from bot.store.db import Database, _aware
from bot.store.tables import runs
from bot.store.tx import Body
from engine.events import StepRecord
from engine.graph import Graph

log = logging.getLogger("baton.store")

_FIRED_BY = select(runs.c.fired_by).where(runs.c.id == bindparam("rid"))
INSERT_QUEUED_RUN = (
    runs.insert()
    .values(
        thread_id=bindparam("thread_id"), source=bindparam("source"), name=bindparam("name"), graph=bindparam("graph"),
        status="queued", requested_by=bindparam("requested_by"), rerun_of=bindparam("rerun_of"),
        created_at=bindparam("created_at"), message_id=bindparam("message_id"), fired_by=bindparam("fired_by"),
    )
)
"""A ``queued`` run row (bind parameters: the column names); :meth:`RunStore.create_run` and
admission (``bot.queue.admission``, with ``RETURNING``) insert runs with it."""
_TERMINAL = ("succeeded", "failed", "cancelled")
_STATUS = update(runs).where(runs.c.id == bindparam("rid"))
_SET_STATUS = {  # running sets started_at, terminal states set finished_at
    "running": _STATUS.values(status=bindparam("status"), error=bindparam("error"), started_at=bindparam("now")),
    "finished": _STATUS.values(status=bindparam("status"), error=bindparam("error"), finished_at=bindparam("now")),
    "other": _STATUS.values(status=bindparam("status"), error=bindparam("error")),
}
_RUN_COLS = tuple(c.name for c in runs.c)
_GET = select(runs).where(runs.c.id == bindparam("rid"))
_LIST: dict[tuple[bool, bool, bool], Any] = {}


def _list_stmt(thread: bool, visible: bool, unfinished: bool) -> Any:
    """The ``RunStore.list`` query for one combination of filters (built once each)."""
    got = _LIST.get((thread, visible, unfinished))
    if got is None:
        q = select(runs).order_by(runs.c.id.desc()).limit(bindparam("limit"))
        if thread:
            q = q.where(runs.c.thread_id == bindparam("tid"))
        if visible:
            q = q.where(or_(runs.c.thread_id == bindparam("vtid"), runs.c.requested_by == bindparam("vuser")))
        if unfinished:
            q = q.where(or_(runs.c.status == "queued", runs.c.status == "running"))
        got = _LIST[(thread, visible, unfinished)] = q
    return got


@dataclass(frozen=True, slots=True)
class RunRow:
    """A run as stored (without its steps)."""

    id: int
    thread_id: int
    source: str
    name: str | None
    graph: Graph
    status: str
    error: str | None
    requested_by: str
    rerun_of: int | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


def _run_row(r) -> RunRow:  # type: ignore[no-untyped-def]
    if not hasattr(r, "keys"):
        r = dict(zip(_RUN_COLS, r))
    return RunRow(
        r["id"],
        r["thread_id"],
        r["source"],
        r["name"],
        Graph.from_json(r["graph"]),
        r["status"],
        r["error"],
        r["requested_by"],
        r["rerun_of"],
        _aware(r["created_at"]),  # type: ignore[arg-type]
        _aware(r["started_at"]),
        _aware(r["finished_at"]),
    )


class RunHook(Protocol):
    """Sees every run status change and step checkpoint (see :attr:`RunStore.hooks`).

    ``status_rows`` / ``step_rows`` return ``webhook_outbox`` rows (dicts of its
    columns) that are inserted *in the same transaction* as the change they describe
    (``status_rows`` may read the run first, outside that transaction),
    so an event is recorded exactly when its state change commits (the outbox pattern).
    ``committed`` / ``steps_committed`` are called after the commit (metrics, waking
    a dispatcher); they must be cheap and must not raise.
    """

    async def status_rows(self, run_id: int, status: str, error: str | None) -> list[dict[str, Any]]: ...

    def step_rows(self, records: Sequence[StepRecord]) -> list[dict[str, Any]]: ...

    def committed(self, run_id: int, status: str) -> None: ...

    def steps_committed(self, records: Sequence[StepRecord]) -> None: ...


class RunStore:
    """Runs and step records in SQL; also the executor's checkpoint store.

    Attributes:
        hooks: :class:`RunHook` objects told about every status change and checkpoint
            (``baton serve``'s webhooks outbox and metrics).
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        self.hooks: list[RunHook] = []
        self.checkpoints = checkpoint_store(db)
        """The checkpoint backend of this database (bot.store.checkpoints); step writes go through
        :meth:`save_steps` here so the webhook outbox rows commit with them (group commit on both backends)."""

    # -- runs ------------------------------------------------------------

    async def create_run(
        self,
        thread_id: int,
        source: str,
        graph: Graph,
        requested_by: str,
        *,
        name: str | None = None,
        rerun_of: int | None = None,
        message_id: int | None = None,
        fired_by: str | None = None,
    ) -> int:
        """Insert a run in state ``queued``; returns its id."""
        params = {
            "thread_id": thread_id, "source": source, "name": name, "graph": graph.to_json(), "requested_by": requested_by,
            "rerun_of": rerun_of, "created_at": datetime.now(UTC), "message_id": message_id, "fired_by": fired_by,
        }

        def body() -> Body[int]:
            return (yield INSERT_QUEUED_RUN, params).inserted_id

        return await self.db.run(body, "creating a run", atomic=False)

    async def set_status(self, run_id: int, status: str, *, error: str | None = None) -> None:
        """Move a run to ``status``; ``running`` sets started_at, terminal states set finished_at."""
        stmt = _SET_STATUS["running" if status == "running" else "finished" if status in _TERMINAL else "other"]
        params = {"rid": run_id, "status": status, "error": error, "now": datetime.now(UTC)}
        extra = [r for h in self.hooks for r in await h.status_rows(run_id, status, error)]

        def body() -> Body[None]:
            yield stmt, params
            if extra:  # the events commit with the status change, or neither does
                yield OUTBOX_INSERT, extra

        await self.db.run(body, f"marking run {run_id} {status}", retry=True)
        for h in self.hooks:
            h.committed(run_id, status)

    async def get(self, run_id: int) -> tuple[RunRow, list[StepRecord]] | None:
        """A run and its step records, or ``None``."""

        def body() -> Body[tuple[Any, list[Any]] | None]:
            row = (yield _GET, {"rid": run_id}).first()
            if row is None:
                return None
            return row, (yield STEPS_OF_RUN, {"run_id": run_id}).rows

        got = await self.db.run(body, f"reading run {run_id}", atomic=False)
        if got is None:
            return None
        return _run_row(got[0]), [step_record(s) for s in got[1]]

    async def list(
        self, *, thread_id: int | None = None, limit: int = 10, unfinished: bool = False, visible_to: tuple[int, str] | None = None
    ) -> list[RunRow]:
        """The newest runs (of a thread, or all), newest first; ``unfinished`` keeps queued/running ones.

        ``visible_to=(thread_id, user)``: only runs started in that thread or requested by that user.
        """
        params: dict[str, Any] = {"limit": limit}
        if thread_id is not None:
            params["tid"] = thread_id
        if visible_to is not None:
            params["vtid"], params["vuser"] = visible_to
        stmt = _list_stmt(thread_id is not None, visible_to is not None, unfinished)
        return [_run_row(r) for r in await self.db.execute(stmt, params, what="listing runs")]

    async def fired_by(self, run_id: int) -> str | None:
        """The note a schedule firing put on run ``run_id`` (``None`` for other runs)."""
        rows = await self.db.execute(_FIRED_BY, {"rid": run_id}, what=f"reading run {run_id}")
        return rows[0][0] if rows else None

    async def load(self, run_id: str) -> dict[str, StepRecord]:
        """The stored record of every step of ``run_id`` (the checkpoint seam's read)."""
        return await self.checkpoints.load(run_id)

    async def mark_running(self, run_id: str) -> None:
        """Mark the run ``running`` (its first start time kept)."""
        await self.checkpoints.mark_running(run_id)

    # -- checkpoints (group commit) -----------------------------------------

    async def save_steps(self, records: Sequence[StepRecord]) -> None:
        """Upsert step records; returns once they are committed (group commit with concurrent callers).

        Raises:
            StoreError: the write failed (after retries); the step's caller reports it.
        """
        if self.hooks:  # the outbox rows commit with the checkpoint, or neither does
            await self.checkpoints.save(records, [r for h in self.hooks for r in h.step_rows(records)])
        else:
            await self.checkpoints.save(records)
        for h in self.hooks:
            h.steps_committed(records)

    async def aclose(self) -> None:
        """Stop the checkpoint writer once everything queued is committed."""
        await self.checkpoints.aclose()
