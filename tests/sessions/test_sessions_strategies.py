"""Context strategies: behaviour, summary reuse, truncation, budget errors."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from bot.sessions import (
    ContextBudgetError,
    ContextConfig,
    FallbackSummarizer,
    HierarchicalStrategy,
    HierarchyLevels,
    MemorySessionStore,
    SessionKey,
    SlidingWindowStrategy,
    SummaryRecord,
    SummaryStrategy,
    build_context,
    ensure_summaries,
    extractive_summary,
    make_strategy,
    render_breakdown,
    summary_cover,
)
from bot.sessions.context import render_summary
from bot.sessions.context import COMPRESSED_PREFIX

SYSTEM = "You are Baton, a helpful chat-ops bot."


class CountingSummarizer:
    """Deterministic summarizer that records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int, int]] = []

    async def summarize(self, messages, max_tokens):
        self.calls.append((messages[0].id, messages[-1].id, len(messages)))
        return f"S[{messages[0].id}-{messages[-1].id}]"


def texts(n: int, words: int = 8) -> list[str]:
    return [f"Message number {i} about deploy step {i}. " + "details " * words for i in range(1, n + 1)]


def ids_in_order(window) -> list[int]:
    return [m.last_id for m in window.messages if m.kind != "system"]


# ---------------------------------------------------------------- sliding window


def test_sliding_window_keeps_newest_that_fit(counter, make_messages, new_message):
    history = make_messages(texts(50))
    per_msg = history[0].tokens
    cfg = ContextConfig(max_tokens=800, reserve_tokens=200, window_size=None)
    w = SlidingWindowStrategy(cfg, counter).assemble(SYSTEM, history, new_message("what next?"), [])
    b = w.breakdown
    kept = [m for m in w.messages if m.kind == "history"]
    assert kept, "some history must fit"
    # the kept ones are exactly the newest ones, in order
    assert [m.first_id for m in kept] == [h.id for h in history[-len(kept):]]
    # and one more would not have fitted
    assert b.free < history[-len(kept) - 1].tokens or b.free < per_msg + 5
    assert b.total <= 800 and b.reserve == 200
    assert b.history_messages == len(kept) and b.omitted_messages == 50 - len(kept)
    assert w.messages[0].kind == "system" and w.messages[-1].kind == "new"


def test_sliding_window_size_caps_messages(counter, make_messages, new_message):
    history = make_messages(texts(30))
    cfg = ContextConfig(max_tokens=8000, reserve_tokens=2000, window_size=10)
    s = SlidingWindowStrategy(cfg, counter)
    w = s.assemble(SYSTEM, history, new_message("hi"), [])
    assert [m.first_id for m in w.messages if m.kind == "history"] == list(range(21, 31))
    assert s.tail_request([]).limit == 10
    assert s.plan(history, []) == ()


def test_sliding_window_ignores_summaries(counter, make_messages, new_message):
    history = make_messages(texts(5))
    summ = [SummaryRecord(1, 1, 3, "old stuff", 2, 3, counter.encoding)]
    w = SlidingWindowStrategy(ContextConfig(), counter).assemble(SYSTEM, history, new_message("hi"), summ)
    assert not [m for m in w.messages if m.kind == "summary"]
    assert len([m for m in w.messages if m.kind == "history"]) == 5


def test_tail_request_is_bounded_by_budget(counter):
    s = SlidingWindowStrategy(ContextConfig(max_tokens=8000, reserve_tokens=2000, window_size=None), counter)
    req = s.tail_request([])
    # every message costs at least 4 tokens of framing
    assert req.limit == (6000 - 3) // 4 and req.after_id is None


# ---------------------------------------------------------------- summary strategy


