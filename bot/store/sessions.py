"""Threads, their messages and summaries, persisted as they arrive.

Two backends behind one class, checked by one contract suite
(``tests/store/test_store_contract.py``):

Every method's SQL is written once, as SQLAlchemy Core statements in a transaction
body (:mod:`bot.store.tx`), and run by :meth:`bot.store.db.Database.run`:

* SQLite (the embedded default): compiled once, on the file's one writer thread
  (:mod:`bot.store.sqlite_worker`), one hop per transaction; full-text search by FTS5.
* PostgreSQL (and any other SQLAlchemy async URL): over asyncpg, one transaction on
  one connection; full-text search by ``to_tsvector('english', text)``.

Only upserts and full-text search differ by dialect (:class:`_Sql`).

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
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from sqlalchemy import bindparam, column, delete, func, literal_column, select, table, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.sessions.records import MemoryMessage, SessionKey, SummaryRecord, safe_text
from bot.store.db import Database
from bot.store.errors import ConstraintError
from bot.store.tables import messages, processed_events, summaries, threads
from bot.store.tx import Body, Raw

if TYPE_CHECKING:
    from bot.sessions.tokens import TokenCounter

T = TypeVar("T")

ThreadKey = SessionKey
"""The session key ``(platform, channel, thread)``; one conversation on one platform."""

COMMAND = "command"
"""``messages.kind`` of a command and of the bot's answer to one: shown by ``/history``,
never returned by ``/recall`` (:meth:`SessionStore.search`) nor put in an LLM context
(``tail(conversation_only=True)``)."""

def _dt(value: Any) -> datetime:
    """A stored instant as an aware UTC datetime (SQLite gives naive ones, or text read raw)."""
    if type(value) is not datetime:
        value = datetime.fromisoformat(value) if isinstance(value, str) else value
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


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
    ``sqlite`` on the worker thread's connection, ``sa`` on the SQLAlchemy connection
    (a :class:`bot.store.tx.Raw` step of the body); raising rolls the whole transaction back.

    A hook that needs neither id may also have ``cte`` (a data-modifying Core statement, the
    same object each time) and ``params`` (its parameters, names apart from the message's):
    on PostgreSQL, when the thread is known, it runs as a ``WITH`` of the message's insert:
    one autocommitted statement, atomic with it, instead of ``BEGIN``, insert, ``sa``, ``COMMIT``."""

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


TAIL_MAX_ID = 2**62
"""Upper bound of message ids for :meth:`SessionStore.tail` without ``before_id``."""

_KEY = {"platform": threads.c.platform, "channel": threads.c.channel, "thread": threads.c.thread}
_MSG = (
    messages.c.id, messages.c.thread_id, messages.c.role, messages.c.author, messages.c.text,
    messages.c.created_at, messages.c.tokens, messages.c.encoding, messages.c.kind,
)


