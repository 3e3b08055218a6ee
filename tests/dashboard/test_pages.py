"""The dashboard over real HTTP: sign-in, pages, permissions, CSRF, audit, live list, fragments."""

from __future__ import annotations

import asyncio
import html
import re

from bot.server.audit import AuditStore
from engine.picture import layout_available
from tests.dashboard.conftest import csrf_of


async def test_sign_in_exchanges_the_token_for_a_signed_httponly_cookie(dash) -> None:  # type: ignore[no-untyped-def]
    async with dash() as d:
        r = await d.http.get("/")
        assert r.status_code == 303 and r.headers["location"] == "/login?next=%2F"
        bad = await d.http.post("/login", data={"token": "baton_nope", "next": "/"})
        assert bad.status_code == 401 and "Unknown or revoked token." in bad.text
        token = await d.token("web", ("runs:read",))
        ok = await d.http.post("/login", data={"token": token, "next": "//evil.example/x"})
        assert ok.status_code == 303 and ok.headers["location"] == "/"  # only local paths are followed
        cookie = ok.headers["set-cookie"]
        assert cookie.startswith("baton_session=") and "HttpOnly" in cookie and "SameSite=strict" in cookie
        assert token not in cookie
        page = await d.http.get("/")
        assert page.status_code == 200 and "api:web (runs:read)" in page.text
        tampered = d.http.cookies["baton_session"][:-2] + "xx"
        d.http.cookies.set("baton_session", tampered)
        assert (await d.http.get("/")).status_code == 303
        actions = [(e.actor, e.action, e.outcome) for e in await AuditStore(d.baton.db).recent(10)]
        assert ("api:web", "dashboard.login", "ok") in actions and ("dashboard", "dashboard.login", "denied") in actions


async def test_revoking_the_token_ends_its_sessions(dash) -> None:  # type: ignore[no-untyped-def]
    from bot.dashboard import _session
    from bot.server.auth import TokenStore

    async with dash() as d:
        c = await d.login(await d.token("short", ("runs:read",)))
        assert (await c.get("/")).status_code == 200
        await TokenStore(d.baton.db).revoke("short")
        _session._cache.clear()  # the session check re-reads the token row at most CACHE_TTL_S later
        assert (await c.get("/")).status_code == 303
        await c.aclose()


async def test_every_page_renders(dash) -> None:  # type: ignore[no-untyped-def]
    async with dash() as d:
        token = await d.token("ops")
        c = await d.login(token)
        api = {"Authorization": f"Bearer {token}"}
        r = await c.post("/api/v1/runs", json={"workflow": "echo hello THEN fail boom", "thread": "t1"}, headers=api)
        run_id = r.json()["id"]
        assert await d.wait_run(run_id) == "failed"
        runs = await c.get("/")
        assert f'id="run-{run_id}"' in runs.text and "✗ failed" in runs.text
        run = await c.get(f"/runs/{run_id}")
        assert run.status_code == 200
        assert "gantt-bar status-succeeded" in run.text and "boom" in run.text and 'id="rerun"' in run.text
        if layout_available():
            svg = html.unescape(run.text)
            assert re.search(r'<g id="step-s1" class="node step kind-builtin status-succeeded"', svg)
            assert re.search(r'<g id="step-s2" class="node step kind-builtin status-failed"', svg)
            assert "✓ succeeded" in svg and "✗ failed" in svg
        for path, needle in [
            ("/workflows", "ops-check"),
            ("/workflows/ops-check", "workflow system-report"),
            ("/schedules", "Schedules"),
            ("/threads", "api:ops:t1"),
            ("/stats", "chart-daily"),
        ]:
            p = await c.get(path)
            assert p.status_code == 200 and needle in html.unescape(p.text), path
        tid = re.search(r'href="/threads/(\d+)">api:ops:t1', (await c.get("/threads")).text).group(1)  # type: ignore[union-attr]
        thread = await c.get(f"/threads/{tid}")
        assert "echo hello THEN fail boom" in thread.text and f"/runs/{run_id}" in thread.text and 'id="context"' in thread.text
        assert (await c.get("/runs/999")).status_code == 404
        for asset in ("vendor/htmx/htmx.min.js", "vendor/htmx-ext-sse/sse.js", "vendor/chartjs/chart.umd.min.js", "app.css", "app.js"):
            a = await c.get(f"/static/dashboard/{asset}")
            assert a.status_code == 200 and len(a.content) > 500, asset
        assert (await c.get("/static/dashboard/../_views.py")).status_code == 404
        await c.aclose()


