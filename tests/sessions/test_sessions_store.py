"""Session modes: memory store limits/expiry, stateless store, configuration."""

from __future__ import annotations

import pytest

from bot.sessions import (
    ContextBudgetError,
    ContextConfig,
    HierarchyLevels,
    MemorySessionStore,
    NullSessionStore,
    SessionConfig,
    SessionKey,
    SessionStore,
    SummaryRecord,
    SummaryStrategy,
    build_context,
    store_for,
)

KEY = SessionKey("slack", "C1", "T1")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_stores_implement_the_protocol():
    assert isinstance(MemorySessionStore(), SessionStore)
    assert isinstance(NullSessionStore(), SessionStore)


async def test_append_and_tail(counter):
    store = MemorySessionStore(max_messages=None, max_tokens=None)
    other = SessionKey("slack", "C1", "T2")
    msgs = [await store.append(KEY, counter.draft("user", "alice", f"m{i}")) for i in range(10)]
    await store.append(other, counter.draft("user", "bob", "elsewhere"))
    ids = [m.id for m in msgs]
    assert ids == sorted(ids) and len(set(ids)) == 10 and ids[0] > 0
    assert msgs[0].tokens == counter.count_message("user", "m0") and msgs[0].encoding == counter.encoding
    assert msgs[0].created_at.tzinfo is not None
    assert [m.text for m in await store.tail(KEY, limit=3)] == ["m7", "m8", "m9"]
    assert [m.text for m in await store.tail(KEY, limit=3, before_id=ids[5])] == ["m2", "m3", "m4"]
    assert [m.text for m in await store.tail(KEY, limit=100, after_id=ids[7])] == ["m8", "m9"]
    assert [m.text for m in await store.tail(KEY, limit=2, after_id=ids[1], before_id=ids[6])] == ["m4", "m5"]
    assert await store.tail(KEY, limit=0) == []
    assert await store.tail(SessionKey("x", "y", "z"), limit=5) == []
    assert [m.text for m in await store.tail(other, limit=5)] == ["elsewhere"]
    assert await store.tail(("slack", "C1", "T1"), limit=1) == (await store.tail(KEY, limit=1))  # plain tuples work


async def test_max_messages_evicts_oldest(counter):
    store = MemorySessionStore(max_messages=5, max_tokens=None)
    for i in range(12):
        await store.append(KEY, counter.draft("user", "a", f"m{i}"))
    assert [m.text for m in await store.tail(KEY, limit=100)] == [f"m{i}" for i in range(7, 12)]
    assert await store.message_count(KEY) == 5


async def test_max_tokens_evicts_oldest_but_keeps_newest(counter):
    store = MemorySessionStore(max_messages=None, max_tokens=30)
    for i in range(10):
        await store.append(KEY, counter.draft("user", "a", f"short {i}"))
    kept = await store.tail(KEY, limit=100)
    assert sum(m.tokens for m in kept) <= 30
    assert kept[-1].text == "short 9"
    assert len(kept) == 30 // kept[0].tokens
    huge = counter.draft("user", "a", "word " * 100)
    await store.append(KEY, huge)
    kept = await store.tail(KEY, limit=100)
    assert [m.text for m in kept] == ["word " * 100]  # larger than the limit alone: still kept


async def test_timeout_expires_session(counter):
    clock = FakeClock()
    store = MemorySessionStore(timeout=3600, clock=clock)
    await store.append(KEY, counter.draft("user", "a", "remember me"))
    await store.add_summary(KEY, SummaryRecord(1, 1, 1, "s", 1, 1))
    clock.now += 3599
    assert len(await store.tail(KEY, limit=10)) == 1
    await store.append(KEY, counter.draft("user", "a", "still here"))  # activity refreshes
    clock.now += 3000
    assert len(await store.tail(KEY, limit=10)) == 2
    clock.now += 601
    assert await store.tail(KEY, limit=10) == []
    assert await store.summaries(KEY) == []
    msg = await store.append(KEY, counter.draft("user", "a", "fresh start"))
    assert [m.id for m in await store.tail(KEY, limit=10)] == [msg.id]


async def test_purge_expired(counter):
    clock = FakeClock()
    store = MemorySessionStore(timeout=10, clock=clock)
    for t in ("T1", "T2", "T3"):
        await store.append(SessionKey("slack", "C", t), counter.draft("user", "a", "x"))
    clock.now += 5
    await store.append(SessionKey("slack", "C", "T3"), counter.draft("user", "a", "y"))
    clock.now += 6
    assert store.purge_expired() == 2
    assert len(store) == 1


async def test_summaries_upsert_prune_and_clear(counter):
    store = MemorySessionStore()
    await store.append(KEY, counter.draft("user", "a", "x"))
    await store.add_summary(KEY, SummaryRecord(1, 1, 5, "old", 1, 5))
    await store.add_summary(KEY, SummaryRecord(1, 1, 5, "new", 1, 5))
    await store.add_summary(KEY, SummaryRecord(1, 6, 10, "b", 1, 5))
    assert [s.text for s in await store.summaries(KEY)] == ["new", "b"]
    await store.add_summary(KEY, SummaryRecord(2, 1, 10, "rolled", 1, 10))
    assert [s.text for s in await store.summaries(KEY)] == ["rolled"]
    await store.clear(KEY)
    assert await store.summaries(KEY) == [] and await store.tail(KEY, limit=5) == []


