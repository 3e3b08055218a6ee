"""Session stores: the async :class:`SessionStore` protocol, the in-process
``memory`` mode store, the ``stateless`` null store, and :func:`build_context`,
which runs a context strategy against any store.

Session modes are those of the seed's "Session Management" section
(/work/shared/seeds/001_087264de11ee0cf8.txt): ``stateless`` (no state between
requests → :class:`NullSessionStore`), ``memory`` (``timeout``,
``max_messages``, ``max_tokens`` → :class:`MemorySessionStore`) and
``persistent`` (database → the SQL store in ``bot/store``, implementing the
same protocol).
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence, runtime_checkable

from .config import SessionConfig
from .context import ContextStrategy, ContextWindow, ensure_summaries
from .records import MemoryMessage, MessageDraft, SessionKey, SummaryRecord, utcnow
from .summarize import Summarizer, SummarizeFn

__all__ = ["SessionStore", "MemorySessionStore", "NullSessionStore", "build_context", "store_for"]


@runtime_checkable
class SessionStore(Protocol):
    """Async storage of one bot's conversations, keyed by :class:`SessionKey`
    ``(platform, channel, thread)``. Implemented by :class:`MemorySessionStore`
    (``memory`` mode), :class:`NullSessionStore` (``stateless``) and the SQL
    store (``persistent``). All methods are coroutines; none may block the loop.
    """

    async def append(self, key: SessionKey, draft: MessageDraft) -> MemoryMessage:
        """Store a message and return it with its assigned ``id``.

        Ids must be strictly increasing within a session (a global
        autoincrement is fine) and > 0. ``draft.created_at=None`` means "now"
        (UTC). ``draft.tokens``/``draft.encoding`` are stored as given (the
        cached count, see :meth:`TokenCounter.draft`).
        """
        ...

    async def tail(
        self,
        key: SessionKey,
        *,
        limit: int,
        after_id: int | None = None,
        before_id: int | None = None,
    ) -> list[MemoryMessage]:
        """The newest ``limit`` messages with ``after_id < id < before_id``
        (``None`` = unbounded), returned **oldest first**. SQL:
        ``WHERE key AND id > :after AND id < :before ORDER BY id DESC LIMIT
        :limit``, then reversed. An unknown session returns ``[]``."""
        ...

    async def summaries(self, key: SessionKey) -> list[SummaryRecord]:
        """All stored summaries of the session, any order (strategies sort).
        Stores may omit summaries strictly contained in a wider one."""
        ...

    async def add_summary(self, key: SessionKey, summary: SummaryRecord) -> None:
        """Store a summary; idempotent on ``(level, first_id, last_id)``
        (upsert: the later one wins)."""
        ...

    async def clear(self, key: SessionKey) -> None:
        """Forget the session's messages and summaries (e.g. a ``/forget`` command)."""
        ...


