"""Threads and their messages, persisted as they arrive."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.store.db import Database, _aware
from bot.store.tables import messages, processed_events, threads


@dataclass(frozen=True, slots=True)
class ThreadKey:
    """The session key: one conversation on one platform."""

    platform: str
    channel: str
    thread: str

    def __str__(self) -> str:
        return f"{self.platform}:{self.channel}:{self.thread}"


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A message as stored: ``id`` orders a thread's messages (arrival order)."""

    id: int
    thread_id: int
    role: str
    author: str
    text: str
    created_at: datetime
    tokens: int | None = None
    encoding: str | None = None


class SessionStore:
    """Threads and messages in SQL (SQLite or PostgreSQL).

    Every method is one transaction; failures raise :class:`bot.store.db.StoreError`.
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        self._thread_ids: dict[ThreadKey, int] = {}

    def _insert(self, table):  # type: ignore[no-untyped-def]
        return (pg_insert if self.db.dialect == "postgresql" else sqlite_insert)(table)

    async def _thread_id(self, conn: AsyncConnection, key: ThreadKey, now: datetime) -> int:
        cached = self._thread_ids.get(key)
        if cached is not None:
            return cached
        stmt = (
            self._insert(threads)
            .values(platform=key.platform, channel=key.channel, thread=key.thread, created_at=now, updated_at=now)
            .on_conflict_do_nothing(index_elements=["platform", "channel", "thread"])
        )
        await conn.execute(stmt)
        tid = (
            await conn.execute(
                select(threads.c.id).where(
                    threads.c.platform == key.platform, threads.c.channel == key.channel, threads.c.thread == key.thread
                )
            )
        ).scalar_one()
        self._thread_ids[key] = tid
        return tid

    async def thread_id(self, key: ThreadKey) -> int:
        """The thread's row id, creating the thread if needed."""
        async with self.db.begin("opening a thread") as conn:
            return await self._thread_id(conn, key, datetime.now(UTC))

    async def append(
        self,
        key: ThreadKey,
        role: str,
        author: str,
        text: str,
        *,
        event_id: str | None = None,
        created_at: datetime | None = None,
        tokens: int | None = None,
        encoding: str | None = None,
    ) -> StoredMessage:
        """Store one message at the end of its thread (creating the thread); returns it with its id."""
        now = created_at or datetime.now(UTC)
        async for attempt in self.db.retrying():
            with attempt:
                async with self.db.begin("storing a message") as conn:
                    tid = await self._thread_id(conn, key, now)
                    res = await conn.execute(
                        messages.insert().values(
                            thread_id=tid,
                            role=role,
                            author=author,
                            text=text,
                            created_at=now,
                            event_id=event_id,
                            tokens=tokens,
                            encoding=encoding,
                        )
                    )
                    await conn.execute(update(threads).where(threads.c.id == tid).values(updated_at=now))
                    mid = res.inserted_primary_key[0]
        return StoredMessage(mid, tid, role, author, text, now, tokens, encoding)

    async def history(self, key: ThreadKey, limit: int = 20) -> list[StoredMessage]:
        """The newest ``limit`` messages of the thread, oldest first (empty for an unknown thread)."""
        async with self.db.begin("reading history") as conn:
            q = (
                select(messages)
                .join(threads, threads.c.id == messages.c.thread_id)
                .where(threads.c.platform == key.platform, threads.c.channel == key.channel, threads.c.thread == key.thread)
                .order_by(messages.c.id.desc())
                .limit(limit)
            )
            rows = (await conn.execute(q)).mappings().all()
        return [
            StoredMessage(r["id"], r["thread_id"], r["role"], r["author"], r["text"], _aware(r["created_at"]), r["tokens"], r["encoding"])  # type: ignore[arg-type]
            for r in reversed(rows)
        ]

    async def count(self, key: ThreadKey) -> int:
        """How many messages the thread has."""
        async with self.db.begin("counting messages") as conn:
            q = (
                select(func.count())
                .select_from(messages.join(threads, threads.c.id == messages.c.thread_id))
                .where(threads.c.platform == key.platform, threads.c.channel == key.channel, threads.c.thread == key.thread)
            )
            return int((await conn.execute(q)).scalar_one())

    async def key_for(self, thread_id: int) -> ThreadKey:
        """The key of a thread row; raises ``LookupError`` when there is none."""
        async with self.db.begin("reading a thread") as conn:
            row = (await conn.execute(select(threads).where(threads.c.id == thread_id))).mappings().first()
        if row is None:
            raise LookupError(f"no thread {thread_id}")
        return ThreadKey(row["platform"], row["channel"], row["thread"])

    async def mark_event(self, platform: str, event_id: str) -> bool:
        """Record a platform event id; returns False when it was recorded before (a redelivery)."""
        stmt = (
            self._insert(processed_events)
            .values(platform=platform, event_id=event_id, received_at=datetime.now(UTC))
            .on_conflict_do_nothing(index_elements=["platform", "event_id"])
        )
        async with self.db.begin("recording an event id") as conn:
            res = await conn.execute(stmt)
        return bool(res.rowcount)

    async def forget_event(self, platform: str, event_id: str) -> None:
        """Undo :meth:`mark_event` (its processing failed before anything happened)."""
        async with self.db.begin("forgetting an event id") as conn:
            await conn.execute(
                delete(processed_events).where(processed_events.c.platform == platform, processed_events.c.event_id == event_id)
            )
