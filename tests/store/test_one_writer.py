"""Issue 13: every store's SQL is one set of SQLAlchemy Core statements (``Database.run``),
and on SQLite every one of them runs on the file's one writer connection (the worker
thread): the aiosqlite engine opens no connection for the stores. The same calls run on
PostgreSQL (when BATON_TEST_POSTGRES_URL is set) and must give the same answers."""

from __future__ import annotations

import asyncio
import base64
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from aiohttp import web
from sqlalchemy import delete, event, select

from bot.memory import Memory
from bot.retention import Retention
from bot.scheduling.spec import ScheduleSpec
from bot.scheduling.store import ScheduleStore
from bot.sessions import TokenCounter
from bot.server.auth import TokenError, TokenStore
from bot.server.webhooks import Dispatcher, delivery_log
from bot.settings import RetentionSettings, Settings, WebhookEntry
from bot.store import Database, RunStore, SessionStore, ThreadKey, upgrade
from bot.store.audit import AuditEntry, AuditStore
from bot.store.cache import SqlStepCache
from bot.store.tables import threads, webhook_outbox
from engine.actions import StepOutput
from engine.catalog import Catalog
from engine.events import StepRecord
from engine.parse import compile_text

K = ThreadKey("slack", "C1", "1700000000.000100")
T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


async def test_every_store_on_the_one_writer_connection(db_url: str) -> None:
    await upgrade(db_url)
    db = Database(db_url)
    opened: list[object] = []
    event.listen(db.engine.sync_engine, "connect", lambda *a: opened.append(a))
    try:
        sessions, runs = SessionStore(db), RunStore(db)
        # sessions
        first = await sessions.append(K, "user", "U1", "The canary deploy goes out on Tuesday.", created_at=T0)
        assert await sessions.append_once(K, "user", "U1", "restart api", dedupe_ids=["Ev1"], created_at=T0) is not None
        assert await sessions.append_once(K, "user", "U1", "restart api", dedupe_ids=["Ev1"]) is None  # a redelivery
        assert await sessions.seen_any("slack", ["Ev0", "Ev1"]) and not await sessions.seen_any("slack", ["Ev2"])
        tid = await sessions.thread_id(K)
        assert first.thread_id == tid and await sessions.key_for(tid) == K
        assert [m.text for m in await sessions.tail(K, limit=5)] == ["The canary deploy goes out on Tuesday.", "restart api"]
        assert [m.text for m in await sessions.tail(K, limit=5, after_id=first.id)] == ["restart api"]
        assert await sessions.count(K) == 2
        assert [m.id for m in await sessions.search(K, "canary")] == [first.id]
        # runs and checkpoints
        graph = await asyncio.to_thread(compile_text, "echo a THEN echo b", Catalog())
        rid = await runs.create_run(tid, graph.source, graph, "U1", fired_by="schedule 1")
        assert await runs.fired_by(rid) == "schedule 1"
        await runs.mark_running(str(rid))
        await runs.save_steps([StepRecord(str(rid), "a", "echo a", "builtin", "succeeded", output="a")])
        assert [r.id for r in await runs.list(unfinished=True)] == [rid]
        await runs.set_status(rid, "succeeded")
        got = await runs.get(rid)
        assert got is not None and got[0].status == "succeeded" and got[0].finished_at is not None
        assert [s.output for s in got[1]] == ["a"] and await runs.list(unfinished=True) == []
        assert [r.id for r in await runs.list(visible_to=(tid + 1, "U1"))] == [rid]
        # schedules
        schedules = ScheduleStore(db)
        spec = ScheduleSpec("interval", 3600, "UTC", "every hour", "echo hi", "every hour run echo hi", T0.isoformat())
        sid = await schedules.insert(thread_id=tid, created_by="U1", spec=spec, created_at=T0, next_fire_at=T0 + timedelta(hours=1),
                                     overlap="skip", misfire_grace_s=300)
        row = await schedules.get(sid)
        assert row is not None and row.key == K and row.spec() == spec
        assert [r.id for r in await schedules.list(platform="slack", statuses=["active", "paused"])] == [sid]
        assert await schedules.list(channel="C9") == []
        fire = replace(row, last_fired_at=T0 + timedelta(hours=1), next_fire_at=T0 + timedelta(hours=2))
        assert await schedules.claim_firings([fire]) == {sid}
        assert await schedules.claim_firings([fire]) == set()  # claimed once only
        await schedules.set_states([replace(fire, last_fired_at=T0)])  # never moves backwards
        assert (await schedules.get(sid)).last_fired_at == T0 + timedelta(hours=1)  # type: ignore[union-attr]
        assert await schedules.set_state(sid, status="paused", next_fire_at=None, last_fired_at=None)
        assert await schedules.delete(sid) and not await schedules.delete(sid)
        # audit trail and step cache
        audit = AuditStore(db)
        await audit.record(AuditEntry("U1", "slack", "run.start", target=str(rid), at=T0))
        await audit.record(AuditEntry("U2", "slack", "run.cancel", at=datetime.now(UTC)))
        assert [e.actor for e in await audit.recent()] == ["U2", "U1"]
        assert [e.action for e in await audit.recent(actor="U1")] == ["run.start"]
        assert await audit.prune(30) == 1
        cache = SqlStepCache(db)
        await cache.put("k", StepOutput("out", 1, 2, 0.5), T0, 60)
        assert await cache.get("k", T0) == StepOutput("out", 1, 2, 0.5) and await cache.get("k", T0 + timedelta(seconds=61)) is None
        assert await cache.purge(T0 + timedelta(seconds=61)) == 1
        # retention: 400 days on, the thread is idle, the run old, the event id stale
        counter = await asyncio.to_thread(TokenCounter)
        memory = Memory(sessions, counter, {"mode": "persistent", "strategy": "sliding_window", "max_tokens": 8000, "reserve_tokens": 2000})
        later = datetime.now(UTC) + timedelta(days=400)
        settings = RetentionSettings(idle_session_days=90, max_messages_per_thread=0, run_days=30)
        report = await Retention(db, sessions, memory, settings, clock=lambda: later).run_once()
        assert (report.idle_threads, report.messages_deleted, report.runs_deleted) == (1, 2, 1)
        assert await sessions.count(K) == 0 and await runs.get(rid) is None and not await sessions.seen_any("slack", ["Ev1"])
        assert (await sessions.clear(K)).messages == 0
        await runs.aclose()
        if db.dialect == "sqlite":
            assert opened == [], "a store used the aiosqlite engine (a second connection) instead of the writer thread"
    finally:
        await db.dispose()


