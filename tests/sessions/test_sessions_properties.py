"""Property tests: for random conversations, budgets and configurations, no
strategy exceeds the budget, order is kept and the newest message is included."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from bot.sessions import (
    ContextBudgetError,
    ContextConfig,
    HierarchyLevels,
    MemoryMessage,
    SummaryRecord,
    ensure_summaries,
    make_strategy,
    summary_cover,
)
from bot.sessions.tokens import REPLY_PRIMING_TOKENS

WORDS = "deploy server error log database restart user pod memory limit python rollback alert cache".split()

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)

word = st.sampled_from(WORDS + ["?", ".", "\n", "🚀", "naïve", "日本", "0x1F", "```", "<|endoftext|>"])
sentence = st.lists(word, min_size=0, max_size=25).map(" ".join)
text = st.one_of(
    sentence,
    st.lists(sentence, min_size=1, max_size=6).map(". ".join),
    st.integers(50, 250).map(lambda n: ("Long pasted log line with error. " * n)),  # oversized
    st.text(max_size=60),
)
role = st.sampled_from(["user", "assistant", "tool", "system"])


@st.composite
def configs(draw, names=("sliding_window", "summary", "hierarchical")):
    max_tokens = draw(st.integers(20, 2500))
    return ContextConfig(
        strategy=draw(st.sampled_from(names)),
        max_tokens=max_tokens,
        reserve_tokens=draw(st.integers(0, max_tokens - 1)),
        window_size=draw(st.one_of(st.none(), st.integers(1, 20))),
        summary_frequency=draw(st.integers(1, 8)),
        summary_length=draw(st.integers(1, 120)),
        keep_recent=draw(st.integers(0, 6)),
        levels=HierarchyLevels(
            full=draw(st.integers(1, 5)),
            compressed=draw(st.integers(0, 6)),
            summary=draw(st.one_of(st.none(), st.integers(0, 40))),
        ),
        compression_ratio=draw(st.floats(0.1, 1.0)),
        rollup_factor=draw(st.integers(2, 4)),
        summary_share=draw(st.floats(0.0, 1.0)),
        max_pending_chunks=draw(st.integers(1, 10)),
    )


class WildSummarizer:
    """Ignores max_tokens (output may be far too long) to exercise clamping."""

    async def summarize(self, messages, max_tokens):
        return " / ".join(m.text for m in messages) or "nothing"


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture], database=None)
@given(
    cfg=configs(),
    convo=st.lists(st.tuples(role, text), max_size=40),
    gaps=st.lists(st.integers(1, 3), min_size=41, max_size=41),
    system_prompt=st.one_of(st.just(""), sentence, st.integers(1, 60).map(lambda n: "Rule. " * n)),
    new=st.tuples(st.sampled_from(["user", "tool"]), text),
    summarize_mode=st.sampled_from(["none", "extractive", "wild", "partial"]),
)
def test_strategies_respect_invariants(counter, cfg, convo, gaps, system_prompt, new, summarize_mode):
    check_invariants(counter, cfg, convo, gaps, system_prompt, new, summarize_mode)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture], database=None)
@given(
    cfg=configs(names=("summary", "hierarchical")),
    convo=st.lists(st.tuples(role, sentence), min_size=15, max_size=40),
    gaps=st.lists(st.integers(1, 3), min_size=41, max_size=41),
    system_prompt=st.one_of(st.just(""), sentence),
    new=st.tuples(st.sampled_from(["user", "tool"]), text),
    summarize_mode=st.sampled_from(["extractive", "wild", "partial", "none"]),
)
def test_summarizing_strategies_respect_invariants(counter, cfg, convo, gaps, system_prompt, new, summarize_mode):
    """Longer conversations so that summaries and roll-ups actually occur."""
    check_invariants(counter, cfg, convo, gaps, system_prompt, new, summarize_mode)


def check_invariants(counter, cfg, convo, gaps, system_prompt, new, summarize_mode):
    ids, cur = [], 0
    for g in gaps:
        cur += g
        ids.append(cur)
    history = [
        MemoryMessage(i, r, "u", t, counter.count_message(r, t), T0, counter.encoding)
        for i, (r, t) in zip(ids, convo)
    ]
    new_msg = MemoryMessage(ids[len(convo)], new[0], "alice", new[1], counter.count_message(new[0], new[1]), T0, counter.encoding)
    strategy = make_strategy(cfg, counter)

    summaries: list[SummaryRecord] = []
    if summarize_mode != "none" and strategy.plan(history, []):

        async def summarize() -> list[SummaryRecord]:
            summarizer = WildSummarizer() if summarize_mode == "wild" else None
            made = await ensure_summaries(strategy, history, [], summarizer)
            if summarize_mode == "partial":  # the caller stored only some of them
                made = made[::2]
                made += await ensure_summaries(strategy, history, made)
            return made

        summaries = asyncio.run(summarize())
        for s in summaries:
            assert s.tokens <= cfg.summary_length
            assert counter.count(s.text) == s.tokens
        assert strategy.plan(history, summaries) == ()  # reuse: nothing left to summarize
    event(f"{cfg.strategy}, {len(summaries)} summaries" if summaries else cfg.strategy)

    system_cost = counter.count_message("system", system_prompt) if system_prompt else 0
    minimum = (
        system_cost
        + cfg.reserve_tokens
        + REPLY_PRIMING_TOKENS
        + counter.count_message(new_msg.role, "")
        + counter.min_truncated_tokens()
    )
    try:
        w = strategy.assemble(system_prompt, history, new_msg, summaries)
    except ContextBudgetError as exc:
        event("budget error")
        assert minimum > cfg.max_tokens, f"unexpected budget error: {exc}"
        assert str(cfg.max_tokens) in str(exc)
        return
    assert minimum <= cfg.max_tokens

    b = w.breakdown
    event("truncated" if w.truncated else "not truncated")
    # never exceed the budget, with exact recounts of what is sent
    recount = sum(counter.count_message(m.role, m.content) for m in w.messages)
    assert recount == sum(m.tokens for m in w.messages)
    assert recount + REPLY_PRIMING_TOKENS + cfg.reserve_tokens == b.total <= cfg.max_tokens
    assert b.prompt + b.reserve == b.total and b.free >= 0

    # newest message always included, last, never empty when it had text
    last = w.messages[-1]
    assert last.kind == "new" and last.first_id == new_msg.id and last.role == new_msg.role
    if new_msg.text:
        assert last.content
    if last.truncated:
        assert "…[truncated " in last.content
    else:
        assert last.content == new_msg.text

    # chronological order: system, summaries, history, new
    kinds = [m.kind for m in w.messages]
    rank = {"system": 0, "summary": 1, "compressed": 2, "history": 2, "new": 3}
    assert [rank[k] for k in kinds] == sorted(rank[k] for k in kinds)
    assert kinds.count("system") <= 1 and kinds.count("new") == 1
    spans = [(m.first_id, m.last_id) for m in w.messages if m.kind != "system"]
    for (a1, b1), (a2, b2) in zip(spans, spans[1:]):
        assert a1 <= b1 < a2 <= b2
    # history entries are stored messages with their own role; verbatim unless marked
    by_id = {m.id: m for m in history}
    for m in w.messages:
        if m.kind in ("history", "compressed"):
            src = by_id[m.first_id]
            assert m.role == src.role
            if m.kind == "history" and not m.truncated:
                assert m.content == src.text
    # summaries used are part of the cover
    cover = {s.span for s in summary_cover(summaries)}
    used = [m for m in w.messages if m.kind == "summary"]
    assert len(used) == b.summary_count
    for m in used:
        assert any(span[1:] == (m.first_id, m.last_id) for span in cover)
    if cfg.strategy == "sliding_window":
        assert not used and kinds.count("compressed") == 0
        if cfg.window_size is not None:
            assert b.history_messages <= cfg.window_size
    # accounting: every history message is included, summarized or reported omitted
    included = {m.first_id for m in w.messages if m.kind in ("history", "compressed")}
    covered = [(m.first_id, m.last_id) for m in used]
    omitted = [h.id for h in history if h.id not in included and not any(a <= h.id <= z for a, z in covered)]
    assert len(omitted) == b.omitted_messages
    # omitted messages are older than every included one (no holes in the recent history)
    if included and omitted:
        assert max(omitted) < min(included) or cfg.strategy != "sliding_window"
    assert b.history_messages + b.compressed_messages == len(included)
