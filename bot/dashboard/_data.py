"""Queries and view models of the dashboard pages (read-only; the actions go through the API's handlers).

Kept apart from the routes so the runs list (the page that must answer in < 300 ms
with 10,000 runs, see ``bench/dashboard.py``) is one indexed query plus one aggregate
over the page's run ids, without parsing any stored graph.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from bot.server.api_runs import decode_cursor as _api_decode_cursor
from bot.server.api_runs import encode_cursor
from bot.server.problems import Problem
from bot.store.db import _aware
from bot.store.tables import runs, step_runs, threads
from engine.events import StepRecord
from engine.graph import Graph
from engine.picture import STATUS_STYLES, layout_available, picture, render

PAGE = 50
STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
ACTIVE = ("queued", "running")


@dataclass(frozen=True, slots=True)
class RunFilters:
    """The runs page's filters (all optional): status, workflow name (``adhoc`` for typed
    text), thread (``platform:channel:thread``), user (who requested it), since/until (UTC)."""

    status: str = ""
    workflow: str = ""
    thread: str = ""
    user: str = ""
    since: datetime | None = None
    until: datetime | None = None

    def query(self) -> dict[str, str]:
        """The filters as query-string parameters (empty ones left out)."""
        out = {k: getattr(self, k) for k in ("status", "workflow", "thread", "user") if getattr(self, k)}
        for k in ("since", "until"):
            v = getattr(self, k)
            if v is not None:
                out[k] = v.strftime("%Y-%m-%dT%H:%M")
        return out


def parse_when(text: str | None) -> datetime | None:
    """``2026-12-06T10:00`` (a datetime-local field, UTC) or ISO 8601 → aware UTC; junk → ``None``."""
    if not text:
        return None
    try:
        dt = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def decode_cursor(cursor: str | None) -> int | None:
    """The run id behind ``cursor`` (the API's own cursor form, :func:`bot.server.api_runs.decode_cursor`);
    ``None`` when absent or malformed, so a stale link shows the first page instead of an error."""
    try:
        return _api_decode_cursor(cursor)
    except Problem:
        return None


async def list_runs(db: Any, f: RunFilters, cursor: str | None, limit: int = PAGE) -> tuple[list[dict[str, Any]], str | None]:
    """One page of runs, newest first, and the cursor of the next page (or ``None``).

    Each run is a dict: id, status, workflow, source, thread key, requested_by,
    created_at, duration_s, steps, cost_usd, tokens.
    """
    q = (
        select(
            runs.c.id, runs.c.status, runs.c.name, runs.c.source, runs.c.requested_by, runs.c.created_at, runs.c.started_at,
            runs.c.finished_at, runs.c.error, threads.c.id.label("tid"), threads.c.platform, threads.c.channel, threads.c.thread,
        )
        .join(threads, threads.c.id == runs.c.thread_id)
        .order_by(runs.c.id.desc())
        .limit(limit + 1)
    )
    before = decode_cursor(cursor)
    if before is not None:
        q = q.where(runs.c.id < before)
    if f.status:
        q = q.where(runs.c.status == f.status)
    if f.workflow:
        q = q.where(runs.c.name.is_(None) if f.workflow == "adhoc" else runs.c.name == f.workflow)
    if f.thread:
        parts = f.thread.split(":", 2)
        if len(parts) == 3:
            q = q.where(threads.c.platform == parts[0], threads.c.channel == parts[1], threads.c.thread == parts[2])
        else:
            q = q.where(threads.c.thread == f.thread)
    if f.user:
        q = q.where(runs.c.requested_by == f.user)
    if f.since is not None:
        q = q.where(runs.c.created_at >= f.since)
    if f.until is not None:
        q = q.where(runs.c.created_at < f.until)
    async with db.begin("listing runs for the dashboard") as conn:
        rows = (await conn.execute(q)).mappings().all()
        page = rows[:limit]
        ids = [r["id"] for r in page]
        agg: dict[int, Any] = {}
        if ids:
            a = await conn.execute(
                select(
                    step_runs.c.run_id, func.count(), func.sum(step_runs.c.cost_usd), func.sum(step_runs.c.tokens_in + step_runs.c.tokens_out)
                )
                .where(step_runs.c.run_id.in_(ids))
                .group_by(step_runs.c.run_id)
            )
            agg = {r[0]: r for r in a.all()}
    items = []
    for r in page:
        started, finished = _aware(r["started_at"]), _aware(r["finished_at"])
        s = agg.get(r["id"])
        items.append(
            {
                "id": r["id"],
                "status": r["status"],
                "workflow": r["name"] or "adhoc",
                "source": r["source"],
                "thread": f"{r['platform']}:{r['channel']}:{r['thread']}",
                "thread_id": r["tid"],
                "requested_by": r["requested_by"],
                "created_at": _aware(r["created_at"]),
                "duration_s": (finished - started).total_seconds() if started and finished else None,
                "steps": s[1] if s else 0,
                "cost_usd": float(s[2] or 0) if s else 0.0,
                "tokens": int(s[3] or 0) if s else 0,
                "error": r["error"],
            }
        )
    nxt = encode_cursor(page[-1]["id"]) if len(rows) > limit and page else None
    return items, nxt


async def runs_fingerprint(db: Any) -> tuple[Any, ...]:
    """Changes whenever a run is added or an active run changes status (cheap: PK max + status index)."""
    async with db.begin("watching runs") as conn:
        top = (await conn.execute(select(func.max(runs.c.id)))).scalar()
        act = (
            await conn.execute(
                select(runs.c.status, func.count(), func.max(runs.c.id), func.min(runs.c.id)).where(runs.c.status.in_(ACTIVE)).group_by(runs.c.status)
            )
        ).all()
    return (top, tuple(sorted(tuple(x) for x in act)))


def _svg_inline(svg: bytes) -> str:
    """Graphviz SVG without its XML prolog and doctype, to embed in HTML."""
    text = svg.decode()
    i = text.find("<svg")
    return text[i:] if i >= 0 else text


async def graph_svg(graph: Graph, steps: dict[str, StepRecord] | None, title: str | None = None) -> str | None:
    """The graph as inline SVG (Graphviz in a worker thread), or ``None`` when ``dot`` is missing."""
    if not layout_available():
        return None
    pic = picture(graph, steps, title=title)
    return _svg_inline(await asyncio.to_thread(render, pic, "svg"))


def graph_fallback(graph: Graph, steps: dict[str, StepRecord] | None) -> list[dict[str, Any]]:
    """Without Graphviz: the nodes in order with their picture text (same ids and classes as the SVG)."""
    pic = picture(graph, steps)
    return [
        {"id": n.id, "title": n.title, "kind": n.kind, "status": n.status, "icon": STATUS_STYLES.get(n.status or "", ("", ""))[1]}
        for n in pic.nodes
        if n.kind != "gate"
    ]


def ordered_steps(graph: Graph, steps: list[StepRecord]) -> list[StepRecord]:
    """Step records in graph order, loop iterations (``node#2``…) right after their node's earlier ones."""
    index = {n.id: i for i, n in enumerate(graph.nodes)}

    def key(s: StepRecord) -> tuple[int, int, str]:
        base, _, it = s.node_id.rpartition("#") if "#" in s.node_id else (s.node_id, "", "1")
        return (index.get(base, len(index)), int(it) if it.isdigit() else 1, s.node_id)

    return sorted(steps, key=key)


def timeline(steps: list[StepRecord]) -> dict[str, Any]:
    """Gantt bars: each started step's offset and width in % of the run's span, with times in seconds."""
    started = [s.started_at for s in steps if s.started_at]
    if not started:
        return {"bars": [], "span_s": 0.0}
    t0 = min(started)
    now = datetime.now(UTC)
    t1 = max([s.finished_at or now for s in steps if s.started_at] + [t0 + timedelta(milliseconds=1)])
    span = max((t1 - t0).total_seconds(), 1e-3)
    bars = []
    for s in steps:
        if not s.started_at:
            continue
        a = (s.started_at - t0).total_seconds()
        b = ((s.finished_at or now) - t0).total_seconds()
        bars.append(
            {
                "id": s.node_id, "label": s.label, "status": s.status, "attempt": s.attempt,
                "left": round(100 * a / span, 2), "width": max(0.5, round(100 * (b - a) / span, 2)),
                "start_s": a, "end_s": b, "running": s.finished_at is None,
            }
        )
    return {"bars": bars, "span_s": span}


async def daily_series(db: Any, days: int = 14) -> dict[str, Any]:
    """Runs per day (UTC) by outcome and summed cost, for the stats page's "over time" charts."""
    since = (datetime.now(UTC) - timedelta(days=days - 1)).replace(hour=0, minute=0, second=0, microsecond=0)
    async with db.begin("stats over time") as conn:
        rows = (await conn.execute(select(runs.c.created_at, runs.c.status, runs.c.name).where(runs.c.created_at >= since))).all()
    labels = [(since + timedelta(days=i)).strftime("%m-%d") for i in range(days)]
    series = {k: [0] * days for k in ("succeeded", "failed", "cancelled", "other")}
    for created, status, _name in rows:
        i = (_aware(created) - since).days  # type: ignore[operator]
        if 0 <= i < days:
            series[status if status in series else "other"][i] += 1
    return {"labels": labels, "series": series}


__all__ = [
    "ACTIVE",
    "PAGE",
    "STATUSES",
    "RunFilters",
    "daily_series",
    "decode_cursor",
    "encode_cursor",
    "graph_fallback",
    "graph_svg",
    "list_runs",
    "ordered_steps",
    "parse_when",
    "runs_fingerprint",
    "timeline",
]