async def test_summary_strategy_matches_seed_example(counter, make_messages, new_message):
    """Seed: Messages 1-10 [Summary], 11-20 [Summary], 21-25 full, 26 current."""
    history = make_messages(texts(25))
    cfg = ContextConfig(strategy="summary", summary_frequency=10, keep_recent=4, summary_length=60)
    s = SummaryStrategy(cfg, counter)
    spans = s.plan(history, [])
    assert [(sp.level, sp.first_id, sp.last_id, sp.message_count) for sp in spans] == [(1, 1, 10, 10), (1, 11, 20, 10)]
    summ = CountingSummarizer()
    created = await ensure_summaries(s, history, [], summ)
    assert [(r.first_id, r.last_id) for r in created] == [(1, 10), (11, 20)]
    w = s.assemble(SYSTEM, history, new_message("and now?", id=26), created)
    kinds = [(m.kind, m.first_id, m.last_id) for m in w.messages]
    assert kinds == [
        ("system", None, None),
        ("summary", 1, 10),
        ("summary", 11, 20),
        *[("history", i, i) for i in range(21, 26)],
        ("new", 26, 26),
    ]
    assert "S[1-10]" in w.messages[1].content and w.messages[1].role == "system"
    assert w.breakdown.summarized_messages == 20 and w.breakdown.omitted_messages == 0


async def test_summaries_are_reused_not_recomputed(counter, make_messages):
    """Assembling twice (and on later turns) must not summarize the same span again."""
    store = MemorySessionStore(max_messages=None, max_tokens=None)
    key = SessionKey("slack", "C1", "T1")
    strategy = SummaryStrategy(ContextConfig(strategy="summary", summary_frequency=5, keep_recent=2), counter)
    summ = CountingSummarizer()
    for i, t in enumerate(texts(12)):
        await store.append(key, counter.draft("user" if i % 2 == 0 else "assistant", "alice", t))
    new = await store.append(key, counter.draft("user", "alice", "status?"))

    w1 = await build_context(store, key, strategy, SYSTEM, new, summarizer=summ)
    assert summ.calls == [(1, 5, 5), (6, 10, 5)]
    w2 = await build_context(store, key, strategy, SYSTEM, new, summarizer=summ)
    assert len(summ.calls) == 2, "second assembly summarized again"
    assert w1 == w2

    # later turns summarize only once a new chunk of 5 (older than the newest
    # keep_recent=2) is complete: history 11..17 before message 18
    for i in range(4):
        reply = await store.append(key, counter.draft("assistant", "baton", f"answer {i}"))
        await build_context(store, key, strategy, SYSTEM, reply, summarizer=summ)
    assert len(summ.calls) == 2
    reply = await store.append(key, counter.draft("assistant", "baton", "answer 4"))
    assert reply.id == 18
    await build_context(store, key, strategy, SYSTEM, reply, summarizer=summ)
    assert summ.calls == [(1, 5, 5), (6, 10, 5), (11, 15, 5)]


async def test_no_rollup_while_summaries_fit_their_share(counter, make_messages, new_message):
    """Seed example shape: separate level-1 summaries as long as they fit."""
    history = make_messages(texts(45))
    cfg = ContextConfig(strategy="summary", summary_frequency=5, keep_recent=3, rollup_factor=2)
    s = SummaryStrategy(cfg, counter)
    created = await ensure_summaries(s, history, [], CountingSummarizer())
    assert [r.level for r in created] == [1] * 8
    w = s.assemble(SYSTEM, history, new_message("q", id=46), created)
    assert [(m.first_id, m.last_id) for m in w.messages if m.kind == "summary"] == [
        (i, i + 4) for i in range(1, 41, 5)
    ]


async def test_rollup_when_summaries_outgrow_their_share(counter, make_messages, new_message):
    history = make_messages(texts(45))
    # ~12 tokens per rendered summary, share = 40 tokens → about 3 fit
    cfg = ContextConfig(
        strategy="summary", max_tokens=1000, reserve_tokens=200, summary_frequency=5, keep_recent=3,
        rollup_factor=2, summary_share=0.05,
    )
    s = SummaryStrategy(cfg, counter)
    summ = CountingSummarizer()
    created = await ensure_summaries(s, history, [], summ)
    assert max(r.level for r in created) >= 2
    assert (1, 6, 2) in summ.calls  # oldest pair first: level-2 over level-1 [1-5],[6-10]
    cover = summary_cover(created)
    assert cover[0].first_id == 1 and cover[-1].last_id == 40
    assert sum(counter.count_message("system", render_summary(r)) for r in cover) <= 40
    assert await ensure_summaries(s, history, created, summ) == []  # stable: nothing more to do


