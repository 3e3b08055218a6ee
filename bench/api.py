"""Benchmark ``baton serve``: POST /api/v1/runs latency and admission rate, webhook latency.

Starts ``baton serve`` as a subprocess on SQLite (the database file given by ``--db``,
deleted first), creates a token with ``baton token create``, and runs a local webhook
receiver subscribed to ``run.succeeded``. Then ``--clients`` concurrent clients POST
``--runs`` runs of ``--workflow`` (after a warm-up). Reported:

* POST latency p50/p99 (ms), client side, from request sent to ``201`` received;
* runs admitted per second: ``201`` answers / wall time of the burst;
* webhook delivery latency p50/p99 (ms): receiver's clock at arrival minus the event's
  ``timestamp`` (written when the run's final status committed; same machine clock),
  in a steady phase after the burst (``--steady-rate`` runs/s for ``--steady-seconds``);
  the burst's own webhook latencies are printed too (they include the backlog the
  burst builds up, so they grow with the burst's length);
* server CPU per run and the CPU share the server and the client got (the machine may
  be shared: the admission rate scales with the CPU the server gets); server CPU per POST
  during the burst (runs start at a bounded rate while requests arrive, see
  ``bot.queue.admission.Priority``, so this is mostly admission);
* whether every admitted run completed (a verified ``run.succeeded`` webhook for each).

Targets (issue 18): p99 < 50 ms, >= 500 runs admitted/s on SQLite, webhook p99 < 1 s.
The last line is JSON: ``post_p99_ms``, ``post_p50_ms``, ``admitted_per_s``, ``webhook_p99_ms``, ...,
``all_runs_completed`` and ``ok`` (every target held).

    python bench/api.py --db /tmp/bench-api.db [--runs 2000] [--clients 50]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import aiohttp
import httpx
from aiohttp import web
from standardwebhooks import Webhook

from procstat import cpu_s

REPO = Path(__file__).resolve().parents[1]
KEEPALIVE_S = 2.0
"""Client keep-alive (s): below uvicorn's ``timeout_keep_alive`` (5 s), see the connector."""
SECRET = "whsec_" + base64.b64encode(b"baton-bench-webhook-secret-32byt").decode()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db", required=True, help="SQLite database file to create (deleted first)")
    ap.add_argument("--runs", type=int, default=2000)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--workflow", default="echo bench")
    ap.add_argument("--steady-rate", type=float, default=20.0, help="runs/s of the steady phase (webhook latency)")
    ap.add_argument("--steady-seconds", type=float, default=10.0)
    args = ap.parse_args()

    db = Path(args.db).resolve()
    for suffix in ("", "-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="baton-bench-api-"))

    # webhook receiver (verifies every signature)
    arrivals: dict[int, float] = {}
    bad = 0

    async def receive(request: web.Request) -> web.Response:
        nonlocal bad
        body = await request.read()
        now = time.time()
        try:
            ev = Webhook(SECRET).verify(body, dict(request.headers))
        except Exception:
            bad += 1
            return web.Response(status=400)
        committed = datetime.fromisoformat(ev["timestamp"]).timestamp()
        arrivals.setdefault(ev["data"]["run_id"], now - committed)
        return web.Response(status=204)

    wapp = web.Application()
    wapp.router.add_post("/hook", receive)
    runner = web.AppRunner(wapp, access_log=None)
    await runner.setup()
    hport = _free_port()
    await web.TCPSite(runner, "127.0.0.1", hport).start()

    cfg = tmp / "config"
    cfg.mkdir()
    (cfg / "workflows").symlink_to(REPO / "config" / "workflows")
    (cfg / "baton.toml").write_text(
        (REPO / "config" / "baton.toml").read_text()
        + f'\n[webhooks.bench]\nurl = "http://127.0.0.1:{hport}/hook"\nevents = ["run.succeeded"]\nsecret_env = "BATON_BENCH_WEBHOOK_SECRET"\n'
    )
    env = dict(os.environ)
    env.update(
        PYTHONPATH=str(REPO), BATON_CONFIG_DIR=str(cfg), BATON_DATABASE_URL=f"sqlite+aiosqlite:///{db}",
        BATON_ROUTING__ENCODER="none", BATON_BENCH_WEBHOOK_SECRET=SECRET,
        BATON_SERVER__RATE_LIMIT="1000000", BATON_SERVER__RATE_BURST="1000000", BATON_LOG_LEVEL="WARNING",
    )
    made = subprocess.run([sys.executable, "-m", "bot.cli", "token", "create", "bench", "--scopes", "runs:read,runs:write"],
                          env=env, cwd=tmp, capture_output=True, text=True, check=True)
    token = made.stdout.strip().splitlines()[-1]
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "bot.cli", "serve", "--port", str(port)], env=env, cwd=tmp,
                            stdout=subprocess.DEVNULL, stderr=open(tmp / "serve.log", "w"))
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30, limits=limits) as http:
            async with asyncio.timeout(60):
                while True:
                    try:
                        if (await http.get("/readyz")).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    if proc.poll() is not None:
                        raise SystemExit(f"baton serve exited: see {tmp / 'serve.log'}")
                    await asyncio.sleep(0.1)

            body = json.dumps({"workflow": args.workflow}).encode()
            latencies: list[float] = []
            ids: list[int] = []
            errors = 0
            transport: dict[str, int] = {}  # client-side failures by exception type
            # the load generator is aiohttp (several times less CPU per request than httpx):
            # on a shared 2-core machine the client competes with the server for CPU
            # keep-alive shorter than the server's: uvicorn closes a connection idle for 5 s
            # (timeout_keep_alive), aiohttp keeps one for 15 s by default, and a request sent on a
            # connection the server is closing fails (ServerDisconnectedError / ClientOSError
            # ECONNRESET). That happened when the wait for the burst's webhooks took about 5 s:
            # the steady phase's first POSTs raised, the script died without its JSON line.
            conn = aiohttp.TCPConnector(limit=args.clients, keepalive_timeout=KEEPALIVE_S)
            session = aiohttp.ClientSession(f"http://127.0.0.1:{port}", connector=conn,
                                            headers={**headers, "content-type": "application/json"})

            async def client(n: int, record: bool) -> None:
                nonlocal errors
                for _ in range(n):
                    t0 = time.perf_counter()
                    try:
                        async with session.post("/api/v1/runs", data=body) as r:
                            payload = await r.read()
                            dt = time.perf_counter() - t0
                            if r.status != 201:
                                errors += 1
                                continue
                    except aiohttp.ClientError as e:  # counted (the result is not ok), never fatal
                        errors += 1
                        transport[type(e).__name__] = transport.get(type(e).__name__, 0) + 1
                        continue
                    if record:
                        latencies.append(dt * 1000)
                        ids.append(json.loads(payload)["id"])

            per = max(1, args.warmup // args.clients)
            await asyncio.gather(*(client(per, False) for _ in range(args.clients)))
            per = args.runs // args.clients
            cpu0, own0 = cpu_s(proc.pid), time.process_time()
            t0 = time.perf_counter()
            await asyncio.gather(*(client(per, True) for _ in range(args.clients)))
            wall = time.perf_counter() - t0
            cpu_burst, own_burst = cpu_s(proc.pid) - cpu0, time.process_time() - own0

            deadline = time.monotonic() + 120
            while not set(ids) <= set(arrivals) and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            cpu_total = cpu_s(proc.pid) - cpu0

            # steady phase: webhook latency at a rate the server sustains (not a backlog)
            steady_ids: list[int] = []

            async def fire() -> None:
                nonlocal errors
                try:
                    async with session.post("/api/v1/runs", data=body) as r:
                        if r.status == 201:
                            steady_ids.append(json.loads(await r.read())["id"])
                        else:
                            errors += 1
                except aiohttp.ClientError as e:
                    errors += 1
                    transport[type(e).__name__] = transport.get(type(e).__name__, 0) + 1

            fired = []
            for _ in range(int(args.steady_rate * args.steady_seconds)):
                fired.append(asyncio.create_task(fire()))
                await asyncio.sleep(1 / args.steady_rate)
            await asyncio.gather(*fired)
            deadline = time.monotonic() + 60
            while not set(steady_ids) <= set(arrivals) and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            await session.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        await runner.cleanup()

    hooks = [arrivals[i] * 1000 for i in ids if i in arrivals]
    steady = [arrivals[i] * 1000 for i in steady_ids if i in arrivals]
    res = {
        "runs": len(ids),
        "clients": args.clients,
        "errors": errors,
        "post_p50_ms": round(_pct(latencies, 50), 2),
        "post_p99_ms": round(_pct(latencies, 99), 2),
        "post_mean_ms": round(statistics.fmean(latencies), 2) if latencies else None,
        "admitted_per_s": round(len(ids) / wall, 1) if wall else None,
        "webhooks_received": len(hooks) + len(steady),
        "webhooks_expected": len(ids) + len(steady_ids),
        "webhook_p50_ms": round(_pct(steady, 50), 2),
        "webhook_p99_ms": round(_pct(steady, 99), 2),
        "steady_runs_per_s": args.steady_rate,
        "webhook_burst_p50_ms": round(_pct(hooks, 50), 2),
        "webhook_burst_p99_ms": round(_pct(hooks, 99), 2),
        "bad_signatures": bad,
        "transport_errors": transport,
        "server_cpu_ms_per_run": round(cpu_total * 1000 / max(1, len(ids)), 2),
        "server_cpu_ms_per_post_burst": round(cpu_burst * 1000 / max(1, len(ids)), 2),
        "server_cpu_share_during_burst": round(cpu_burst / wall, 2) if wall else None,
        "client_cpu_share_during_burst": round(own_burst / wall, 2) if wall else None,
        "load_average_1m": os.getloadavg()[0],
    }
    res["all_runs_completed"] = set(ids) | set(steady_ids) <= set(arrivals)
    res["ok"] = bool(
        res["post_p99_ms"] < 50 and (res["admitted_per_s"] or 0) >= 500 and res["webhook_p99_ms"] < 1000
        and res["all_runs_completed"] and not errors and not bad
    )
    print(f"baton serve on SQLite, {res['clients']} concurrent clients, {res['runs']} runs of {args.workflow!r}")
    print(f"{'metric':<28}{'value':>12}  target")
    print(f"{'POST /api/v1/runs p50 (ms)':<28}{res['post_p50_ms']:>12}")
    print(f"{'POST /api/v1/runs p99 (ms)':<28}{res['post_p99_ms']:>12}  < 50")
    print(f"{'runs admitted per second':<28}{res['admitted_per_s']:>12}  >= 500")
    print(f"{'webhooks received':<28}{res['webhooks_received']:>12}  = {res['webhooks_expected']}")
    print(f"{'webhook p50 (ms), steady':<28}{res['webhook_p50_ms']:>12}  at {args.steady_rate} runs/s")
    print(f"{'webhook p99 (ms), steady':<28}{res['webhook_p99_ms']:>12}  < 1000")
    print(f"{'webhook p50 (ms), burst':<28}{res['webhook_burst_p50_ms']:>12}  events queued behind the burst")
    print(f"{'webhook p99 (ms), burst':<28}{res['webhook_burst_p99_ms']:>12}")
    print(f"{'server CPU per run (ms)':<28}{res['server_cpu_ms_per_run']:>12}  (admission + execution + webhook)")
    print(f"{'server CPU per POST (ms)':<28}{res['server_cpu_ms_per_post_burst']:>12}  during the burst (runs wait for it: admission first)")
    print(f"{'every run completed':<28}{str(res['all_runs_completed']):>12}  (a signed run.succeeded webhook for each)")
    print(f"{'server / client CPU share':<28}{str(res['server_cpu_share_during_burst']) + ' / ' + str(res['client_cpu_share_during_burst']):>12}  of one core, during the burst")
    print(f"{'load average (1 min)':<28}{res['load_average_1m']:>12}  (machine shared with other work)")
    print(f"{'errors / bad signatures':<28}{str(res['errors']) + ' / ' + str(res['bad_signatures']):>12}")
    print(json.dumps(res))


if __name__ == "__main__":
    asyncio.run(main())
