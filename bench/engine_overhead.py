"""Engine overhead: per-step cost of a 100-step no-op chain, a 50-way fan-out, and a
1,000-iteration loop of no-op steps, checkpointed to SQLite.

Usage:
    python bench/engine_overhead.py [--db PATH] [--steps 100] [--fanout 50] [--iterations 1000] [--repeat 7]

Every step of every run is checkpointed to a real SQLite database (WAL) through the
same RunStore the bot uses. The same process also times plain asyncio doing the
same shape of work (one task per step, awaited in sequence; a gather of sleeps), so
the ratio holds on a noisy machine. Prints a table, then one line of JSON.
Targets: < 250 µs per checkpointed step (issue 17; was 500 µs in issue 3); a 50-way
fan-out of 10 ms sleeps within 25 ms; a loop of no-op steps (``tick → tick`` with a
condition on the loop edge, ``max_iterations`` = --iterations) < 500 µs per iteration,
each iteration checkpointed as its own record (``tick#N``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.store import Database, RunStore, SessionStore, ThreadKey, upgrade  # noqa: E402
from engine.actions import ActionRunner  # noqa: E402
from engine.catalog import Catalog  # noqa: E402
from engine.definitions import compile_definition, parse_definition  # noqa: E402
from engine.parse import compile_text  # noqa: E402
from engine.run import Executor  # noqa: E402


async def _noop() -> None:
    return None


async def plain_chain(n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        await asyncio.create_task(_noop())
    return time.perf_counter() - t0


async def plain_fanout(n: int, sleep: float) -> float:
    t0 = time.perf_counter()
    await asyncio.gather(*(asyncio.create_task(asyncio.sleep(sleep)) for _ in range(n)))
    return time.perf_counter() - t0


async def main() -> dict[str, float]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", type=Path, default=None, help="SQLite file to create (default: a temporary folder)")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--fanout", type=int, default=50)
    ap.add_argument("--sleep-ms", type=float, default=10.0)
    ap.add_argument("--iterations", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    db_path = args.db or Path(tempfile.mkdtemp()) / "bench.db"
    for suffix in ("", "-wal", "-shm"):
        Path(str(db_path) + suffix).unlink(missing_ok=True)
    url = f"sqlite+aiosqlite:///{db_path.resolve()}"
    await upgrade(url)
    db = Database(url)
    runs, sessions = RunStore(db), SessionStore(db)
    tid = await sessions.thread_id(ThreadKey("bench", "c", "t"))
    catalog = Catalog()
    chain = compile_text(" THEN ".join(["echo x"] * args.steps), catalog)
    fan = compile_text(" AND ".join([f"sleep {args.sleep_ms}ms"] * args.fanout), catalog)
    loop_defn = parse_definition(
        f"""
name: bench-loop
max_iterations: {args.iterations}
on_max_iterations: continue
nodes:
  start: {{run: echo go}}
  tick: {{run: echo x}}
edges:
  - {{from: start, to: tick}}
  - {{from: tick, to: tick, condition: '${{tick}} == "x"'}}
