"""The session manager: which memory a thread has, and what an LLM call would see.

Every message is always recorded in the database (nothing typed is lost; runs and
``/history`` need it). The *session mode* decides what the LLM context draws on,
per platform/channel (seed: shared/seeds/001_… "Session Management"):

* ``persistent`` (default): the thread's stored history and stored summaries.
* ``memory``: an in-process window with ``max_messages``/``max_tokens`` limits that
  expires after ``timeout`` idle seconds (nothing of it survives a restart).
* ``stateless``: no history; each request stands alone.

Context assembly uses the configured strategy (``sliding_window``, ``summary``,
``hierarchical``; :mod:`bot.sessions.context`) under the token budget. Summaries are
made by the configured LLM when there is one (abstractive), else extractively, and
are stored and reused (:func:`bot.sessions.build_context`).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from bot.sessions import (
    ContextWindow,
    MemoryMessage,
    MemorySessionStore,
    MessageDraft,
    NullSessionStore,
    SessionConfig,
    SessionKey,
    SummaryRecord,
    TokenCounter,
    build_context,
    ensure_summaries,
    make_strategy,
)
from bot.store.sessions import Forgotten, SessionStore, StoredMessage
from bot.tasks import TaskOwner

log = logging.getLogger("baton.memory")

SummarizeFn = Callable[[Sequence[MemoryMessage], int], Awaitable[str]]

MAX_CONCURRENT_SUMMARIES = 4
"""Threads summarized at once in the background (each may be an LLM call)."""


class _Cached:
    """The cached newest part of one thread: every message with ``id > floor``, oldest first."""

    __slots__ = ("floor", "messages", "summaries", "tokens")

    def __init__(self) -> None:
        self.messages: list[MemoryMessage] = []
        self.floor: int | None = None  # None: nothing loaded yet
        self.summaries: list[SummaryRecord] | None = None
        self.tokens = 0


class SqlMemory:
    """The SQL session store seen through :class:`bot.sessions.SessionStore` (``persistent`` mode).

    Tail reads are served from a bounded LRU cache of the newest messages of
    recently active threads (``max_threads`` threads, about ``max_tokens`` tokens
    each), filled page by page from the database and kept current by
    :meth:`note_appended`. Idle threads fall out of the cache: sessions live in
    the database, not in RAM. With ``cache=False`` (several processes writing the
    same database) every read goes to the database, still page by page.

    ``token_budget`` (see :class:`bot.sessions.TailRequest`) lets a sliding window
    stop reading once the newest messages fill the budget instead of fetching its
    worst-case row count.
    """

    supports_token_budget = True

    def __init__(self, store: SessionStore, *, cache: bool = True, max_threads: int = 256, max_tokens: int = 24000, page: int = 128) -> None:
        self.store = store
        self.cache = cache
        self.max_threads = max_threads
        self.max_tokens = max_tokens
        self.page = page
        self._lru: OrderedDict[SessionKey, _Cached] = OrderedDict()

    def _entry(self, key: SessionKey) -> _Cached:
        c = self._lru.get(key)
        if c is None:
            c = _Cached()
            if self.cache:
                self._lru[key] = c
                while len(self._lru) > self.max_threads:
                    self._lru.popitem(last=False)
        else:
            self._lru.move_to_end(key)
        return c

    def invalidate(self, key: SessionKey | None = None) -> None:
        """Forget cached state of one thread (or all)."""
        if key is None:
            self._lru.clear()
        else:
            self._lru.pop(key, None)

    def note_appended(self, key: SessionKey, m: MemoryMessage) -> None:
        """Keep a cached thread current after a message was stored."""
        c = self._lru.get(key)
        if c is None or c.floor is None:
            return
        if c.messages and m.id <= c.messages[-1].id:  # out of order: start over from the database
            self.invalidate(key)
            return
        c.messages.append(m)
        c.tokens += m.tokens
        while c.tokens > self.max_tokens and len(c.messages) > 1:
            old = c.messages.pop(0)
            c.tokens -= old.tokens
            c.floor = old.id

    async def append(self, key: SessionKey, draft: MessageDraft) -> MemoryMessage:
        m = await self.store.append(
            key, draft.role, draft.author, draft.text, created_at=draft.created_at, tokens=draft.tokens, encoding=draft.encoding
        )
        return m.to_memory()

    async def tail(
        self,
        key: SessionKey,
        *,
        limit: int,
        after_id: int | None = None,
        before_id: int | None = None,
        token_budget: int | None = None,
    ) -> list[MemoryMessage]:
        c = self._entry(key)
        lo = after_id or 0
        while True:
            covered = c.floor is not None and c.floor <= lo
            got = self._suffix(c.messages, lo, before_id, limit, token_budget, complete=covered)
            if got is not None:
                return got
            upper = None if c.floor is None else c.floor + 1
            page = [
                m.to_memory() for m in await self.store.tail(key, limit=self.page, after_id=after_id, before_id=upper, conversation_only=True)
            ]
            c.messages[:0] = page
            c.tokens += sum(m.tokens for m in page)
            c.floor = lo if len(page) < self.page else page[0].id - 1
            if c.floor <= lo:  # everything above after_id is loaded now
                return self._suffix(c.messages, lo, before_id, limit, token_budget, complete=True) or []

    @staticmethod
    def _suffix(
        messages: list[MemoryMessage], lo: int, before_id: int | None, limit: int, token_budget: int | None, *, complete: bool = False
    ) -> list[MemoryMessage] | None:
        """The newest cached messages in ``(lo, before_id)`` that satisfy the request, oldest first;
        ``None`` when the cache does not reach far enough back (and is not ``complete``)."""
        out: list[MemoryMessage] = []
        tokens = 0
        for m in reversed(messages):
            if before_id is not None and m.id >= before_id:
                continue
            if m.id <= lo:
                complete = True
                break
            out.append(m)
            tokens += m.tokens
            if len(out) >= limit or (token_budget is not None and tokens >= token_budget):
                complete = True
                break
        if not complete:
            return None
        out.reverse()
        return out

    async def summaries(self, key: SessionKey) -> list[SummaryRecord]:
        c = self._entry(key)
        if c.summaries is None:
            c.summaries = await self.store.summaries(key)
        return list(c.summaries)

    async def add_summary(self, key: SessionKey, summary: SummaryRecord) -> None:
        await self.store.add_summary(key, summary)
        c = self._lru.get(key)
        if c is not None and c.summaries is not None:
            c.summaries = [s for s in c.summaries if s.span != summary.span] + [summary]

    async def clear(self, key: SessionKey) -> None:
        await self.store.clear(key)
        self.invalidate(key)


def session_config(data: Mapping[str, Any]) -> SessionConfig:
    """``[sessions]`` settings → :class:`SessionConfig`.

    Context keys (``strategy``, ``max_tokens``, ``reserve_tokens``, ``window_size``,
    ``summary_frequency``…) sit at the top level; ``memory_max_tokens``,
    ``max_messages`` and ``timeout`` limit the in-process ``memory`` mode.

    Raises:
        ValueError / ContextBudgetError: invalid values, naming them.
    """
    d = dict(data)
    context_keys = {
        "strategy", "max_tokens", "reserve_tokens", "window_size", "summary_frequency", "summary_length",
        "keep_recent", "levels", "compression_ratio", "rollup_factor", "summary_share", "max_pending_chunks",
    }
    ctx = dict(d.pop("context", {}) or {})
    for k in list(d):
        if k in context_keys:
            ctx[k] = d.pop(k)
    if "memory_max_tokens" in d:  # the memory-mode cap on stored tokens (the seed's session max_tokens)
        d["max_tokens"] = d.pop("memory_max_tokens")
    for ignored in ("system_prompt", "channels"):
        d.pop(ignored, None)
    d.setdefault("mode", "persistent")
    d["context"] = ctx
    return SessionConfig.from_dict(d)


class Memory:
    """Per-thread memory for LLM calls, plus the memory commands' data.

    Args:
        sessions: the SQL store (every message is there).
        counter: the token counter (its encoding is what counts are cached in).
        default: the ``[sessions]`` config; ``channels`` overrides it per
            ``"platform:channel"`` (or ``"platform:*"``) with partial mappings.
        system_prompt: what every LLM call starts with.
        summarize: abstractive summarizer (an LLM call), or ``None`` for extractive.

    Summaries are made in the background, never inside a turn: a turn whose
    thread has a complete chunk without a summary is assembled from the stored
    summaries plus the messages themselves, and one task per thread summarizes
    (an LLM call can take seconds; the reply must not wait for it). The next turn
    uses what was stored. At most :data:`MAX_CONCURRENT_SUMMARIES` threads are summarized
    at once. :meth:`settle` waits for that work; :meth:`aclose` cancels it (the next turn
    plans it again).

    Raises:
        ContextBudgetError: at construction, when a budget cannot hold the system
            prompt plus the reserve (checked for every configured channel).
    """

    def __init__(
        self,
        sessions: SessionStore,
        counter: TokenCounter,
        default: Mapping[str, Any],
        *,
        channels: Mapping[str, Mapping[str, Any]] | None = None,
        system_prompt: str = "",
        summarize: SummarizeFn | None = None,
    ) -> None:
        self.sessions = sessions
        self.counter = counter
        self.system_prompt = system_prompt
        self.summarize = summarize
        self._raw_default = dict(default)
        self.default = session_config(default)
        self.channels = {k: session_config({**self._raw_default, **dict(v)}) for k, v in (channels or {}).items()}
        self._memory_stores: dict[str, MemorySessionStore] = {}
        self._memory_ids: dict[SessionKey, int] = {}
        self._sql = SqlMemory(sessions, cache=sessions.db.dialect == "sqlite")
        self._null = NullSessionStore()
        self._strategies: dict[int, Any] = {}
        self._summarizing: dict[SessionKey, asyncio.Task[None]] = {}
        self._summary_tasks = TaskOwner("memory", logger=log)  # cancelled and awaited by aclose() (via _summarizing)
        self._summary_slots = asyncio.Semaphore(MAX_CONCURRENT_SUMMARIES)
        sessions.listeners.append(self.observe)
        for name, cfg in [("default", self.default), *self.channels.items()]:
            self._check_budget(name, cfg)

    def _check_budget(self, name: str, cfg: SessionConfig) -> None:
        from bot.sessions import ContextBudgetError

        system = self.counter.count_message("system", self.system_prompt) if self.system_prompt else 0
        budget = cfg.context.max_tokens - cfg.context.reserve_tokens
        if system + 8 > budget:
            raise ContextBudgetError(
                f"[sessions] {name}: the system prompt takes {system} tokens but max_tokens ({cfg.context.max_tokens}) "
                f"minus reserve_tokens ({cfg.context.reserve_tokens}) leaves only {budget}"
            )

    def config_for(self, key: SessionKey) -> SessionConfig:
        """The session config of a thread: channel override, platform override, or the default."""
        return self.channels.get(f"{key.platform}:{key.channel}") or self.channels.get(f"{key.platform}:*") or self.default

    def _store(self, key: SessionKey, cfg: SessionConfig):  # type: ignore[no-untyped-def]
        if cfg.mode == "persistent":
            return self._sql
        if cfg.mode == "stateless":
            return self._null
        name = f"{key.platform}:{key.channel}" if f"{key.platform}:{key.channel}" in self.channels else "default"
        if name not in self._memory_stores:
            self._memory_stores[name] = MemorySessionStore.from_config(cfg)
        return self._memory_stores[name]

    async def observe(self, key: SessionKey, message: StoredMessage) -> None:
        """Called for every stored message: keeps the SQL tail cache current, and
        mirrors the message into the in-process store of a ``memory``-mode thread."""
        if message.kind is not None:  # a command or its answer: not part of any LLM context
            return
        cfg = self.config_for(key)
        if cfg.mode == "persistent":
            if message.tokens is not None:
                self._sql.note_appended(key, message.to_memory())
            else:
                self._sql.invalidate(key)
            return
        if cfg.mode != "memory":
            return
        store = self._store(key, cfg)
        tokens = message.tokens if message.tokens is not None else self.counter.count_message(message.role, message.text)
        draft = MessageDraft(message.role, message.author, message.text, tokens, message.encoding or self.counter.encoding, message.created_at)  # type: ignore[arg-type]
        self._memory_ids[key] = (await store.append(key, draft)).id

    async def context(
        self, key: SessionKey, new_text: str, *, new_id: int = 0, role: str = "user", tokens: int | None = None
    ) -> ContextWindow:
        """The context window the next LLM call in this thread would receive.

        Args:
            new_text: the new message (already stored with id ``new_id``, or not stored: 0).
            tokens: its cached count, when known (else counted here).

        Raises:
            ContextBudgetError: the budget cannot hold the mandatory parts.
        """
        cfg = self.config_for(key)
        strategy = self._strategies.get(id(cfg))
        if strategy is None:  # one per config: strategies keep caches (e.g. compressed messages)
            strategy = self._strategies[id(cfg)] = make_strategy(cfg.context, self.counter)
        count = tokens if tokens is not None else self.counter.count_message(role, new_text)
        new = MemoryMessage(new_id, role, "user", new_text, count, datetime.now(UTC), self.counter.encoding)  # type: ignore[arg-type]
        if cfg.mode == "memory" and new_id:  # the in-process store numbers its own copies
            new = MemoryMessage(self._memory_ids.get(key, 0), new.role, new.author, new.text, new.tokens, new.created_at, new.encoding)
        store = self._store(key, cfg)
        return await build_context(
            store, key, strategy, self.system_prompt, new, defer=lambda history, stored: self._summarize_later(key, store, strategy, history, stored)
        )

    def _summarize_later(self, key: SessionKey, store: Any, strategy: Any, history: Any, stored: Any) -> None:
        """Start the thread's background summarization unless one is running (the next turn plans again)."""
        if key in self._summarizing:
            return
        task = self._summary_tasks.start(self._summarize(key, store, strategy, list(history), list(stored)), name=f"summaries {key}")
        self._summarizing[key] = task
        task.add_done_callback(lambda t: self._summarizing.pop(key, None) if self._summarizing.get(key) is t else None)

    async def _summarize(self, key: SessionKey, store: Any, strategy: Any, history: list[MemoryMessage], stored: list[SummaryRecord]) -> None:
        try:
            async with self._summary_slots:  # a burst of threads must not become a burst of LLM calls
                created = await ensure_summaries(strategy, history, stored, self.summarize)
            for rec in created:
                await store.add_summary(key, rec)
        except Exception:  # reported; the thread's context uses its messages until a later turn retries
            log.exception("summarizing %s failed; its context window uses the messages themselves until a later turn retries", key)

    async def settle(self, key: SessionKey | None = None) -> None:
        """Wait for background summarization (of one thread, or all) to finish."""
        while True:
            tasks = [t for k, t in self._summarizing.items() if key is None or k == key]
            if not tasks:
                return
            await asyncio.gather(*tasks, return_exceptions=True)

    async def aclose(self) -> None:
        """Cancel background summarization (nothing is lost: a later turn plans it again)."""
        tasks = list(self._summarizing.values())
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def recall(self, key: SessionKey, query: str, *, limit: int = 5) -> list[StoredMessage]:
        """Earlier messages of the thread matching ``query`` (full-text search; no LLM)."""
        return await self.sessions.search(key, query, limit=limit)

    async def forget(self, key: SessionKey) -> Forgotten:
        """Delete the thread's messages and summaries (database and in-process)."""
        task = self._summarizing.get(key)
        if task is not None:  # a summary written after the delete would bring the thread back
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        cfg = self.config_for(key)
        if cfg.mode == "memory":
            await self._store(key, cfg).clear(key)
        self._sql.invalidate(key)
        return await self.sessions.clear(key)

    async def summaries(self, key: SessionKey) -> list[SummaryRecord]:
        """The thread's stored summaries, oldest span first (after pending background work)."""
        await self.settle(key)
        cfg = self.config_for(key)
        got = await self._store(key, cfg).summaries(key) if cfg.mode != "stateless" else []
        return sorted(got, key=lambda s: (s.first_id, -s.level))

    def invalidate(self) -> None:
        """Drop every cached thread (after retention deleted rows)."""
        self._sql.invalidate()

    def purge_expired(self) -> int:
        """Drop expired in-process (``memory`` mode) sessions; returns how many."""
        return sum(s.purge_expired() for s in self._memory_stores.values())