async def test_rollup_folds_summaries_into_higher_level(counter, make_messages, new_message):
    history = make_messages(texts(45))
    cfg = ContextConfig(strategy="summary", summary_frequency=5, keep_recent=3, rollup_factor=2, summary_share=0.0)
    s = SummaryStrategy(cfg, counter)
    summ = CountingSummarizer()
    created = await ensure_summaries(s, history, [], summ)
    levels = sorted({r.level for r in created})
    assert levels == [1, 2, 3, 4]
    assert [r.level for r in created].count(1) == 8
    cover = summary_cover(created)
    # 8 chunks of 5 = messages 1..40, folded pairwise 8 → 4 → 2 → 1
    assert [(r.level, r.first_id, r.last_id, r.message_count) for r in cover] == [(4, 1, 40, 40)]
    # roll-up input is the lower-level summaries, not the raw messages
    assert (1, 6, 2) in summ.calls  # level-2 over level-1 [1-5],[6-10] (first ids 1 and 6)
    assert await ensure_summaries(s, history, created, summ) == []
    w = s.assemble(SYSTEM, history, new_message("q", id=46), created)
    assert [m.kind for m in w.messages].count("summary") == 1
    assert [m.first_id for m in w.messages if m.kind == "history"] == list(range(41, 46))


async def test_tail_request_starts_after_frontier(counter, make_messages):
    history = make_messages(texts(25))
    s = SummaryStrategy(ContextConfig(strategy="summary", summary_frequency=10, keep_recent=4), counter)
    created = await ensure_summaries(s, history, [])
    req = s.tail_request(created)
    assert req.after_id == 20
    assert req.limit >= 4 + 10 - 1


# ---------------------------------------------------------------- hierarchical


async def test_hierarchical_tiers(counter, make_messages, new_message):
    long = [
        f"Step {i}: the deploy of service {i} failed because the database migration timed out. "
        f"We restarted worker {i}. The cache was flushed. Latency went back to normal. "
        f"Nobody knows why the alert fired twice. Weather is nice today."
        for i in range(1, 31)
    ]
    history = make_messages(long)
    cfg = ContextConfig(
        strategy="hierarchical",
        levels=HierarchyLevels(full=3, compressed=4, summary=None),
        summary_frequency=5,
        compression_ratio=0.5,
    )
    s = HierarchicalStrategy(cfg, counter)
    spans = s.plan(history, [])
    # 30 pending - 7 protected = 23 eligible → 4 complete chunks of 5
    assert [(sp.first_id, sp.last_id) for sp in spans] == [(1, 5), (6, 10), (11, 15), (16, 20)]
    created = await ensure_summaries(s, history, [])
    w = s.assemble(SYSTEM, history, new_message("and?", id=31), created)
    full = [m for m in w.messages if m.kind == "history"]
    comp = [m for m in w.messages if m.kind == "compressed"]
    assert [m.first_id for m in full] == [28, 29, 30]
    assert [m.first_id for m in comp] == list(range(21, 28))  # 4 + leftover of the incomplete chunk
    for m in comp:
        original = history[m.first_id - 1]
        assert m.content.startswith(COMPRESSED_PREFIX)
        assert m.tokens < original.tokens
    assert [m.kind for m in w.messages].count("summary") >= 1
    assert ids_in_order(w) == sorted(ids_in_order(w))
    assert w.breakdown.compressed_messages == 7


async def test_hierarchical_summary_cap_limits_covered_messages(counter, make_messages, new_message):
    history = make_messages(texts(60))
    cfg = ContextConfig(
        strategy="hierarchical",
        levels=HierarchyLevels(full=2, compressed=2, summary=10),
        summary_frequency=5,
    )
    s = HierarchicalStrategy(cfg, counter)
    created = await ensure_summaries(s, history, [])
    w = s.assemble(SYSTEM, history, new_message("q", id=61), created)
    assert w.breakdown.summarized_messages == 10 and w.breakdown.summary_count == 2
    assert w.breakdown.omitted_summaries == len(summary_cover(created)) - 2


def test_full_tier_message_falls_back_to_compressed_form(counter, make_messages, new_message):
    big = " ".join(f"Sentence {i} explains deploy detail number {i} of the rollout." for i in range(120))
    history = make_messages(["short one", big])
    cfg = ContextConfig(
        strategy="hierarchical", max_tokens=1400, reserve_tokens=200, levels=HierarchyLevels(full=2, compressed=0)
    )
    w = HierarchicalStrategy(cfg, counter).assemble("", history, new_message("ok?"), [])
    last = [m for m in w.messages if m.first_id == 2][0]
    assert last.kind == "compressed" and not last.truncated
    assert w.breakdown.total <= 1400


