"""Retention: keeps the database from growing without bound. A periodic job, never in the turn path.

Rules (``[retention]``; 0 disables one):

* ``idle_session_days``: a thread idle this long loses its messages and summaries
  (the thread row and its runs stay until the run rule removes the runs).
* ``max_messages_per_thread``: beyond the cap, the oldest messages are first folded
  into stored level-1 summaries (so the memory of them survives), then deleted.
* ``run_days``: finished runs older than this are deleted with their step
  checkpoints (foreign-key cascade), and so are processed event ids.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import and_, delete, func, select

from bot.memory import Memory
from bot.sessions import SummarySpan, summarize_span, summary_cover
from bot.settings import RetentionSettings
from bot.store import Database, SessionStore
from bot.store.tables import messages, processed_events, runs, step_cache, summaries, threads

log = logging.getLogger("baton.retention")


@dataclass(frozen=True)
class RetentionReport:
    """What one pass removed or created."""

    idle_threads: int = 0
    messages_deleted: int = 0
    summaries_created: int = 0
    runs_deleted: int = 0
    memory_sessions_expired: int = 0


class Retention:
    """Applies the retention rules.

    Args:
        clock: returns "now" (UTC); tests pin it.
    """

    def __init__(
        self,
        db: Database,
        sessions: SessionStore,
        memory: Memory,
        settings: RetentionSettings,
        *,
        clock=lambda: datetime.now(UTC),  # type: ignore[no-untyped-def]
    ) -> None:
        self.db = db
        self.sessions = sessions
        self.memory = memory
        self.settings = settings
        self.clock = clock

    async def run_once(self) -> RetentionReport:
        """One pass over every rule.

        Raises:
            StoreError: a database failure (the periodic loop logs it and tries again next time).
        """
        now = self.clock()
        s = self.settings
        idle = deleted = created = gone_runs = 0
        if s.idle_session_days > 0:
            cut = now - timedelta(days=s.idle_session_days)
            async with self.db.begin("expiring idle sessions") as conn:
                idle_ids = select(threads.c.id).where(threads.c.updated_at < cut)
                idle = len((await conn.execute(select(func.count()).select_from(messages).where(messages.c.thread_id.in_(idle_ids)).group_by(messages.c.thread_id))).all())
                deleted += (await conn.execute(delete(messages).where(messages.c.thread_id.in_(idle_ids)))).rowcount or 0
                await conn.execute(delete(summaries).where(summaries.c.thread_id.in_(idle_ids)))
        if s.max_messages_per_thread > 0:
            d, c = await self._cap(s.max_messages_per_thread)
            deleted += d
            created += c
        if s.run_days > 0:
            cut = now - timedelta(days=s.run_days)
            async with self.db.begin("deleting old runs") as conn:
                gone_runs = (
                    await conn.execute(
                        delete(runs).where(and_(runs.c.finished_at < cut, runs.c.status.in_(("succeeded", "failed", "cancelled"))))
                    )
                ).rowcount or 0
                await conn.execute(delete(processed_events).where(processed_events.c.received_at < cut))
        async with self.db.begin("deleting expired step-cache entries") as conn:  # cache: {ttl} results past their TTL
            await conn.execute(delete(step_cache).where(step_cache.c.expires_at <= now))
        if idle or deleted:
            self.memory.invalidate()
        expired = self.memory.purge_expired()
        report = RetentionReport(idle, deleted, created, gone_runs, expired)
        if any((idle, deleted, created, gone_runs, expired)):
            log.info("retention: %s", report)
        return report

    async def _cap(self, cap: int) -> tuple[int, int]:
        deleted = created = 0
        async with self.db.begin("finding long threads") as conn:
            over = (
                await conn.execute(
                    select(messages.c.thread_id, func.count()).group_by(messages.c.thread_id).having(func.count() > cap)
                )
            ).all()
        cfg = self.memory.default.context
        counter = self.memory.counter
        for thread_id, n in over:
            key = await self.sessions.key_for(thread_id)
            oldest = await self._oldest(thread_id, n - cap)
            if not oldest:
                continue
            covered = max((x.last_id for x in summary_cover(await self.sessions.summaries(key))), default=0)
            todo = [m for m in oldest if m.id > covered]
            step = cfg.summary_frequency
            for i in range(0, len(todo), step):
                chunk = tuple(todo[i : i + step])
                span = SummarySpan(level=1, first_id=chunk[0].id, last_id=chunk[-1].id, message_count=len(chunk), sources=chunk)
                rec = await summarize_span(span, self.memory.summarize, counter, cfg.summary_length)
                await self.sessions.add_summary(key, rec)
                created += 1
            async with self.db.begin("pruning a long thread") as conn:
                deleted += (
                    await conn.execute(delete(messages).where(messages.c.thread_id == thread_id, messages.c.id <= oldest[-1].id))
                ).rowcount or 0
        return deleted, created

    async def _oldest(self, thread_id: int, n: int):  # type: ignore[no-untyped-def]
        from bot.store.sessions import SessionStore as _S

        async with self.db.begin("reading old messages") as conn:
            rows = (
                await conn.execute(
                    select(
                        messages.c.id, messages.c.thread_id, messages.c.role, messages.c.author, messages.c.text,
                        messages.c.created_at, messages.c.tokens, messages.c.encoding, messages.c.kind,
                    )
                    .where(messages.c.thread_id == thread_id)
                    .order_by(messages.c.id)
                    .limit(n)
                )
            ).all()
        return [_S._row(r).to_memory() for r in rows]

    async def loop(self) -> None:
        """Run a pass every ``interval`` seconds until cancelled; failures are logged and retried next time."""
        while True:
            await asyncio.sleep(self.settings.interval)
            try:
                await self.run_once()
            except Exception:
                log.exception("retention pass failed; trying again in %ss", self.settings.interval)