async def test_a_thread_deleted_behind_the_id_cache_is_looked_up_again(db_url: str) -> None:
    """The thread-id cache can outlive its row (another process, an operator): the store
    notices the broken foreign key, forgets the id and stores the message in a new thread."""
    await upgrade(db_url)
    db = Database(db_url)
    try:
        sessions = SessionStore(db)
        old = await sessions.append(K, "user", "U1", "one")
        await db.execute(delete(threads).where(threads.c.id == old.thread_id), what="deleting a thread")
        again = await sessions.append(K, "user", "U1", "two")
        assert await sessions.thread_id(K) == again.thread_id and await sessions.key_for(again.thread_id) == K
        assert [m.text for m in await sessions.history(K)] == ["two"]
    finally:
        await db.dispose()


async def test_api_tokens_and_test_webhooks_on_the_one_writer_connection(db_url: str, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Issue 13 leftovers: ``baton token create/revoke/list``, token checks and ``baton webhooks
    test`` (queue, deliver, settle, log) go through ``Database.run``/``execute``: on SQLite the
    aiosqlite engine opens no connection; on PostgreSQL the same calls give the same answers."""
    await upgrade(db_url)
    db = Database(db_url)
    opened: list[object] = []
    event.listen(db.engine.sync_engine, "connect", lambda *a: opened.append(a))
    got: list[bytes] = []

    async def hook(request: web.Request) -> web.Response:
        got.append(await request.read())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    monkeypatch.setenv("BATON_ONE_WRITER_WEBHOOK_SECRET", "whsec_" + base64.b64encode(b"one-writer-webhook-secret-32byte").decode())
    settings = Settings(data_dir=tmp_path / ".baton", webhooks={"w": WebhookEntry(url=f"http://127.0.0.1:{port}/hook", secret_env="BATON_ONE_WRITER_WEBHOOK_SECRET")})
    dispatcher = Dispatcher(db, settings)
    try:
        store = TokenStore(db)
        tok = await store.create("ci", ("runs:read", "runs:write"))
        try:
            await store.create("ci", ("runs:read",))
            raise AssertionError("a second active token of one name was stored")
        except TokenError as e:
            assert "revoke it first" in str(e)
        info = await store.verify(tok)
        assert info is not None and info.principal == "api:ci" and info.scopes == ("runs:read", "runs:write") and info.created_at.tzinfo is not None
        assert await store.verify("baton_nope") is None
        assert await store.revoke("ci") and not await store.revoke("ci")
        assert await store.verify(tok) is None  # revocation clears the cache
        listed = await store.list()
        assert [(t.name, t.revoked_at is not None) for t in listed] == [("ci", True)]
        await store.create("ci", ("admin",))  # the name is free again
        assert [t.scopes for t in await store.list()] == [("admin",), ("runs:read", "runs:write")]
        # a test webhook: queued, delivered once, settled, logged
        d = await dispatcher.send_test("w")
        assert d.outcome == "delivered" and d.status_code == 204 and d.event_type == "webhook.test" and len(got) == 1
        assert [x.event_id for x in await delivery_log(db, "w")] == [d.event_id] and await delivery_log(db, "other") == []
        rows = await db.execute(select(webhook_outbox.c.status, webhook_outbox.c.event_type), what="reading the outbox")
        assert [tuple(r) for r in rows] == [("delivered", "webhook.test")]
        if db.dialect == "sqlite":
            assert opened == [], "tokens or webhooks used the aiosqlite engine (a second connection) instead of the writer thread"
    finally:
        await dispatcher.aclose()
        await runner.cleanup()
        await db.dispose()