# ---------------------------------------------------------------- truncation & budget


@pytest.mark.parametrize("name", ["sliding_window", "summary", "hierarchical"])
def test_oversized_new_message_is_truncated_visibly(counter, make_messages, new_message, name):
    huge = "Log line with an error code 0x1234 and a stack trace. " * 400
    cfg = ContextConfig(strategy=name, max_tokens=500, reserve_tokens=100)
    s = make_strategy(cfg, counter)
    w = s.assemble(SYSTEM, make_messages(texts(5)), new_message(huge), [])
    last = w.messages[-1]
    assert last.kind == "new" and last.truncated
    assert "…[truncated " in last.content and huge.startswith(last.content.split("…[truncated")[0])
    assert w.breakdown.total <= 500
    assert w.breakdown.total == sum(m.tokens for m in w.messages) + w.breakdown.framing + 100
    assert "(truncated)" in render_breakdown(w)


def test_oversized_previous_message_is_truncated_not_dropped(counter, make_messages, new_message):
    huge = "A very long pasted log line. " * 500
    history = make_messages(["hello", huge])
    cfg = ContextConfig(max_tokens=600, reserve_tokens=100)
    w = SlidingWindowStrategy(cfg, counter).assemble(SYSTEM, history, new_message("explain that log"), [])
    prev = [m for m in w.messages if m.kind == "history"]
    assert len(prev) == 1 and prev[0].first_id == 2 and prev[0].truncated
    assert "…[truncated " in prev[0].content
    assert w.breakdown.total <= 600 and w.breakdown.omitted_messages == 1


def test_budget_smaller_than_system_plus_reserve_raises(counter, new_message):
    system = "You are a bot. " * 100
    sys_tokens = counter.count_message("system", system)
    cfg = ContextConfig(max_tokens=sys_tokens + 50, reserve_tokens=40)
    with pytest.raises(ContextBudgetError) as exc:
        SlidingWindowStrategy(cfg, counter).assemble(system, [], new_message("hi"), [])
    msg = str(exc.value)
    assert isinstance(exc.value, ValueError)
    assert str(sys_tokens) in msg and "reserve_tokens (40)" in msg and f"max_tokens={sys_tokens + 50}" in msg


def test_reserve_not_below_max_tokens_is_a_config_error():
    with pytest.raises(ContextBudgetError, match=r"reserve_tokens \(8000\).*max_tokens \(8000\)"):
        ContextConfig(max_tokens=8000, reserve_tokens=8000)


def test_history_must_be_ordered(counter, make_messages, new_message):
    history = make_messages(texts(3))
    with pytest.raises(ValueError, match="oldest first"):
        SlidingWindowStrategy(ContextConfig(), counter).assemble(SYSTEM, history[::-1], new_message("x"), [])


# ---------------------------------------------------------------- summarizers


async def test_failing_abstractive_summarizer_falls_back_and_logs(counter, make_messages, caplog):
    history = make_messages(texts(12))
    s = SummaryStrategy(ContextConfig(strategy="summary", summary_frequency=5, keep_recent=2), counter)

    async def llm(messages, max_tokens):
        raise RuntimeError("provider down")

    with caplog.at_level(logging.WARNING):
        created = await ensure_summaries(s, history, [], llm)
    assert len(created) == 2 and all(r.text for r in created)
    assert "Message number" in created[0].text  # extractive content of the span
    assert all(f"step {i}." not in created[0].text for i in range(6, 13))
    assert "provider down" in caplog.text and "falling back to extractive" in caplog.text


async def test_fallback_summarizer_counts_failures_and_timeouts(counter, make_messages):
    msgs = make_messages(texts(4))

    async def slow(messages, max_tokens):
        await asyncio.sleep(5)
        return "never"

    async def empty(messages, max_tokens):
        return "   "

    async def ok(messages, max_tokens):
        return "fine summary"

    fb = FallbackSummarizer(slow, timeout=0.05, counter=counter)
    t0 = time.monotonic()
    assert "Message number" in await fb.summarize(msgs, 50)
    assert time.monotonic() - t0 < 2
    fb_empty = FallbackSummarizer(empty, counter=counter)
    assert "Message number" in await fb_empty.summarize(msgs, 50)
    fb_ok = FallbackSummarizer(ok, counter=counter)
    assert await fb_ok.summarize(msgs, 50) == "fine summary"
    assert (fb.failures, fb_empty.failures, fb_ok.failures) == (1, 1, 0)


