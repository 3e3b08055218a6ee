"""REST API v1: runs (start, list, show, cancel, rerun, approve, reject, live events).

Every endpoint needs ``Authorization: Bearer <token>`` with the scope it names; the
token acts as the principal ``api:NAME`` for ``[permissions]``, approvals and the
audit trail, exactly as a chat user would. Errors are RFC 9457 problem documents.
"""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from sqlalchemy import select
from sse_starlette import EventSourceResponse

from bot.server.audit import AuditEntry
from bot.server.auth import TokenInfo, retry_after_header
from bot.server.events import event_id, step_json, workflow_label
from bot.server.outlet import PLATFORM
from bot.server.problems import Problem
from bot.server.tracing import current_thread
from bot.store import RunRow, ThreadKey
from bot.store.db import _aware
from bot.store.tables import runs, threads
from engine.errors import DefinitionError, EngineError, UnknownWorkflowError, WorkflowSyntaxError
from engine.events import StepRecord
from engine.graph import Graph

router = APIRouter(tags=["runs"])
_bearer = HTTPBearer(auto_error=False, description="an API token from `baton token create`")
TERMINAL = ("succeeded", "failed", "cancelled")


# -- dependencies -------------------------------------------------------------


def services(request: Request) -> Any:
    """The running :class:`bot.server.app.Services`."""
    return request.app.state.services


