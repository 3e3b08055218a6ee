"""Dashboard speed: the runs page (and its filtered, paged and live-refresh variants) with 10,000 runs stored.

Usage:
    python bench/dashboard.py [--data DIR] [--runs 10000] [--requests 60]

Fills a SQLite database in DIR (default: a temporary folder) with ``--runs`` finished
runs (3 step records each, over 100 threads, 5 workflows, 4 users), serves the real
``baton serve`` app (uvicorn on a free loopback port, the dashboard mounted), signs in
with an API token and times sequential GETs of each page variant. Times are wall
time per request measured by the client on loopback, so they bound the server time
from above. Prints a table, then one line of JSON. Target (issue 19): the runs page
answers in < 300 ms with 10,000 runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402
from sqlalchemy import bindparam, select  # noqa: E402
import uvicorn  # noqa: E402

from bot.app import App  # noqa: E402
from bot.dashboard import router as dashboard  # noqa: E402
from bot.server.app import create_app  # noqa: E402
from bot.server.auth import TokenStore  # noqa: E402
from bot.settings import Settings  # noqa: E402
from bot.store.tables import runs, step_runs, threads  # noqa: E402
from bot.store.tx import Body  # noqa: E402
from engine.graph import Edge, Graph, Node  # noqa: E402

WORKFLOWS = ("ops-check", "disk-check", "system-report", "standup-report", None)
STATUSES = ("succeeded", "succeeded", "succeeded", "failed", "cancelled")
USERS = ("api:ci", "U123", "U456", "schedule #1")


def _insert(table: Any, row: dict[str, object]) -> Any:
    """``INSERT`` of ``row``'s columns, each a named parameter (a Core statement for ``Database.run``)."""
    return table.insert().values(**{c: bindparam(c) for c in row})


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def fill(baton: App, n: int) -> None:
    """Insert ``n`` finished runs with 3 steps each (one transaction per 2,000 runs)."""
    graph = Graph(
        nodes=(Node("s1", "builtin", "echo a"), Node("s2", "builtin", "echo b", edges=(Edge("s1"),)), Node("s3", "builtin", "echo c", edges=(Edge("s2"),))),
        exit="s3",
    ).to_json()
    t0 = datetime.now(UTC) - timedelta(days=6)
    made = [{"platform": "api", "channel": "bench", "thread": f"t{i}", "created_at": t0, "updated_at": t0} for i in range(100)]

    def make_threads() -> Body[list[int]]:
        yield _insert(threads, made[0]), made
        return [r[0] for r in (yield select(threads.c.id).where(threads.c.channel == "bench"), None).rows]

    # writes go through the database's one writer connection on SQLite (Database.run, issue 13)
    tids = await baton.db.run(make_threads, "bench threads")
    done = 0
    while done < n:
        batch = min(2000, n - done)
        rows, steps = [], []
        for i in range(done, done + batch):
            created = t0 + timedelta(seconds=50 * i)
            wf = WORKFLOWS[i % len(WORKFLOWS)]
            rows.append({
                "id": i + 1, "thread_id": tids[i % len(tids)], "source": wf or f"echo run {i}", "name": wf, "graph": graph,
                "status": STATUSES[i % len(STATUSES)], "error": None, "requested_by": USERS[i % len(USERS)], "rerun_of": None,
                "created_at": created, "started_at": created, "finished_at": created + timedelta(seconds=1 + i % 7),
            })
            for k, nid in enumerate(("s1", "s2", "s3")):
                steps.append({
                    "run_id": i + 1, "node_id": nid, "label": f"echo {nid}", "kind": "builtin", "status": "succeeded", "attempt": 1,
                    "output": nid, "error": None, "started_at": created + timedelta(seconds=k), "finished_at": created + timedelta(seconds=k + 1),
                    "tokens_in": 0, "tokens_out": 0, "cost_usd": 0.0, "reused": False, "cached": False,
                })
        def batch_body(rows: list[dict[str, object]] = rows, steps: list[dict[str, object]] = steps) -> Body[None]:
            yield _insert(runs, rows[0]), rows
            yield _insert(step_runs, steps[0]), steps

        await baton.db.run(batch_body, "bench runs")
        done += batch


async def main() -> dict[str, float]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=None, help="folder for the SQLite database (default: a temporary folder)")
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--requests", type=int, default=60, help="requests per page variant")
    args = ap.parse_args()
    data = args.data or Path(tempfile.mkdtemp())
    data.mkdir(parents=True, exist_ok=True)
    for f in data.glob("baton.db*"):
        f.unlink()
    settings = Settings(data_dir=data)
    baton = await App.start(settings, {})
    t = time.perf_counter()
    await fill(baton, args.runs)
    fill_s = time.perf_counter() - t
    token = await TokenStore(baton.db).create("bench", ("runs:read",))
    app = create_app(settings, baton=baton, extra_routers=[dashboard], resume=False)
    port = _port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="on"))
    task = asyncio.create_task(server.serve())
    results: dict[str, list[float]] = {}
    try:
        while not server.started:
            await asyncio.sleep(0.02)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
            r = await c.post("/login", data={"token": token})
            assert r.status_code == 303, r.text
            first = await c.get("/")
            assert first.status_code == 200 and first.text.count('<tr id="run-') == 50, "runs page did not list 50 runs"
            cursor = first.text.split('cursor=')[1].split('"')[0]
            variants = {
                "runs page /": "/",
                "filter status=failed": "/?status=failed",
                "filter workflow=ops-check": "/?workflow=ops-check",
                "filter user=U123": "/?user=U123",
                "filter thread": "/?thread=api:bench:t7",
                "page 2 (cursor)": f"/?cursor={cursor}",
                "live refresh rows": "/ui/runs/rows",
            }
            for name, path in variants.items():
                await c.get(path)  # warm
                xs = []
                for _ in range(args.requests):
                    t = time.perf_counter()
                    resp = await c.get(path)
                    xs.append((time.perf_counter() - t) * 1000)
                    assert resp.status_code == 200
                results[name] = xs
    finally:
        server.should_exit = True
        await task
        await baton.aclose()

    def pct(xs: list[float], q: float) -> float:
        s = sorted(xs)
        return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]

    print(f"{args.runs} runs ({3 * args.runs} step records) stored in {fill_s:.1f}s; {args.requests} requests per variant, loopback wall time")
    print(f"{'page':<28}{'p50 ms':>10}{'p95 ms':>10}{'max ms':>10}")
    for name, xs in results.items():
        print(f"{name:<28}{statistics.median(xs):>10.1f}{pct(xs, 0.95):>10.1f}{max(xs):>10.1f}")
    worst_p95 = max(pct(xs, 0.95) for xs in results.values())
    out = {
        "runs": args.runs,
        "runs_page_p50_ms": round(statistics.median(results["runs page /"]), 2),
        "runs_page_p95_ms": round(pct(results["runs page /"], 0.95), 2),
        "worst_variant_p95_ms": round(worst_p95, 2),
        "target_ms": 300,
        "ok": worst_p95 < 300,
    }
    print(f"target: runs page < 300 ms -> {'met' if out['ok'] else 'NOT met'}")
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    asyncio.run(main())
