"""The ceiling of the scale-out path on this machine: procrastinate alone, no-op jobs.

Usage:
    python bench/procrastinate_ceiling.py postgresql+asyncpg://postgres@127.0.0.1:5432/test
        [--jobs 3000] [--locks 200] [--workers 2] [--concurrency 20] [--front-concurrency 50]
        [--pool baton|procrastinate]

What it does: creates a fresh database next to the URL's (dropped at the end), applies
procrastinate's schema (:func:`bot.queue.scale.apply_schema`), starts ``--workers``
worker processes running a no-op task on Baton's queue with the options ``baton worker``
uses (:func:`bot.queue.scale.make_app` with its pool of 8, ``concurrency``, Baton's
default ``poll_interval``/``heartbeat``/``stalled_after``, ``delete_jobs="successful"``;
of the reaper only :func:`bot.queue.scale.refresh_queue_stats` each second, unless
``--no-stats``; no Baton work at all), then one front process defers ``--jobs`` jobs over
``--locks`` locks through Baton's own deferral path (:meth:`bot.queue.scale.ScaleOut.enqueue`:
a thread lock and a queueing lock per job, concurrent deferrals batched), the locks
deferred concurrently and each lock's jobs in order, like ``bench/scale_out.py``.

Measures jobs/s (first deferral to the last job deleted) and CPU per job of the front,
the workers and PostgreSQL's backends (``/proc``, user + system; the backends' CPU is
read from ``pg_stat_activity``'s pids, so it needs the bench to run on the database's host).
``--pool checked`` uses autocommit connections with procrastinate's ``check_connection`` (one
more round trip per query: Baton's pool before), ``--pool procrastinate`` procrastinate's
default pool (also a transaction per query), for comparison. Prints a table, then one JSON line.

What the figure means: Baton's run path adds its own work to every job (the claim, the
checkpoints, the result message with the final status, and the front's admission); no
Baton runs/s figure can be above this one on the same machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from procstat import BackendCPU, cpu_s, dsn  # noqa: E402


def make(url: str, pool: str) -> Any:
    """The procrastinate app a ``baton worker`` uses (pool of 8), its task replaced by a no-op."""
    import procrastinate

    from bot.queue.scale import QUEUE, TASK, conninfo, make_app

    async def autocommit(conn: Any) -> None:
        await conn.set_autocommit(True)

    if pool == "baton":
        app = make_app(url, pool_size=8)
    elif pool == "checked":  # Baton's pool before it replaced procrastinate's check_connection
        app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=conninfo(url), min_size=2, max_size=8, configure=autocommit))
    else:
        app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=conninfo(url), min_size=2, max_size=8))
    app.tasks.pop(TASK, None)

    async def noop(context: Any, run_id: int) -> None:
        return None

    app.task(name=TASK, queue=QUEUE, pass_context=True)(noop)
    return app


async def worker(url: str, pool: str, concurrency: int, name: str, stats: bool) -> None:
    from bot.queue.scale import QUEUE, refresh_queue_stats
    from bot.settings import QueueSettings

    q = QueueSettings()
    app = make(url, pool)

    async def refresh() -> None:  # what Baton's reaper does each second besides its own sweeps
        while True:
            await asyncio.sleep(1.0)
            await refresh_queue_stats(app)

    async with app.open_async():
        refresher = asyncio.create_task(refresh()) if stats else None
        await app.run_worker_async(
            queues=[QUEUE],
            concurrency=concurrency,
            name=name,
            fetch_job_polling_interval=q.poll_interval,
            update_heartbeat_interval=q.heartbeat,
            stalled_worker_timeout=q.stalled_after,
            delete_jobs="successful",
            shutdown_graceful_timeout=None,
        )
        if refresher is not None:
            refresher.cancel()


async def front(url: str, pool: str, jobs: int, locks: int, concurrency: int) -> None:
    """Defer ``jobs`` jobs through :meth:`ScaleOut.enqueue` (lock ``i % locks``), locks concurrently."""
    from bot.queue.scale import ScaleOut
    from bot.store import ThreadKey

    scale = ScaleOut(url, runs=None, sessions=None)  # type: ignore[arg-type]  # enqueue touches neither
    scale.app = make(url, pool)
    await scale.open()
    try:
        sem = asyncio.Semaphore(concurrency)

        async def chain(t: int) -> None:
            key = ThreadKey("bench", "C1", f"t{t}")
            for i in range(t, jobs, locks):
                async with sem:
                    await scale.enqueue(i + 1, key)

        c0, t0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(chain(t) for t in range(locks)))
        print(json.dumps({"deferred": jobs, "defer_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0}), flush=True)
    finally:
        await scale.aclose()


async def orchestrate(a: argparse.Namespace) -> dict[str, Any]:
    import asyncpg

    from bot.queue.scale import apply_schema

    name = f"baton_ceiling_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(dsn(a.url))
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    url = f"{a.url.rsplit('/', 1)[0]}/{name}"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs: list[subprocess.Popen[bytes]] = []
    conn = None
    try:
        await apply_schema(url)
        conn = await asyncpg.connect(dsn(url))
        for i in range(a.workers):
            procs.append(subprocess.Popen(
                [sys.executable, __file__, url, "--role", "worker", "--pool", a.pool, "--concurrency", str(a.concurrency), "--name", f"w{i}",
             *(["--no-stats"] if a.no_stats else [])],
                env=env, cwd=REPO,
            ))
        async with asyncio.timeout(120):
            while (await conn.fetchval("select count(*) from procrastinate_workers")) < a.workers:
                await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)  # pools filled, LISTENs up

        backends = BackendCPU()
        await backends.sample(conn.fetch)
        backends0 = backends.total()
        workers0 = sum(cpu_s(p.pid) for p in procs)
        load0 = os.getloadavg()[0]
        t0 = time.monotonic()
        f = subprocess.Popen(
            [sys.executable, __file__, url, "--role", "front", "--pool", a.pool, "--jobs", str(a.jobs), "--locks", str(a.locks),
             "--front-concurrency", str(a.front_concurrency)],
            env=env, cwd=REPO, stdout=subprocess.PIPE,
        )
        while f.poll() is None:  # the front's backends come and go with it: sample their CPU while it runs
            await backends.sample(conn.fetch)
            await asyncio.sleep(0.2)
        front_stats = json.loads(f.stdout.read().decode().strip().splitlines()[-1])  # type: ignore[union-attr]
        async with asyncio.timeout(600):
            while (await conn.fetchval("select count(*) from procrastinate_jobs where status in ('todo', 'doing')")) > 0:
                await backends.sample(conn.fetch)
                await asyncio.sleep(0.05)
        took = time.monotonic() - t0
        failed = await conn.fetchval("select count(*) from procrastinate_jobs where status <> 'succeeded'")
        workers_cpu = sum(cpu_s(p.pid) for p in procs) - workers0
        await backends.sample(conn.fetch)
        pg_cpu = backends.total() - backends0
        return {
            "jobs_per_s": round(a.jobs / took, 1),
            "worker_cpu_ms_per_job": round(workers_cpu * 1000 / a.jobs, 3),
            "front_cpu_ms_per_job": round(front_stats["cpu_s"] * 1000 / a.jobs, 3),
            "postgres_cpu_ms_per_job": round(pg_cpu * 1000 / a.jobs, 3),
            "deferred_per_s": round(a.jobs / front_stats["defer_s"], 1),
            "failed": int(failed),
            "jobs": a.jobs, "locks": a.locks, "workers": a.workers, "concurrency": a.concurrency, "pool": a.pool, "stats": not a.no_stats,
            "loadavg_1m_at_start": load0, "loadavg_1m": os.getloadavg()[0], "cpus": os.cpu_count(),
        }
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if conn is not None:
            await conn.close()
        admin = await asyncpg.connect(dsn(a.url))
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("url", help="PostgreSQL URL (a fresh database is created next to it)")
    ap.add_argument("--jobs", type=int, default=3000)
    ap.add_argument("--locks", type=int, default=200)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=20)
    ap.add_argument("--front-concurrency", type=int, default=50)
    ap.add_argument("--pool", choices=["baton", "checked", "procrastinate"], default="baton")
    ap.add_argument("--no-stats", action="store_true", help="workers do not refresh the jobs table's statistics (refresh_queue_stats)")
    ap.add_argument("--role", choices=["bench", "worker", "front"], default="bench", help=argparse.SUPPRESS)
    ap.add_argument("--name", default="w", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.role == "worker":
        try:
            asyncio.run(worker(a.url, a.pool, a.concurrency, a.name, not a.no_stats))
        except KeyboardInterrupt:
            pass
        return
    if a.role == "front":
        asyncio.run(front(a.url, a.pool, a.jobs, a.locks, a.front_concurrency))
        return
    res = asyncio.run(orchestrate(a))
    rows = [
        ("no-op jobs/s (defer to deleted)", res["jobs_per_s"]),
        ("deferred jobs/s (front)", res["deferred_per_s"]),
        ("worker CPU ms per job (all workers)", res["worker_cpu_ms_per_job"]),
        ("front CPU ms per job", res["front_cpu_ms_per_job"]),
        ("PostgreSQL backends' CPU ms per job", res["postgres_cpu_ms_per_job"]),
        ("jobs not succeeded", res["failed"]),
        ("machine load (1 min, start / end) / CPUs", f"{res['loadavg_1m_at_start']:.2f} / {res['loadavg_1m']:.2f} / {res['cpus']}"),
    ]
    print(f"{res['jobs']} no-op jobs over {res['locks']} locks, {res['workers']} workers x {res['concurrency']}, pool={res['pool']}, stats refresh={res['stats']}")
    for label, value in rows:
        print(f"  {label:<42} {value!s:>12}")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