class _Sql:
    """Every statement of the store, built once per dialect (SQLAlchemy Core, named ``bindparam``\\s).

    Upserts and full-text search differ by dialect; everything else is the same statement."""

    def __init__(self, dialect: str) -> None:
        insert = pg_insert if dialect == "postgresql" else sqlite_insert
        self.thread_id = select(threads.c.id).where(*(c == bindparam(k) for k, c in _KEY.items()))
        self.new_thread = (
            insert(threads)
            .values(platform=bindparam("platform"), channel=bindparam("channel"), thread=bindparam("thread"),
                    created_at=bindparam("now"), updated_at=bindparam("now"))
            .on_conflict_do_nothing(index_elements=["platform", "channel", "thread"])
            .returning(threads.c.id)
        )
        self.key = select(threads.c.platform, threads.c.channel, threads.c.thread).where(threads.c.id == bindparam("tid"))
        self._insert = insert
        self._events: dict[int, Any] = {}
        self.add_message = (
            messages.insert()
            .values(thread_id=bindparam("tid"), role=bindparam("role"), author=bindparam("author"), text=bindparam("text"),
                    created_at=bindparam("created_at"), event_id=bindparam("event_id"), tokens=bindparam("tokens"),
                    encoding=bindparam("encoding"), kind=bindparam("kind"))
        )  # the new id: Result.inserted_id
        self._with: dict[int, tuple[Any, Any]] = {}  # with_cte
        self.touch = (
            update(threads)
            .where(threads.c.id == bindparam("tid"), threads.c.updated_at < bindparam("before"))
            .values(updated_at=bindparam("now"))
        )
        self.touched_at = select(threads.c.updated_at).where(threads.c.id == bindparam("tid"))
        tail = (
            select(*_MSG)
            .where(messages.c.thread_id == bindparam("tid"), messages.c.id > bindparam("after"), messages.c.id < bindparam("before"))
            .order_by(messages.c.id.desc())
            .limit(bindparam("limit"))
        )
        self.tail = {False: tail, True: tail.where(messages.c.kind.is_(None))}
        self.count = select(func.count()).select_from(messages).where(messages.c.thread_id == bindparam("tid"))
        self.summaries = select(
            summaries.c.level, summaries.c.first_id, summaries.c.last_id, summaries.c.text, summaries.c.tokens,
            summaries.c.message_count, summaries.c.encoding,
        ).where(summaries.c.thread_id == bindparam("tid"))
        ins = insert(summaries).values(
            thread_id=bindparam("tid"), level=bindparam("level"), first_id=bindparam("first_id"), last_id=bindparam("last_id"),
            text=bindparam("text"), tokens=bindparam("tokens"), message_count=bindparam("message_count"),
            encoding=bindparam("encoding"), created_at=bindparam("now"),
        )
        self.add_summary = ins.on_conflict_do_update(
            index_elements=["thread_id", "level", "first_id", "last_id"],
            set_={c: getattr(ins.excluded, c) for c in ("text", "tokens", "message_count", "encoding")},
        )
        self.clear_messages = delete(messages).where(messages.c.thread_id == bindparam("tid"))
        self.clear_summaries = delete(summaries).where(summaries.c.thread_id == bindparam("tid"))
        # full text: FTS5 (``messages_fts``, kept by triggers) on SQLite, tsvector elsewhere
        search = (
            select(*_MSG)
            .where(messages.c.thread_id == bindparam("tid"), ~messages.c.text.startswith("/"), messages.c.kind.is_(None))
            .limit(bindparam("limit"))
        )
        if dialect == "sqlite":
            fts, match = table("messages_fts", column("rowid")), literal_column("messages_fts")
            self.search = (
                search.select_from(fts.join(messages, messages.c.id == fts.c.rowid))
                .where(match.op("MATCH")(bindparam("q")))
                .order_by(func.bm25(match))
            )
            self.all_words, self.any_word = (lambda ws: " AND ".join(f'"{w}"' for w in ws)), (lambda ws: " OR ".join(f'"{w}"' for w in ws))
        else:
            vec, tsq = func.to_tsvector("english", messages.c.text), func.to_tsquery("english", bindparam("q"))
            self.search = search.where(vec.op("@@")(tsq)).order_by(func.ts_rank(vec, tsq).desc(), messages.c.id)
            self.all_words, self.any_word = (lambda ws: " & ".join(ws)), (lambda ws: " | ".join(ws))
        self._seen: dict[int, Any] = {}

    def with_cte(self, stmt: Any) -> Any:
        """:attr:`add_message` with ``stmt`` as a ``WITH`` (a :class:`TxHook`'s ``cte``), returning the
        new message's id (its one row), built once per statement object."""
        got = self._with.get(id(stmt))
        if got is None or got[0] is not stmt:
            got = self._with[id(stmt)] = (stmt, self.add_message.add_cte(stmt.cte(f"hook_{len(self._with)}")).returning(messages.c.id))
        return got[1]

    def record_events(self, n: int) -> Any:
        """``INSERT INTO processed_events … VALUES (:platform, :e0, :now), … ON CONFLICT DO NOTHING``
        for ``n`` delivery ids: one statement (its row count says how many were new)."""
        got = self._events.get(n)
        if got is None:
            c = processed_events.c
            got = self._events[n] = (
                self._insert(processed_events)
                .values([
                    {"platform": bindparam("platform", type_=c.platform.type), "event_id": bindparam(f"e{i}", type_=c.event_id.type),
                     "received_at": bindparam("now", type_=c.received_at.type)}
                    for i in range(n)
                ])
                .on_conflict_do_nothing(index_elements=["platform", "event_id"])
            )
        return got

    def seen(self, n: int) -> Any:
        """``SELECT … WHERE platform = :platform AND event_id IN (:e0, …)`` for ``n`` ids (one statement per ``n``)."""
        got = self._seen.get(n)
        if got is None:
            got = self._seen[n] = (
                select(processed_events.c.event_id)
                .where(processed_events.c.platform == bindparam("platform"),
                       processed_events.c.event_id.in_([bindparam(f"e{i}") for i in range(n)]))
                .limit(1)
            )
        return got


