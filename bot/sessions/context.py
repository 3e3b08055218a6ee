"""Context strategies: turn a bounded tail of a session into a context window.

Strategies come from the seed's "Context Management" section
(/work/shared/seeds/001_087264de11ee0cf8.txt): ``sliding_window``
("Window-Based Context"), ``summary`` ("Summary-Based Context") and
``hierarchical`` ("Hierarchical Context"). The token allocation (system
prompt / history / reserve for the response) follows the seed's
"Token allocation" example.

Protocol of one turn (see :func:`bot.sessions.store.build_context`, which
does exactly this against any :class:`~bot.sessions.store.SessionStore`)::

    summaries = await store.summaries(key)            # stored, reused
    req = strategy.tail_request(summaries)            # how much history is needed
    history = await store.tail(key, limit=req.limit, after_id=req.after_id,
                               before_id=new_message.id)
    for span in strategy.plan(history, summaries):    # only spans without a summary
        ...summarize and store (ensure_summaries does this, incl. roll-ups)
    window = strategy.assemble(system_prompt, history, new_message, summaries)

What a strategy needs as input
------------------------------
* ``history``: the newest messages *before* the new one, oldest first (newest
  last), ids strictly increasing — at least ``tail_request(...).limit``
  messages with ``id > tail_request(...).after_id`` when that many exist.
  For ``sliding_window`` that is every message that could possibly fit
  (budget / 4-token minimum message cost, capped by ``window_size``); for
  the summarizing strategies it is the messages not yet covered by a stored
  summary (bounded by ``max_pending_chunks``). Older messages are never needed.
* ``summaries``: the session's stored :class:`SummaryRecord` rows (any order).
* cached token counts on the messages (``MemoryMessage.tokens``); they are
  trusted when their ``encoding`` matches the strategy's counter.

Summaries and reuse
-------------------
Level-1 summaries cover exactly ``summary_frequency`` consecutive messages,
chunked from the end of the newest existing summary (the *frontier*), so chunk
boundaries never move and every summary is computed once. When the shown
summaries cost more than ``summary_share`` of the prompt budget, the oldest
run of ``rollup_factor`` consecutive level-k summaries is folded into one
level-(k+1) summary ("running summaries"; one roll-up per ``plan`` call —
:func:`ensure_summaries` re-plans until nothing is left). :meth:`plan` reports only spans that have no summary yet;
:meth:`assemble` never summarizes. The context uses the *cover*: the
non-overlapping chain of the widest summaries, oldest first.

Invariants of :meth:`assemble` (tested with hypothesis)
-------------------------------------------------------
* ``breakdown.total <= config.max_tokens`` (total includes the reserve and the
  reply priming), counts being exact recounts of the emitted contents;
* emitted messages keep chronological order (system, summaries, history, new);
* the new message is always last; if it alone exceeds the free budget it is
  truncated with a visible ``…[truncated N tokens]`` marker, never dropped;
* a budget that cannot hold system prompt + reserve + framing + a minimal
  (truncated) new message raises :class:`ContextBudgetError` naming the numbers.

``assemble`` and ``plan`` are pure, sync and CPU-bound (tokenizing summaries
and compressed messages): async callers run ``assemble`` via
``asyncio.to_thread``.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from typing import Sequence

from .config import ContextBudgetError, ContextConfig
from .window import (
    COMPRESSED_PREFIX,
    ContextStrategy,
    ContextWindow,
    PromptKind,
    PromptMessage,
    SummarySpan,
    TailRequest,
    TokenBreakdown,
    render_breakdown,
)
from .records import ROLES, MemoryMessage, SummaryRecord
from .summarize import (
    ExtractiveSummarizer,
    Summarizer,
    SummarizeFn,
    as_summarizer,
    compress_text,
    summarize_with_fallback,
)
from .tokens import REPLY_PRIMING_TOKENS, TokenCounter

__all__ = [
    "PromptKind",
    "PromptMessage",
    "TokenBreakdown",
    "ContextWindow",
    "SummarySpan",
    "TailRequest",
    "ContextStrategy",
    "SlidingWindowStrategy",
    "SummaryStrategy",
    "HierarchicalStrategy",
    "make_strategy",
    "summary_cover",
    "summarize_span",
    "ensure_summaries",
    "render_breakdown",
    "render_summary",
    "COMPRESSED_PREFIX",
]

# --------------------------------------------------------------------------------------
# helpers


_COVER_MEMO: list[tuple[tuple[SummaryRecord, ...], list[SummaryRecord]]] = []


def summary_cover(summaries: Sequence[SummaryRecord]) -> list[SummaryRecord]:
    """Non-overlapping chain of summaries, oldest first, preferring the widest
    (highest-level) summary at each start. Its last ``last_id`` is the frontier:
    messages up to it are represented by summaries. The last few results are
    memoised (a turn asks for the same cover several times)."""
    key = tuple(summaries)
    for k, v in _COVER_MEMO:
        if k == key:  # tuples of the same records compare by identity first: cheap
            return list(v)
    cover = _summary_cover(summaries)
    _COVER_MEMO.insert(0, (key, cover))
    del _COVER_MEMO[8:]
    return list(cover)


def _summary_cover(summaries: Sequence[SummaryRecord]) -> list[SummaryRecord]:
    ordered = sorted(summaries, key=lambda s: (s.first_id, -s.last_id, -s.level))
    cover: list[SummaryRecord] = []
    last: int | None = None
    for s in ordered:
        if last is None or s.first_id > last:
            cover.append(s)
            last = s.last_id
    return cover


def render_summary(summary: SummaryRecord) -> str:
    """Content of the system note that carries a summary in the context."""
    n = f" ({summary.message_count} messages)" if summary.message_count else ""
    return f"Summary of earlier conversation{n}:\n{summary.text}"


def _check_history(history: Sequence[MemoryMessage]) -> None:
    prev: int | None = None
    for m in history:
        if prev is not None and m.id <= prev:
            raise ValueError(f"history must be ordered oldest first with increasing ids (id {m.id} after {prev})")
        prev = m.id


class _BaseStrategy:
    """Shared engine: tiers of messages (full / compressed) + a summary cover."""

    name: str = "base"
    summarizes: bool = False
    compresses: bool = False

    def __init__(self, config: ContextConfig | None = None, counter: TokenCounter | None = None) -> None:
        self.config = config or ContextConfig(strategy=self.name)  # type: ignore[arg-type]
        self.counter = counter or TokenCounter()
        self._min_msg = min(self.counter.count_message(r, "") for r in ROLES)
        self._min_trunc = self.counter.min_truncated_tokens()
        self._cache: OrderedDict[tuple, tuple[str, PromptMessage]] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._summary_costs: OrderedDict[tuple, tuple[str, int]] = OrderedDict()
        self._plain: dict[int, tuple[str, int | None, str | None, PromptMessage]] = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(encoding={self.counter.encoding!r}, config={self.config!r})"

    def _plain_message(self, m: MemoryMessage) -> PromptMessage:
        """The untruncated history form of ``m``, built once per stored message (bounded memo,
        keyed by id and checked against the message: ids can repeat across in-process stores)."""
        hit = self._plain.get(m.id)
        if hit is not None and (hit[0] is m.text or hit[0] == m.text) and hit[1] == m.tokens and hit[2] == m.encoding and hit[3].role == m.role:
            return hit[3]
        pm = PromptMessage(m.role, m.text, self.counter.message_tokens(m), "history", m.id, m.id, False)
        if len(self._plain) >= 65536:
            self._plain.clear()
        self._plain[m.id] = (m.text, m.tokens, m.encoding, pm)
        return pm

    # -- tiers (overridden) ----------------------------------------------------------
    def _protected(self) -> int:
        """Newest pending messages never summarized."""
        return 0

    def _tiers(self, pending: Sequence[MemoryMessage]) -> tuple[Sequence[MemoryMessage], Sequence[MemoryMessage]]:
        """(compressed tier, full tier), both oldest first."""
        return (), pending

    def _summary_message_cap(self) -> int | None:
        return None

    # -- planning --------------------------------------------------------------------
    def _frontier(self, cover: Sequence[SummaryRecord]) -> int | None:
        return cover[-1].last_id if cover else None

    def tail_request(self, summaries: Sequence[SummaryRecord]) -> TailRequest:
        """History needed for this turn (see module docs, "What a strategy needs").

        Non-summarizing: ``limit = min(window_size, (max_tokens - reserve - 3) // 4)``
        (4 tokens = cheapest possible message), ``after_id=None``. Summarizing:
        the messages after the frontier, ``limit = protected + summary_frequency
        * (max_pending_chunks + 1) - 1`` where ``protected`` is ``keep_recent``
        (summary) or ``levels.full + levels.compressed`` (hierarchical).
        """
        cfg = self.config
        if not self.summarizes:
            fit = max(1, (cfg.prompt_budget - REPLY_PRIMING_TOKENS) // self._min_msg)
            limit = fit if cfg.window_size is None else min(fit, cfg.window_size)
            return TailRequest(limit=limit, after_id=None, token_budget=cfg.prompt_budget)
        frontier = self._frontier(summary_cover(summaries))
        limit = self._protected() + cfg.summary_frequency * (cfg.max_pending_chunks + 1) - 1
        return TailRequest(limit=limit, after_id=frontier)

    def plan(self, history: Sequence[MemoryMessage], summaries: Sequence[SummaryRecord]) -> tuple[SummarySpan, ...]:
        """Spans that need a new summary: complete chunks of
        ``summary_frequency`` messages after the frontier, older than the
        protected newest messages (at most ``max_pending_chunks``, newest
        ones), plus at most one roll-up (:meth:`_plan_rollup`). Pure; empty
        when nothing is missing, so existing summaries are never recomputed.

        Raises:
            ValueError: ``history`` not oldest-first with increasing ids.
        """
        if not self.summarizes:
            return ()
        _check_history(history)
        cfg = self.config
        cover = summary_cover(summaries)
        frontier = self._frontier(cover)
        pending = [m for m in history if frontier is None or m.id > frontier]
        eligible = pending[: max(0, len(pending) - self._protected())]
        freq = cfg.summary_frequency
        n_chunks = len(eligible) // freq
        first_chunk = max(0, n_chunks - cfg.max_pending_chunks)
        spans: list[SummarySpan] = []
        for c in range(first_chunk, n_chunks):
            chunk = tuple(eligible[c * freq : (c + 1) * freq])
            spans.append(SummarySpan(1, chunk[0].id, chunk[-1].id, len(chunk), chunk))
        rollup = self._plan_rollup(cover)
        if rollup is not None:
            spans.append(rollup)
        return tuple(spans)

    def _shown_summaries(self, cover: Sequence[SummaryRecord]) -> list[tuple[SummaryRecord, str, int]]:
        """Cover entries eligible for the context, newest first, as
        ``(summary, rendered content, chat-message tokens)``; stops once
        ``_summary_message_cap()`` messages are covered."""
        cap = self._summary_message_cap()
        out: list[tuple[SummaryRecord, str, int]] = []
        covered = 0
        for s in reversed(cover):
            if cap is not None and covered >= cap:
                break
            key = (s.level, s.first_id, s.last_id, s.text)
            with self._cache_lock:
                hit = self._summary_costs.get(key)
            if hit is None:  # rendered and counted once per stored summary, not every turn
                content = render_summary(s)
                hit = (content, self.counter.count_message("system", content))
                with self._cache_lock:
                    self._summary_costs[key] = hit
                    while len(self._summary_costs) > 4096:
                        self._summary_costs.popitem(last=False)
            out.append((s, hit[0], hit[1]))
            covered += s.message_count
        return out

    def _plan_rollup(self, cover: Sequence[SummaryRecord]) -> SummarySpan | None:
        """One roll-up span, or ``None``.

        Summaries are folded only when the shown ones cost more than their
        share of the prompt budget (``floor((max_tokens - reserve_tokens) *
        summary_share)`` tokens): then the *oldest* run of ``rollup_factor``
        consecutive same-level shown summaries becomes one summary of the next
        level. Deterministic in the stored summaries, so spans never move.
        """
        cfg = self.config
        shown = self._shown_summaries(cover)
        budget = math.floor(cfg.prompt_budget * cfg.summary_share)
        if sum(cost for _, _, cost in shown) <= budget:
            return None
        tail = [s for s, _, _ in reversed(shown)]  # oldest first, a suffix of the cover
        factor = cfg.rollup_factor
        i = 0
        while i < len(tail):
            j = i
            while j < len(tail) and tail[j].level == tail[i].level:
                j += 1
            if j - i >= factor:
                group = tuple(tail[i : i + factor])
                return SummarySpan(
                    level=group[0].level + 1,
                    first_id=group[0].first_id,
                    last_id=group[-1].last_id,
                    message_count=sum(g.message_count for g in group),
                    sources=group,
                )
            i = j
        return None

    # -- assembly --------------------------------------------------------------------
    def _compressed_message(self, m: MemoryMessage) -> PromptMessage:
        """The compressed form of ``m`` as a prompt message (text and chat-message
        tokens), built once per stored message (bounded memo, checked against the text:
        ids can repeat across in-process stores)."""
        key = (m.id, m.encoding, m.role)
        with self._cache_lock:
            hit = self._cache.get(key)
            if hit is not None and (hit[0] is m.text or hit[0] == m.text):
                self._cache.move_to_end(key)
                return hit[1]
        text = self._compressed_text(m)
        cost = self.counter.message_tokens(m) if text is m.text else self.counter.count_message(m.role, text)
        pm = PromptMessage(m.role, text, cost, "compressed", m.id, m.id, False)
        with self._cache_lock:
            self._cache[key] = (m.text, pm)
            if len(self._cache) > 4096:
                self._cache.popitem(last=False)
        return pm

    def _compressed_text(self, m: MemoryMessage) -> str:
        """Extractive compression of one message to ``compression_ratio`` of its
        text tokens (min 16); ``m.text`` itself when that is short enough."""
        c = self.counter
        text_tokens = c.count(m.text)
        target = max(16, math.ceil(text_tokens * self.config.compression_ratio))
        if text_tokens <= target:
            return m.text
        squeezed = compress_text(m.text, target - c.count(COMPRESSED_PREFIX), c)
        return COMPRESSED_PREFIX + squeezed if squeezed else m.text

    def assemble(
        self,
        system_prompt: str,
        history: Sequence[MemoryMessage],
        new_message: MemoryMessage,
        summaries: Sequence[SummaryRecord] = (),
    ) -> ContextWindow:
        """Assemble the window (never summarizes; see module docs for inputs
        and invariants).

        Allocation: system prompt, reserve and reply priming are fixed; the new
        message comes first (truncated if needed); summaries are guaranteed up
        to ``summary_share`` of what is left; history (full, then compressed,
        newest first, stopping at the first misfit; the newest history message
        is truncated rather than dropped when nothing else fits) takes the
        rest; summaries then fill newest first; leftover goes to older history.

        Raises:
            ContextBudgetError: ``max_tokens`` < system + reserve + 3 + a
                minimal truncated new message.
            ValueError: ``history`` not oldest-first with increasing ids.
        """
        cfg, c = self.config, self.counter
        _check_history(history)
        system_cost = c.count_message("system", system_prompt) if system_prompt else 0
        framing = REPLY_PRIMING_TOKENS
        new_overhead = c.count_message(new_message.role, "")
        min_new = new_overhead + self._min_trunc
        fixed = system_cost + framing + cfg.reserve_tokens
        if fixed + min_new > cfg.max_tokens:
            raise ContextBudgetError(
                f"max_tokens={cfg.max_tokens} cannot hold system prompt ({system_cost}) + "
                f"reserve_tokens ({cfg.reserve_tokens}) + reply framing ({framing}) + "
                f"a minimal new message ({min_new}) = {fixed + min_new} tokens"
            )
        avail = cfg.max_tokens - fixed

        # 1. the new message: always included, truncated if needed
        new_cost = c.message_tokens(new_message)
        new_text, new_trunc = new_message.text, False
        if new_cost > avail:
            new_text = c.truncate(new_message.text, avail - new_overhead)
            new_cost, new_trunc = c.count_message(new_message.role, new_text), True
        avail -= new_cost
        new_pm = PromptMessage(new_message.role, new_text, new_cost, "new", new_message.id, new_message.id, new_trunc)

        # 2. summaries available (cover, newest first, optionally capped in messages)
        cover = summary_cover(summaries) if self.summarizes else []
        frontier = self._frontier(cover)
        candidates_s = self._shown_summaries(cover)
        guarantee = min(sum(x[2] for x in candidates_s), math.floor(avail * cfg.summary_share))

        # 3. messages newest first within (avail - guarantee)
        pending = [m for m in history if m.id != new_message.id and (frontier is None or m.id > frontier)]
        comp_tier, full_tier = self._tiers(pending)
        n_comp = len(comp_tier)
        ordered = list(comp_tier) + list(full_tier)  # oldest first
        chosen: list[PromptMessage] = []  # newest first
        used = 0

        def fill(start: int, budget: int) -> tuple[int, bool]:
            """Add messages from ordered[-1-start] backwards; returns (next index, stopped_by_budget)."""
            nonlocal used
            k = start
            n = len(ordered)
            if not self.compresses:  # fast path: full messages with cached counts, newest first
                plain = self._plain_message
                while k < n:
                    pm = plain(ordered[n - 1 - k])
                    if pm.tokens > budget - used:
                        break  # the general loop below decides (truncation when nothing fits yet)
                    chosen.append(pm)
                    used += pm.tokens
                    k += 1
            while k < n:
                idx = n - 1 - k
                m = ordered[idx]
                room = budget - used
                pm: PromptMessage | None = None
                if idx >= n_comp:  # full tier: the message as stored, with its cached count
                    full = self._plain_message(m)
                    if full.tokens <= room:
                        pm = full
                if pm is None and self.compresses:
                    comp = self._compressed_message(m)
                    if comp.tokens <= room:
                        pm = comp
                if pm is None and not chosen:
                    overhead = c.count_message(m.role, "")
                    if room - overhead >= self._min_trunc:
                        text = c.truncate(m.text, room - overhead)
                        cost = c.count_message(m.role, text)
                        if text and cost <= room:
                            kind: PromptKind = "history" if idx >= n_comp else "compressed"
                            pm = PromptMessage(m.role, text, cost, kind, m.id, m.id, True)
                if pm is None:
                    return k, True
                chosen.append(pm)
                used += pm.tokens
                k += 1
            return k, False

        next_k, stopped = fill(0, avail - guarantee)

        # 4. summaries newest first in what is left; contiguous (stop at first misfit)
        chosen_s: list[tuple[SummaryRecord, str, int]] = []
        s_used = 0
        for s, content, cost in candidates_s:
            if used + s_used + cost > avail:
                break
            chosen_s.append((s, content, cost))
            s_used += cost

        # 5. second pass: leftover budget for older messages
        if stopped and next_k < len(ordered):
            fill(next_k, avail - s_used)

        # 6. emit in chronological order
        out: list[PromptMessage] = []
        if system_prompt:
            out.append(PromptMessage("system", system_prompt, system_cost, "system"))
        for s, content, cost in reversed(chosen_s):
            out.append(PromptMessage("system", content, cost, "summary", s.first_id, s.last_id))
        out.extend(reversed(chosen))
        out.append(new_pm)

        if not chosen_s:  # chosen messages come from history (ids unique), the new one excluded
            omitted = len(history) - len(chosen) - sum(1 for m in history if m.id == new_message.id)
        else:
            included_ids = {pm.first_id for pm in chosen}
            spans = sorted((s.first_id, s.last_id) for s, _, _ in chosen_s)
            omitted = 0
            for m in history:
                if m.id == new_message.id or m.id in included_ids:
                    continue
                if any(a <= m.id <= b for a, b in spans):
                    continue
                omitted += 1
        hist = [pm for pm in chosen if pm.kind == "history"]
        comp = [pm for pm in chosen if pm.kind == "compressed"]
        breakdown = TokenBreakdown(
            budget=cfg.max_tokens,
            system=system_cost,
            summaries=s_used,
            compressed=sum(pm.tokens for pm in comp),
            history=sum(pm.tokens for pm in hist),
            new_message=new_cost,
            framing=framing,
            reserve=cfg.reserve_tokens,
            summary_count=len(chosen_s),
            summarized_messages=sum(s.message_count for s, _, _ in chosen_s),
            compressed_messages=len(comp),
            history_messages=len(hist),
            omitted_messages=omitted,
            omitted_summaries=len(cover) - len(chosen_s),
        )
        assert breakdown.total <= cfg.max_tokens, breakdown  # invariant, see module docs
        return ContextWindow(self.name, c.encoding, tuple(out), breakdown)


class SlidingWindowStrategy(_BaseStrategy):
    """Seed "Window-Based Context": keep the newest messages that fit
    ``max_tokens - reserve_tokens`` (after system prompt and new message),
    at most ``window_size`` of them; older ones are dropped (counted in
    ``breakdown.omitted_messages``). Ignores summaries; ``plan`` is empty.

    Input: ``history`` = newest ``tail_request().limit`` messages (the number
    that could fit at 4 tokens per empty message, capped by ``window_size``).
    """

    name = "sliding_window"

    def _tiers(self, pending: Sequence[MemoryMessage]) -> tuple[Sequence[MemoryMessage], Sequence[MemoryMessage]]:
        ws = self.config.window_size
        return (), (pending[-ws:] if ws is not None else pending)


class SummaryStrategy(_BaseStrategy):
    """Seed "Summary-Based Context": every ``summary_frequency`` messages are
    folded into a stored summary of at most ``summary_length`` tokens
    (rolled up by ``rollup_factor`` when they outgrow ``summary_share``); the messages not yet
    summarized — at least the newest ``keep_recent`` — are sent in full.
    Matches the seed example (1-10 summary, 11-20 summary, 21-25 full, 26 new).

    Input: ``history`` = messages after the newest summary (``after_id`` of
    :meth:`tail_request`), newest ``limit``; plus all stored summaries.
    """

    name = "summary"
    summarizes = True

    def _protected(self) -> int:
        return self.config.keep_recent


class HierarchicalStrategy(_BaseStrategy):
    """Seed "Hierarchical Context": the newest ``levels.full`` messages in
    full, the next ``levels.compressed`` (or more, until a full chunk can be
    summarized) compressed extractively per message to ``compression_ratio``,
    and older messages as stored summaries covering up to ``levels.summary``
    messages (``None`` = all, via roll-ups). A full-tier message that does not
    fit verbatim falls back to its compressed form.

    Input: as :class:`SummaryStrategy`.
    """

    name = "hierarchical"
    summarizes = True
    compresses = True

    def _protected(self) -> int:
        lv = self.config.levels
        return lv.full + lv.compressed

    def _tiers(self, pending: Sequence[MemoryMessage]) -> tuple[Sequence[MemoryMessage], Sequence[MemoryMessage]]:
        n = self.config.levels.full
        return pending[:-n] if len(pending) > n else (), pending[-n:]

    def _summary_message_cap(self) -> int | None:
        return self.config.levels.summary


_STRATEGIES: dict[str, type[_BaseStrategy]] = {
    "sliding_window": SlidingWindowStrategy,
    "summary": SummaryStrategy,
    "hierarchical": HierarchicalStrategy,
}


def make_strategy(config: ContextConfig, counter: TokenCounter | None = None) -> ContextStrategy:
    """Instantiate the strategy named by ``config.strategy`` (strategies are
    reusable across sessions and thread-safe; keep one per config/model)."""
    return _STRATEGIES[config.strategy](config, counter)


# --------------------------------------------------------------------------------------
# summaries


async def summarize_span(
    span: SummarySpan,
    summarizer: Summarizer | SummarizeFn | None,
    counter: TokenCounter,
    max_tokens: int,
    *,
    fallback: bool = True,
) -> SummaryRecord:
    """Summarize one planned span into a :class:`SummaryRecord` to store.

    With ``fallback`` (default) a failing/empty summarizer is replaced by the
    extractive one and logged (:func:`summarize_with_fallback`). The text is
    clamped to ``max_tokens`` tokens with the truncation marker if the
    summarizer ignored the limit.
    """
    messages = span.as_messages()
    extractive = ExtractiveSummarizer(counter)
    if summarizer is None:
        text = await extractive.summarize(messages, max_tokens)
    elif fallback:
        text = await summarize_with_fallback(summarizer, messages, max_tokens, fallback=extractive)
    else:
        text = await as_summarizer(summarizer).summarize(messages, max_tokens)
    text = counter.truncate(text.strip(), max_tokens)
    return SummaryRecord(
        level=span.level,
        first_id=span.first_id,
        last_id=span.last_id,
        text=text,
        tokens=counter.count(text),
        message_count=span.message_count,
        encoding=counter.encoding,
    )


async def ensure_summaries(
    strategy: ContextStrategy,
    history: Sequence[MemoryMessage],
    summaries: Sequence[SummaryRecord],
    summarizer: Summarizer | SummarizeFn | None = None,
    *,
    fallback: bool = True,
    max_rounds: int = 100,
) -> list[SummaryRecord]:
    """Create the summaries ``strategy.plan`` asks for, including roll-ups
    (planned again after each round), and return only the *new* records, in
    creation order, for the caller to store. Existing summaries are never
    recomputed: a second call with the returned records added returns ``[]``.

    ``summarizer``: any :class:`Summarizer` or async callable; ``None`` =
    extractive. Spans of one round are summarized sequentially.
    """
    created: list[SummaryRecord] = []
    current = list(summaries)
    for _ in range(max_rounds):
        spans = strategy.plan(history, current)
        if not spans:
            break
        for span in spans:
            rec = await summarize_span(span, summarizer, strategy.counter, strategy.config.summary_length, fallback=fallback)
            created.append(rec)
            current.append(rec)
    return created