async def test_buttons_follow_scopes_and_actions_need_csrf(dash) -> None:  # type: ignore[no-untyped-def]
    async with dash() as d:
        writer = await d.token("writer")
        api = {"Authorization": f"Bearer {writer}"}
        run_id = (await d.http.post("/api/v1/runs", json={"workflow": "sleep 30"}, headers=api)).json()["id"]
        await d.wait_run(run_id, ("running",))
        reader = await d.login(await d.token("reader", ("runs:read",)))
        page = await reader.get(f"/runs/{run_id}")
        assert 'id="cancel-run"' not in page.text
        refused = await reader.post(f"/runs/{run_id}/cancel", data={"csrf": "x"})
        assert refused.status_code == 403 and "lacks the scope" in refused.text

        c = await d.login(writer)
        page = await c.get(f"/runs/{run_id}")
        assert 'id="cancel-run"' in page.text
        no_csrf = await c.post(f"/runs/{run_id}/cancel", data={})
        assert no_csrf.status_code == 403 and "CSRF" in no_csrf.text
        cross = await c.post(f"/runs/{run_id}/cancel", data={"csrf": csrf_of(page.text)}, headers={"Origin": "http://evil.example"})
        assert cross.status_code == 403
        assert (await d.baton.runs.get(run_id))[0].status == "running"  # type: ignore[index]
        ok = await c.post(f"/runs/{run_id}/cancel", data={"csrf": csrf_of(page.text)})
        assert ok.status_code == 303 and ok.headers["location"].startswith(f"/runs/{run_id}?flash=")
        assert await d.wait_run(run_id) == "cancelled"
        audit = [(e.actor, e.action, e.outcome, e.target) for e in await AuditStore(d.baton.db).recent(20)]
        assert ("api:writer", "run.cancel", "ok", f"run:{run_id}") in audit
        assert ("api:reader", "permission.denied", "denied", None) in audit

        rerun = await c.post(f"/runs/{run_id}/rerun", data={"csrf": csrf_of(page.text), "from": ""})
        assert rerun.status_code == 303 and "started+as+%23" in rerun.headers["location"]
        new_id = int(re.search(r"^/runs/(\d+)", rerun.headers["location"]).group(1))  # type: ignore[union-attr]
        assert (await d.baton.runs.get(new_id))[0].rerun_of == run_id  # type: ignore[index]
        await c.aclose()
        await reader.aclose()


async def test_workflow_check_shows_graph_or_positioned_error(dash) -> None:  # type: ignore[no-untyped-def]
    async with dash() as d:
        c = await d.login(await d.token("w", ("runs:read",)))
        csrf = csrf_of((await c.get("/workflows")).text)
        bad = await c.post("/ui/workflows/check", data={"csrf": csrf, "text": "echo a THEN\nAND b"}, headers={"HX-Request": "true"})
        assert bad.status_code == 200
        assert "Line 2, column 1: expected a step, got &#39;AND&#39;" in bad.text and "AND b\n^" in bad.text
        good = await c.post("/ui/workflows/check", data={"csrf": csrf, "text": "echo a AND echo b"}, headers={"HX-Request": "true"})
        assert 'id="check-graph"' in good.text and "echo a" in good.text
        assert (await c.post("/ui/workflows/check", data={"text": "echo a"})).status_code == 403
        await c.aclose()


async def test_runs_list_filters_and_cursor_pagination(dash) -> None:  # type: ignore[no-untyped-def]
    async with dash(server={"rate_limit": 1000, "rate_burst": 1000}) as d:  # 55 starts in a row
        token = await d.token("pager")
        api = {"Authorization": f"Bearer {token}"}
        ids = []
        for i in range(55):
            ids.append((await d.http.post("/api/v1/runs", json={"workflow": "fail x" if i % 5 == 0 else f"echo {i}"}, headers=api)).json()["id"])
        for i in ids:
            await d.wait_run(i)
        c = await d.login(token)
        first = await c.get("/")
        shown = [int(x) for x in re.findall(r'<tr id="run-(\d+)"', first.text)]
        assert shown == sorted(ids, reverse=True)[:50]
        nxt = html.unescape(re.search(r'href="(/\?[^"]*cursor=[^"]+)" id="next-page"', first.text).group(1))  # type: ignore[union-attr]
        second = await c.get(nxt)
        assert [int(x) for x in re.findall(r'<tr id="run-(\d+)"', second.text)] == sorted(ids, reverse=True)[50:]
        failed = await c.get("/ui/runs/rows", params={"status": "failed"})
        got = [int(x) for x in re.findall(r'<tr id="run-(\d+)"', failed.text)]
        assert got == [i for i in sorted(ids, reverse=True) if (i - ids[0]) % 5 == 0]
        assert "No runs match." in (await c.get("/ui/runs/rows", params={"user": "api:someone-else"})).text
        assert len(re.findall(r'<tr id="run-', (await c.get("/ui/runs/rows", params={"user": "api:pager", "since": "2000-01-01T00:00"})).text)) == 50
        await c.aclose()


