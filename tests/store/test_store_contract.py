"""One contract suite for the stores, run on SQLite and on PostgreSQL (when BATON_TEST_POSTGRES_URL is set)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from bot.store import Database, RunStore, SessionStore, StoreError, ThreadKey, upgrade
from bot.store.tables import threads
from engine.catalog import Catalog
from engine.events import StepRecord
from engine.parse import compile_text


@pytest.fixture
async def stores(db_url: str):  # type: ignore[no-untyped-def]
    await upgrade(db_url)
    db = Database(db_url)
    sessions, runs = SessionStore(db), RunStore(db)
    yield sessions, runs
    await runs.aclose()
    await db.dispose()


K1 = ThreadKey("slack", "C1", "1700000000.000100")
K2 = ThreadKey("slack", "C1", "1700000000.000200")


async def test_messages_keep_arrival_order_per_thread(stores) -> None:  # type: ignore[no-untyped-def]
    sessions, _ = stores
    for i in range(5):
        await sessions.append(K1, "user", "U1", f"one-{i}")
        await sessions.append(K2, "user", "U2", f"two-{i}")
    h1 = await sessions.history(K1, limit=3)
    assert [m.text for m in h1] == ["one-2", "one-3", "one-4"]
    assert all(m.created_at.tzinfo is not None for m in h1)
    assert [m.text for m in await sessions.history(K2, limit=10)] == [f"two-{i}" for i in range(5)]
    assert await sessions.count(K1) == 5
    assert await sessions.history(ThreadKey("slack", "C9", "x")) == []
    tid = await sessions.thread_id(K1)
    assert await sessions.key_for(tid) == K1


async def test_thread_activity_time_moves_forward_at_most_once_a_minute(stores) -> None:  # type: ignore[no-untyped-def]
    sessions, _ = stores
    t0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)

    async def updated_at() -> datetime:
        async with sessions.db.begin("reading") as conn:
            got = (await conn.execute(threads.select().where(threads.c.id == await sessions.thread_id(K1)))).one().updated_at
        return got if got.tzinfo else got.replace(tzinfo=UTC)

    await sessions.append(K1, "user", "U1", "first", created_at=t0)
    await sessions.append(K1, "user", "U1", "busy thread", created_at=t0 + timedelta(seconds=30))
    assert await updated_at() == t0  # within a minute: the thread row is not rewritten
    await sessions.append(K1, "user", "U1", "late", created_at=t0 + timedelta(seconds=90))
    assert await updated_at() == t0 + timedelta(seconds=90)
    await sessions.append(K1, "user", "U1", "backdated import", created_at=t0)
    assert await updated_at() == t0 + timedelta(seconds=90)  # never moves backwards


async def test_concurrent_appends_create_one_thread(stores) -> None:  # type: ignore[no-untyped-def]
    sessions, _ = stores
    fresh = SessionStore(sessions.db)  # no cached thread id
    await asyncio.gather(*(fresh.append(K1, "user", "U", str(i)) for i in range(10)))
    assert await sessions.count(K1) == 10


async def test_event_ids_dedupe(stores) -> None:  # type: ignore[no-untyped-def]
    sessions, _ = stores
    first = await sessions.append_once(K1, "user", "U1", "restart api", dedupe_ids=["Ev1", "msg:C1:1.1"], event_id="Ev1")
    assert first is not None and await sessions.seen_any("slack", ["Ev1"]) and not await sessions.seen_any("discord", ["Ev1"])
    # the same message as another event type (app_mention and message): its own id is recorded
    assert await sessions.append_once(K1, "user", "U1", "restart api", dedupe_ids=["Ev2", "msg:C1:1.1"]) is None
    assert await sessions.count(K1) == 1 and not await sessions.seen_any("slack", ["Ev2"])  # rolled back whole
    assert await sessions.append_once(K1, "user", "U1", "restart api", dedupe_ids=["Ev1"]) is None  # Slack's retry
    assert await sessions.append_once(ThreadKey("discord", "C1", "T"), "user", "U1", "hi", dedupe_ids=["Ev1"]) is not None
    assert await sessions.seen_any("slack", []) is False


async def test_runs_and_step_checkpoints_round_trip(stores) -> None:  # type: ignore[no-untyped-def]
    sessions, runs = stores
    tid = await sessions.thread_id(K1)
    g = compile_text("echo a AND echo b THEN echo c", Catalog())
    rid = await runs.create_run(tid, g.source, g, "U1")
    await runs.set_status(rid, "running")
    t0 = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    recs = [StepRecord(str(rid), f"s{i}", f"step {i}", "builtin", "succeeded", 1, f"out {i}", None, t0, t0, 3, 4, 0.25, False) for i in range(3)]
    # concurrent writers are grouped, and every caller returns only after its commit
    await asyncio.gather(*(runs.save_steps([r]) for r in recs))
    await runs.save_steps([StepRecord(str(rid), "s0", "step 0", "builtin", "failed", 2, "", "boom", t0, t0)])  # upsert
    row, steps = await runs.get(rid)  # type: ignore[misc]
    assert row.status == "running" and row.started_at is not None and row.graph == g
    by = {s.node_id: s for s in steps}
    assert by["s0"].status == "failed" and by["s0"].error == "boom" and by["s0"].attempt == 2
    assert by["s1"].started_at == t0 and by["s1"].cost_usd == 0.25 and by["s1"].tokens_out == 4
    await runs.set_status(rid, "failed", error="boom")
    assert [r.id for r in await runs.list(unfinished=True)] == []
    rid2 = await runs.create_run(tid, g.source, g, "U1")
    assert [r.id for r in await runs.list(unfinished=True)] == [rid2]
    assert [r.id for r in await runs.list(thread_id=tid)] == [rid2, rid]
    assert await runs.get(999999) is None


async def test_a_failing_write_is_reported_not_swallowed(stores) -> None:  # type: ignore[no-untyped-def]
    _, runs = stores
    bad = StepRecord("424242", "s1", "x", "builtin", "succeeded")  # no such run: foreign key violation
    with pytest.raises(StoreError, match="checkpointing steps"):
        await runs.save_steps([bad])


async def test_tail_bounds_and_token_counts(db_url: str) -> None:
    from bot.sessions import TokenCounter

    await upgrade(db_url)
    db = Database(db_url)
    sessions = SessionStore(db, TokenCounter())
    try:
        ids = [(await sessions.append(K1, "user", "U", f"message number {i}")).id for i in range(10)]
        tail = await sessions.tail(K1, limit=3, after_id=ids[2], before_id=ids[8])
        assert [m.id for m in tail] == ids[5:8]
        assert all(m.tokens and m.tokens > 3 and m.encoding == sessions.counter.encoding for m in tail)  # type: ignore[union-attr]
        given = await sessions.append(K1, "user", "U", "precounted", tokens=99, encoding="x")
        assert (await sessions.tail(K1, limit=1))[0].tokens == 99 and given.encoding == "x"
    finally:
        await db.dispose()


async def test_summaries_upsert_and_clear(stores) -> None:  # type: ignore[no-untyped-def]
    from bot.sessions import SummaryRecord

    sessions, _ = stores
    a = await sessions.append(K1, "user", "U", "one")
    b = await sessions.append(K1, "user", "U", "two")
    await sessions.add_summary(K1, SummaryRecord(1, a.id, b.id, "first draft", 2, 2, "cl100k_base"))
    await sessions.add_summary(K1, SummaryRecord(1, a.id, b.id, "better", 1, 2, "cl100k_base"))
    await sessions.add_summary(K2, SummaryRecord(1, a.id, b.id, "other thread", 2, 2, "cl100k_base"))
    got = await sessions.summaries(K1)
    assert [(s.text, s.tokens) for s in got] == [("better", 1)]
    gone = await sessions.clear(K1)
    assert (gone.messages, gone.summaries) == (2, 1)
    assert await sessions.summaries(K1) == [] and await sessions.count(K1) == 0
    assert len(await sessions.summaries(K2)) == 1
    await sessions.append(K1, "user", "U", "after forgetting")  # the thread is still usable
    assert await sessions.count(K1) == 1


async def test_full_text_search_within_a_thread(stores) -> None:  # type: ignore[no-untyped-def]
    sessions, _ = stores
    await sessions.append(K1, "user", "U", "The canary deployment goes to eu-west-1 on Tuesday.")
    await sessions.append(K1, "user", "U", "Rollback plan: restore the snapshot from Monday.")
    await sessions.append(K1, "user", "U", "/recall canary")  # commands are not memory
    await sessions.append(K2, "user", "U", "Another thread mentions the canary too.")
    hits = await sessions.search(K1, "canary deployments")  # stemming: deployments ~ deployment
    assert [h.text for h in hits] == ["The canary deployment goes to eu-west-1 on Tuesday."]
    either = await sessions.search(K1, "snapshot unicorn")  # no message has both: any word
    assert [h.text for h in either] == ["Rollback plan: restore the snapshot from Monday."]
    assert await sessions.search(K1, "'; DROP TABLE messages; -- \"NEAR(") == []  # quotes and FTS syntax are inert
    assert await sessions.count(K1) == 3
    assert await sessions.search(ThreadKey("x", "y", "z"), "canary") == []


async def test_a_delivery_that_fails_to_store_is_not_recorded(sqlite_url: str) -> None:
    """The crash window between "recorded" and "stored" does not exist: a failure after the
    ids were written rolls them back too, so Slack's retry of the event is processed."""
    import sqlite3

    await upgrade(sqlite_url)
    db = Database(sqlite_url)
    sessions = SessionStore(db)
    real = sessions._thread_new_tx

    def broken(*a, **k):  # type: ignore[no-untyped-def]
        raise sqlite3.OperationalError("disk I/O error")

    sessions._thread_new_tx = broken  # type: ignore[method-assign]
    try:
        with pytest.raises(StoreError, match="disk I/O error"):
            await sessions.append_once(K1, "user", "U1", "restart api", dedupe_ids=["Ev9"])
        assert not await sessions.seen_any("slack", ["Ev9"])
        sessions._thread_new_tx = real  # type: ignore[method-assign]
        assert await sessions.append_once(K1, "user", "U1", "restart api", dedupe_ids=["Ev9"]) is not None  # the retry
        assert [m.text for m in await sessions.history(K1)] == ["restart api"]
    finally:
        await db.dispose()


async def test_thread_id_cache_is_bounded(stores, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    import bot.store.sessions as store_sessions

    sessions, _ = stores
    monkeypatch.setattr(store_sessions, "ID_CACHE_MAX", 4)
    keys = [ThreadKey("slack", "C1", f"t{i}") for i in range(10)]
    for round_ in range(2):
        for k in keys:
            await sessions.append(k, "user", "U1", f"{k.thread} round {round_}")
    assert len(sessions._thread_ids) <= 4 and len(sessions._touched) <= 4
    for k in keys:  # every message still went to its own thread
        assert [m.text for m in await sessions.history(k)] == [f"{k.thread} round 0", f"{k.thread} round 1"]
