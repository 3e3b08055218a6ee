"""Scale-out on PostgreSQL: 2 `baton worker` processes, a front process, SIGKILLs during the load.

Usage:
    python bench/scale_out.py postgresql+asyncpg://postgres@127.0.0.1:5432/test
        [--runs 2000] [--threads 200] [--paced 300] [--rate 100] [--kills 3] [--concurrency 20]

What it does (issue 15, "Done when"):

1. Creates a fresh database next to the one in the URL (dropped at the end), runs
   ``baton db upgrade`` (Alembic + procrastinate's schema) and installs a trigger that
   records every write over an already *succeeded* step record (``bench_repeats``):
   that is what a completed step executed again would do, whatever the code path.
2. Starts 2 ``baton worker`` processes (``[queue] mode = "workers"``).
3. Paced phase: a front process (``bench/scale_out.py --front``, Baton's
   :class:`bot.queue.Admission` in workers mode) first admits ``--warmup`` runs and waits
   for them (a front's start-up — opening its pool's connections, first-use paths — is not
   what a running deployment's start latency is), then admits ``--paced`` runs at ``--rate``
   runs/s; admission-to-start is ``runs.started_at - runs.created_at`` (same clock) of those.
4. Load phase: the front admits ``--runs`` runs of ``echo THEN echo AND echo`` over
   ``--threads`` threads as fast as it can; meanwhile this script kills -9 a worker
   ``--kills`` times (at evenly spaced points of the load) and starts a new one at
   once, and measures how long until the dead worker's runs are claimed by a live one.
5. Waits for every run to end and checks: lost (not ``succeeded``), repeated completed
   steps (the trigger), per-thread order violations (a run started before the
   previous run of its thread finished).

Prints a table, then one JSON line with ``runs_per_s``, ``start_p99_ms``, ``lost``,
``repeated_steps``, ``order_violations``, ``resume_s`` (targets: ≥ 300, < 50, 0, 0, 0, < 10).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from procstat import BackendCPU, cpu_s, dsn  # noqa: E402

TARGETS = {"runs_per_s": 300.0, "start_p99_ms": 50.0, "lost": 0, "repeated_steps": 0, "order_violations": 0, "resume_s": 10.0}

TRIGGER = """
CREATE TABLE bench_repeats (run_id bigint, node_id text, at timestamptz DEFAULT now());
CREATE FUNCTION bench_note_repeat() RETURNS trigger AS $$
BEGIN
  IF OLD.status = 'succeeded' THEN
    INSERT INTO bench_repeats(run_id, node_id) VALUES (OLD.run_id, OLD.node_id);
  END IF;
  RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER bench_repeats BEFORE UPDATE ON step_runs FOR EACH ROW EXECUTE FUNCTION bench_note_repeat();
"""


def pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


# -- the front process ------------------------------------------------------------


async def front(url: str, runs: int, threads: int, rate: float, tag: str, concurrency: int, warmup: int = 0) -> None:
    """Admit ``runs`` runs over ``threads`` threads (paced at ``rate``/s, or unpaced when 0).

    ``warmup``: first admit this many runs (``requested_by="bench-warmup"``, threads of their
    own, at ``rate``) and wait until they have ended, so that what is measured is a running
    front process (its pool's connections open, first-use paths taken), not its start-up."""
    from bot.app import App
    from bot.settings import Settings
    from bot.store import ThreadKey

    app = await App.start(Settings(database_url=url, queue={"mode": "workers"}), {})
    try:
        assert app.admission is not None
        graph_cache = {}
        admit_ms: list[float] = []
        sem = asyncio.Semaphore(concurrency)

        async def one(i: int) -> None:
            key = ThreadKey("bench", "C1", f"{tag}-{i % threads}")
            text = f"echo {tag}-{i} THEN echo b AND echo c"
            graph = graph_cache.get(text) or app.bot.compile(text)
            async with sem:
                t0 = time.perf_counter()
                got = await app.admission.admit(key, graph, requested_by="bench")
                admit_ms.append((time.perf_counter() - t0) * 1000)
            assert got.run_id is not None

        if warmup:
            ids = []
            for i in range(warmup):
                g = app.bot.compile(f"echo warm-{i} THEN echo b AND echo c")
                ids.append((await app.admission.admit(ThreadKey("bench", "C1", f"{tag}-warm-{i}"), g, requested_by="bench-warmup")).run_id)
                await asyncio.sleep(1 / (rate or 100))
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                got = [await app.runs.get(rid) for rid in ids]
                if all(g is not None and g[0].status in ("succeeded", "failed", "cancelled") for g in got):
                    break
                await asyncio.sleep(0.1)
        t0, c0 = time.perf_counter(), time.process_time()
        if rate > 0:
            tasks = []
            for i in range(runs):
                delay = t0 + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(one(i)))
            await asyncio.gather(*tasks)
        else:
            # per thread in order (FIFO is per thread), threads concurrently
            async def thread_chain(t: int) -> None:
                for i in range(t, runs, threads):
                    await one(i)

            await asyncio.gather(*(thread_chain(t) for t in range(threads)))
        took = time.perf_counter() - t0
        print(json.dumps({
            "admitted": runs, "admit_s": took, "admit_p50_ms": pct(admit_ms, 50), "admit_p99_ms": pct(admit_ms, 99), "cpu_s": time.process_time() - c0,
        }), flush=True)
    finally:
        await app.aclose()