async def test_runs_live_stream_says_changed_when_a_run_starts(dash) -> None:  # type: ignore[no-untyped-def]
    async with dash() as d:
        token = await d.token("live")
        c = await d.login(token)
        async with c.stream("GET", "/ui/runs/live") as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            await d.http.post("/api/v1/runs", json={"workflow": "echo live"}, headers={"Authorization": f"Bearer {token}"})
            async with asyncio.timeout(10):
                async for line in stream.aiter_lines():
                    if line.startswith("event:") and "changed" in line:
                        break
        await c.aclose()


async def test_workflow_text_is_escaped_in_graphs_and_pages(dash) -> None:  # type: ignore[no-untyped-def]
    async with dash() as d:
        token = await d.token("xss")
        c = await d.login(token)
        csrf = csrf_of((await c.get("/workflows")).text)
        evil = 'echo "<script>alert(1)</script>" THEN echo "<img src=x onerror=alert(2)>"'
        r = await c.post("/ui/workflows/check", data={"csrf": csrf, "text": evil}, headers={"HX-Request": "true"})
        assert r.status_code == 200 and "<script>alert" not in r.text and "<img src=x" not in r.text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in r.text  # shown, as text
        run_id = (await c.post("/api/v1/runs", json={"workflow": evil}, headers={"Authorization": f"Bearer {token}"})).json()["id"]
        await d.wait_run(run_id)
        for path in (f"/runs/{run_id}", "/"):
            page = await c.get(path)
            assert "<script>alert" not in page.text and "<img src=x" not in page.text, path
        await c.aclose()


async def test_without_graphviz_the_graph_is_a_list_with_the_same_ids(dash, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from bot.dashboard import _data

    monkeypatch.setattr(_data, "layout_available", lambda: False)
    async with dash() as d:
        token = await d.token("nodot")
        c = await d.login(token)
        run_id = (await c.post("/api/v1/runs", json={"workflow": "echo a THEN fail b"}, headers={"Authorization": f"Bearer {token}"})).json()["id"]
        await d.wait_run(run_id)
        page = await c.get(f"/runs/{run_id}")
        assert "apt-get install graphviz" in page.text
        assert '<li id="step-s1" class="step kind-builtin status-succeeded">' in page.text
        assert '<li id="step-s2" class="step kind-builtin status-failed">' in page.text and "✗ failed" in page.text
        await c.aclose()


async def test_approve_and_reject_buttons_only_for_approvers(dash) -> None:  # type: ignore[no-untyped-def]
    async with dash(permissions={"*": ["api:ops", "api:dev"], "approve": ["api:ops"]}) as d:
        ops_token, dev_token = await d.token("ops"), await d.token("dev")
        api = {"Authorization": f"Bearer {ops_token}"}
        run_id = (await d.http.post("/api/v1/runs", json={"workflow": "approve ship it? THEN echo shipped"}, headers=api)).json()["id"]
        async with asyncio.timeout(10):
            while not d.baton.bot.approvals.pending(run_id):
                await asyncio.sleep(0.05)
        dev = await d.login(dev_token)
        page = await dev.get(f"/runs/{run_id}")
        assert 'id="approve-s1"' not in page.text  # runs:write, but not an approver
        refused = await dev.post(f"/runs/{run_id}/approve", data={"csrf": csrf_of(page.text), "step": "s1"}, follow_redirects=True)
        assert "Not approved:" in refused.text and "may not approve" in refused.text
        ops = await d.login(ops_token)
        page = await ops.get(f"/runs/{run_id}")
        assert 'id="approve-s1"' in page.text and 'id="reject-s1"' in page.text and "⏸ waiting" in page.text
        ok = await ops.post(f"/runs/{run_id}/approve", data={"csrf": csrf_of(page.text), "step": "s1"})
        assert ok.status_code == 303
        assert await d.wait_run(run_id) == "succeeded"
        audit = [(e.actor, e.action, e.outcome) for e in await AuditStore(d.baton.db).recent(20)]
        assert ("api:ops", "run.approve", "ok") in audit and ("api:dev", "permission.denied", "denied") in audit
        await dev.aclose()
        await ops.aclose()
