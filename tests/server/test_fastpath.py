"""POST /api/v1/runs is served by bot.server.fastpath (no FastAPI dependency solving) and
answers exactly as the route did: the same problem documents, ordering of checks (401
before body validation), rate limit, audit row, metrics label; requests it does not take
(invalid bodies, other content types) reach the FastAPI route with their body intact."""

from __future__ import annotations

import re

import pytest

from bot.server.audit import AuditStore
from bot.settings import ServerSettings

PROBLEM = "application/problem+json"
pytestmark = pytest.mark.timeout(60)


async def test_fast_path_answers_as_the_route(serve, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from bot.server import fastpath

    fast: list[str] = []
    start = fastpath.start_run

    async def spy(svc, body, who):  # type: ignore[no-untyped-def]
        fast.append(body.workflow)
        return await start(svc, body, who)

    monkeypatch.setattr(fastpath, "start_run", spy)  # the FastAPI route calls api_runs.start_run, not this name
    async with serve(server=ServerSettings(rate_limit=0.01, rate_burst=3)) as s:
        # no token: 401 with WWW-Authenticate, whatever the body (the dependency ran first)
        for body in ({"workflow": "echo x"}, {"workflow": ""}):
            r = await s.http.post("/api/v1/runs", json=body)
            assert r.status_code == 401 and r.headers["content-type"] == PROBLEM and r.headers["www-authenticate"] == "Bearer"
        r = await s.http.post("/api/v1/runs", json={"workflow": "echo x"}, headers={"Authorization": "Basic abc"})
        assert r.status_code == 401
        h = await s.token("fast", ("runs:write", "runs:read"))
        before = _created((await s.http.get("/metrics")).text)  # the registry is process-wide: count the difference
        # a body the model refuses goes to FastAPI: its 422 with the validation errors
        r = await s.http.post("/api/v1/runs", json={"workflow": ""}, headers=h)
        assert r.status_code == 422 and r.json()["type"].endswith("/invalid-request") and r.json()["errors"][0]["loc"] == ["body", "workflow"]
        # started through the fast path: 201 and the route's body
        r = await s.http.post("/api/v1/runs", json={"workflow": "echo fast", "thread": "t1"}, headers=h)
        assert r.status_code == 201, r.text
        got = r.json()
        assert got["status"] == "queued" and got["thread"]["key"] == "api:fast:t1" and got["links"]["self"] == f"/api/v1/runs/{got['id']}"
        # text/plain is not JSON: the route's answer (FastAPI's 422), body handed on intact
        r = await s.http.post("/api/v1/runs", content=b'{"workflow": "echo x"}', headers={**h, "Content-Type": "text/plain"})
        assert r.status_code == 422 and r.headers["content-type"] == PROBLEM
        # the bucket (3) is empty now: 429 with Retry-After, as a problem
        r = await s.http.post("/api/v1/runs", json={"workflow": "echo x"}, headers=h)
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1 and r.headers["content-type"] == PROBLEM
        # the audit row was committed with the run; the metric has the route template as label
        rows = await AuditStore(s.baton.db).recent(actor="api:fast")
        assert [(e.action, e.target) for e in rows] == [("run.start", f"run:{got['id']}")]
        assert _created((await s.http.get("/metrics")).text) == before + 1
        assert fast == ["echo fast"]  # only the valid JSON request took the fast path


def _created(metrics: str) -> float:
    """``baton_api_requests_total`` of 201 answers to POST /api/v1/runs (0 before the first)."""
    m = re.search(r'^baton_api_requests_total\{code="201",method="POST",route="/api/v1/runs"\} (\S+)$', metrics, re.M)
    return float(m.group(1)) if m else 0.0


async def test_fast_path_scope_and_permission_problems(serve) -> None:  # type: ignore[no-untyped-def]
    async with serve() as s:
        ro = await s.token("ro", ("runs:read",))
        r = await s.http.post("/api/v1/runs", json={"workflow": "echo x"}, headers=ro)
        assert r.status_code == 403 and r.json()["type"].endswith("/missing-scope")
        rows = await AuditStore(s.baton.db).recent(actor="api:ro")
        assert [(e.action, e.outcome) for e in rows] == [("permission.denied", "denied")]
        w = await s.token("w", ("runs:write",))
        r = await s.http.post("/api/v1/runs", json={"workflow": "echo x", "thread": "slack:C1:1"}, headers=w)
        assert r.status_code == 403 and r.json()["type"].endswith("/missing-scope")
        r = await s.http.post("/api/v1/runs", json={"workflow": "echo x", "inputs": {"a": 1}}, headers=w)
        assert r.status_code == 422 and r.json()["type"].endswith("/inputs-unsupported")
        r = await s.http.post("/api/v1/runs", json={"workflow": "echo a THEN\n  THEN echo b"}, headers=w)
        assert r.status_code == 422 and r.json()["line"] == 2 and r.json()["instance"] == "/api/v1/runs"
