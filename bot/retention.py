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

from sqlalchemy import and_, bindparam, delete, func, literal, select

from bot.memory import Memory
from bot.sessions import SummarySpan, summarize_span, summary_cover
from bot.sessions.records import MemoryMessage
from bot.settings import RetentionSettings
from bot.store import Database, SessionStore
from bot.store.tables import messages, processed_events, runs, step_cache, summaries, threads
from bot.store.tx import Body

log = logging.getLogger("baton.retention")

# Every statement once (SQLAlchemy Core; on SQLite they run on the file's one writer thread).
_IDLE = select(threads.c.id).where(threads.c.updated_at < bindparam("cut", type_=threads.c.updated_at.type))
_IDLE_THREADS_WITH_MESSAGES = select(messages.c.thread_id).where(messages.c.thread_id.in_(_IDLE)).group_by(messages.c.thread_id)
_DELETE_IDLE_MESSAGES = delete(messages).where(messages.c.thread_id.in_(_IDLE))
_DELETE_IDLE_SUMMARIES = delete(summaries).where(summaries.c.thread_id.in_(_IDLE))
_LONG_THREADS = select(messages.c.thread_id, func.count()).group_by(messages.c.thread_id).having(func.count() > bindparam("cap"))
_OLDEST = (
    select(
        messages.c.id, messages.c.thread_id, messages.c.role, messages.c.author, messages.c.text,
        messages.c.created_at, messages.c.tokens, messages.c.encoding, messages.c.kind,
    )
    .where(messages.c.thread_id == bindparam("tid"))
    .order_by(messages.c.id)
    .limit(bindparam("n"))
)
_PRUNE = delete(messages).where(messages.c.thread_id == bindparam("tid"), messages.c.id <= bindparam("last"))
_DELETE_OLD_RUNS = delete(runs).where(
    and_(runs.c.finished_at < bindparam("cut", type_=runs.c.finished_at.type), runs.c.status.in_([literal(x) for x in ("succeeded", "failed", "cancelled")]))
)
_DELETE_OLD_EVENTS = delete(processed_events).where(processed_events.c.received_at < bindparam("cut", type_=processed_events.c.received_at.type))
_DELETE_EXPIRED_CACHE = delete(step_cache).where(step_cache.c.expires_at <= bindparam("now", type_=step_cache.c.expires_at.type))


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

            def expire() -> Body[tuple[int, int]]:
                n = len((yield _IDLE_THREADS_WITH_MESSAGES, {"cut": cut}).rows)
                gone = (yield _DELETE_IDLE_MESSAGES, {"cut": cut}).rowcount or 0
                yield _DELETE_IDLE_SUMMARIES, {"cut": cut}
                return n, gone

            idle, gone = await self.db.run(expire, "expiring idle sessions")
            deleted += gone
        if s.max_messages_per_thread > 0:
            d, c = await self._cap(s.max_messages_per_thread)
            deleted += d
            created += c
        if s.run_days > 0:
            cut = now - timedelta(days=s.run_days)

            def old_runs() -> Body[int]:
                n = (yield _DELETE_OLD_RUNS, {"cut": cut}).rowcount or 0
                yield _DELETE_OLD_EVENTS, {"cut": cut}
                return n

            gone_runs = await self.db.run(old_runs, "deleting old runs")
        # the step cache: {ttl} results past their TTL
        await self.db.execute(_DELETE_EXPIRED_CACHE, {"now": now}, what="deleting expired step-cache entries")
        if idle or deleted:
            self.memory.invalidate()
        expired = self.memory.purge_expired()
        report = RetentionReport(idle, deleted, created, gone_runs, expired)
        if any((idle, deleted, created, gone_runs, expired)):
            log.info("retention: %s", report)
        return report

    async def _cap(self, cap: int) -> tuple[int, int]:
        deleted = created = 0
        over = await self.db.execute(_LONG_THREADS, {"cap": cap}, what="finding long threads")
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

            def prune(tid: int = thread_id, last: int = oldest[-1].id) -> Body[int]:
                return (yield _PRUNE, {"tid": tid, "last": last}).rowcount or 0

            deleted += await self.db.run(prune, "pruning a long thread", atomic=False)
        return deleted, created

    async def _oldest(self, thread_id: int, n: int) -> list[MemoryMessage]:
        rows = await self.db.execute(_OLDEST, {"tid": thread_id, "n": n}, what="reading old messages")
        return [SessionStore._row(r).to_memory() for r in rows]

    async def loop(self) -> None:
        """Run a pass every ``interval`` seconds until cancelled; failures are logged and retried next time."""
        while True:
            await asyncio.sleep(self.settings.interval)
            try:
                await self.run_once()
            except Exception:
                log.exception("retention pass failed; trying again in %ss", self.settings.interval)