def require(scope: str):  # type: ignore[no-untyped-def]
    """A dependency: the request's token, which must have ``scope``; applies the rate limit.

    Raises (as problem documents): 401 without a valid token, 403 without the scope,
    429 with ``Retry-After`` when the token's bucket is empty.
    """

    async def dep(request: Request, cred: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> TokenInfo:
        return await authorize(request, cred, scope)

    return dep


async def authorize(request: Request, cred: HTTPAuthorizationCredentials | None, scope: str) -> TokenInfo:
    """What :func:`require` checks, callable without FastAPI's dependency injection
    (:mod:`bot.server.fastpath`): ``cred`` as the ``HTTPBearer`` dependency gives it.

    Raises:
        Problem: 401, 403 (with an audit row) or 429, as :func:`require` documents.
    """
    svc = services(request)
    if cred is None or cred.scheme.lower() != "bearer" or not cred.credentials:
        raise Problem(401, "unauthorized", "send Authorization: Bearer <token> (create one with: baton token create NAME --scopes ...)", headers={"WWW-Authenticate": "Bearer"})
    info = await svc.tokens.verify(cred.credentials)
    if info is None:
        raise Problem(401, "unauthorized", "unknown or revoked API token", headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
    wait = svc.limiter.take(info.name)
    if wait > 0:
        raise Problem(429, "rate-limited", f"token {info.name!r} is over its rate limit; retry later", headers={"Retry-After": retry_after_header(wait)})
    if not info.allows(scope):
        await _audit(svc, info, "permission.denied", outcome="denied", detail=f"scope {scope} needed for {request.method} {request.url.path}")
        raise Problem(403, "missing-scope", f"this token lacks the scope {scope!r} (it has {', '.join(info.scopes)})")
    return info


async def _audit(svc: Any, who: TokenInfo, action: str, *, outcome: str = "ok", target: str | None = None, detail: str | None = None, key: ThreadKey | None = None) -> None:
    await svc.audit.record(
        AuditEntry(who.principal, key.platform if key else PLATFORM, action, outcome, key.channel if key else None, key.thread if key else None, target, detail)
    )


# -- shapes -------------------------------------------------------------------


class RunCreate(BaseModel):
    """``POST /api/v1/runs`` body."""

    workflow: str = Field(description="workflow text (`disk-check AND system-report THEN echo done`) or a workflow name", min_length=1, max_length=20000)
    inputs: dict[str, Any] = Field(default_factory=dict, description="workflow parameters (none of today's workflows take any)")
    thread: str | None = Field(None, description="thread key: a name of your own (an API thread of this token) or `platform:channel:thread`; default: a new thread per run")


class RerunBody(BaseModel):
    """``POST /api/v1/runs/{id}/rerun`` body."""

    from_: str | None = Field(None, alias="from", description="step id or label to rerun from; the outputs of the steps before it are reused")


class DecisionBody(BaseModel):
    """``POST /api/v1/runs/{id}/approve`` and ``/reject`` body."""

    step: str | None = Field(None, description="which waiting step (needed only when several wait)")


def thread_json(key: ThreadKey) -> dict[str, str]:
    return {"platform": key.platform, "channel": key.channel, "thread": key.thread, "key": f"{key.platform}:{key.channel}:{key.thread}"}


def run_json(row: RunRow, key: ThreadKey | None, steps: list[StepRecord] | None = None) -> dict[str, Any]:
    """A run as the API shows it (steps in graph order when given)."""
    d: dict[str, Any] = {
        "id": row.id,
        "status": row.status,
        "workflow": workflow_label(row.name),
        "source": row.source,
        "thread": thread_json(key) if key else None,
        "requested_by": row.requested_by,
        "rerun_of": row.rerun_of,
        "created_at": row.created_at.isoformat(),
        "started_at": row.started_at.isoformat() if row.started_at else None,
        "finished_at": row.finished_at.isoformat() if row.finished_at else None,
        "duration_s": (row.finished_at - row.started_at).total_seconds() if row.finished_at and row.started_at else None,
        "error": row.error,
    }
    if steps is not None:
        by_id = {s.node_id: s for s in steps}
        ordered = [by_id[n.id] for n in row.graph.nodes if n.id in by_id]
        d["steps"] = [step_json(s) for s in ordered]
        d["tokens_in"] = sum(s.tokens_in for s in ordered)
        d["tokens_out"] = sum(s.tokens_out for s in ordered)
        d["cost_usd"] = sum(s.cost_usd for s in ordered)
    return d


def new_thread_name() -> str:
    """A fresh API thread name for a run started without ``thread``: ``run-`` + 64 random bits."""
    return f"run-{event_id()[4:20]}"


def encode_cursor(last_id: int) -> str:
    """An opaque pagination cursor (the last id seen)."""
    return base64.urlsafe_b64encode(str(last_id).encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int | None:
    """The id behind ``cursor``; a malformed one is a 400 problem."""
    if not cursor:
        return None
    try:
        return int(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode())
    except (ValueError, UnicodeDecodeError):
        raise Problem(400, "bad-cursor", "the cursor is not one this API returned") from None


def resolve_thread(who: TokenInfo, thread: str) -> ThreadKey:
    """``platform:channel:thread`` as given, else the token's own API thread called ``thread``."""
    parts = thread.split(":", 2)
    if len(parts) == 3 and all(parts):
        return ThreadKey(*parts)
    return ThreadKey(PLATFORM, who.name, thread)


def compile_or_problem(bot: Any, text: str) -> Graph:
    """Compile workflow text (or a name); errors become 422 problems (syntax errors with line and column)."""
    try:
        return bot.compile(text)
    except WorkflowSyntaxError as e:
        raise Problem(
            422, "workflow-syntax", f"{e.reason} (line {e.line}, column {e.column})", title="Malformed workflow text",
            line=e.line, column=e.column, caret=e.caret(),
        ) from None
    except UnknownWorkflowError as e:
        raise Problem(422, "unknown-workflow", str(e), title="Unknown workflow", suggestions=list(getattr(e, "suggestions", ()) or ())) from None
    except (DefinitionError, EngineError) as e:
        raise Problem(422, "invalid-workflow", str(e), title="Invalid workflow") from None


async def _denied(svc: Any, who: TokenInfo, graph: Graph, key: ThreadKey, action: str) -> None:
    """403 (and an audit row) when the token's principal may not run ``graph`` under ``[permissions]``."""
    reason = svc.baton.admission.check(who.principal, (), graph)  # admission's rule, as for chat
    if reason:
        await _audit(svc, who, "permission.denied", outcome="denied", detail=f"{action}: {reason}", key=key)
        raise Problem(403, "permission-denied", reason)


async def _load(svc: Any, run_id: int) -> tuple[RunRow, list[StepRecord], ThreadKey]:
    got = await svc.baton.runs.get(run_id)
    if got is None:
        raise Problem(404, "run-not-found", f"no run {run_id}")
    row, steps = got
    key = await svc.baton.sessions.key_for(row.thread_id)
    return row, steps, key


# -- endpoints ----------------------------------------------------------------


@router.post("/runs", status_code=201, summary="Start a run")
async def create_run(body: RunCreate, request: Request, who: TokenInfo = Depends(require("runs:write"))) -> dict[str, Any]:
    """Admit a run of ``workflow`` (text or name); returns it in state ``queued``.

    Permission: ``[permissions]`` for the principal ``api:NAME``, as in chat.
    """
    return await start_run(services(request), body, who)


async def start_run(svc: Any, body: RunCreate, who: TokenInfo) -> dict[str, Any]:
    """The work of ``POST /runs`` after authentication (also :mod:`bot.server.fastpath`):
    compile, check permission, admit; returns the 201 body.

    Raises:
        Problem: 422 (inputs, workflow errors), 403 (scope for chat threads, ``[permissions]``), 409 (busy thread).
    """
    if body.inputs:
        raise Problem(422, "inputs-unsupported", "this Baton's workflows take no inputs yet; send an empty inputs object")
    graph = compile_or_problem(svc.baton.bot, body.workflow.strip())
    key = resolve_thread(who, body.thread) if body.thread else ThreadKey(PLATFORM, who.name, new_thread_name())
    if key.platform != PLATFORM and not who.allows("admin"):  # a run in a chat thread posts there
        raise Problem(403, "missing-scope", f"starting runs in {key.platform} threads needs the admin scope; use a thread name of your own")
    await _denied(svc, who, graph, key, "run.start")
    entry = AuditEntry(who.principal, key.platform, "run.start", "ok", key.channel, key.thread, None, graph.name or graph.source[:200])
    current_thread.set(thread_json(key)["key"])  # log lines of this request and of the run's task name the thread
    run_id = await admit(svc, key, graph, who, entry)
    return {"id": run_id, "status": "queued", "workflow": workflow_label(graph.name), "source": graph.source, "thread": thread_json(key),
            "links": {"self": f"/api/v1/runs/{run_id}", "events": f"/api/v1/runs/{run_id}/events"}}


async def admit(
    svc: Any, key: ThreadKey, graph: Graph, who: TokenInfo, entry: AuditEntry, *, prior: dict[str, StepRecord] | None = None, rerun_of: int | None = None
) -> int:
    """Queue a run through the app's admission (the chat path: queued run + ``entry`` in one
    transaction, thread order and ``busy_policy`` from the runs table), then hand it to the
    process's worker; returns the run id. Permission was checked by the caller (:func:`_denied`,
    admission's own rule).

    Raises:
        Problem: 409 ``thread-busy`` when ``busy_policy = "reject"`` and the thread has active runs.
        StoreError: the database failed; nothing was admitted (the request fails, nothing runs).
    """
    baton = svc.baton
    got = await baton.admission.admit(
        key, graph, requested_by=who.principal, prior=prior, rerun_of=rerun_of, check_permission=False, audit=entry
    )
    if got.run_id is None:
        ids = ", ".join(f"#{a}" for a in got.ahead)
        raise Problem(409, "thread-busy", f"run {ids} is still active in this thread; wait for it or cancel it (busy_policy is reject)",
                      run_ids=list(got.ahead))
    svc.hook.remember_run(got.run_id, key, graph, got.created_at)
    baton.bot.queue.submit(got.run_id, key, graph=graph, prior=prior, rerun=rerun_of is not None)
    return got.run_id


@router.get("/runs", summary="List runs (newest first, cursor pagination)")
async def list_runs(
    request: Request,
    status: str | None = Query(None, description="queued, running, succeeded, failed or cancelled"),
    workflow: str | None = Query(None, description="workflow name (`adhoc` for typed workflow text)"),
    thread: str | None = Query(None, description="thread key (see POST /runs)"),
    since: datetime | None = Query(None, description="created at or after (ISO 8601)"),
    limit: int = Query(50, ge=1, le=500),
    cursor: str | None = Query(None),
    who: TokenInfo = Depends(require("runs:read")),
) -> dict[str, Any]:
    svc = services(request)
    q = (
        select(runs, threads.c.platform, threads.c.channel, threads.c.thread)
        .join(threads, threads.c.id == runs.c.thread_id)
        .order_by(runs.c.id.desc())
        .limit(limit + 1)
    )
    before = decode_cursor(cursor)
    if before is not None:
        q = q.where(runs.c.id < before)
    if status:
        q = q.where(runs.c.status == status)
    if workflow:
        q = q.where(runs.c.name.is_(None) if workflow == "adhoc" else runs.c.name == workflow)
    if thread:
        k = resolve_thread(who, thread)
        q = q.where(threads.c.platform == k.platform, threads.c.channel == k.channel, threads.c.thread == k.thread)
    if since is not None:
        q = q.where(runs.c.created_at >= since)
    async with svc.baton.db.begin("listing runs") as conn:
        rows = (await conn.execute(q)).mappings().all()
    items = []
    for r in rows[:limit]:
        row = RunRow(r["id"], r["thread_id"], r["source"], r["name"], Graph.from_json(r["graph"]), r["status"], r["error"], r["requested_by"],
                     r["rerun_of"], _aware(r["created_at"]), _aware(r["started_at"]), _aware(r["finished_at"]))  # type: ignore[arg-type]
        items.append(run_json(row, ThreadKey(r["platform"], r["channel"], r["thread"])))
    nxt = encode_cursor(rows[limit - 1]["id"]) if len(rows) > limit else None
    return {"items": items, "next_cursor": nxt}


@router.get("/runs/{run_id}", summary="One run with its steps (status, attempts, times, outputs, tokens, cost)")
async def get_run(run_id: int, request: Request, who: TokenInfo = Depends(require("runs:read"))) -> dict[str, Any]:
    row, steps, key = await _load(services(request), run_id)
    d = run_json(row, key, steps)
    broker = services(request).baton.bot.approvals
    d["waiting"] = [{"step": s, "question": q} for _, s, q in (await broker.waiting(run_id) if broker else [])]
    return d


@router.post("/runs/{run_id}/cancel", summary="Cancel a run (its running steps are stopped)")
async def cancel_run(run_id: int, request: Request, who: TokenInfo = Depends(require("runs:write"))) -> dict[str, Any]:
    svc = services(request)
    row, _, key = await _load(svc, run_id)
    await _denied(svc, who, row.graph, key, f"run.cancel #{run_id}")
    if row.status in TERMINAL:
        await _audit(svc, who, "run.cancel", outcome="failed", target=f"run:{run_id}", detail=f"already {row.status}", key=key)
        raise Problem(409, "run-finished", f"run {run_id} already {row.status}")
    ok = await svc.baton.manager.cancel(run_id)
    queue = svc.baton.bot.queue
    if not ok and queue is not None and queue.cancel_queued(run_id):  # queued here, not started: it never will be
        await svc.baton.runs.set_status(run_id, "cancelled", error="cancelled by request while queued")
        ok = True
    elif not ok and queue is not None and await queue.request_cancel(run_id):  # a `baton worker` stops it
        ok = True
    await _audit(svc, who, "run.cancel", outcome="ok" if ok else "failed", target=f"run:{run_id}", key=key,
                 detail=None if ok else "not active in this process")
    if not ok:
        raise Problem(409, "run-not-active", f"run {run_id} is {row.status} but not executing in this process; cancel it where it runs")
    return {"id": run_id, "status": "cancelled"}


@router.post("/runs/{run_id}/rerun", status_code=201, summary="Run again, optionally from a step (earlier outputs reused)")
async def rerun(run_id: int, request: Request, body: RerunBody | None = None, who: TokenInfo = Depends(require("runs:write"))) -> dict[str, Any]:
    from bot.turn import _ancestors, _find_step

    svc = services(request)
    row, steps, key = await _load(svc, run_id)
    await _denied(svc, who, row.graph, key, f"run.rerun #{run_id}")
    prior: dict[str, StepRecord] = {}
    step = (body.from_ if body else None) or ""
    if step:
        node = _find_step(row.graph, step)
        if node is None:
            raise Problem(422, "unknown-step", f"run {run_id} has no step {step!r}", steps=[n.id for n in row.graph.steps])
        before = _ancestors(row.graph, node)
        prior = {s.node_id: s for s in steps if s.node_id in before and s.status == "succeeded"}
    current_thread.set(thread_json(key)["key"])
    entry = AuditEntry(who.principal, key.platform, "run.rerun", "ok", key.channel, key.thread, None, f"rerun of #{run_id}" + (f" from {step}" if step else ""))
    new_id = await admit(svc, key, row.graph, who, entry, prior=prior, rerun_of=run_id)
    return {"id": new_id, "status": "queued", "rerun_of": run_id, "links": {"self": f"/api/v1/runs/{new_id}", "events": f"/api/v1/runs/{new_id}/events"}}


async def _decide(request: Request, run_id: int, body: DecisionBody | None, who: TokenInfo, approve: bool) -> dict[str, Any]:
    svc = services(request)
    row, _, key = await _load(svc, run_id)
    action = "run.approve" if approve else "run.reject"
    broker = svc.baton.bot.approvals
    if broker is None or not broker.may_decide(who.principal, ()):
        await _audit(svc, who, "permission.denied", outcome="denied", target=f"run:{run_id}", detail=f"{action}: not an approver", key=key)
        raise Problem(403, "permission-denied", f"{who.principal} may not approve or reject (set [permissions] approve in config/baton.toml)")
    waiting = [s for _, s, _ in await broker.waiting(run_id)]
    step = body.step if body else None
    if not waiting or (step and step not in waiting) or (not step and len(waiting) > 1):
        await _audit(svc, who, action, outcome="failed", target=f"run:{run_id}", detail="nothing to decide", key=key)
        detail = f"run {run_id} has no step waiting for approval" if not waiting else f"say which step: waiting are {', '.join(waiting)}"
        raise Problem(409, "not-waiting", detail, waiting=waiting)
    text = await broker.decide_async(run_id, step, who.principal, approve)
    await _audit(svc, who, action, target=f"run:{run_id}", detail=text, key=key)
    return {"id": run_id, "decision": "approved" if approve else "rejected", "step": step or waiting[0], "message": text}


@router.post("/runs/{run_id}/approve", summary="Approve a step waiting for approval")
async def approve(run_id: int, request: Request, body: DecisionBody | None = None, who: TokenInfo = Depends(require("runs:write"))) -> dict[str, Any]:
    return await _decide(request, run_id, body, who, True)


@router.post("/runs/{run_id}/reject", summary="Reject a step waiting for approval (the run fails)")
async def reject(run_id: int, request: Request, body: DecisionBody | None = None, who: TokenInfo = Depends(require("runs:write"))) -> dict[str, Any]:
    return await _decide(request, run_id, body, who, False)


@router.get(
    "/runs/{run_id}/events",
    summary="Server-Sent Events: a snapshot, then step updates live, then the result",
    response_description="text/event-stream with events `snapshot`, `step`, `status` and finally `result` (the run with its steps)",
)
async def run_events(run_id: int, request: Request, who: TokenInfo = Depends(require("runs:read"))) -> EventSourceResponse:
    svc = services(request)
    await _load(svc, run_id)  # 404 before the stream starts
    return EventSourceResponse(_follow(svc, run_id, request), ping=15)


async def _follow(svc: Any, run_id: int, request: Request):  # type: ignore[no-untyped-def]
    """Events of one run: committed changes from this process's run store, plus a database
    poll (once a second) for runs executing in other processes."""
    q = svc.hook.bus.subscribe(run_id)
    try:
        row, steps, key = await _load(svc, run_id)
        seen = {s.node_id: (s.status, s.attempt) for s in steps}
        yield {"event": "snapshot", "data": json.dumps(run_json(row, key, steps))}
        if row.status in TERMINAL:
            yield {"event": "result", "data": json.dumps(run_json(row, key, steps))}
            return
        while True:
            try:
                kind, val = await asyncio.wait_for(q.get(), timeout=1.0)
            except TimeoutError:
                if await request.is_disconnected():
                    return
                row, steps, key = await _load(svc, run_id)
                for s in steps:
                    if seen.get(s.node_id) != (s.status, s.attempt):
                        seen[s.node_id] = (s.status, s.attempt)
                        yield {"event": "step", "data": json.dumps(step_json(s))}
                if row.status in TERMINAL:
                    yield {"event": "result", "data": json.dumps(run_json(row, key, steps))}
                    return
                continue
            if kind == "step":
                seen[val.node_id] = (val.status, val.attempt)
                yield {"event": "step", "data": json.dumps(step_json(val))}
            elif kind == "status":
                if val in TERMINAL:
                    row, steps, key = await _load(svc, run_id)
                    yield {"event": "result", "data": json.dumps(run_json(row, key, steps))}
                    return
                yield {"event": "status", "data": json.dumps({"id": run_id, "status": val})}
    finally:
        svc.hook.bus.unsubscribe(run_id, q)