async def test_memory_mode_runs_the_same_strategy_code(counter):
    """End to end in memory mode: summaries survive eviction of their messages."""
    config = SessionConfig(
        mode="memory",
        max_messages=12,
        max_tokens=None,
        context=ContextConfig(strategy="summary", summary_frequency=5, keep_recent=2),
    )
    store = store_for(config)
    strategy = SummaryStrategy(config.context, counter)
    window = None
    for i in range(30):
        msg = await store.append(KEY, counter.draft("user" if i % 2 == 0 else "assistant", "a", f"Topic {i} discussed."))
        window = await build_context(store, KEY, strategy, "sys", msg)
    assert window is not None
    assert await store.message_count(KEY) == 12
    summaries = await store.summaries(KEY)
    assert summaries and min(s.first_id for s in summaries) == 1  # older than any kept message
    kinds = [m.kind for m in window.messages]
    assert kinds[0] == "system" and "summary" in kinds and kinds[-1] == "new"
    assert window.messages[-1].content == "Topic 29 discussed."


async def test_stateless_mode_keeps_nothing(counter):
    store = store_for(SessionConfig(mode="stateless"))
    assert isinstance(store, NullSessionStore)
    msg = await store.append(KEY, counter.draft("user", "a", "hello"))
    assert msg.id > 0 and await store.tail(KEY, limit=10) == []
    strategy = SummaryStrategy(ContextConfig(strategy="summary"), counter)
    w = await build_context(store, KEY, strategy, "sys", msg)
    assert [m.kind for m in w.messages] == ["system", "new"]


def test_persistent_mode_is_not_served_by_store_for():
    with pytest.raises(ValueError, match="SQL store"):
        store_for(SessionConfig(mode="persistent"))


# ---------------------------------------------------------------- configuration


def test_session_config_from_seed_yaml_shapes():
    cfg = SessionConfig.from_dict(
        {"subtechnique": "memory", "timeout": 3600, "max_messages": 100, "storage": "memory", "session_id": "${user_id}"}
    )
    assert (cfg.mode, cfg.timeout, cfg.max_messages, cfg.max_tokens) == ("memory", 3600, 100, 8000)
    assert SessionConfig.from_dict({"subtechnique": "stateless"}).mode == "stateless"
    assert SessionConfig.from_dict({"subtechnique": "persistent", "storage": "database"}).mode == "persistent"
    with pytest.raises(ValueError, match="redis"):
        SessionConfig.from_dict({"subtechnique": "memory", "storage": "redis"})
    with pytest.raises(ValueError, match="unknown session option"):
        SessionConfig.from_dict({"subtechnique": "memory", "max_mesages": 3})


def test_context_config_from_seed_yaml_shapes():
    window = ContextConfig.from_dict({"subtechnique": "window", "max_tokens": 8000, "window_size": 10, "reserve_tokens": 2000})
    assert (window.strategy, window.window_size, window.prompt_budget) == ("sliding_window", 10, 6000)
    summary = ContextConfig.from_dict({"subtechnique": "summary", "max_tokens": 8000, "summary_frequency": 10, "summary_length": 200})
    assert (summary.strategy, summary.summary_frequency, summary.summary_length) == ("summary", 10, 200)
    hier = ContextConfig.from_dict(
        {
            "subtechnique": "hierarchical",
            "levels": [
                {"name": "full", "messages": 5},
                {"name": "compressed", "messages": 10},
                {"name": "summary", "messages": 100},
            ],
        }
    )
    assert hier.levels == HierarchyLevels(full=5, compressed=10, summary=100)
    # seed "Sliding Window Sessions" with include_summary → summary strategy keeping 10 verbatim
    sw = ContextConfig.from_dict({"subtechnique": "sliding_window", "window_size": 10, "include_summary": True})
    assert (sw.strategy, sw.keep_recent) == ("summary", 10)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_tokens": 0},
        {"reserve_tokens": -1},
        {"window_size": 0},
        {"summary_frequency": 0},
        {"rollup_factor": 1},
        {"compression_ratio": 0.0},
        {"summary_share": 1.5},
        {"strategy": "magic"},
        {"levels": HierarchyLevels(full=1, compressed=0)},  # valid control
    ],
)
def test_context_config_validation(kwargs):
    if "levels" in kwargs:
        ContextConfig(**kwargs)
        return
    with pytest.raises(ValueError):
        ContextConfig(**kwargs)


def test_config_validation_errors():
    with pytest.raises(ContextBudgetError):
        ContextConfig(max_tokens=100, reserve_tokens=100)
    with pytest.raises(ValueError):
        HierarchyLevels(full=0)
    with pytest.raises(ValueError):
        SessionConfig(mode="redis")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        SessionConfig(timeout=0)
    with pytest.raises(ValueError):
        SessionConfig(max_messages=0)
    with pytest.raises(ValueError):
        MemorySessionStore(max_tokens=0)


def test_records_validate():
    from bot.sessions import MemoryMessage

    with pytest.raises(ValueError, match="role"):
        MemoryMessage(1, "robot", "a", "x", 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        SummaryRecord(1, 5, 4, "x", 1)
    with pytest.raises(ValueError):
        SummaryRecord(0, 1, 4, "x", 1)
    with pytest.raises(Exception):
        MemoryMessage(1, "user", "a", "x", 1).text = "y"  # frozen
