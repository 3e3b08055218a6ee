"""The run's checkpoint writer: one per run, committing queued step records in order.

A part of :class:`engine.run._Run` (mixed in), split out so ``engine/run.py`` stays a
size one reads at once. It uses the run's ``ex.checkpoints`` (a
:class:`engine.run.CheckpointStore`), ``run_id``, ``pending``, ``waiters``, ``writer``
and ``write_error``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from engine.events import StepRecord

log = logging.getLogger("baton.engine")

__all__ = ["CheckpointWriter"]


class CheckpointWriter:
    """Group-commit of a run's checkpoints (see :meth:`_save_behind` for the durability rule)."""

    ex: Any
    run_id: str
    pending: list[StepRecord]
    waiters: list[asyncio.Future[None]]
    writer: asyncio.Task[None] | None
    write_error: Exception | None

    # -- checkpoints: one writer per run ---------------------------------------------

    def _enqueue(self, rec: StepRecord, wait: bool) -> asyncio.Future[None] | None:
        """Queue ``rec`` for the run's checkpoint writer; with ``wait``, a future settled
        once the batch holding it is durable."""
        self.pending.append(rec)
        fut: asyncio.Future[None] | None = None
        if wait:
            fut = asyncio.get_running_loop().create_future()
            self.waiters.append(fut)
        if self.writer is None or self.writer.done():
            # owned by this run: awaited by _flush before the run returns (or re-raises its cancellation)
            self.writer = asyncio.create_task(self._write_loop(), name=f"run-{self.run_id}-checkpoints")
        return fut

    async def _write_loop(self) -> None:
        """Write everything queued, batch after batch, in queue order (one ``save_steps`` at a time)."""
        assert self.ex.checkpoints is not None
        while self.pending:
            batch, self.pending = self.pending, []
            waiters, self.waiters = self.waiters, []
            try:
                await self.ex.checkpoints.save_steps(batch)
            except Exception as e:
                if self.write_error is None:
                    self.write_error = e
                for w in waiters:
                    if not w.done():
                        w.set_exception(e)
                continue
            for w in waiters:
                if not w.done():
                    w.set_result(None)

    async def _save(self, rec: StepRecord) -> None:
        """Checkpoint ``rec`` and wait until it (and everything queued before it) is durable."""
        if self.ex.checkpoints is None:
            return
        fut = self._enqueue(rec, True)
        assert fut is not None
        await asyncio.shield(fut)

    def _save_behind(self, rec: StepRecord) -> None:
        """Checkpoint the final record of an *idempotent* step without waiting for it.

        Dependents start at once; the run's single writer commits records in the order
        they were queued, batching those that pile up while a commit is in flight. The
        durability rule holds: any later record — in particular the ``running`` record a
        non-idempotent dependent writes and awaits before it starts — becomes durable
        only together with or after this one. A crash can lose only the newest records
        of idempotent steps, which a resume runs again (they may be run again). The run
        waits for every write before it ends (:meth:`_flush`), where a failed write
        raises the store's error.
        """
        if self.ex.checkpoints is not None:
            self._enqueue(rec, False)

    async def _settle_writer(self) -> None:
        """Wait for the checkpoint writer to end, logging (not raising) a write failure:
        the run is already ending with another exception."""
        try:
            await self._flush()
        except Exception as e:
            log.error("run %s: a checkpoint write failed while the run was ending: %s", self.run_id, e)

    async def _flush(self) -> None:
        """Wait until every queued checkpoint is written; raise the first write failure."""
        while self.writer is not None and not self.writer.done():
            await asyncio.shield(self.writer)
        if self.write_error is not None:
            err, self.write_error = self.write_error, None
            raise err
