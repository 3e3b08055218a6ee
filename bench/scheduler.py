"""Scheduler: start-up with 10,000 stored schedules, and lateness of 500 firings due at once.

Usage:
    python bench/scheduler.py [DB_PATH] [--schedules 10000] [--burst 500]

DB_PATH is a new SQLite file (default: one in a temporary folder); an existing file is
refused, never overwritten. The bench starts a real App (migrations, stores), stores
``--schedules`` schedules through :class:`bot.scheduling.store.ScheduleStore` — a mix of
cron, RRULE, interval and one-off schedules, of which ``--burst`` are due in the same
minute (the next minute boundary at least 25 s away; daily crons in four zones) — then restarts the App and times
:meth:`SchedulerService.start` (read the table, rebuild every timer job). Then it
waits, on the real clock, for the burst: each firing runs the service's normal path
(coalescing and misfire check, the firing recorded in the table with group commit)
and a trivial action that notes the time. Lateness = that time − the scheduled instant.
Prints a table, then one line of JSON. Targets (issue 9): start-up < 5 s; p99 lateness < 1 s.
Takes 30-90 s, mostly waiting for the minute boundary.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.app import App  # noqa: E402
from bot.scheduling import parse_schedule  # noqa: E402
from bot.scheduling import ScheduleRow, SchedulerService  # noqa: E402
from bot.scheduling.store import ScheduleStore  # noqa: E402
from bot.settings import Settings  # noqa: E402
from bot.store import ThreadKey  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ZONES = ("UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo")


class NullOutlet:
    """An adapter outlet that drops everything (nothing should be posted in this bench)."""

    platform = "bench"

    def __init__(self) -> None:
        self.sent = 0

    async def send(self, key, text: str) -> None:  # type: ignore[no-untyped-def]
        self.sent += 1

    def run_view(self, key, run_id: int, title: str):  # type: ignore[no-untyped-def]
        raise AssertionError("no runs in this bench")


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * len(s) + 0.5) - 1))]


def _phrases(n: int, target: datetime, rng: random.Random) -> list[str]:
    """``n`` schedule phrases (without "run …") that do not fire within two hours of ``target``."""
    out = []
    for i in range(n):
        kind = i % 10
        zone = "UTC" if kind < 4 else ZONES[i % len(ZONES)]
        local_hour = target.astimezone(ZoneInfo(zone)).hour
        h, m = (local_hour + rng.randrange(3, 22)) % 24, rng.randrange(0, 60, 5)
        if kind < 4:
            p = f"cron {m} {h} * * * in {zone}"
        elif kind < 6:
            p = f"every {rng.choice(['monday', 'tuesday and friday', 'weekend'])} at {h}:{m:02d} in {zone}"
        elif kind < 8:
            p = rng.choice([f"every other week on thursday at {h}:{m:02d}", f"every 2nd friday of the month at {h}:{m:02d}",
                            f"every 3 days at {h}:{m:02d}", f"on the last day of every month at {h}:{m:02d}"]) + f" in {zone}"
        elif kind < 9:
            p = f"every {rng.choice([6, 8, 12])} hours in {zone}"
        else:
            p = f"on {(target + timedelta(days=3)).strftime('%B %d %Y')} at {h}:{m:02d} in UTC"
        out.append(p)
    return out


async def main() -> dict[str, float]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("db", nargs="?", help="a new SQLite file (default: a temporary one)")
    ap.add_argument("--schedules", type=int, default=10_000)
    ap.add_argument("--burst", type=int, default=500)
    ap.add_argument("--seed", type=int, default=9)
    args = ap.parse_args()
    path = Path(args.db) if args.db else Path(tempfile.mkdtemp(prefix="baton-sched-")) / "sched.db"
    if path.exists():
        ap.error(f"{path} exists; pass a path for a new database")
    url = f"sqlite+aiosqlite:///{path.resolve()}"
    settings = Settings(config_dir=REPO / "config", database_url=url)
    outlet = NullOutlet()
    rng = random.Random(args.seed)

    # -- store the schedules -------------------------------------------------------------
    app = await App.start(settings, {"bench": outlet}, migrate=True, scheduler_options={"platforms": ()})
    t_setup = time.perf_counter()
    now = datetime.now(UTC)
    target = (now + timedelta(seconds=25)).replace(second=0, microsecond=0) + timedelta(minutes=1)
    keys = [ThreadKey("bench", f"C{i % 20}", f"T{i}") for i in range(200)]
    tids = [await app.sessions.thread_id(k) for k in keys]
    whens = []  # the burst: "every day at <the target minute>", spread over four zones
    for i in range(args.burst):
        zone = ZONES[i % len(ZONES)]
        local = target.astimezone(ZoneInfo(zone))
        whens.append(f"cron {local.minute} {local.hour} * * * in {zone}")
    whens += _phrases(args.schedules - args.burst, target, rng)
    kinds: dict[str, int] = {}
    rows = []
    parsed: dict[str, tuple] = {}  # parse each distinct "when" once (the parser is not what is measured)
    for i, when in enumerate(whens):
        workflow = f"echo {'burst' if i < args.burst else 'job'}-{i}"
        if when not in parsed:
            spec = parse_schedule(f"{when} run x", now=now)
            parsed[when] = (spec, spec.next_fire_times(now, 1)[0])
        spec, nxt = parsed[when]
        phrase = f"{when} run {workflow}"
        kinds[spec.kind] = kinds.get(spec.kind, 0) + 1
        rows.append({
            "thread_id": tids[i % len(tids)], "created_by": "bench", "phrase": phrase, "workflow": workflow,
            "kind": spec.kind, "expression": str(spec.expression), "start": spec.start, "timezone": spec.timezone,
            "description": spec.description, "status": "active", "created_at": now, "last_fired_at": None,
            "next_fire_at": nxt.astimezone(UTC), "overlap": "skip", "misfire_grace_s": 300,
        })
    early = [r["phrase"] for r in rows[args.burst:] if r["next_fire_at"] <= target + timedelta(minutes=2)]
    assert not early, f"background schedules would fire during the bench: {early[:3]}"
    await ScheduleStore(app.db).insert_many(rows)
    setup_s = time.perf_counter() - t_setup
    await app.aclose()

    # -- start-up: a fresh App, then the scheduler loads the table ------------------------
    fired: list[tuple[int, float]] = []
    expected = target.timestamp()

    async def note(row: ScheduleRow, at: datetime) -> None:
        fired.append((row.id, time.time() - at.timestamp()))

    # the App's own scheduler serves no platform here; the bench's service (with a timing action) does
    app = await App.start(settings, {"bench": outlet}, migrate=True, scheduler_options={"platforms": ()})
    svc = SchedulerService.for_app(app, launch=note)
    t0 = time.perf_counter()
    loaded = await svc.start()
    startup_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    await svc.store.list(statuses=("active",))
    read_s = time.perf_counter() - t1
    lead_s = expected - time.time()
    try:
        # -- the burst: wait on the real clock ---------------------------------------------
        deadline = expected + 30
        while len(fired) < args.burst and time.time() < deadline:
            await asyncio.sleep(0.05)
        await svc.settle()
        late = [lat for _, lat in fired]
        stored = [r for r in await svc.store.list() if r.last_fired_at is not None]
    finally:
        await svc.aclose()
        await app.aclose()

    p50, p90, p99 = (_pct(late, q) for q in (50, 90, 99))
    worst = max(late) if late else float("nan")
    print(f"scheduler bench on SQLite ({path}); {args.schedules} schedules ({', '.join(f'{k} {v}' for k, v in sorted(kinds.items()))})")
    print(f"{'measure':<52}{'value':>12}")
    print(f"{'storing the schedules (setup, not a target) (s)':<52}{setup_s:>12.2f}")
    print(f"{'start-up: load table + build jobs (s)':<52}{startup_s:>12.3f}")
    print(f"{'  of which one read of the table (s, measured again)':<52}{read_s:>12.3f}")
    print(f"{'jobs loaded':<52}{loaded:>12d}")
    print(f"{'burst due at (UTC)':<52}{target.strftime('%H:%M:%S'):>12}")
    print(f"{'  scheduler ready this long before it (s)':<52}{lead_s:>12.1f}")
    print(f"{'  fired / due':<52}{f'{len(fired)}/{args.burst}':>12}")
    print(f"{'  firings recorded in the table':<52}{len(stored):>12d}")
    print(f"{'  lateness p50 (ms)':<52}{p50 * 1e3:>12.1f}")
    print(f"{'  lateness p90 (ms)':<52}{p90 * 1e3:>12.1f}")
    print(f"{'  lateness p99 (ms)':<52}{p99 * 1e3:>12.1f}")
    print(f"{'  lateness max (ms)':<52}{worst * 1e3:>12.1f}")
    print("targets: start-up < 5 s; p99 lateness < 1 s")
    figures = {
        "startup_s": round(startup_s, 3),
        "lateness_p99_s": round(p99, 4),
        "lateness_p50_s": round(p50, 4),
        "lateness_max_s": round(worst, 4),
        "schedules": args.schedules,
        "jobs_loaded": loaded,
        "burst": args.burst,
        "fired": len(fired),
    }
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    asyncio.run(main())
