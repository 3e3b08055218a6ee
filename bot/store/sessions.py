"""Threads, their messages and summaries, persisted as they arrive.

Two backends behind one class, checked by one contract suite
(``tests/store/test_store_contract.py``):

* SQLite (the embedded default): raw SQL on the database's worker thread
  (:mod:`bot.store.sqlite_worker`), one hop per transaction; full-text search by FTS5.
* PostgreSQL (and any other SQLAlchemy async URL): SQLAlchemy Core over asyncpg;
  full-text search by ``to_tsvector('english', text)``.

Every message's token count is computed once, when it is stored, and kept with
the name of the encoding that produced it (issue #4: counts are cached).
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.sessions.records import MemoryMessage, SessionKey, SummaryRecord, safe_text
from bot.store.db import Database, _aware
from bot.store.sqlite_worker import transaction
from bot.store.tables import messages, processed_events, summaries, threads

if TYPE_CHECKING:
    from bot.sessions.tokens import TokenCounter

ThreadKey = SessionKey
"""The session key ``(platform, channel, thread)``; one conversation on one platform."""

COMMAND = "command"
"""``messages.kind`` of a command and of the bot's answer to one: shown by ``/history``,
never returned by ``/recall`` (:meth:`SessionStore.search`) nor put in an LLM context
(``tail(conversation_only=True)``)."""

_TS = "%Y-%m-%d %H:%M:%S.%f"


def _ts(dt: datetime) -> str:
    """UTC datetime → SQLAlchemy's SQLite DATETIME text (so both paths read each other's rows)."""
    return dt.astimezone(UTC).replace(tzinfo=None).strftime(_TS)


def _dt(value: Any) -> datetime:
    if isinstance(value, datetime):
        return _aware(value)  # type: ignore[return-value]
    return datetime.fromisoformat(value).replace(tzinfo=UTC)


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
    kind: str | None = None
    """``None`` for conversation, :data:`COMMAND` for a command or its answer."""

    def to_memory(self) -> MemoryMessage:
        """As the context strategies see it (unknown counts become 0 with no encoding: recounted)."""
        return MemoryMessage(self.id, self.role, self.author, self.text, self.tokens or 0, self.created_at, self.encoding or "")  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Forgotten:
    """What ``clear`` removed."""

    messages: int
    summaries: int


_WORD = re.compile(r"\w+", re.UNICODE)

class TxHook(Protocol):
    """Work done inside the transaction that stores a message (``append_once(then=…)``):
    ``sqlite`` on the worker thread's connection, ``sa`` on the SQLAlchemy connection;
    raising rolls the whole transaction back."""

    def sqlite(self, conn: sqlite3.Connection, thread_id: int, message_id: int) -> None: ...

    async def sa(self, conn: AsyncConnection, thread_id: int, message_id: int) -> None: ...


class _Redelivery(Exception):
    """A delivery id was recorded before (rolls the storing transaction back)."""


ID_CACHE_MAX = 100_000
"""Thread ids (and activity times) cached per process; a miss costs one indexed lookup."""

THREAD_TOUCH_S = 60.0
"""A thread's ``updated_at`` is advanced by an append only when it is older than this (seconds)."""


def fts_terms(query: str) -> list[str]:
    """The words of a ``/recall`` query (letters and digits; at most 12)."""
    return _WORD.findall(query.lower())[:12]


