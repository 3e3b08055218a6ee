"""Database round trips and CPU per run on the PostgreSQL scale-out path, front and worker side.

Usage:
    python bench/scale_roundtrips.py postgresql+asyncpg://postgres@127.0.0.1:5432/test [--runs 300] [--threads 30]

In one process (a fresh database next to the URL's, dropped at the end): admits
``--runs`` runs of ``echo … THEN echo b AND echo c`` through Baton's
:class:`bot.queue.Admission` in workers mode (each defers its procrastinate job), then
executes them with :class:`bot.queue.scale.RunWorker.execute` (what a ``baton worker``
job does, without procrastinate's fetch and finish). Counts, through SQLAlchemy's
engine events (profiling only: nothing is installed in production code), the
statements, ``BEGIN``/``COMMIT`` pairs and pool checkouts (with ``pool_pre_ping``,
as on engines other than asyncpg, 1-3 round trips each) per run on Baton's engine, and measures CPU per run
(``time.process_time``) of both phases. Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


class Counts:
    def __init__(self) -> None:
        self.c: Counter[str] = Counter()

    def install(self, engine) -> None:  # type: ignore[no-untyped-def]
        from sqlalchemy import event

        sync = engine.sync_engine
        event.listen(sync, "before_cursor_execute", lambda *a, **k: self._stmt(a[2], a[4]))
        event.listen(sync, "begin", lambda conn: self.c.update(["begin"]))
        event.listen(sync, "commit", lambda conn: self.c.update(["commit"]))
        event.listen(sync, "rollback", lambda conn: self.c.update(["rollback"]))
        event.listen(sync.pool, "checkout", lambda *a: self.c.update(["checkout"]))

    def _stmt(self, sql: str, executemany: bool) -> None:
        self.c["statements"] += 1
        self.c["stmt:" + " ".join(sql.split()[:3])[:40]] += 1

    def snap(self) -> Counter[str]:
        return Counter(self.c)


async def main(url: str, n: int, n_threads: int) -> dict:
    import asyncpg

    from bot.app import App
    from bot.queue.scale import RunWorker, apply_schema
    from bot.settings import Settings
    from bot.store import ThreadKey
    from bot.store.db import upgrade

    name = f"baton_scaleperf2_rt_{uuid.uuid4().hex[:8]}"
    admin = url.replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncpg.connect(admin)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    db_url = f"{url.rsplit('/', 1)[0]}/{name}"
    try:
        await upgrade(db_url)
        await apply_schema(db_url)
        settings = Settings(database_url=db_url, queue={"mode": "workers"})
        app = await App.start(settings, {}, migrate=False)
        try:
            counts = Counts()
            counts.install(app.runs.db.engine)
            graph_text = "echo x THEN echo b AND echo c"
            keys = [ThreadKey("bench", "C1", f"t{i}") for i in range(n_threads)]
            # warm up: threads known, statements prepared, pools open
            warm = []
            for k in keys:
                got = await app.admission.admit(k, app.bot.compile(graph_text), requested_by="bench")
                warm.append(got.run_id)
            worker = RunWorker(app, settings.queue, "prof")
            for rid in warm:
                await worker.execute(rid)

            graph = app.bot.compile(graph_text)
            fprof = None
            if os.environ.get("PROFILE_FRONT"):
                import cProfile

                fprof = cProfile.Profile()
                fprof.enable()
            c0, p0 = counts.snap(), time.process_time()
            ids: list[int] = []

            async def chain(t: int) -> None:
                for i in range(t, n, n_threads):
                    got = await app.admission.admit(keys[t], graph, requested_by="bench")
                    assert got.run_id is not None
                    ids.append(got.run_id)

            await asyncio.gather(*(chain(t) for t in range(n_threads)))
            front_cpu = time.process_time() - p0
            front = counts.snap() - c0
            if fprof is not None:
                import pstats

                fprof.disable()
                pstats.Stats(fprof, stream=sys.stderr).sort_stats(os.environ["PROFILE_FRONT"]).print_stats(30)

            prof = None
            if os.environ.get("PROFILE"):
                import cProfile

                prof = cProfile.Profile()
                prof.enable()
            c1, p1 = counts.snap(), time.process_time()
            by_thread: dict[int, list[int]] = {}
            for rid in sorted(ids):
                by_thread.setdefault(rid % n_threads, []).append(rid)
            sem = asyncio.Semaphore(20)

            async def run_all(rids: list[int]) -> None:
                for rid in rids:
                    async with sem:
                        await worker.execute(rid)

            await asyncio.gather(*(run_all(r) for r in by_thread.values()))
            worker_cpu = time.process_time() - p1
            back = counts.snap() - c1
            if prof is not None:
                import pstats

                prof.disable()
                pstats.Stats(prof, stream=sys.stderr).sort_stats(os.environ["PROFILE"]).print_stats(35)
            await worker.aclose()
            ok = await app.runs.db.execute(
                __import__("sqlalchemy").text("select count(*) from runs where status='succeeded'"), None, what="count"
            )
        finally:
            await app.aclose()
    finally:
        conn = await asyncpg.connect(admin)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()

    def per(c: Counter[str], key: str) -> float:
        return round(c[key] / n, 2)

    res = {
        "runs": n,
        "succeeded": int(ok[0][0]),
        "front_statements_per_run": per(front, "statements"),
        "front_transactions_per_run": per(front, "begin"),
        "front_checkouts_per_run": per(front, "checkout"),
        "front_cpu_ms_per_run": round(front_cpu * 1000 / n, 2),
        "worker_statements_per_run": per(back, "statements"),
        "worker_transactions_per_run": per(back, "begin"),
        "worker_checkouts_per_run": per(back, "checkout"),
        "worker_cpu_ms_per_run": round(worker_cpu * 1000 / n, 2),
        "front_detail": {k: per(front, k) for k in sorted(front) if k.startswith("stmt:")},
        "worker_detail": {k: per(back, k) for k in sorted(back) if k.startswith("stmt:")},
    }
    return res


def cli() -> None:
    import os

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("url")
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--threads", type=int, default=30)
    a = ap.parse_args()
    res = asyncio.run(main(a.url, a.runs, a.threads))
    res["loadavg_1m"] = os.getloadavg()[0]
    print(f"{a.runs} runs over {a.threads} threads (load {res['loadavg_1m']:.2f})")
    for side in ("front", "worker"):
        print(f"  {side}: {res[side + '_statements_per_run']} statements, {res[side + '_transactions_per_run']} transactions, "
              f"{res[side + '_checkouts_per_run']} pool checkouts, {res[side + '_cpu_ms_per_run']} ms CPU per run")
        for k, v in res[side + "_detail"].items():
            print(f"      {v:>6}  {k[5:]}")
    print(json.dumps(res))


if __name__ == "__main__":
    cli()