async def test_overlong_summary_is_clamped(counter, make_messages):
    history = make_messages(texts(6))
    s = SummaryStrategy(ContextConfig(strategy="summary", summary_frequency=5, keep_recent=1, summary_length=30), counter)

    async def verbose(messages, max_tokens):
        return "blah " * 500

    (rec,) = await ensure_summaries(s, history, [], verbose)
    assert rec.tokens <= 30 and counter.count(rec.text) == rec.tokens
    assert "…[truncated " in rec.text and rec.encoding == counter.encoding


def test_extractive_summary_selects_informative_sentences(counter, make_messages):
    msgs = make_messages(
        [
            "What is Python? Thanks.",
            "Python is a programming language. It was created by Guido van Rossum. "
            "Python is known for simplicity. Lol ok. Python has many use cases in web, data and ops.",
        ]
    )
    out = extractive_summary(msgs, 30, counter)
    assert counter.count(out) <= 30
    assert "Python is a programming language." in out
    assert "Lol ok." not in out
    lines = out.splitlines()
    assert lines[0].startswith("alice: ") and lines[-1].startswith("baton: ")
    # original order kept within a line
    if "simplicity" in out and "programming language" in out:
        assert out.index("programming language") < out.index("simplicity")
    assert extractive_summary(msgs, 0, counter) == ""
    assert extractive_summary([], 50, counter) == ""


# ---------------------------------------------------------------- /context rendering


async def test_render_breakdown_table(counter, make_messages, new_message):
    history = make_messages(texts(25))
    s = SummaryStrategy(ContextConfig(strategy="summary", summary_frequency=10, keep_recent=4), counter)
    created = await ensure_summaries(s, history, [])
    w = s.assemble(SYSTEM, history, new_message("hi", id=26), created)
    text = render_breakdown(w)
    b = w.breakdown
    lines = text.splitlines()
    assert lines[0].startswith("Total: 8000 tokens")
    assert f"- System prompt: {b.system} tokens" in lines
    assert f"- Summaries: {b.summaries} tokens (2 summaries, 20 messages)" in lines
    assert f"- History: {b.history} tokens (5 messages)" in lines
    assert f"- New message: {b.new_message} tokens" in lines
    assert "- Reserved for response: 2000 tokens" in lines
    assert f"- Free: {b.free} tokens" in lines
    assert b.system + b.summaries + b.history + b.new_message + b.framing + b.reserve + b.free == 8000


# ---------------------------------------------------------------- speed


@pytest.fixture(scope="module")
def drafts_10k(counter):
    return [
        counter.draft(
            "user" if i % 2 == 0 else "assistant", "u", f"Incident {i}: worker {i % 7} restarted after cache timeout."
        )
        for i in range(10_000)
    ]


@pytest.mark.parametrize("name", ["sliding_window", "summary", "hierarchical"])
async def test_assembly_is_fast_on_10k_message_threads(counter, drafts_10k, name):
    store = MemorySessionStore(max_messages=None, max_tokens=None)
    key = SessionKey("slack", "C", "T")
    for d in drafts_10k:
        await store.append(key, d)
    strategy = make_strategy(ContextConfig(strategy=name, max_tokens=8000, reserve_tokens=2000, window_size=None), counter)
    new = await store.append(key, counter.draft("user", "alice", "what happened?"))
    await build_context(store, key, strategy, SYSTEM, new)  # first turn may create summaries
    new = await store.append(key, counter.draft("user", "alice", "and then?"))
    t0 = time.perf_counter()
    w = await build_context(store, key, strategy, SYSTEM, new)
    elapsed = time.perf_counter() - t0
    assert elapsed < 0.25, f"{name}: {elapsed * 1000:.0f} ms"
    assert w.breakdown.total <= 8000
    assert strategy.tail_request(await store.summaries(key)).limit <= 2000
