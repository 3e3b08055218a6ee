"""Session memory: context assembly time, append+assemble throughput, and memory per idle session.

Usage:
    python bench/context.py ../shared/data/conversations [--sizes 100 1000 10000] [--samples 200] [--turns 1000]

Threads are grown to each size from real SGD dialogs (utterances in order, cycling
through dialogs), stored in a fresh SQLite database through the bot's own store
(token counts cached per message). For each strategy it measures:

* assemble: time to build an 8,000-token context (reserve 2,000) for a new message,
  with stored summaries reused (p50/p99 over ``--samples`` calls);
* turns/s: append a message, then assemble its context, ``--turns`` times on the
  largest thread (summaries are created in the background as the thread grows; the
  timing waits for them to finish);

and, once: RSS growth per idle persistent session (threads touched once, then idle:
they live in the database, the process keeps only a thread-id cache entry) and per
idle ``memory``-mode session (held in-process). Ends with one line of JSON.
Targets (issue #4): p99 < 5 ms at 10,000 messages, >= 1,000 turns/s, < 2 KB per idle session.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import glob
import gzip
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import bindparam  # noqa: E402

from bot.memory import Memory  # noqa: E402
from bot.sessions import MemorySessionStore, MessageDraft, SessionKey, TokenCounter  # noqa: E402
from bot.store import Database, SessionStore, upgrade  # noqa: E402
from bot.store.tables import messages  # noqa: E402

STRATEGIES = ("sliding_window", "summary", "hierarchical")
_GROW = messages.insert().values(
    **{c: bindparam(c) for c in ("thread_id", "role", "author", "text", "created_at", "event_id", "tokens", "encoding")}
)


def utterances(root: Path, limit: int) -> list[tuple[str, str]]:
    """(role, text) pairs from SGD dialogs, in order."""
    out: list[tuple[str, str]] = []
    for f in sorted(glob.glob(str(root / "sgd" / "*" / "dialogues_*.json.gz"))):
        for d in json.load(gzip.open(f, "rt", encoding="utf-8")):
            for t in d["turns"]:
                out.append(("user" if t["speaker"] == "USER" else "assistant", t["utterance"]))
                if len(out) >= limit:
                    return out
    if not out:
        raise SystemExit(f"no SGD dialogs under {root}/sgd (expected shared/data/conversations)")
    return out


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


async def grow(sessions: SessionStore, key: SessionKey, texts: list[tuple[str, str]], counts: dict[str, int], n: int, encoding: str) -> None:
    """Bulk-insert ``n`` messages (cached counts) in one executemany (on SQLite: the worker thread)."""
    tid = await sessions.thread_id(key)
    now = time.time()
    rows = []
    for i in range(n):
        role, text = texts[i % len(texts)]
        rows.append({"thread_id": tid, "role": role, "author": "bench", "text": text, "created_at": datetime.fromtimestamp(now - (n - i), UTC),
                     "event_id": None, "tokens": counts[text], "encoding": encoding})
    await sessions.db.execute(_GROW, rows, what="growing a thread")


async def main() -> dict[str, object]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", type=Path, help="the conversations folder (shared/data/conversations)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--turns", type=int, default=1000)
    ap.add_argument("--idle-sessions", type=int, default=5000)
    args = ap.parse_args()

    texts = utterances(args.data, max(args.sizes) + args.turns)
    counter = await asyncio.to_thread(TokenCounter)
    counts = {t: counter.count_message(r, t) for r, t in texts}
    url = f"sqlite+aiosqlite:///{Path(tempfile.mkdtemp()) / 'context.db'}"
    await upgrade(url)
    db = Database(url)
    sessions = SessionStore(db, counter)
    cfg = {"mode": "persistent", "max_tokens": 8000, "reserve_tokens": 2000, "window_size": None}
    memories = {s: Memory(sessions, counter, {**cfg, "strategy": s}, system_prompt="You are Baton, a chat-ops assistant.") for s in STRATEGIES}

    table: list[tuple[str, int, float, float, int]] = []
    p99_at_largest: dict[str, float] = {}
    for size in args.sizes:
        for strat in STRATEGIES:
            key = SessionKey("bench", strat, str(size))
            await grow(sessions, key, texts, counts, size, counter.encoding)
            mem = memories[strat]
            for _ in range(3):  # warm-up: creates the summaries this thread needs
                await mem.context(key, "what did we decide?")
                await mem.settle()
            times = []
            window = None
            for _ in range(args.samples):
                t0 = time.perf_counter()
                window = await mem.context(key, "what did we decide?")
                times.append((time.perf_counter() - t0) * 1000)
            assert window is not None and window.breakdown.total <= 8000 and window.breakdown.prompt <= 6000
            table.append((strat, size, statistics.median(times), pct(times, 99), window.breakdown.prompt))
            if size == max(args.sizes):
                p99_at_largest[strat] = pct(times, 99)

    turns: dict[str, float] = {}
    for strat in STRATEGIES:
        key = SessionKey("bench", strat, str(max(args.sizes)))
        mem = memories[strat]
        t0 = time.perf_counter()
        for i in range(args.turns):
            role, text = texts[(max(args.sizes) + i) % len(texts)]
            m = await sessions.append(key, role, "bench", text)
            await mem.context(key, text, new_id=m.id, tokens=m.tokens)
        await mem.settle()  # background summaries made during these turns count too
        turns[strat] = args.turns / (time.perf_counter() - t0)

    # idle sessions: persistent (database) and memory mode (in-process)
    gc.collect()
    before = rss()
    for i in range(args.idle_sessions):
        await sessions.append(SessionKey("bench-idle", "c", f"t{i}"), "user", "u", "hello there, is the deploy done?")
    gc.collect()
    idle_bytes = max(0, rss() - before) / args.idle_sessions
    store = MemorySessionStore(timeout=3600, max_messages=100, max_tokens=8000)
    gc.collect()
    before = rss()
    for i in range(args.idle_sessions):
        await store.append(SessionKey("bench-mem", "c", f"t{i}"), MessageDraft("user", "u", "hello there, is the deploy done?", 12, counter.encoding))
    gc.collect()
    mem_idle_bytes = max(0, rss() - before) / args.idle_sessions
    await db.dispose()

    print(f"context assembly on SQLite (8,000-token budget, 2,000 reserved), {args.samples} samples each; encoding {counter.encoding}")
    print(f"{'strategy':<16}{'messages':>10}{'p50 ms':>10}{'p99 ms':>10}{'prompt tok':>12}")
    for strat, size, p50, p99, total in table:
        print(f"{strat:<16}{size:>10}{p50:>10.2f}{p99:>10.2f}{total:>12}")
    print(f"\nappend + assemble on a {max(args.sizes)}-message thread, {args.turns} turns:")
    for strat, tps in turns.items():
        print(f"  {strat:<16}{tps:>8.0f} turns/s")
    print(f"\nRSS per idle session: persistent {idle_bytes:.0f} B, memory mode {mem_idle_bytes:.0f} B ({args.idle_sessions} sessions)")
    print("targets: p99 < 5 ms at 10,000 messages; >= 1,000 turns/s; < 2 KB per idle session")
    figures: dict[str, object] = {
        "assemble_p99_ms_10k": round(max(p99_at_largest.values()), 3),
        "assemble_p99_ms_by_strategy": {k: round(v, 3) for k, v in p99_at_largest.items()},
        "turns_per_s": round(min(turns.values()), 1),
        "turns_per_s_by_strategy": {k: round(v, 1) for k, v in turns.items()},
        "idle_session_bytes": round(idle_bytes, 1),
        "idle_memory_mode_session_bytes": round(mem_idle_bytes, 1),
    }
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    asyncio.run(main())