class SessionStore:
    """Threads, messages and summaries in SQL.

    Args:
        db: the database.
        counter: counts tokens of messages stored without a count (``None``: not counted).

    Every method is one transaction; failures raise :class:`bot.store.errors.StoreError`.
    """

    def __init__(self, db: Database, counter: TokenCounter | None = None) -> None:
        self.db = db
        self.counter = counter
        self._thread_ids: dict[SessionKey, int] = {}
        self._touched: dict[int, float] = {}  # SQLite: thread id -> its updated_at (epoch s) as last written or read
        self._sqlite = db.dialect == "sqlite"
        self.listeners: list[Callable[[SessionKey, StoredMessage], Awaitable[None]]] = []
        """Awaited after every stored message (the session manager keeps caches current)."""

    # -- helpers -------------------------------------------------------------

    def _insert(self, table):  # type: ignore[no-untyped-def]
        return (pg_insert if self.db.dialect == "postgresql" else sqlite_insert)(table)

    async def _count_tokens(self, role: str, text_: str) -> tuple[int | None, str | None]:
        if self.counter is None:
            return None, None
        if len(text_) > 8000:  # long texts: encode off the event loop
            n = await asyncio.to_thread(self.counter.count_message, role, text_)
        else:
            n = self.counter.count_message(role, text_)
        return n, self.counter.encoding

    def _sq_thread_id(self, conn: sqlite3.Connection, key: SessionKey, now: str, create: bool) -> int | None:
        cached = self._thread_ids.get(key)
        if cached is not None:
            return cached
        row = conn.execute(
            "SELECT id FROM threads WHERE platform=? AND channel=? AND thread=?", (key.platform, key.channel, key.thread)
        ).fetchone()
        if row is None:
            if not create:
                return None
            cur = conn.execute(
                "INSERT INTO threads(platform, channel, thread, created_at, updated_at) VALUES (?,?,?,?,?)",
                (key.platform, key.channel, key.thread, now, now),
            )
            tid = int(cur.lastrowid)  # type: ignore[arg-type]
        else:
            tid = int(row[0])
        self._remember(key, tid)
        return tid

    async def _sa_thread_id(self, conn: AsyncConnection, key: SessionKey, now: datetime, create: bool = True) -> int | None:
        cached = self._thread_ids.get(key)
        if cached is not None:
            return cached
        if create:
            await conn.execute(
                self._insert(threads)
                .values(platform=key.platform, channel=key.channel, thread=key.thread, created_at=now, updated_at=now)
                .on_conflict_do_nothing(index_elements=["platform", "channel", "thread"])
            )
        tid = (
            await conn.execute(
                select(threads.c.id).where(
                    threads.c.platform == key.platform, threads.c.channel == key.channel, threads.c.thread == key.thread
                )
            )
        ).scalar_one_or_none()
        if tid is not None:
            self._remember(key, tid)
        return tid

    def _remember(self, key: SessionKey, tid: int) -> None:
        """Cache a thread id. The caches are bounded (one entry per thread ever seen would
        grow with the bot's lifetime): past ``ID_CACHE_MAX`` entries they start over."""
        if len(self._thread_ids) >= ID_CACHE_MAX:
            self._thread_ids.clear()
            self._touched.clear()
        self._thread_ids[key] = tid

    # -- threads -------------------------------------------------------------

    async def thread_id(self, key: SessionKey) -> int:
        """The thread's row id, creating the thread if needed."""
        now = datetime.now(UTC)
        if self._sqlite:
            tid = await self.db.worker.call(lambda c: transaction(c, lambda c: self._sq_thread_id(c, key, _ts(now), True)), "opening a thread")
            return int(tid)  # type: ignore[arg-type]
        async with self.db.begin("opening a thread") as conn:
            return int(await self._sa_thread_id(conn, key, now))  # type: ignore[arg-type]

    async def key_for(self, thread_id: int) -> SessionKey:
        """The key of a thread row; raises ``LookupError`` when there is none."""
        if self._sqlite:
            row = await self.db.worker.call(
                lambda c: c.execute("SELECT platform, channel, thread FROM threads WHERE id=?", (thread_id,)).fetchone(),
                "reading a thread",
            )
        else:
            async with self.db.begin("reading a thread") as conn:
                row = (await conn.execute(select(threads.c.platform, threads.c.channel, threads.c.thread).where(threads.c.id == thread_id))).first()
        if row is None:
            raise LookupError(f"no thread {thread_id}")
        return SessionKey(row[0], row[1], row[2])

    # -- messages ------------------------------------------------------------

    async def append(
        self,
        key: SessionKey,
        role: str,
        author: str,
        text_: str,
        *,
        event_id: str | None = None,
        created_at: datetime | None = None,
        tokens: int | None = None,
        encoding: str | None = None,
        kind: str | None = None,
    ) -> StoredMessage:
        """Store one message at the end of its thread (creating the thread); returns it with its id.

        ``tokens``/``encoding``: the cached count; computed here when not given.
        ``kind``: :data:`COMMAND` marks a command or its answer (kept out of recall and context).

        Raises:
            StoreError: the database failed (after retrying transient errors).
        """
        stored = await self._store(key, role, author, text_, event_id, created_at, tokens, encoding, (), kind)
        assert stored is not None
        return stored

    async def append_once(
        self,
        key: SessionKey,
        role: str,
        author: str,
        text_: str,
        *,
        dedupe_ids: Sequence[str],
        event_id: str | None = None,
        created_at: datetime | None = None,
        kind: str | None = None,
        then: TxHook | None = None,
    ) -> StoredMessage | None:
        """Store a platform delivery unless it is a redelivery: ``dedupe_ids`` (the platform's
        event id, the message's own id…) are recorded in ``processed_events`` in the *same
        transaction* as the message, so a crash can never record a delivery without storing
        it (Slack retries an unacknowledged or failed event up to three times:
        https://docs.slack.dev/apis/events-api/#retries). Returns ``None``, storing nothing,
        when any of the ids was recorded before.

        ``then``: more work for the same transaction, given the thread and message ids
        (the run queue's admission writes the ``queued`` run there; :class:`TxHook`).

        Raises:
            StoreError: the database failed (nothing was recorded).
        """
        return await self._store(key, role, author, text_, event_id, created_at, None, None, tuple(dedupe_ids), kind, then)

    async def seen_any(self, platform: str, event_ids: Sequence[str]) -> bool:
        """Whether any of ``event_ids`` was recorded for ``platform`` (a read-only pre-check;
        :meth:`append_once` is what decides)."""
        if not event_ids:
            return False
        if self._sqlite:
            marks = ",".join("?" * len(event_ids))
            return await self.db.worker.call(
                lambda c: c.execute(
                    f"SELECT 1 FROM processed_events WHERE platform=? AND event_id IN ({marks}) LIMIT 1", (platform, *event_ids)
                ).fetchone()
                is not None,
                "checking event ids",
            )
        async with self.db.begin("checking event ids") as conn:
            row = (
                await conn.execute(
                    select(processed_events.c.event_id)
                    .where(processed_events.c.platform == platform, processed_events.c.event_id.in_(list(event_ids)))
                    .limit(1)
                )
            ).first()
        return row is not None

    async def _store(
        self,
        key: SessionKey,
        role: str,
        author: str,
        text_: str,
        event_id: str | None,
        created_at: datetime | None,
        tokens: int | None,
        encoding: str | None,
        dedupe_ids: tuple[str, ...],
        kind: str | None = None,
        then: TxHook | None = None,
    ) -> StoredMessage | None:
        now = created_at or datetime.now(UTC)
        text_, author = safe_text(text_), safe_text(author)  # never a UnicodeEncodeError from the driver
        if tokens is None:
            tokens, encoding = await self._count_tokens(role, text_)
        # threads.updated_at (idle expiry, counted in days) moves at most once a
        # minute, so a busy thread's appends do not rewrite its row and index entry.
        touch_before_dt = now - timedelta(seconds=THREAD_TOUCH_S)
        if self._sqlite:
            ts, touch_before, epoch = _ts(now), _ts(touch_before_dt), now.timestamp()
            row = (role, author, text_, ts, event_id, tokens, encoding, kind)
            insert = "INSERT INTO messages(thread_id, role, author, text, created_at, event_id, tokens, encoding, kind) VALUES (?,?,?,?,?,?,?,?,?)"

            def body(c: sqlite3.Connection) -> tuple[int, int]:
                for did in dedupe_ids:
                    if c.execute(
                        "INSERT INTO processed_events(platform, event_id, received_at) VALUES (?,?,?) ON CONFLICT DO NOTHING",
                        (key.platform, did, ts),
                    ).rowcount != 1:
                        raise _Redelivery(did)
                tid = self._sq_thread_id(c, key, ts, True)
                assert tid is not None
                mid = int(c.execute(insert, (tid, *row)).lastrowid)  # type: ignore[arg-type]
                if then is not None:
                    then.sqlite(c, tid, mid)
                if c.execute("UPDATE threads SET updated_at=? WHERE id=? AND updated_at<?", (ts, tid, touch_before)).rowcount:
                    self._touched[tid] = epoch
                else:
                    self._touched[tid] = _dt(c.execute("SELECT updated_at FROM threads WHERE id=?", (tid,)).fetchone()[0]).timestamp()
                return mid, tid

            def op(c: sqlite3.Connection) -> tuple[int, int] | None:
                tid = self._thread_ids.get(key)
                if not dedupe_ids and then is None and tid is not None and epoch - self._touched.get(tid, float("-inf")) < THREAD_TOUCH_S:
                    # the usual case (a known thread, touched within the minute): one autocommit
                    # statement; the FTS trigger runs in the same implicit transaction
                    try:
                        return int(c.execute(insert, (tid, *row)).lastrowid), tid  # type: ignore[arg-type]
                    except sqlite3.IntegrityError:  # the cached thread id was deleted (/forget, retention)
                        self._thread_ids.pop(key, None)
                try:
                    try:
                        return transaction(c, body)
                    except sqlite3.IntegrityError:  # a cached thread id was deleted (/forget, retention)
                        self._thread_ids.pop(key, None)
                        return transaction(c, body)
                except _Redelivery:
                    return None

            got = await self.db.worker.call(op, "storing a message")
            if got is None:
                return None
            mid, tid = got
        else:
            try:
                async for attempt in self.db.retrying():
                    with attempt:
                        async with self.db.begin("storing a message") as conn:
                            for did in dedupe_ids:
                                recorded = await conn.execute(
                                    self._insert(processed_events)
                                    .values(platform=key.platform, event_id=did, received_at=now)
                                    .on_conflict_do_nothing(index_elements=["platform", "event_id"])
                                )
                                if recorded.rowcount != 1:
                                    raise _Redelivery(did)
                            tid = await self._sa_thread_id(conn, key, now)  # type: ignore[assignment]
                            res = await conn.execute(
                                messages.insert().values(
                                    thread_id=tid, role=role, author=author, text=text_, created_at=now, event_id=event_id, tokens=tokens, encoding=encoding,
                                    kind=kind,
                                )
                            )
                            await conn.execute(
                                update(threads).where(threads.c.id == tid, threads.c.updated_at < touch_before_dt).values(updated_at=now)
                            )
                            mid = res.inserted_primary_key[0]
                            if then is not None:
                                await then.sa(conn, tid, mid)
            except _Redelivery:
                return None
        stored = StoredMessage(mid, tid, role, author, text_, now, tokens, encoding, kind)
        for listener in self.listeners:
            await listener(key, stored)
        return stored

    _COLS = "id, thread_id, role, author, text, created_at, tokens, encoding, kind"

    @staticmethod
    def _row(r: Any) -> StoredMessage:
        return StoredMessage(int(r[0]), int(r[1]), r[2], r[3], r[4], _dt(r[5]), r[6], r[7], r[8])

    async def tail(
        self, key: SessionKey, *, limit: int, after_id: int | None = None, before_id: int | None = None, conversation_only: bool = False
    ) -> list[StoredMessage]:
        """The newest ``limit`` messages with ``after_id < id < before_id``, oldest first ([] for an unknown thread).

        ``conversation_only``: leave out commands and their answers (:data:`COMMAND`), as an LLM context must.
        """
        only = " AND kind IS NULL" if conversation_only else ""
        if self._sqlite:

            def op(c: sqlite3.Connection) -> list[Any]:
                tid = self._sq_thread_id(c, key, "", False)
                if tid is None:
                    return []
                return c.execute(
                    f"SELECT {self._COLS} FROM messages WHERE thread_id=? AND id>? AND id<?{only} ORDER BY id DESC LIMIT ?",
                    (tid, after_id or 0, before_id or 2**62, limit),
                ).fetchall()

            rows = await self.db.worker.call(op, "reading history")
        else:
            async with self.db.begin("reading history") as conn:
                tid = await self._sa_thread_id(conn, key, datetime.now(UTC), create=False)
                if tid is None:
                    return []
                q = select(*[messages.c[c.strip()] for c in self._COLS.split(",")]).where(messages.c.thread_id == tid)
                if after_id:
                    q = q.where(messages.c.id > after_id)
                if before_id:
                    q = q.where(messages.c.id < before_id)
                if conversation_only:
                    q = q.where(messages.c.kind.is_(None))
                rows = (await conn.execute(q.order_by(messages.c.id.desc()).limit(limit))).all()
        return [self._row(r) for r in reversed(rows)]

    async def history(self, key: SessionKey, limit: int = 20) -> list[StoredMessage]:
        """The newest ``limit`` messages of the thread, oldest first."""
        return await self.tail(key, limit=limit)

    async def count(self, key: SessionKey) -> int:
        """How many messages the thread has."""
        if self._sqlite:

            def op(c: sqlite3.Connection) -> int:
                tid = self._sq_thread_id(c, key, "", False)
                return 0 if tid is None else int(c.execute("SELECT count(*) FROM messages WHERE thread_id=?", (tid,)).fetchone()[0])

            return await self.db.worker.call(op, "counting messages")
        async with self.db.begin("counting messages") as conn:
            tid = await self._sa_thread_id(conn, key, datetime.now(UTC), create=False)
            if tid is None:
                return 0
            return int((await conn.execute(select(func.count()).where(messages.c.thread_id == tid))).scalar_one())

    async def search(self, key: SessionKey, query: str, *, limit: int = 5) -> list[StoredMessage]:
        """Full-text search of the thread's messages, best match first (SQLite FTS5 / PostgreSQL tsvector).

        All words must match; when nothing does, any word may. Commands (text
        starting with ``/``) and the answers to them (:data:`COMMAND`) are not
        memory and are left out. Raises nothing for
        odd input: the query is reduced to plain words.
        """
        words = fts_terms(query)
        if not words:
            return []
        if self._sqlite:

            def op(c: sqlite3.Connection) -> list[Any]:
                tid = self._sq_thread_id(c, key, "", False)
                if tid is None:
                    return []
                sql = (
                    f"SELECT {', '.join('m.' + x.strip() for x in self._COLS.split(','))} FROM messages_fts f "
                    "JOIN messages m ON m.id = f.rowid WHERE messages_fts MATCH ? AND m.thread_id = ? AND m.text NOT LIKE '/%' AND m.kind IS NULL "
                    "ORDER BY bm25(messages_fts) LIMIT ?"
                )
                quoted = [f'"{w}"' for w in words]
                rows = c.execute(sql, (" AND ".join(quoted), tid, limit)).fetchall()
                if not rows and len(words) > 1:
                    rows = c.execute(sql, (" OR ".join(quoted), tid, limit)).fetchall()
                return rows

            rows = await self.db.worker.call(op, "searching messages")
            return [self._row(r) for r in rows]
        async with self.db.begin("searching messages") as conn:
            tid = await self._sa_thread_id(conn, key, datetime.now(UTC), create=False)
            if tid is None:
                return []
            rows: list[Any] = []
            for joiner in (" & ", " | "):
                tsq = func.to_tsquery("english", joiner.join(words))
                vec = func.to_tsvector("english", messages.c.text)
                q = (
                    select(*[messages.c[c.strip()] for c in self._COLS.split(",")])
                    .where(messages.c.thread_id == tid, vec.op("@@")(tsq), ~messages.c.text.startswith("/"), messages.c.kind.is_(None))
                    .order_by(func.ts_rank(vec, tsq).desc(), messages.c.id)
                    .limit(limit)
                )
                rows = list((await conn.execute(q)).all())
                if rows or len(words) == 1:
                    break
        return [self._row(r) for r in rows]

    # -- summaries -----------------------------------------------------------

    async def summaries(self, key: SessionKey) -> list[SummaryRecord]:
        """All stored summaries of the thread (any order)."""
        cols = "level, first_id, last_id, text, tokens, message_count, encoding"
        if self._sqlite:

            def op(c: sqlite3.Connection) -> list[Any]:
                tid = self._sq_thread_id(c, key, "", False)
                return [] if tid is None else c.execute(f"SELECT {cols} FROM summaries WHERE thread_id=?", (tid,)).fetchall()

            rows = await self.db.worker.call(op, "reading summaries")
        else:
            async with self.db.begin("reading summaries") as conn:
                tid = await self._sa_thread_id(conn, key, datetime.now(UTC), create=False)
                if tid is None:
                    return []
                rows = (await conn.execute(select(*[summaries.c[c.strip()] for c in cols.split(",")]).where(summaries.c.thread_id == tid))).all()
        return [SummaryRecord(int(r[0]), int(r[1]), int(r[2]), r[3], int(r[4]), int(r[5]), r[6]) for r in rows]

    async def add_summary(self, key: SessionKey, s: SummaryRecord) -> None:
        """Store a summary; upsert on ``(thread, level, first_id, last_id)``."""
        now = datetime.now(UTC)
        if self._sqlite:

            def op(c: sqlite3.Connection) -> None:
                def body(c: sqlite3.Connection) -> None:
                    tid = self._sq_thread_id(c, key, _ts(now), True)
                    c.execute(
                        "INSERT INTO summaries(thread_id, level, first_id, last_id, text, tokens, message_count, encoding, created_at) "
                        "VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT(thread_id, level, first_id, last_id) DO UPDATE SET "
                        "text=excluded.text, tokens=excluded.tokens, message_count=excluded.message_count, encoding=excluded.encoding",
                        (tid, s.level, s.first_id, s.last_id, s.text, s.tokens, s.message_count, s.encoding, _ts(now)),
                    )

                transaction(c, body)

            await self.db.worker.call(op, "storing a summary")
            return
        async with self.db.begin("storing a summary") as conn:
            tid = await self._sa_thread_id(conn, key, now)
            ins = self._insert(summaries).values(
                thread_id=tid, level=s.level, first_id=s.first_id, last_id=s.last_id, text=s.text, tokens=s.tokens,
                message_count=s.message_count, encoding=s.encoding, created_at=now,
            )
            await conn.execute(
                ins.on_conflict_do_update(
                    index_elements=["thread_id", "level", "first_id", "last_id"],
                    set_={c: getattr(ins.excluded, c) for c in ("text", "tokens", "message_count", "encoding")},
                )
            )

    async def clear(self, key: SessionKey) -> Forgotten:
        """Delete the thread's messages and summaries (``/forget``); runs are kept."""
        if self._sqlite:

            def op(c: sqlite3.Connection) -> Forgotten:
                def body(c: sqlite3.Connection) -> Forgotten:
                    tid = self._sq_thread_id(c, key, "", False)
                    if tid is None:
                        return Forgotten(0, 0)
                    m = c.execute("DELETE FROM messages WHERE thread_id=?", (tid,)).rowcount
                    s = c.execute("DELETE FROM summaries WHERE thread_id=?", (tid,)).rowcount
                    return Forgotten(m, s)

                return transaction(c, body)

            return await self.db.worker.call(op, "forgetting a thread")
        async with self.db.begin("forgetting a thread") as conn:
            tid = await self._sa_thread_id(conn, key, datetime.now(UTC), create=False)
            if tid is None:
                return Forgotten(0, 0)
            m = (await conn.execute(delete(messages).where(messages.c.thread_id == tid))).rowcount
            s = (await conn.execute(delete(summaries).where(summaries.c.thread_id == tid))).rowcount
            return Forgotten(m, s)

    # -- redelivery dedupe -----------------------------------------------------


__all__ = ["Forgotten", "SessionStore", "StoredMessage", "ThreadKey", "fts_terms"]
