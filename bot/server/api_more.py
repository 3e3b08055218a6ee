"""REST API v1: workflows, schedules, thread messages, statistics, the audit trail and webhook deliveries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy import select

from bot.core import Message
from bot.scheduling import ScheduleParseError, parse_schedule
from bot.server.api_runs import _audit, compile_or_problem, decode_cursor, encode_cursor, require, resolve_thread, services, thread_json
from bot.server.auth import TokenInfo
from bot.server.events import workflow_label
from bot.server.outlet import PLATFORM
from bot.server.problems import Problem
from bot.server.webhooks import delivery_log
from bot.store import ThreadKey
from bot.store.db import _aware
from bot.store.tables import runs, step_runs, threads

router = APIRouter()


# -- workflows ----------------------------------------------------------------


@router.get("/workflows", tags=["workflows"], summary="Named workflows and configured actions")
async def list_workflows(request: Request, who: TokenInfo = Depends(require("runs:read"))) -> dict[str, Any]:
    cat = services(request).baton.catalog
    return {
        "workflows": [{"name": n, "description": d.description} for n, d in sorted(cat.workflows.items())],
        "actions": [{"name": n, "kind": k, "description": a.get("description") or ""} for n, (k, a) in sorted(cat.actions.items())],
    }


class CheckBody(BaseModel):
    """``POST /api/v1/workflows/check`` body."""

    workflow: str = Field(min_length=1, max_length=20000, description="workflow text or a workflow name")


@router.post("/workflows/check", tags=["workflows"], summary="Compile workflow text: the graph as JSON, or a positioned error (422)")
async def check_workflow(body: CheckBody, request: Request, who: TokenInfo = Depends(require("runs:read"))) -> dict[str, Any]:
    import json

    graph = compile_or_problem(services(request).baton.bot, body.workflow.strip())
    return {"ok": True, "graph": json.loads(graph.to_json()), "description": graph.describe()}


# -- schedules ----------------------------------------------------------------


class ScheduleBody(BaseModel):
    """``POST /api/v1/schedules`` body."""

    phrase: str = Field(min_length=1, max_length=2000, description='a schedule phrase, e.g. "every weekday at 9am run disk-check"')
    thread: str | None = Field(None, description="thread whose runs it starts (default: the token's thread 'schedules')")


def _schedule_json(r: Any) -> dict[str, Any]:
    return {
        "id": r.id, "phrase": r.phrase, "workflow": r.workflow, "description": r.description, "timezone": r.timezone,
        "status": r.status, "created_by": r.created_by, "thread": thread_json(r.key),
        "created_at": r.created_at.isoformat() if r.created_at else None,
        "last_fired_at": r.last_fired_at.isoformat() if r.last_fired_at else None,
        "next_fire_at": r.next_fire_at.isoformat() if r.next_fire_at else None,
    }


def _scheduler(request: Request) -> Any:
    sc = services(request).baton.scheduler
    if sc is None:
        raise Problem(503, "scheduling-off", "scheduling is not running in this process")
    return sc


@router.get("/schedules", tags=["schedules"], summary="Every schedule")
async def list_schedules(request: Request, who: TokenInfo = Depends(require("runs:read"))) -> dict[str, Any]:
    rows = await _scheduler(request).list(everywhere=True)
    return {"items": [_schedule_json(r) for r in rows]}


@router.post("/schedules", tags=["schedules"], status_code=201, summary="Create a schedule from a phrase")
async def create_schedule(body: ScheduleBody, request: Request, who: TokenInfo = Depends(require("runs:write"))) -> dict[str, Any]:
    svc = services(request)
    sc = _scheduler(request)
    key = resolve_thread(who, body.thread or "schedules")
    try:
        spec = parse_schedule(body.phrase, now=datetime.now(UTC), default_tz=sc.default_tz if hasattr(sc, "default_tz") else "UTC")
    except ScheduleParseError as e:
        raise Problem(422, "schedule-phrase", str(e), title="Schedule phrase not understood", position=getattr(e, "position", None)) from None
    gap = spec.min_interval_seconds()
    if gap is not None and gap < sc.min_interval_s:
        raise Problem(422, "schedule-too-frequent", f"fires every {gap:.0f}s; the minimum interval is {sc.min_interval_s:.0f}s ([scheduling] min_interval)")
    graph = compile_or_problem(svc.baton.bot, spec.workflow)
    reason = svc.baton.bot.allowed(Message(PLATFORM, key.channel, key.thread, who.principal, body.phrase), graph)
    if reason:
        await _audit(svc, who, "permission.denied", outcome="denied", detail=f"schedule.create: {reason}", key=key)
        raise Problem(403, "permission-denied", reason)
    try:
        row = await sc.add(key, who.principal, spec)
    except ValueError as e:
        raise Problem(422, "schedule-invalid", str(e)) from None
    await _audit(svc, who, "schedule.create", target=f"schedule:{row.id}", detail=body.phrase, key=key)
    return _schedule_json(row)


@router.delete("/schedules/{schedule_id}", tags=["schedules"], summary="Delete a schedule")
async def delete_schedule(schedule_id: int, request: Request, who: TokenInfo = Depends(require("runs:write"))) -> dict[str, Any]:
    svc = services(request)
    sc = _scheduler(request)
    row = await sc.get(schedule_id)
    if row is None:
        raise Problem(404, "schedule-not-found", f"no schedule {schedule_id}")
    admins = svc.baton.settings.permissions.get("admin", [])
    if row.created_by != who.principal and not who.allows("admin") and who.principal not in admins:
        await _audit(svc, who, "permission.denied", outcome="denied", target=f"schedule:{schedule_id}", detail="schedule.delete: not the author or an admin")
        raise Problem(403, "permission-denied", f"schedule {schedule_id} was created by {row.created_by}; only they or an admin may delete it")
    try:
        await sc.remove(schedule_id)
    except LookupError:
        raise Problem(404, "schedule-not-found", f"no schedule {schedule_id}") from None
    await _audit(svc, who, "schedule.delete", target=f"schedule:{schedule_id}", detail=row.phrase, key=row.key)
    return {"id": schedule_id, "deleted": True}


# -- threads ------------------------------------------------------------------


@router.get("/threads/{key}/messages", tags=["threads"], summary="A thread's messages, oldest first (cursor: older pages)")
async def thread_messages(
    key: str, request: Request, limit: int = Query(50, ge=1, le=500), who: TokenInfo = Depends(require("runs:read"))
) -> dict[str, Any]:
    svc = services(request)
    k = resolve_thread(who, key)
    if k.platform != PLATFORM and not who.allows("admin"):
        raise Problem(403, "missing-scope", "reading chat threads of other platforms needs the admin scope")
    msgs = await svc.baton.sessions.history(k, limit=limit)
    return {
        "thread": thread_json(k),
        "items": [{"id": m.id, "role": m.role, "author": m.author, "text": m.text, "created_at": m.created_at.isoformat(), "tokens": m.tokens} for m in msgs],
    }


# -- stats --------------------------------------------------------------------


def _p95(xs: list[float]) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(0.95 * (len(s) - 1))))]


@router.get("/stats", tags=["stats"], summary="Success rate, runs, durations, cost and LLM usage since a time")
async def stats(
    request: Request,
    since: datetime | None = Query(None, description="ISO 8601; default: the last 7 days"),
    who: TokenInfo = Depends(require("runs:read")),
) -> dict[str, Any]:
    from engine.graph import Graph

    svc = services(request)
    since = since or datetime.now(UTC) - timedelta(days=7)
    if since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    async with svc.baton.db.begin("computing statistics") as conn:
        rrows = (await conn.execute(select(runs.c.id, runs.c.name, runs.c.status, runs.c.started_at, runs.c.finished_at, runs.c.graph).where(runs.c.created_at >= since))).all()
        srows = (
            await conn.execute(
                select(step_runs.c.run_id, step_runs.c.node_id, step_runs.c.label, step_runs.c.kind, step_runs.c.tokens_in, step_runs.c.tokens_out, step_runs.c.cost_usd)
                .join(runs, runs.c.id == step_runs.c.run_id)
                .where(runs.c.created_at >= since, step_runs.c.reused.is_(False))
            )
        ).all()
    models = svc.hook.models
    per_wf: dict[str, dict[str, Any]] = {}
    providers_of: dict[int, dict[str, str | None]] = {}
    durations: dict[str, list[float]] = {}
    finished = ok = 0
    for r in rrows:
        wf = workflow_label(r.name)
        d = per_wf.setdefault(wf, {"runs": 0, "succeeded": 0, "failed": 0, "cancelled": 0, "cost_usd": 0.0})
        d["runs"] += 1
        if r.status in ("succeeded", "failed", "cancelled"):
            d[r.status] += 1
            finished += 1
            ok += r.status == "succeeded"
        if r.started_at and r.finished_at:
            durations.setdefault(wf, []).append((_aware(r.finished_at) - _aware(r.started_at)).total_seconds())  # type: ignore[operator]
        try:
            providers_of[r.id] = {n.id: n.args.get("provider") for n in Graph.from_json(r.graph).steps if n.kind == "llm"}
        except Exception:
            providers_of[r.id] = {}
    wf_of = {r.id: workflow_label(r.name) for r in rrows}
    per_step: dict[str, dict[str, Any]] = {}
    per_model: dict[tuple[str, str], dict[str, Any]] = {}
    for s in srows:
        wf = wf_of.get(s.run_id, "adhoc")
        per_wf.setdefault(wf, {"runs": 0, "succeeded": 0, "failed": 0, "cancelled": 0, "cost_usd": 0.0})["cost_usd"] += s.cost_usd
        ps = per_step.setdefault(f"{wf}/{s.label}", {"workflow": wf, "step": s.label, "runs": 0, "cost_usd": 0.0})
        ps["runs"] += 1
        ps["cost_usd"] += s.cost_usd
        if s.kind == "llm":
            prov = providers_of.get(s.run_id, {}).get(s.node_id)
            model = models.get(prov) or models.get(None) or "unknown"
            pm = per_model.setdefault((prov or str(models.get("__default__", "default")), model), {"tokens_in": 0, "tokens_out": 0, "cost_usd": 0.0, "steps": 0})
            pm["tokens_in"] += s.tokens_in
            pm["tokens_out"] += s.tokens_out
            pm["cost_usd"] += s.cost_usd
            pm["steps"] += 1
    for wf, d in per_wf.items():
        ds = durations.get(wf, [])
        d["avg_duration_s"] = sum(ds) / len(ds) if ds else None
        d["p95_duration_s"] = _p95(ds)
        done = d["succeeded"] + d["failed"] + d["cancelled"]
        d["success_rate"] = d["succeeded"] / done if done else None
    return {
        "since": since.isoformat(),
        "runs": len(rrows),
        "finished": finished,
        "success_rate": ok / finished if finished else None,
        "workflows": dict(sorted(per_wf.items())),
        "steps": sorted(per_step.values(), key=lambda x: -x["cost_usd"]),
        "llm": [{"provider": p, "model": m, **v} for (p, m), v in sorted(per_model.items())],
    }


# -- audit and webhooks ---------------------------------------------------------


@router.get("/audit", tags=["audit"], summary="The audit trail, newest first (admin)")
async def audit(
    request: Request,
    limit: int = Query(50, ge=1, le=500),
    cursor: str | None = Query(None),
    actor: str | None = Query(None),
    action: str | None = Query(None),
    who: TokenInfo = Depends(require("admin")),
) -> dict[str, Any]:
    rows = await services(request).audit.recent(limit + 1, before=decode_cursor(cursor), actor=actor, action=action)
    nxt = encode_cursor(rows[limit - 1].id) if len(rows) > limit else None  # type: ignore[arg-type]
    return {"items": [e.json() for e in rows[:limit]], "next_cursor": nxt}


@router.get("/webhooks/deliveries", tags=["webhooks"], summary="Webhook delivery attempts, newest first (admin)")
async def deliveries(
    request: Request,
    webhook: str | None = Query(None),
    limit: int = Query(50, ge=1, le=500),
    cursor: str | None = Query(None),
    who: TokenInfo = Depends(require("admin")),
) -> dict[str, Any]:
    rows = await delivery_log(services(request).baton.db, webhook, limit=limit + 1, before=decode_cursor(cursor))
    nxt = encode_cursor(rows[limit - 1].id) if len(rows) > limit else None
    return {"items": [d.json() for d in rows[:limit]], "next_cursor": nxt}


__all__ = ["router", "ThreadKey"]
