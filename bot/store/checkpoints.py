"""The executor's checkpoint store on Baton's database: one class per backend.

Both implement :class:`engine.checkpoints.CheckpointStore` over the ``step_runs``
table (upsert on ``(run_id, node_id)``) and ``runs.status``; both pass
``tests/store/test_checkpoint_conformance.py``, like the in-memory backend.

* :class:`SqliteCheckpointStore`: the statements are compiled once
  (:meth:`bot.store.db.Database.compiled`) and run on the database's one writer
  thread, whose group commit puts checkpoints that arrive together (a 50-way
  fan-out finishing at once) into one transaction.
* :class:`PostgresCheckpointStore`: a writer task holds one autocommit connection and
  upserts everything queued meanwhile in one statement (an executemany; with webhook
  outbox rows, in one transaction with them); each caller returns only after its
  records committed. A lone step pays one round trip.

Use :func:`checkpoint_store` to get the right one for a :class:`Database`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError, OperationalError

from bot.store.compiled import Compiled
from bot.store.db import CONNECTION_ERRORS, Database, _aware, store_error
from bot.store.errors import StoreError
from bot.store.tables import runs, step_runs, webhook_outbox
from bot.store.tx import Body, one
from engine.checkpoints import CheckpointStore
from engine.events import StepRecord

log = logging.getLogger("baton.store")

STEP_COLS = (
    "label",
    "kind",
    "status",
    "attempt",
    "output",
    "error",
    "started_at",
    "finished_at",
    "tokens_in",
    "tokens_out",
    "cost_usd",
    "reused",
    "cached",
)
_ALL = ("run_id", "node_id", *STEP_COLS)


def step_row(r: StepRecord) -> dict[str, object]:
    """A record as a ``step_runs`` row (run ids are integers in the database)."""
    return {
        "run_id": int(r.run_id),
        "node_id": r.node_id,
        "label": r.label,
        "kind": r.kind,
        "status": r.status,
        "attempt": r.attempt,
        "output": r.output,
        "error": r.error,
        "started_at": r.started_at,
        "finished_at": r.finished_at,
        "tokens_in": r.tokens_in,
        "tokens_out": r.tokens_out,
        "cost_usd": r.cost_usd,
        "reused": r.reused,
        "cached": r.cached,
    }


def step_record(r: Any) -> StepRecord:
    """A ``step_runs`` row (a mapping or a tuple in ``_ALL`` order) as a record."""
    m = r if hasattr(r, "keys") else dict(zip(_ALL, r))
    return StepRecord(
        run_id=str(m["run_id"]),
        node_id=m["node_id"],
        label=m["label"],
        kind=m["kind"],
        status=m["status"],
        attempt=m["attempt"],
        output=m["output"],
        error=m["error"],
        started_at=_aware(m["started_at"]),
        finished_at=_aware(m["finished_at"]),
        tokens_in=m["tokens_in"],
        tokens_out=m["tokens_out"],
        cost_usd=m["cost_usd"],
        reused=bool(m["reused"]),
        cached=bool(m.get("cached") or False),
    )


def step_upsert(dialect: str):  # type: ignore[no-untyped-def]
    """The ``step_runs`` upsert for ``dialect`` (one row per run and node; a newer record replaces the stored one)."""
    ins = (pg_insert if dialect == "postgresql" else sqlite_insert)(step_runs)
    return ins.on_conflict_do_update(index_elements=["run_id", "node_id"], set_={c: getattr(ins.excluded, c) for c in STEP_COLS})


STEPS_OF_RUN = select(*[step_runs.c[c] for c in _ALL]).where(step_runs.c.run_id == bindparam("run_id"))
OUTBOX_COLS = ("event_id", "webhook", "event_type", "payload", "status", "attempts", "created_at", "next_attempt_at")
OUTBOX_INSERT = webhook_outbox.insert().values(**{c: bindparam(c) for c in OUTBOX_COLS})
"""A ``webhook_outbox`` row (every column of :data:`OUTBOX_COLS`), written with the change it describes."""
_MARK = (
    update(runs)
    .where(runs.c.id == bindparam("rid"))
    .values(status="running", started_at=func.coalesce(runs.c.started_at, bindparam("now", type_=runs.c.started_at.type)), error=None)
)


class SqliteCheckpointStore:
    """Checkpoints on the SQLite worker thread (the file's one writer connection).

    Args:
        db: a SQLite :class:`Database`.
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        self._upsert = step_upsert("sqlite")
        self._up = db.compiled(self._upsert)  # the hot path: one step's checkpoint

    async def save_steps(self, records: Sequence[StepRecord]) -> None:
        """Upsert; returns once committed (group commit with writes queued meanwhile).

        Raises:
            StoreError: the write failed.
        """
        await self.save(records)

    async def save(self, records: Sequence[StepRecord], outbox: Sequence[dict[str, Any]] = ()) -> None:
        """:meth:`save_steps`, with ``webhook_outbox`` rows committed in the same transaction."""
        if not outbox:  # group commit with other writes queued meanwhile (Database.execute, one call less)
            up = self._up
            await self.db.worker.write(up.sql, [up.params(step_row(r)) for r in records], "checkpointing steps")
            return
        rows = [step_row(r) for r in records]

        def body() -> Body[None]:
            yield self._upsert, rows
            yield OUTBOX_INSERT, list(outbox)

        await self.db.run(body, "checkpointing steps")

    async def load(self, run_id: str) -> dict[str, StepRecord]:
        """The stored record of every step of ``run_id``."""
        return await _load(self.db, run_id)

    async def mark_running(self, run_id: str) -> None:
        """``runs.status = running`` (``started_at`` kept from the first attempt)."""
        await self.db.execute(_MARK, [{"rid": int(run_id), "now": datetime.now(UTC)}], what=f"marking run {run_id} running")

    async def aclose(self) -> None:
        """Nothing to flush: every write was committed before its call returned."""


class PostgresCheckpointStore:
    """Checkpoints over asyncpg with group commit (one writer task, one held connection).

    Args:
        db: a PostgreSQL (or other non-SQLite) :class:`Database`.
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        self._stmt = step_upsert(db.dialect)
        # SQLAlchemy does not cache the compiled form of ``ON CONFLICT DO UPDATE`` statements
        # (no cache key): compiled here once, run as driver SQL (asyncpg's prepared-statement cache)
        self._up = Compiled(self._stmt, db.engine.sync_engine.dialect) if db.dialect == "postgresql" else None
        self._queue: list[tuple[Sequence[StepRecord], Sequence[dict[str, Any]], asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._closing = False

    async def save_steps(self, records: Sequence[StepRecord]) -> None:
        """Upsert; returns once the transaction holding the records committed.

        Raises:
            StoreError: the write failed (after retries of transient errors).
        """
        await self.save(records)

    async def save(self, records: Sequence[StepRecord], outbox: Sequence[dict[str, Any]] = ()) -> None:
        """:meth:`save_steps`, with ``webhook_outbox`` rows committed in the same transaction."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((records, outbox, fut))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_loop(), name="baton-checkpoint-writer")
        self._wake.set()
        await asyncio.shield(fut)

    async def load(self, run_id: str) -> dict[str, StepRecord]:
        """The stored record of every step of ``run_id``."""
        return await _load(self.db, run_id)

    async def mark_running(self, run_id: str) -> None:
        """``runs.status = running`` (``started_at`` kept from the first attempt)."""
        params = {"rid": int(run_id), "now": datetime.now(UTC)}
        await self.db.run(lambda: one(_MARK, params), f"marking run {run_id} running", retry=True)

    async def _write_loop(self) -> None:
        conn = None
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                if not self._queue:
                    if self._closing:
                        return
                    continue
                batch, self._queue = self._queue, []
                rows = [step_row(r) for recs, _, _ in batch for r in recs]
                outbox = [o for _, extra, _ in batch for o in extra]
                try:
                    async for attempt in self.db.retrying():
                        with attempt:
                            if outbox:  # the events commit with the checkpoints, or neither does: one transaction
                                async with self.db.begin("checkpointing steps") as tx:
                                    await self._upsert(tx, rows)
                                    await tx.execute(OUTBOX_INSERT, outbox)
                            else:
                                try:  # one statement: autocommitted (no BEGIN and COMMIT round trips)
                                    if conn is None or conn.closed:
                                        conn = await self.db.autocommit_engine.connect()
                                    await self._upsert(conn, rows)
                                except (OperationalError, DBAPIError, *CONNECTION_ERRORS) as e:
                                    if conn is not None:
                                        try:
                                            await conn.close()
                                        except (OperationalError, DBAPIError, *CONNECTION_ERRORS):
                                            pass  # the connection is gone already; it was what failed
                                        conn = None
                                    raise store_error("checkpointing steps", e) from e
                except Exception as e:
                    for _, _, fut in batch:
                        if not fut.done():
                            fut.set_exception(e)
                    continue
                for _, _, fut in batch:
                    if not fut.done():
                        fut.set_result(None)
                if self._closing:
                    self._wake.set()
        finally:
            if conn is not None:
                await asyncio.shield(conn.close())

    async def _upsert(self, conn: Any, rows: list[dict[str, object]]) -> None:
        """The ``step_runs`` upsert of ``rows`` on ``conn`` (one statement: an executemany)."""
        if self._up is not None:
            up = self._up
            await conn.exec_driver_sql(up.sql, [up.params(r) for r in rows])
        else:
            await conn.execute(self._stmt, rows)

    async def aclose(self) -> None:
        """Stop the writer once everything queued is committed."""
        self._closing = True
        if self._writer is not None and not self._writer.done():
            self._wake.set()
            await self._writer


async def _load(db: Database, run_id: str) -> dict[str, StepRecord]:
    rows = await db.execute(STEPS_OF_RUN, {"run_id": int(run_id)}, what=f"loading run {run_id}")
    return {r.node_id: r for r in map(step_record, rows)}


def checkpoint_store(db: Database) -> SqliteCheckpointStore | PostgresCheckpointStore:
    """The checkpoint backend for ``db``'s dialect."""
    return SqliteCheckpointStore(db) if db.dialect == "sqlite" else PostgresCheckpointStore(db)


__all__ = ["OUTBOX_INSERT", "STEPS_OF_RUN", "CheckpointStore", "PostgresCheckpointStore", "SqliteCheckpointStore", "checkpoint_store", "step_record", "step_row"]