""",
        "bench-loop.yaml",
    )
    loop = compile_definition(loop_defn, catalog, stack=("bench-loop",))
    with_cp = Executor(ActionRunner(), runs)
    without_cp = Executor(ActionRunner(), None)

    async def timed(ex: Executor, graph) -> float:  # type: ignore[no-untyped-def]
        rid = await runs.create_run(tid, graph.source, graph, "bench")
        t0 = time.perf_counter()
        r = await ex.execute(str(rid), graph)
        dt = time.perf_counter() - t0
        assert r.status == "succeeded", r
        return dt

    res: dict[str, list[float]] = {
        k: [] for k in ("chain_cp", "chain_nocp", "chain_plain", "fan_cp", "fan_nocp", "fan_plain", "loop_cp", "loop_nocp")
    }
    await timed(with_cp, chain)  # warm-up
    for _ in range(args.repeat):
        res["chain_plain"].append(await plain_chain(args.steps) / args.steps)
        res["chain_nocp"].append(await timed(without_cp, chain) / args.steps)
        res["chain_cp"].append(await timed(with_cp, chain) / args.steps)
        res["fan_plain"].append(await plain_fanout(args.fanout, args.sleep_ms / 1000))
        res["fan_nocp"].append(await timed(without_cp, fan))
        res["fan_cp"].append(await timed(with_cp, fan))
        res["loop_nocp"].append(await timed(without_cp, loop) / args.iterations)
        res["loop_cp"].append(await timed(with_cp, loop) / args.iterations)
    from sqlalchemy import func, select

    from bot.store.tables import step_runs

    rows = (await db.execute(select(func.count()).select_from(step_runs), what="counting"))[0][0]
    await runs.aclose()
    await db.dispose()

    med = {k: statistics.median(v) for k, v in res.items()}
    p_max = {k: max(v) for k, v in res.items()}
    ratio = med["chain_cp"] / med["chain_plain"]
    print(f"engine overhead on SQLite ({db_path}); median of {args.repeat} runs, step rows written: {rows}")
    print(f"{'case':<44}{'median':>12}{'max':>12}")
    print(f"{'plain asyncio, per awaited task (µs)':<44}{med['chain_plain']*1e6:>12.1f}{p_max['chain_plain']*1e6:>12.1f}")
    print(f"{'engine, per step, no checkpoints (µs)':<44}{med['chain_nocp']*1e6:>12.1f}{p_max['chain_nocp']*1e6:>12.1f}")
    print(f"{'engine, per step, SQLite checkpoints (µs)':<44}{med['chain_cp']*1e6:>12.1f}{p_max['chain_cp']*1e6:>12.1f}")
    print(f"{'  ratio to plain asyncio':<44}{ratio:>12.1f}")
    print(f"{f'{args.fanout}-way fan-out of {args.sleep_ms:g} ms, plain gather (ms)':<44}{med['fan_plain']*1e3:>12.2f}{p_max['fan_plain']*1e3:>12.2f}")
    print(f"{'  engine, no checkpoints (ms)':<44}{med['fan_nocp']*1e3:>12.2f}{p_max['fan_nocp']*1e3:>12.2f}")
    print(f"{'  engine, SQLite checkpoints (ms)':<44}{med['fan_cp']*1e3:>12.2f}{p_max['fan_cp']*1e3:>12.2f}")
    print(f"{f'{args.iterations}-iteration loop, per iteration, no checkpoints (µs)':<44}{med['loop_nocp']*1e6:>12.1f}{p_max['loop_nocp']*1e6:>12.1f}")
    print(f"{f'{args.iterations}-iteration loop, per iteration, SQLite (µs)':<44}{med['loop_cp']*1e6:>12.1f}{p_max['loop_cp']*1e6:>12.1f}")
    print("targets: < 250 µs per checkpointed step; fan-out < 25 ms; < 500 µs per checkpointed loop iteration")
    figures = {
        "step_overhead_us": round(med["chain_cp"] * 1e6, 1),
        "step_overhead_no_checkpoint_us": round(med["chain_nocp"] * 1e6, 1),
        "plain_asyncio_task_us": round(med["chain_plain"] * 1e6, 2),
        "ratio_to_asyncio": round(ratio, 1),
        "fanout_ms": round(med["fan_cp"] * 1e3, 2),
        "fanout_no_checkpoint_ms": round(med["fan_nocp"] * 1e3, 2),
        "fanout_plain_ms": round(med["fan_plain"] * 1e3, 2),
        "fanout_ratio_to_asyncio": round(med["fan_cp"] / med["fan_plain"], 2),
        "loop_iteration_us": round(med["loop_cp"] * 1e6, 1),
        "loop_iteration_no_checkpoint_us": round(med["loop_nocp"] * 1e6, 1),
    }
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    asyncio.run(main())
