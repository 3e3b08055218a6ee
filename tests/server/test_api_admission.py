"""The HTTP API admits runs through the app's admission (the chat path: the durable run queue).

A real uvicorn server around a real App on SQLite. While a request is being admitted
(``admission.priority`` held by the test) a posted run stays ``queued`` in the database,
so these checks are deterministic: ``busy_policy = "reject"`` refuses from the runs table,
``queue`` executes a thread's runs in admission order, a queued run can be cancelled before
it starts, and the run's audit row committed with it.
"""

from __future__ import annotations

import asyncio

import pytest

pytestmark = pytest.mark.timeout(90)


async def test_reject_is_decided_from_the_queued_run_in_the_database(serve) -> None:  # type: ignore[no-untyped-def]
    async with serve(workflow={"busy_policy": "reject"}) as s:
        h = await s.token("ci")
        prio = s.baton.admission.priority
        prio.max_wait = 3600  # no forced start within the test
        with prio.arriving():
            r1 = await s.http.post("/api/v1/runs", json={"workflow": "echo one", "thread": "t1"}, headers=h)
            assert r1.status_code == 201, r1.text
            first = r1.json()["id"]
            assert (await s.http.get(f"/api/v1/runs/{first}", headers=h)).json()["status"] == "queued"
            r2 = await s.http.post("/api/v1/runs", json={"workflow": "echo two", "thread": "t1"}, headers=h)
            assert r2.status_code == 409 and r2.json()["run_ids"] == [first], r2.text
            other = await s.http.post("/api/v1/runs", json={"workflow": "echo three", "thread": "t2"}, headers=h)
            assert other.status_code == 201
        assert (await s.wait_run(first, h))["status"] == "succeeded"
        assert (await s.wait_run(other.json()["id"], h))["status"] == "succeeded"
        admin = await s.token("root", ("admin",))
        audit = (await s.http.get("/api/v1/audit", headers=admin)).json()["items"]
        assert sorted(a["target"] for a in audit if a["action"] == "run.start") == sorted([f"run:{first}", f"run:{other.json()['id']}"])


async def test_queue_runs_a_threads_runs_in_admission_order(serve) -> None:  # type: ignore[no-untyped-def]
    async with serve() as s:
        h = await s.token("ci")
        prio = s.baton.admission.priority
        prio.max_wait = 3600
        with prio.arriving():
            ids = []
            for text in ("echo a", "echo b", "echo c"):
                r = await s.http.post("/api/v1/runs", json={"workflow": text, "thread": "ordered"}, headers=h)
                assert r.status_code == 201, r.text
                ids.append(r.json()["id"])
            shown = [(await s.http.get(f"/api/v1/runs/{i}", headers=h)).json()["status"] for i in ids]
            assert shown == ["queued"] * 3
        runs = [await s.wait_run(i, h) for i in ids]
        assert [r["status"] for r in runs] == ["succeeded"] * 3
        for before, after in zip(runs, runs[1:]):
            assert before["finished_at"] <= after["started_at"]


async def test_a_queued_run_is_cancelled_before_it_starts(serve) -> None:  # type: ignore[no-untyped-def]
    async with serve() as s:
        h = await s.token("ci")
        prio = s.baton.admission.priority
        prio.max_wait = 3600
        with prio.arriving():
            rid = (await s.http.post("/api/v1/runs", json={"workflow": "echo never"}, headers=h)).json()["id"]
            r = await s.http.post(f"/api/v1/runs/{rid}/cancel", headers=h)
            assert r.status_code == 200, r.text
        done = await s.wait_run(rid, h)
        assert done["status"] == "cancelled" and done["steps"] == [] and done["started_at"] is None
        async with asyncio.timeout(10):
            await s.baton.bot.queue.wait_idle()
        assert (await s.http.get(f"/api/v1/runs/{rid}", headers=h)).json()["status"] == "cancelled"