_SQL: dict[str, _Sql] = {}


class SessionStore:
    """Threads, messages and summaries in SQL.

    Args:
        db: the database.
        counter: counts tokens of messages stored without a count (``None``: not counted).

    Every method is one transaction (:meth:`bot.store.db.Database.run`: on SQLite on the
    file's one writer thread); failures raise :class:`bot.store.errors.StoreError`.
    """

    def __init__(self, db: Database, counter: TokenCounter | None = None) -> None:
        self.db = db
        self.counter = counter
        self._thread_ids: dict[SessionKey, int] = {}
        self._touched: dict[int, float] = {}  # thread id -> its updated_at (epoch s) as last written or read here
        self._q = _SQL.get(db.dialect) or _SQL.setdefault(db.dialect, _Sql(db.dialect))
        self.listeners: list[Callable[[SessionKey, StoredMessage], Awaitable[None]]] = []
        """Awaited after every stored message (the session manager keeps caches current)."""

    # -- helpers -------------------------------------------------------------

    async def _count_tokens(self, role: str, text_: str) -> tuple[int | None, str | None]:
        if self.counter is None:
            return None, None
        if len(text_) > 8000:  # long texts: encode off the event loop
            n = await asyncio.to_thread(self.counter.count_message, role, text_)
        else:
            n = self.counter.count_message(role, text_)
        return n, self.counter.encoding

    def _thread_tx(self, key: SessionKey, now: datetime | None) -> Body[int | None]:
        """Body part: the thread's id (from the cache when known); ``now``: create the
        thread then if it does not exist (``None``: don't, and return ``None`` for it).

        It caches nothing: the caller remembers the id (:meth:`_remember`) once its transaction
        committed. Inside a transaction the row found may not be committed: on SQLite a
        transaction sees the writes of those before it in its group commit
        (:meth:`bot.store.sqlite_worker.SqliteWorker.transact`), which may still be rolled
        back and run again, the thread then getting another id."""
        return (yield from self._thread_new_tx(key, now))[0]

    def _thread_new_tx(self, key: SessionKey, now: datetime | None) -> Body[tuple[int | None, bool]]:
        """:meth:`_thread_tx`, also saying whether this transaction created the thread."""
        tid = self._thread_ids.get(key)
        if tid is not None:
            return tid, False
        k = {"platform": key.platform, "channel": key.channel, "thread": key.thread}
        row = (yield self._q.thread_id, k).first()
        created = False
        if row is None:
            if now is None:
                return None, False
            row = (yield self._q.new_thread, {**k, "now": now}).first()
            created = row is not None
            if row is None:  # another process created it meanwhile (PostgreSQL)
                row = (yield self._q.thread_id, k).first()
        return int(row[0]), created  # type: ignore[index]

    def known(self, key: SessionKey, thread_id: int, updated_at: datetime) -> None:
        """Cache a thread's id and ``updated_at`` read from a committed row elsewhere (a scale-out
        worker's claim returns them), so the next append to it takes the one-statement path
        instead of looking the thread up (and touching it) in a transaction first."""
        self._remember(key, thread_id)
        self._touched[thread_id] = max(self._touched.get(thread_id, float("-inf")), _dt(updated_at).timestamp())

    def _remember(self, key: SessionKey, tid: int) -> None:
        """Cache a thread id. The caches are bounded (one entry per thread ever seen would
        grow with the bot's lifetime): past ``ID_CACHE_MAX`` entries they start over."""
        if len(self._thread_ids) >= ID_CACHE_MAX:
            self._thread_ids.clear()
            self._touched.clear()
        self._thread_ids[key] = tid

    async def _in_thread(self, key: SessionKey, what: str, then: Callable[[int], Body[T]], default: T) -> T:
        """Read-only: run ``then(thread_id)`` as a body, or return ``default`` for an unknown thread."""

        def body() -> Body[tuple[int | None, T]]:
            tid = yield from self._thread_tx(key, None)
            return tid, default if tid is None else (yield from then(tid))

        return await self._committed(key, body, what, atomic=False)

    async def _committed(self, key: SessionKey, body: Callable[[], Body[tuple[int | None, T]]], what: str, **run: Any) -> T:
        """Run ``body`` (:meth:`bot.store.Database.run` with ``run``'s options), which returns the
        thread's id (``None``: no such thread) and its value; the id is cached once committed
        (see :meth:`_thread_tx`). Returns the value."""
        tid, got = await self.db.run(body, what, **run)
        if tid is not None:
            self._remember(key, tid)
        return got

    # -- threads -------------------------------------------------------------

    async def thread_id(self, key: SessionKey) -> int:
        """The thread's row id, creating the thread if needed."""
        tid = self._thread_ids.get(key)
        if tid is not None:
            return tid
        now = datetime.now(UTC)
        tid = int(await self.db.run(lambda: self._thread_tx(key, now), "opening a thread"))  # type: ignore[arg-type]
        self._remember(key, tid)  # committed now
        return tid

    async def with_thread(self, key: SessionKey, then: Callable[[int], Body[T]], what: str, *, now: datetime | None = None) -> T:
        """Run the body ``then(thread_id)`` (:mod:`bot.store.tx`) in one transaction with the
        thread's lookup, creating the thread (at ``now``, default: the current time) when it is
        new; a known thread costs no lookup (cached id). Transient errors are retried (the body
        must be safe to repeat). Returns what the body returns.

        Raises:
            StoreError: the database failed; the message names ``what``.
            Whatever the body raises (nothing is committed).
        """
        at = now or datetime.now(UTC)

        def body() -> Body[tuple[int, T]]:
            tid = yield from self._thread_tx(key, at)
            return tid, (yield from then(tid))  # type: ignore[arg-type,return-value]

        for attempt in range(2):
            cached = key in self._thread_ids
            try:
                return await self._committed(key, body, what, retry=True)
            except ConstraintError:
                # a cached id of a deleted thread, or one remembered from a rolled-back attempt
                if attempt or self._thread_ids.pop(key, None) is None:
                    raise
            except BaseException:
                if not cached:  # the id may come from a creation that was rolled back
                    self._thread_ids.pop(key, None)
                raise
        raise AssertionError("unreachable")

    async def key_for(self, thread_id: int) -> SessionKey:
        """The key of a thread row; raises ``LookupError`` when there is none."""
        rows = await self.db.execute(self._q.key, {"tid": thread_id}, what="reading a thread")
        if not rows:
            raise LookupError(f"no thread {thread_id}")
        return SessionKey(*rows[0])

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
        params = {"platform": platform, **{f"e{i}": e for i, e in enumerate(event_ids)}}
        return bool(await self.db.execute(self._q.seen(len(event_ids)), params, what="checking event ids"))

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
        now = datetime.now(UTC) if created_at is None else created_at.astimezone(UTC)  # stored as UTC
        text_, author = safe_text(text_), safe_text(author)  # never a UnicodeEncodeError from the driver
        if tokens is None:
            tokens, encoding = await self._count_tokens(role, text_)
        q = self._q
        row = {"role": role, "author": author, "text": text_, "created_at": now, "event_id": event_id, "tokens": tokens,
               "encoding": encoding, "kind": kind}
        epoch = now.timestamp()

        def full() -> Body[tuple[int, int, float]]:
            if dedupe_ids:  # one statement for all ids; any of them recorded before: a redelivery
                ids = {f"e{i}": did for i, did in enumerate(dedupe_ids)}
                if (yield q.record_events(len(dedupe_ids)), {"platform": key.platform, "now": now, **ids}).rowcount != len(dedupe_ids):
                    raise _Redelivery(dedupe_ids[0])
            tid, created = yield from self._thread_new_tx(key, now)
            mid = (yield q.add_message, {**row, "tid": tid}).inserted_id
            if then is not None:
                yield Raw(lambda c: then.sqlite(c, tid, mid), lambda c: then.sa(c, tid, mid))  # type: ignore[arg-type]
            # threads.updated_at (idle expiry, counted in days) moves at most once a
            # minute, so a busy thread's appends do not rewrite its row and index entry;
            # a thread created here was written with updated_at = now. (Cached by the
            # caller once committed, as the thread's id: see _thread_tx.)
            if created or (yield q.touch, {"tid": tid, "now": now, "before": now - timedelta(seconds=THREAD_TOUCH_S)}).rowcount:
                touched = epoch
            else:
                touched = _dt((yield q.touched_at, {"tid": tid}).scalar()).timestamp()
            return mid, tid, touched  # type: ignore[return-value]

        sqlite = self.db.dialect == "sqlite"
        cte = None if sqlite or then is None else getattr(then, "cte", None)

        def fast(tid: int) -> Body[tuple[int, int]]:
            # the usual case (a known thread, touched within the minute): one statement
            # (on SQLite in autocommit; the FTS trigger runs in its implicit transaction);
            # on PostgreSQL a ``then`` hook joins it in the same transaction, or the same
            # statement when it has a ``cte``
            if cte is not None:
                return int((yield q.with_cte(cte), {**row, "tid": tid, **then.params}).scalar()), tid  # type: ignore[union-attr]
            mid = (yield q.add_message, {**row, "tid": tid}).inserted_id
            if then is not None:
                yield Raw(lambda c: then.sqlite(c, tid, mid), lambda c: then.sa(c, tid, mid))  # type: ignore[arg-type]
            return mid, tid

        try:
            for attempt in range(2):
                tid = self._thread_ids.get(key)
                quick = (
                    not dedupe_ids and (then is None or not sqlite) and tid is not None
                    and epoch - self._touched.get(tid, float("-inf")) < THREAD_TOUCH_S
                )
                try:
                    if quick:
                        mid, tid = await self.db.run(lambda: fast(tid), "storing a message", atomic=then is not None and cte is None, retry=True)  # type: ignore[arg-type]
                    else:
                        mid, tid, touched = await self.db.run(full, "storing a message", retry=True)
                        self._remember(key, tid)  # committed now
                        self._touched[tid] = touched
                    break
                except ConstraintError:
                    if attempt or self._thread_ids.pop(key, None) is None:
                        raise
                    # a cached thread id was deleted (/forget, retention): look it up again
        except _Redelivery:
            return None
        stored = StoredMessage(mid, tid, role, author, text_, now, tokens, encoding, kind)
        for listener in self.listeners:
            await listener(key, stored)
        return stored

    @staticmethod
    def _row(r: Any) -> StoredMessage:
        return StoredMessage(int(r[0]), int(r[1]), r[2], r[3], r[4], _dt(r[5]), r[6], r[7], r[8])

    async def tail(
        self, key: SessionKey, *, limit: int, after_id: int | None = None, before_id: int | None = None, conversation_only: bool = False
    ) -> list[StoredMessage]:
        """The newest ``limit`` messages with ``after_id < id < before_id``, oldest first ([] for an unknown thread).

        ``conversation_only``: leave out commands and their answers (:data:`COMMAND`), as an LLM context must.
        """
        stmt = self._q.tail[conversation_only]

        def rows(tid: int) -> Body[list[Any]]:
            params = {"tid": tid, "after": after_id or 0, "before": before_id or TAIL_MAX_ID, "limit": limit}
            return (yield stmt, params).rows

        got = await self._in_thread(key, "reading history", rows, [])
        return [self._row(r) for r in reversed(got)]

    async def history(self, key: SessionKey, limit: int = 20) -> list[StoredMessage]:
        """The newest ``limit`` messages of the thread, oldest first."""
        return await self.tail(key, limit=limit)

    async def count(self, key: SessionKey) -> int:
        """How many messages the thread has."""

        def n(tid: int) -> Body[int]:
            return int((yield self._q.count, {"tid": tid}).scalar())

        return await self._in_thread(key, "counting messages", n, 0)

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
        q = self._q

        def hits(tid: int) -> Body[list[Any]]:
            rows = (yield q.search, {"tid": tid, "q": q.all_words(words), "limit": limit}).rows
            if not rows and len(words) > 1:
                rows = (yield q.search, {"tid": tid, "q": q.any_word(words), "limit": limit}).rows
            return rows

        return [self._row(r) for r in await self._in_thread(key, "searching messages", hits, [])]

    # -- summaries -----------------------------------------------------------

    async def summaries(self, key: SessionKey) -> list[SummaryRecord]:
        """All stored summaries of the thread (any order)."""

        def rows(tid: int) -> Body[list[Any]]:
            return (yield self._q.summaries, {"tid": tid}).rows

        got = await self._in_thread(key, "reading summaries", rows, [])
        return [SummaryRecord(int(r[0]), int(r[1]), int(r[2]), r[3], int(r[4]), int(r[5]), r[6]) for r in got]

    async def add_summary(self, key: SessionKey, s: SummaryRecord) -> None:
        """Store a summary; upsert on ``(thread, level, first_id, last_id)``."""
        now = datetime.now(UTC)
        values = {"level": s.level, "first_id": s.first_id, "last_id": s.last_id, "text": s.text, "tokens": s.tokens,
                  "message_count": s.message_count, "encoding": s.encoding, "now": now}

        def body() -> Body[tuple[int, None]]:
            tid = yield from self._thread_tx(key, now)
            yield self._q.add_summary, {**values, "tid": tid}
            return tid, None  # type: ignore[return-value]

        await self._committed(key, body, "storing a summary")

    async def clear(self, key: SessionKey) -> Forgotten:
        """Delete the thread's messages and summaries (``/forget``); runs are kept."""
        q = self._q

        def body() -> Body[tuple[int | None, Forgotten]]:
            tid = yield from self._thread_tx(key, None)
            if tid is None:
                return None, Forgotten(0, 0)
            m = (yield q.clear_messages, {"tid": tid}).rowcount
            s = (yield q.clear_summaries, {"tid": tid}).rowcount
            return tid, Forgotten(m, s)

        return await self._committed(key, body, "forgetting a thread")


__all__ = ["Forgotten", "SessionStore", "StoredMessage", "TxHook", "ThreadKey", "fts_terms"]
