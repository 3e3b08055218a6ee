"""The REST API over real HTTP (uvicorn on a free port): runs, SSE, auth, problems, audit, webhooks."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from sqlalchemy import func, select

from bot.server.auth import RateLimiter
from bot.settings import ServerSettings
from bot.store.tables import webhook_outbox
from tests.server.conftest import hook, sse_events

PROBLEM = "application/problem+json"


async def test_start_follow_and_show_a_run(serve) -> None:  # type: ignore[no-untyped-def]
    async with serve() as s:
        h = await s.token("ci")
        r = await s.http.post("/api/v1/runs", json={"workflow": "echo hello THEN echo world"}, headers=h)
        assert r.status_code == 201, r.text
        run = r.json()
        assert run["status"] == "queued" and run["thread"]["platform"] == "api" and run["thread"]["channel"] == "ci"
        async with s.http.stream("GET", f"/api/v1/runs/{run['id']}/events", headers=h) as resp:
            assert resp.headers["content-type"].startswith("text/event-stream")
            body = ""
            async for chunk in resp.aiter_text():
                body += chunk
                if "event: result" in body and body.endswith("\n\n"):
                    break
        events = sse_events(body)
        assert events[0][0] == "snapshot" and events[-1][0] == "result"
        result = events[-1][1]
        assert result["status"] == "succeeded"
        assert [st["output"] for st in result["steps"]] == ["hello", "world"]
        shown = (await s.http.get(f"/api/v1/runs/{run['id']}", headers=h)).json()
        assert shown["steps"][0]["attempt"] == 1 and shown["steps"][0]["started_at"] and shown["requested_by"] == "api:ci"
        # the result is stored in the run's thread, readable through the API
        msgs = (await s.http.get(f"/api/v1/threads/{run['thread']['thread']}/messages", headers=h)).json()["items"]
        assert any(f"Run #{run['id']} succeeded" in m["text"] for m in msgs)


async def test_named_workflow_listing_filters_and_cursor_pagination(serve) -> None:  # type: ignore[no-untyped-def]
    async with serve() as s:
        h = await s.token("ci")
        ids = [(await s.http.post("/api/v1/runs", json={"workflow": f"echo {i}", "thread": "t1"}, headers=h)).json()["id"] for i in range(5)]
        for i in ids:
            await s.wait_run(i, h)
        page1 = (await s.http.get("/api/v1/runs", params={"limit": 2, "thread": "t1"}, headers=h)).json()
        assert [x["id"] for x in page1["items"]] == ids[::-1][:2] and page1["next_cursor"]
        page2 = (await s.http.get("/api/v1/runs", params={"limit": 2, "thread": "t1", "cursor": page1["next_cursor"]}, headers=h)).json()
        assert [x["id"] for x in page2["items"]] == ids[::-1][2:4]
        page3 = (await s.http.get("/api/v1/runs", params={"limit": 2, "thread": "t1", "cursor": page2["next_cursor"]}, headers=h)).json()
        assert [x["id"] for x in page3["items"]] == ids[:1] and page3["next_cursor"] is None
        assert (await s.http.get("/api/v1/runs", params={"status": "failed"}, headers=h)).json()["items"] == []
        wf = (await s.http.get("/api/v1/workflows", headers=h)).json()
        assert "disk-check" in [w["name"] for w in wf["workflows"]]
        stats = (await s.http.get("/api/v1/stats", headers=h)).json()
        assert stats["runs"] == 5 and stats["success_rate"] == 1.0 and stats["workflows"]["adhoc"]["succeeded"] == 5
        assert stats["workflows"]["adhoc"]["p95_duration_s"] is not None


async def test_auth_scopes_revocation_and_problems(serve) -> None:  # type: ignore[no-untyped-def]
    async with serve() as s:
        r = await s.http.get("/api/v1/runs")
        assert r.status_code == 401 and r.headers["content-type"] == PROBLEM and r.headers["www-authenticate"].startswith("Bearer")
        assert set(r.json()) >= {"type", "title", "status", "detail"}
        assert (await s.http.get("/api/v1/runs", headers={"Authorization": "Bearer nope"})).status_code == 401
        ro = await s.token("reader", ("runs:read",))
        r = await s.http.post("/api/v1/runs", json={"workflow": "echo x"}, headers=ro)
        assert r.status_code == 403 and "runs:write" in r.json()["detail"]
        admin = await s.token("boss", ("admin",))
        audit = (await s.http.get("/api/v1/audit", headers=admin)).json()["items"]
        assert audit[0]["actor"] == "api:reader" and audit[0]["action"] == "permission.denied" and audit[0]["outcome"] == "denied"
        assert (await s.http.get("/api/v1/audit", headers=ro)).status_code == 403
        # malformed workflow text: a problem with line and column, no traceback
        r = await s.http.post("/api/v1/runs", json={"workflow": "echo a THEN\n  THEN echo b"}, headers=admin)
        assert r.status_code == 422 and r.headers["content-type"] == PROBLEM
        assert r.json()["line"] == 2 and r.json()["column"] == 3 and r.json()["type"].endswith("/workflow-syntax")
        r = await s.http.post("/api/v1/workflows/check", json={"workflow": "disk-chek"}, headers=admin)
        assert r.status_code == 422 and "disk-check" in r.json()["detail"]
        ok = await s.http.post("/api/v1/workflows/check", json={"workflow": "echo a AND echo b"}, headers=admin)
        assert ok.status_code == 200 and len(ok.json()["graph"]["nodes"]) >= 2
        r = await s.http.post("/api/v1/runs", json={"nope": 1}, headers=admin)
        assert r.status_code == 422 and r.json()["errors"] and "Traceback" not in r.text
        r = await s.http.get("/api/v1/nowhere", headers=admin)
        assert r.status_code == 404 and r.headers["content-type"] == PROBLEM
        assert (await s.http.get("/api/v1/runs/999", headers=admin)).json()["type"].endswith("/run-not-found")


async def test_revoked_token_is_refused(serve) -> None:  # type: ignore[no-untyped-def]
    async with serve() as s:
        h = await s.token("temp", ("runs:read",))
        assert (await s.http.get("/api/v1/runs", headers=h)).status_code == 200
        from bot.server.auth import TokenStore

        await TokenStore(s.baton.db).revoke("temp")
        # the server's own store trusts a verified token for up to CACHE_TTL_S
        async with asyncio.timeout(5):
            while (await s.http.get("/api/v1/runs", headers=h)).status_code != 401:
                await asyncio.sleep(0.2)


async def test_rate_limit_answers_429_with_retry_after(serve) -> None:  # type: ignore[no-untyped-def]
    async with serve(server=ServerSettings(rate_limit=1.0, rate_burst=3)) as s:
        h = await s.token("busy", ("runs:read",))
        codes = [(await s.http.get("/api/v1/runs", headers=h)) for _ in range(5)]
        assert [c.status_code for c in codes[:3]] == [200, 200, 200]
        assert codes[3].status_code == 429 and int(codes[3].headers["retry-after"]) >= 1
        assert codes[3].headers["content-type"] == PROBLEM
        other = await s.token("calm", ("runs:read",))  # buckets are per token
        assert (await s.http.get("/api/v1/runs", headers=other)).status_code == 200


def test_token_bucket_refills_at_the_configured_rate() -> None:
    now = [0.0]
    rl = RateLimiter(rate=2.0, burst=2, clock=lambda: now[0])
    assert rl.take("a") == 0 and rl.take("a") == 0
    assert rl.take("a") == pytest.approx(0.5)
    now[0] += 0.5
    assert rl.take("a") == 0 and rl.take("a") > 0


async def test_permissions_apply_to_the_token_principal(serve) -> None:  # type: ignore[no-untyped-def]
    async with serve(permissions={"*": ["api:ops"], "approve": ["api:ops"]}) as s:
        dev = await s.token("dev", ("runs:read", "runs:write"))
        ops = await s.token("ops", ("runs:read", "runs:write"))
        r = await s.http.post("/api/v1/runs", json={"workflow": "echo hi"}, headers=dev)
        assert r.status_code == 403 and "[permissions]" in r.json()["detail"]
        r = await s.http.post("/api/v1/runs", json={"workflow": "approve ship it? THEN echo shipped"}, headers=ops)
        assert r.status_code == 201
        rid = r.json()["id"]
        async with asyncio.timeout(10):
            while not (await s.http.get(f"/api/v1/runs/{rid}", headers=ops)).json()["waiting"]:
                await asyncio.sleep(0.05)
        assert (await s.http.post(f"/api/v1/runs/{rid}/approve", json={}, headers=dev)).status_code == 403
        r = await s.http.post(f"/api/v1/runs/{rid}/approve", json={}, headers=ops)
        assert r.status_code == 200 and r.json()["decision"] == "approved"
        done = await s.wait_run(rid, ops)
        assert done["status"] == "succeeded" and done["steps"][-1]["output"] == "shipped"
        admin = await s.token("root", ("admin",))
        actions = [(e["actor"], e["action"], e["outcome"]) for e in (await s.http.get("/api/v1/audit", headers=admin)).json()["items"]]
        assert ("api:dev", "permission.denied", "denied") in actions
        assert ("api:ops", "run.start", "ok") in actions and ("api:ops", "run.approve", "ok") in actions


async def test_cancel_and_rerun(serve) -> None:  # type: ignore[no-untyped-def]
    async with serve() as s:
        h = await s.token("ci")
        rid = (await s.http.post("/api/v1/runs", json={"workflow": "echo first THEN sleep 30"}, headers=h)).json()["id"]
        async with asyncio.timeout(10):
            while (await s.http.get(f"/api/v1/runs/{rid}", headers=h)).json()["status"] != "running":
                await asyncio.sleep(0.05)
        r = await s.http.post(f"/api/v1/runs/{rid}/cancel", headers=h)
        assert r.status_code == 200, r.text
        assert (await s.wait_run(rid, h))["status"] == "cancelled"
        assert (await s.http.post(f"/api/v1/runs/{rid}/cancel", headers=h)).status_code == 409
        r = await s.http.post(f"/api/v1/runs/{rid}/rerun", json={"from": "nope"}, headers=h)
        assert r.status_code == 422
        r = await s.http.post(f"/api/v1/runs/{rid}/rerun", json={"from": "sleep 30"}, headers=h)
        assert r.status_code == 201 and r.json()["rerun_of"] == rid
        new = r.json()["id"]
        shown = (await s.http.get(f"/api/v1/runs/{new}", headers=h)).json()
        assert shown["steps"][0]["reused"] is True and shown["steps"][0]["output"] == "first"
        await s.http.post(f"/api/v1/runs/{new}/cancel", headers=h)


async def test_events_reach_the_outbox_in_the_status_transaction(serve, receiver) -> None:  # type: ignore[no-untyped-def]
    async with serve(webhooks=hook(receiver.url, events=["run.succeeded", "run.failed", "step.failed"])) as s:
        h = await s.token("ci")
        ok = (await s.http.post("/api/v1/runs", json={"workflow": "echo fine"}, headers=h)).json()["id"]
        bad = (await s.http.post("/api/v1/runs", json={"workflow": "fail boom"}, headers=h)).json()["id"]
        await s.wait_run(ok, h)
        await s.wait_run(bad, h)
        await receiver.wait_for(lambda ev: {e["type"] for e in ev} >= {"run.succeeded", "run.failed", "step.failed"})
        async with s.baton.db.begin("test") as conn:
            n = (await conn.execute(select(func.count()).select_from(webhook_outbox))).scalar()
        assert n == 3  # step.finished is not subscribed, so it has no rows
        by_type = {e["type"]: e for e in receiver.events}
        assert by_type["run.failed"]["data"]["run_id"] == bad and "boom" in by_type["run.failed"]["data"]["error"]
        assert by_type["step.failed"]["data"]["step"]["label"] == "fail boom"
        assert receiver.bad_signatures == 0


async def test_metrics_health_and_docs(serve) -> None:  # type: ignore[no-untyped-def]
    async with serve() as s:
        h = await s.token("ci")
        rid = (await s.http.post("/api/v1/runs", json={"workflow": "echo m"}, headers=h)).json()["id"]
        await s.wait_run(rid, h)
        assert (await s.http.get("/healthz")).json() == {"status": "ok"}
        ready = await s.http.get("/readyz")
        assert ready.status_code == 200 and ready.json()["migration"] == _alembic_head()
        text = (await s.http.get("/metrics")).text
        for name in ("baton_runs_total", "baton_runs_started_total", "baton_run_duration_seconds_bucket", "baton_step_duration_seconds_bucket",
                     "baton_api_requests_total", "baton_admission_to_start_seconds_bucket", "baton_webhook_deliveries_total"):
            assert name in text or name.replace("_total", "") in text, name
        assert 'route="/api/v1/runs/{run_id}"' in text
        assert (await s.http.get("/docs")).status_code == 200
        spec = (await s.http.get("/openapi.json")).json()
        assert "/api/v1/runs/{run_id}/events" in spec["paths"] and "/api/v1/stats" in spec["paths"]
        r = await s.http.post("/slack/events", content=b"{}")
        assert r.status_code == 404 and r.headers["content-type"] == PROBLEM


async def test_readyz_reports_an_old_migration(serve) -> None:  # type: ignore[no-untyped-def]
    async with serve() as s:
        async with s.baton.db.begin("test") as conn:
            from sqlalchemy import text

            await conn.execute(text("UPDATE alembic_version SET version_num='0003'"))
        r = await s.http.get("/readyz")
        assert r.status_code == 503 and "0003" in r.json()["detail"] and r.headers["content-type"] == PROBLEM


async def test_schedules_over_the_api(serve) -> None:  # type: ignore[no-untyped-def]
    async with serve() as s:
        h = await s.token("ci")
        r = await s.http.post("/api/v1/schedules", json={"phrase": "every day at 9am run disk-check"}, headers=h)
        assert r.status_code == 201, r.text
        sid = r.json()["id"]
        assert sid in [x["id"] for x in (await s.http.get("/api/v1/schedules", headers=h)).json()["items"]]
        r = await s.http.post("/api/v1/schedules", json={"phrase": "every day at 25pm run disk-check"}, headers=h)
        assert r.status_code == 422 and r.headers["content-type"] == PROBLEM
        other = await s.token("other")
        assert (await s.http.delete(f"/api/v1/schedules/{sid}", headers=other)).status_code == 403
        assert (await s.http.delete(f"/api/v1/schedules/{sid}", headers=h)).status_code == 200
        assert (await s.http.delete(f"/api/v1/schedules/{sid}", headers=h)).status_code == 404


__all__ = ["httpx"]


async def test_chat_actions_are_audited_and_admins_read_them(tmp_path, outlet) -> None:  # type: ignore[no-untyped-def]
    from adapters.base import Message
    from bot.app import App
    from tests.server.conftest import make_settings

    settings = make_settings(tmp_path, permissions={"*": ["*"], "disk-check": ["alice"], "admin": ["alice"], "approve": ["alice"]})
    baton = await App.start(settings, {"test": outlet})
    try:
        def m(author: str, text: str) -> Message:
            return Message("test", "C1", "T1", author, text)

        await baton.bot.handle(m("bob", "run: echo hi"), outlet)
        await baton.bot.handle(m("bob", "run: disk-check"), outlet)
        await baton.bot.drain()
        await baton.bot.handle(m("bob", "/cancel 1"), outlet)
        await baton.bot.handle(m("bob", "/approve 1"), outlet)
        await baton.bot.handle(m("bob", "/audit"), outlet)
        assert "Only admins" in outlet.texts[-1]
        await baton.bot.handle(m("alice", "/audit 10"), outlet)
        text = outlet.texts[-1]
        assert "bob run.start run:1 [ok] @test:C1:T1" in text
        assert "bob permission.denied" in text and "you may not run 'disk-check'" in text
        assert "bob run.cancel run:1 [failed]" in text and "approve: not an approver" in text
        rows = await baton.bot.audit.recent(50)  # type: ignore[union-attr]
        assert [r.action for r in rows][-1] == "run.start" and all(r.platform == "test" for r in rows)
    finally:
        await baton.aclose()


async def test_spans_for_requests_runs_and_steps(serve, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from bot.server import tracing

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing, "_configured", True)
    monkeypatch.setattr(tracing, "tracer", lambda: provider.get_tracer("baton"))
    async with serve() as s:
        h = await s.token("ci")
        rid = (await s.http.post("/api/v1/runs", json={"workflow": "echo one THEN echo two"}, headers=h)).json()["id"]
        await s.wait_run(rid, h)
        async with asyncio.timeout(5):
            while not any(sp.name == "run" for sp in exporter.get_finished_spans()):
                await asyncio.sleep(0.02)
    spans = exporter.get_finished_spans()
    run = next(sp for sp in spans if sp.name == "run")
    assert run.attributes["baton.run_id"] == rid and run.attributes["baton.status"] == "succeeded"
    assert run.attributes["baton.thread"].startswith("api:ci:run-")
    steps = [sp for sp in spans if sp.name.startswith("step ")]
    assert {sp.name for sp in steps} == {"step echo one", "step echo two"}
    assert all(sp.parent is not None and sp.parent.span_id == run.context.span_id for sp in steps)
    assert any(sp.name == "HTTP POST /api/v1/runs" and sp.attributes["http.response.status_code"] == 201 for sp in spans)


def test_json_log_lines_carry_run_id_and_trace_id() -> None:
    import json
    import logging

    from opentelemetry.sdk.trace import TracerProvider

    from bot.server.tracing import JsonFormatter, current_thread
    from engine.context import current_run_id

    tok = current_run_id.set("42")
    tok2 = current_thread.set("api:ci:t1")
    try:
        with TracerProvider().get_tracer("t").start_as_current_span("x"):
            rec = logging.LogRecord("baton.test", logging.INFO, __file__, 1, "hello %s", ("world",), None)
            doc = json.loads(JsonFormatter().format(rec))
    finally:
        current_run_id.reset(tok)
        current_thread.reset(tok2)
    assert doc["msg"] == "hello world" and doc["run_id"] == "42" and doc["thread"] == "api:ci:t1"
    assert len(doc["trace_id"]) == 32 and doc["level"] == "info"


async def test_on_postgresql_admission_outbox_and_delivery(serve, receiver, pg_url) -> None:  # type: ignore[no-untyped-def]
    async with serve(database_url=pg_url, webhooks=hook(receiver.url, events=["run.succeeded", "step.finished"])) as s:
        h = await s.token("pg")
        ids = [(await s.http.post("/api/v1/runs", json={"workflow": f"echo p{i}"}, headers=h)).json()["id"] for i in range(3)]
        for i in ids:
            assert (await s.wait_run(i, h))["status"] == "succeeded"
        await receiver.wait_for(lambda ev: sum(e["type"] == "run.succeeded" for e in ev) == 3)
        assert sorted(e["data"]["run_id"] for e in receiver.events if e["type"] == "run.succeeded") == ids
        assert sum(e["type"] == "step.finished" for e in receiver.events) == 3
        admin = await s.token("pgadmin", ("admin",))
        audit = (await s.http.get("/api/v1/audit", headers=admin)).json()["items"]
        assert [a["target"] for a in audit if a["action"] == "run.start"] == [f"run:{i}" for i in reversed(ids)]
        d = (await s.http.get("/api/v1/webhooks/deliveries", headers=admin)).json()["items"]
        assert len(d) == 6 and {x["outcome"] for x in d} == {"delivered"}
        page = (await s.http.get("/api/v1/runs", params={"limit": 2}, headers=h)).json()
        assert len(page["items"]) == 2 and page["next_cursor"]


async def test_slack_events_share_the_port(serve, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import hashlib
    import hmac
    import json
    import time

    secret = "test-signing-secret-0123456789abcdef"
    monkeypatch.setenv("BATON_SLACK_BOT_TOKEN", "xoxb-111-222-test-bot-token")
    monkeypatch.setenv("BATON_SLACK_SIGNING_SECRET", secret)
    monkeypatch.setenv("BATON_SLACK_API_BASE_URL", "http://127.0.0.1:9/api/")  # no Web API call is needed here
    async with serve() as s:
        body = json.dumps({"type": "url_verification", "token": "t", "challenge": "chal-123"})
        ts = str(int(time.time()))
        sig = "v0=" + hmac.new(secret.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
        headers = {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": sig, "content-type": "application/json"}
        r = await s.http.post("/slack/events", content=body, headers=headers)
        assert r.status_code == 200 and "chal-123" in r.text
        forged = {**headers, "X-Slack-Signature": "v0=" + "0" * 64}
        assert (await s.http.post("/slack/events", content=body, headers=forged)).status_code == 401
        assert "baton_slack_ack_seconds_count" in (await s.http.get("/metrics")).text


async def test_llm_usage_in_stats_and_metrics(serve, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from tests.fakes.llm_server import FakeLLMServer

    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    async with FakeLLMServer(usage=(120, 40)) as llm:
        llm.queue_replies("a haiku about disks", "7/10")
        providers = {
            "local": {"kind": "openai_compatible", "model": "llama3.1:8b", "base_url": llm.openai_base_url, "default": True},
            "primary": {"kind": "anthropic", "model": "claude-haiku-4-5", "base_url": llm.anthropic_base_url},
        }
        async with serve(providers=providers) as s:
            h = await s.token("ci")
            text = "Write a haiku about disks with local THEN critique it with primary"
            rid = (await s.http.post("/api/v1/runs", json={"workflow": text}, headers=h)).json()["id"]
            run = await s.wait_run(rid, h)
            assert run["status"] == "succeeded" and run["tokens_in"] == 240 and run["cost_usd"] > 0
            stats = (await s.http.get("/api/v1/stats", headers=h)).json()
            by = {(x["provider"], x["model"]): x for x in stats["llm"]}
            assert by[("local", "llama3.1:8b")]["tokens_out"] == 40 and by[("local", "llama3.1:8b")]["cost_usd"] == 0
            assert by[("primary", "claude-haiku-4-5")]["cost_usd"] == pytest.approx(run["cost_usd"])
            assert stats["workflows"]["adhoc"]["cost_usd"] == pytest.approx(run["cost_usd"])
            metrics = (await s.http.get("/metrics")).text
            assert 'baton_llm_tokens_total{direction="in",model="claude-haiku-4-5",provider="primary"}' in metrics
            assert 'baton_provider_circuit_open{provider="local"} 0.0' in metrics


async def test_concurrent_requests_read_a_token_once(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from bot.server.auth import TokenStore
    from bot.store import Database, upgrade

    url = f"sqlite+aiosqlite:///{tmp_path / 't.db'}"
    await upgrade(url)
    db = Database(url)
    try:
        store = TokenStore(db)
        tok = await store.create("ci", ("runs:read",))
        reads = []
        execute = db.execute

        async def counted(stmt, params=None, *, what):  # type: ignore[no-untyped-def]
            if what == "checking an API token":  # token reads go through Database.execute (issue 13)
                reads.append(stmt)
            return await execute(stmt, params, what=what)

        db.execute = counted  # type: ignore[method-assign]
        got = await asyncio.gather(*(TokenStore.verify(store, tok) for _ in range(50)))
        assert all(g is not None and g.name == "ci" for g in got)
        assert len(reads) == 1
        assert await store.verify("baton_wrong") is None
    finally:
        await db.dispose()


async def test_since_filter_and_chat_threads_need_admin(serve) -> None:  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime, timedelta

    async with serve() as s:
        h = await s.token("ci")
        rid = (await s.http.post("/api/v1/runs", json={"workflow": "echo s"}, headers=h)).json()["id"]
        await s.wait_run(rid, h)
        past = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
        future = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
        assert [x["id"] for x in (await s.http.get("/api/v1/runs", params={"since": past}, headers=h)).json()["items"]] == [rid]
        assert (await s.http.get("/api/v1/runs", params={"since": future}, headers=h)).json()["items"] == []
        r = await s.http.post("/api/v1/runs", json={"workflow": "echo s", "thread": "slack:C1:1700000000.1"}, headers=h)
        assert r.status_code == 403 and "admin" in r.json()["detail"]
        assert (await s.http.get("/api/v1/threads/slack:C1:17/messages", headers=h)).status_code == 403


def _alembic_head() -> str:
    """The newest migration (revision ids are descriptive: compare with Alembic's head, not a literal)."""
    from alembic.script import ScriptDirectory

    from bot.store.db import alembic_config

    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()  # type: ignore[return-value]