class NullSessionStore:
    """``stateless`` mode: nothing is kept. ``append`` returns the message with
    a fresh id but stores nothing; ``tail``/``summaries`` are always empty."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)

    async def append(self, key: SessionKey, draft: MessageDraft) -> MemoryMessage:
        return MemoryMessage.from_draft(next(self._ids), draft)

    async def tail(
        self, key: SessionKey, *, limit: int, after_id: int | None = None, before_id: int | None = None
    ) -> list[MemoryMessage]:
        return []

    async def summaries(self, key: SessionKey) -> list[SummaryRecord]:
        return []

    async def add_summary(self, key: SessionKey, summary: SummaryRecord) -> None:
        return None

    async def clear(self, key: SessionKey) -> None:
        return None


@dataclass
class _Session:
    messages: list[MemoryMessage] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)
    summaries: dict[tuple[int, int, int], SummaryRecord] = field(default_factory=dict)
    tokens: int = 0
    last_active: float = 0.0


class MemorySessionStore:
    """In-process store for the ``memory`` session mode (seed "Memory-Based
    Sessions"). Not shared between processes; lost on restart.

    Args:
        timeout: seconds without an ``append`` after which a session expires
            (its messages and summaries are dropped on next access or by
            :meth:`purge_expired`); ``None`` = never. Seed default 3600.
        max_messages: keep at most this many messages per session; the oldest
            are evicted first. ``None`` = unlimited. Seed default 100.
        max_tokens: keep at most this many message tokens (cached counts) per
            session, evicting oldest; the newest message is always kept.
        clock: monotonic seconds source (injectable for tests).

    Summaries outlive the messages they cover (they *are* the memory of
    evicted messages); a summary contained in a wider stored one is pruned.
    Methods never await, so each call is atomic on the event loop.
    """

    def __init__(
        self,
        *,
        timeout: float | None = 3600.0,
        max_messages: int | None = 100,
        max_tokens: int | None = 8000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if timeout is not None and not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds or None, got {timeout!r}")
        if max_messages is not None and max_messages < 1:
            raise ValueError(f"max_messages must be >= 1 or None, got {max_messages}")
        if max_tokens is not None and max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1 or None, got {max_tokens}")
        self.timeout = timeout
        self.max_messages = max_messages
        self.max_tokens = max_tokens
        self._clock = clock
        self._ids = itertools.count(1)
        self._sessions: dict[SessionKey, _Session] = {}

    @classmethod
    def from_config(cls, config: SessionConfig, *, clock: Callable[[], float] = time.monotonic) -> "MemorySessionStore":
        """Store with the limits of a ``memory`` :class:`SessionConfig`."""
        return cls(timeout=config.timeout, max_messages=config.max_messages, max_tokens=config.max_tokens, clock=clock)

    def _expired(self, s: _Session, now: float) -> bool:
        return self.timeout is not None and now - s.last_active > self.timeout

    def _get(self, key: SessionKey, *, create: bool = False) -> _Session | None:
        key = SessionKey(*key)
        now = self._clock()
        s = self._sessions.get(key)
        if s is not None and self._expired(s, now):
            del self._sessions[key]
            s = None
        if s is None and create:
            s = self._sessions[key] = _Session(last_active=now)
        return s

    def __len__(self) -> int:
        """Number of sessions held (expired ones included until purged)."""
        return len(self._sessions)

    def purge_expired(self) -> int:
        """Drop every expired session; returns how many were dropped. Call it
        periodically so idle channels do not accumulate."""
        now = self._clock()
        dead = [k for k, s in self._sessions.items() if self._expired(s, now)]
        for k in dead:
            del self._sessions[k]
        return len(dead)

    async def append(self, key: SessionKey, draft: MessageDraft) -> MemoryMessage:
        """See :meth:`SessionStore.append`; then evicts the oldest messages
        beyond ``max_messages`` / ``max_tokens`` and refreshes the timeout."""
        s = self._get(key, create=True)
        assert s is not None
        msg = MemoryMessage.from_draft(next(self._ids), draft, draft.created_at or utcnow())
        s.messages.append(msg)
        s.ids.append(msg.id)
        s.tokens += msg.tokens
        s.last_active = self._clock()
        drop = 0
        n = len(s.messages)
        if self.max_messages is not None and n > self.max_messages:
            drop = n - self.max_messages
        if self.max_tokens is not None:
            total = s.tokens - sum(m.tokens for m in s.messages[:drop])
            while total > self.max_tokens and drop < n - 1:
                total -= s.messages[drop].tokens
                drop += 1
        if drop:
            s.tokens -= sum(m.tokens for m in s.messages[:drop])
            del s.messages[:drop]
            del s.ids[:drop]
        return msg

    async def tail(
        self, key: SessionKey, *, limit: int, after_id: int | None = None, before_id: int | None = None
    ) -> list[MemoryMessage]:
        """See :meth:`SessionStore.tail`. O(log n + limit)."""
        if limit <= 0:
            return []
        s = self._get(key)
        if s is None:
            return []
        lo = bisect.bisect_right(s.ids, after_id) if after_id is not None else 0
        hi = bisect.bisect_left(s.ids, before_id) if before_id is not None else len(s.ids)
        return s.messages[max(lo, hi - limit) : hi]

    async def summaries(self, key: SessionKey) -> list[SummaryRecord]:
        """See :meth:`SessionStore.summaries` (ordered by first_id, level)."""
        s = self._get(key)
        if s is None:
            return []
        return sorted(s.summaries.values(), key=lambda r: (r.first_id, r.level))

    async def add_summary(self, key: SessionKey, summary: SummaryRecord) -> None:
        """See :meth:`SessionStore.add_summary`; prunes lower-level summaries
        contained in the new one."""
        s = self._get(key, create=True)
        assert s is not None
        for span, old in list(s.summaries.items()):
            if old.level < summary.level and summary.first_id <= old.first_id and old.last_id <= summary.last_id:
                del s.summaries[span]
        s.summaries[summary.span] = summary

    async def clear(self, key: SessionKey) -> None:
        """See :meth:`SessionStore.clear`."""
        self._sessions.pop(SessionKey(*key), None)

    async def message_count(self, key: SessionKey) -> int:
        """Messages currently held for the session (0 if unknown/expired)."""
        s = self._get(key)
        return len(s.messages) if s else 0


def store_for(config: SessionConfig, *, clock: Callable[[], float] = time.monotonic) -> SessionStore:
    """The store for a non-persistent mode: ``stateless`` → :class:`NullSessionStore`,
    ``memory`` → :class:`MemorySessionStore` with the config's limits.

    Raises:
        ValueError: for ``persistent``, whose SQL store lives in ``bot/store``.
    """
    if config.mode == "stateless":
        return NullSessionStore()
    if config.mode == "memory":
        return MemorySessionStore.from_config(config, clock=clock)
    raise ValueError("persistent sessions use the SQL store (bot/store), not store_for()")


INLINE_ASSEMBLY_MAX_MESSAGES = 512
"""Assemblies over at most this many cached-count messages run on the event loop."""
INLINE_COMPRESSING_MAX_MESSAGES = 64
"""Compressing strategies (extractive compression of at most a message or two per turn;
the rest is memoised) run inline up to this many messages."""


async def build_context(
    store: SessionStore,
    key: SessionKey,
    strategy: ContextStrategy,
    system_prompt: str,
    new_message: MemoryMessage,
    *,
    summarizer: Summarizer | SummarizeFn | None = None,
    summaries: Sequence[SummaryRecord] | None = None,
    defer: Callable[[Sequence[MemoryMessage], Sequence[SummaryRecord]], None] | None = None,
) -> ContextWindow:
    """One turn's context against any store: load summaries, fetch the bounded
    tail the strategy asks for (messages before ``new_message.id`` plus replies
    stored since; pass an unstored message with ``id=0``), create and store missing summaries
    (``summarizer`` with extractive fallback; ``None`` = extractive), then
    assemble (inline when small, else in a worker thread).

    ``defer``: when given, missing summaries are not made in this turn; ``defer(history,
    stored_summaries)`` is called instead (the session manager summarizes in the
    background) and this window is assembled from the stored summaries plus the
    not-yet-summarized messages themselves, which the tail request always covers.

    Raises:
        ContextBudgetError: the budget cannot hold the mandatory parts.
    """
    stored = list(summaries) if summaries is not None else await store.summaries(key)
    req = strategy.tail_request(stored)
    # Everything the bot knew when it handled the new message: messages stored before
    # it, plus replies given since (a thread's messages can queue while the bot works);
    # not user messages that arrived after it (they get their own turn).
    kw = {"token_budget": req.token_budget} if req.token_budget is not None and getattr(store, "supports_token_budget", False) else {}
    history = await store.tail(key, limit=req.limit, after_id=req.after_id, **kw)  # type: ignore[arg-type]
    if new_message.id > 0:
        history = [m for m in history if m.id != new_message.id and (m.id < new_message.id or m.role != "user")]
    if defer is not None:
        created: list[SummaryRecord] = []
        if getattr(strategy, "summarizes", False) and strategy.plan(history, stored):
            defer(history, stored)
    else:
        created = await ensure_summaries(strategy, history, stored, summarizer)
    for rec in created:
        await store.add_summary(key, rec)
    limit = INLINE_COMPRESSING_MAX_MESSAGES if getattr(strategy, "compresses", False) else INLINE_ASSEMBLY_MAX_MESSAGES
    if len(history) <= limit and not created:
        # Small, cached work (counts are stored): well under a millisecond of CPU,
        # less than a thread hop costs on a busy machine. Larger work goes to a thread.
        return strategy.assemble(system_prompt, history, new_message, stored)
    return await asyncio.to_thread(strategy.assemble, system_prompt, history, new_message, stored + created)