# -- the orchestrator ------------------------------------------------------------------


class Bench:
    def __init__(self, base_url: str, args: argparse.Namespace) -> None:
        self.args = args
        self.dbname = f"baton_scaleperf_{uuid.uuid4().hex[:10]}"
        self.admin_url = base_url
        self.url = f"{base_url.rsplit('/', 1)[0]}/{self.dbname}"
        self.tmp = Path(os.environ.get("TMPDIR", "/tmp")) / self.dbname
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.env = {
            **os.environ, "PYTHONPATH": str(REPO), "BATON_DATABASE_URL": self.url, "BATON_QUEUE__MODE": "workers",
            "BATON_QUEUE__STALLED_AFTER": str(args.stalled_after), "BATON_DATA_DIR": str(self.tmp), "BATON_LOG_LEVEL": "WARNING",
        }
        self.workers: dict[str, subprocess.Popen[bytes]] = {}
        self.n_started = 0
        self.cpu_dead = 0.0  # CPU seconds of the workers killed so far (read just before the kill)
        self.conn: Any = None
        self.pg = BackendCPU()  # the bench database's backends (PostgreSQL on this host)

    async def sql(self, query: str, *params: object, db: str | None = None) -> list:
        """Run ``query`` on the bench database (one connection kept: the progress polls must not
        cost a PostgreSQL backend each), or once on ``db``."""
        import asyncpg

        if db is None:
            if self.conn is None or self.conn.is_closed():
                self.conn = await asyncpg.connect(dsn(self.url))
            return await self.conn.fetch(query, *params)
        conn = await asyncpg.connect(dsn(db))
        try:
            return await conn.fetch(query, *params)
        finally:
            await conn.close()

    def start_worker(self) -> str:
        self.n_started += 1
        name = f"w{self.n_started}"
        log = open(self.tmp / f"{name}.log", "wb")
        self.workers[name] = subprocess.Popen(
            [sys.executable, "-m", "bot.cli", "worker", "--name", name, "--concurrency", str(self.args.concurrency)],
            env=self.env, cwd=REPO, stdout=log, stderr=log,
        )
        return name

    def kill(self, name: str) -> None:
        p = self.workers.pop(name)
        self.cpu_dead += cpu_s(p.pid)
        p.send_signal(signal.SIGKILL)
        p.wait()

    def run_front(self, runs: int, rate: float, tag: str, warmup: int = 0) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, __file__, "--front", self.url, "--runs", str(runs), "--threads", str(self.args.threads),
             "--rate", str(rate), "--tag", tag, "--concurrency", str(self.args.front_concurrency), "--warmup", str(warmup)],
            env=self.env, cwd=REPO, stdout=subprocess.PIPE, text=True,
        )

    async def sample_backends(self) -> None:
        """Note the CPU seconds of every PostgreSQL backend of the bench database (they come and go)."""
        await self.pg.sample(self.sql)

    def pg_cpu(self) -> float:
        """CPU seconds the bench database's backends used, as far as :meth:`sample_backends` saw."""
        return self.pg.total()

    def workers_cpu(self) -> float:
        """CPU seconds used by every worker started so far (killed ones included)."""
        return self.cpu_dead + sum(cpu_s(p.pid) for p in self.workers.values())

    async def workers_ready(self, n: int, timeout: float) -> None:
        """Wait until ``n`` workers registered with procrastinate (imported, pools open, fetching)."""
        deadline = time.monotonic() + timeout
        while (await self.sql("select count(*) from procrastinate_workers"))[0][0] < n:
            if time.monotonic() > deadline:
                raise SystemExit(f"fewer than {n} workers started within {timeout} s")
            await asyncio.sleep(0.2)

    async def wait_terminal(self, total: int, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            n = (await self.sql("select count(*) from runs where status in ('succeeded','failed','cancelled')"))[0][0]
            await self.sample_backends()
            if n >= total:
                return time.monotonic()
            await asyncio.sleep(0.2)
        return time.monotonic()

    async def resume_after_kill(self, name: str) -> float | None:
        """Kill ``name``; returns seconds until its running runs were claimed elsewhere (None: it had none)."""
        rows = await self.sql("select id from runs where status='running' and worker=$1", name)
        self.kill(name)
        t0 = time.monotonic()
        self.start_worker()
        ids = [r[0] for r in rows]
        if not ids:
            return None
        while time.monotonic() - t0 < 60:
            left = await self.sql("select count(*) from runs where id = any($1::bigint[]) and status='running' and worker=$2", ids, name)
            if left[0][0] == 0:
                return time.monotonic() - t0
            await asyncio.sleep(0.05)
        return float("inf")

    async def main(self) -> dict:
        a = self.args
        await self.sql(f'CREATE DATABASE "{self.dbname}"', db=self.admin_url)
        try:
            up = subprocess.run([sys.executable, "-m", "bot.cli", "db", "upgrade"], env=self.env, cwd=REPO, capture_output=True, text=True)
            if up.returncode != 0:
                raise SystemExit(f"baton db upgrade failed: {up.stderr}")
            import asyncpg

            conn = await asyncpg.connect(dsn(self.url))
            await conn.execute(TRIGGER)
            await conn.close()
            for _ in range(a.workers):
                self.start_worker()
            await self.workers_ready(a.workers, 120)

            # paced phase
            cpu0 = self.workers_cpu()
            p = self.run_front(a.paced, a.rate, "paced", a.warmup)
            out, _ = p.communicate(timeout=600)
            paced_front = json.loads(out.strip().splitlines()[-1])
            await self.wait_terminal(a.paced + a.warmup, 300)
            cpu_paced = self.workers_cpu() - cpu0
            lat = [float(r[0]) * 1000 for r in await self.sql(
                "select extract(epoch from started_at - created_at) from runs"
                " where started_at is not null and requested_by <> 'bench-warmup'")]
            start_p50, start_p99 = pct(lat, 50), pct(lat, 99)

            # load phase with kills
            before = a.paced + a.warmup
            cpu0 = self.workers_cpu()
            await self.sample_backends()
            pg0 = self.pg_cpu()
            load_at_start = os.getloadavg()[0]
            t0 = time.monotonic()
            f = self.run_front(a.runs, 0, "load")
            resumes: list[float] = []
            marks = [before + a.runs * (k + 1) / (a.kills + 1) for k in range(a.kills)]
            for mark in marks:
                while True:
                    n = (await self.sql("select count(*) from runs where status in ('succeeded','failed','cancelled')"))[0][0]
                    await self.sample_backends()
                    if n >= mark or time.monotonic() - t0 > 600:
                        break
                    await asyncio.sleep(0.1)
                victim = next(iter(self.workers))
                r = await self.resume_after_kill(victim)
                if r is not None:
                    resumes.append(r)
            while f.poll() is None:  # the front's backends end with it
                await self.sample_backends()
                await asyncio.sleep(0.2)
            out, _ = f.communicate(timeout=900)
            front_stats = json.loads(out.strip().splitlines()[-1])
            t_end = await self.wait_terminal(before + a.runs, 900)
            runs_per_s = a.runs / (t_end - t0)
            cpu_load = self.workers_cpu() - cpu0
            await self.sample_backends()
            pg_load = self.pg_cpu() - pg0

            lost = (await self.sql("select count(*) from runs where status <> 'succeeded'"))[0][0]
            repeated = (await self.sql("select count(*) from bench_repeats"))[0][0]
            order = (await self.sql("""
                select count(*) from (
                  select started_at, lag(finished_at) over (partition by thread_id order by id) as prev_end from runs
                ) x where prev_end is not null and started_at < prev_end"""))[0][0]
            attempts = (await self.sql("select count(*) from runs where attempts > 1"))[0][0]
            return {
                "runs_per_s": round(runs_per_s, 1),
                "start_p50_ms": round(start_p50, 1),
                "start_p99_ms": round(start_p99, 1),
                "lost": int(lost),
                "repeated_steps": int(repeated),
                "order_violations": int(order),
                "resume_s": round(max(resumes), 2) if resumes else None,
                "kills": a.kills,
                "runs_resumed": int(attempts),
                "admit_p99_ms": round(front_stats["admit_p99_ms"], 1),
                "admit_p99_ms_paced": round(paced_front["admit_p99_ms"], 1),
                "admitted_per_s": round(a.runs / front_stats["admit_s"], 1),
                "worker_cpu_ms_per_run": round(cpu_load * 1000 / a.runs, 2),
                "worker_cpu_ms_per_run_paced": round(cpu_paced * 1000 / (a.paced + a.warmup), 2),
                "postgres_cpu_ms_per_run": round(pg_load * 1000 / a.runs, 2),
                "front_cpu_ms_per_run": round(front_stats["cpu_s"] * 1000 / a.runs, 2),
                "front_cpu_ms_per_run_paced": round(paced_front["cpu_s"] * 1000 / a.paced, 2),
                "loadavg_1m_at_load_start": load_at_start,
                "runs": a.runs,
                "threads": a.threads,
                "workers": a.workers,
                "loadavg_1m": os.getloadavg()[0],
                "cpus": os.cpu_count(),
            }
        finally:
            for name in list(self.workers):
                self.workers[name].send_signal(signal.SIGTERM)
            for p in self.workers.values():
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
            if self.conn is not None:
                await self.conn.close()
            await self.sql(f'DROP DATABASE IF EXISTS "{self.dbname}" WITH (FORCE)', db=self.admin_url)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("url", help="PostgreSQL URL (a fresh database is created next to it)")
    ap.add_argument("--runs", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=200)
    ap.add_argument("--paced", type=int, default=300)
    ap.add_argument("--rate", type=float, default=100.0)
    ap.add_argument("--kills", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=20, help="runs per worker at once")
    ap.add_argument("--front-concurrency", type=int, default=50)
    ap.add_argument("--stalled-after", type=float, default=4.0)
    ap.add_argument("--warmup", type=int, default=20, help="runs the paced front admits (and waits for) before it is measured")
    ap.add_argument("--front", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--tag", default="load", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.front:
        asyncio.run(front(a.url, a.runs, a.threads, a.rate, a.tag, a.front_concurrency, a.warmup))
        return
    res = asyncio.run(Bench(a.url, a).main())
    rows = [
        ("runs/s (load phase, with kills)", res["runs_per_s"], "≥ 300"),
        ("admission-to-start p50 (paced) ms", res["start_p50_ms"], ""),
        ("admission-to-start p99 (paced) ms", res["start_p99_ms"], "< 50"),
        ("runs lost", res["lost"], "0"),
        ("completed steps re-executed", res["repeated_steps"], "0"),
        ("per-thread order violations", res["order_violations"], "0"),
        ("dead worker's runs resumed in (max) s", res["resume_s"], "< 10"),
        ("kills / runs resumed", f"{res['kills']} / {res['runs_resumed']}", ""),
        ("admission p99 (front, load / paced) ms", f"{res['admit_p99_ms']} / {res['admit_p99_ms_paced']}", ""),
        ("admitted runs/s (front, load phase)", res["admitted_per_s"], ""),
        ("worker CPU ms per run (load / paced)", f"{res['worker_cpu_ms_per_run']} / {res['worker_cpu_ms_per_run_paced']}", ""),
        ("front CPU ms per run (load / paced)", f"{res['front_cpu_ms_per_run']} / {res['front_cpu_ms_per_run_paced']}", ""),
        ("PostgreSQL backends' CPU ms per run (load)", res["postgres_cpu_ms_per_run"], ""),
        ("machine load (1 min, start / end of load) / CPUs", f"{res['loadavg_1m_at_load_start']:.2f} / {res['loadavg_1m']:.2f} / {res['cpus']}", ""),
    ]
    print(f"{res['runs']} runs over {res['threads']} threads, {res['workers']} workers")
    for name, value, target in rows:
        print(f"  {name:<40} {value!s:>12}  {target}")
    ok = (
        res["runs_per_s"] >= TARGETS["runs_per_s"] and res["start_p99_ms"] < TARGETS["start_p99_ms"] and res["lost"] == 0
        and res["repeated_steps"] == 0 and res["order_violations"] == 0 and (res["resume_s"] or 0) < TARGETS["resume_s"]
    )
    print(json.dumps({**res, "ok": ok}))


if __name__ == "__main__":
    main()
