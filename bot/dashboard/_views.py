"""The dashboard's routes: server-rendered pages (Jinja2), htmx fragments and SSE streams.

Reading needs a session whose token has ``runs:read``; every action needs
``runs:write`` (approve/reject also the ``[permissions] approve`` rule), a CSRF secret,
and goes through the REST API's own handlers (:mod:`bot.server.api_runs`), so the
permission checks, the audit rows and the run admission are the API's.
"""

from __future__ import annotations

import asyncio
import json
import logging
import mimetypes
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy import func, select
from sse_starlette import EventSourceResponse

from bot.dashboard import _data as data
from bot.dashboard._session import COOKIE, Viewer, csrf_ok, session_cookie, set_cookie, viewer
from bot.server.problems import Problem
from bot.store import ThreadKey
from bot.store.db import _aware
from bot.store.tables import messages, runs, threads
from engine.errors import EngineError, WorkflowSyntaxError
from engine.events import TERMINAL

log = logging.getLogger("baton.dashboard")

HERE = Path(__file__).parent
STATIC = (HERE / "static").resolve()
templates = Jinja2Templates(directory=str(HERE / "templates"))
templates.env.filters["tojson_attr"] = lambda v: json.dumps(v)
templates.env.globals["status_icon"] = {k: v[1] for k, v in data.STATUS_STYLES.items()} | {
    "queued": "…", "succeeded": "✓", "failed": "✗", "cancelled": "⊘", "running": "▶", "active": "▶", "paused": "⏸", "finished": "■",
}

router = APIRouter(include_in_schema=False)
NAV = (("/", "Runs"), ("/workflows", "Workflows"), ("/schedules", "Schedules"), ("/threads", "Threads"), ("/stats", "Stats"))


def _svc(request: Request) -> Any:
    return request.app.state.services


def _fmt_time(dt: datetime | None) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if dt else ""


templates.env.filters["when"] = _fmt_time
templates.env.filters["secs"] = lambda s: "" if s is None else (f"{s:.2f}s" if s < 120 else f"{s / 60:.1f} min")


async def _who(request: Request, scope: str = "runs:read") -> Viewer | Response:
    """The viewer, or the response to send instead: the login page, or a 403 page."""
    who = await viewer(request)
    if who is None:
        if request.headers.get("hx-request"):
            return Response(status_code=401, headers={"HX-Redirect": "/login"})
        nxt = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse("/login?" + urlencode({"next": nxt}), status_code=303)
    if not who.can(scope):
        from bot.server.audit import AuditEntry

        await _svc(request).audit.record(
            AuditEntry(who.principal, "api", "permission.denied", "denied", None, None, None,
                       f"dashboard: scope {scope} needed for {request.method} {request.url.path}")
        )
        return _page(request, "error.html", who, status_code=403, title="Not allowed",
                     message=f"Your token {who.token.name!r} lacks the scope {scope!r} (it has {', '.join(who.token.scopes)}).")
    return who


def _page(request: Request, template: str, who: Viewer | None, *, status_code: int = 200, **ctx: Any) -> HTMLResponse:
    ctx.setdefault("title", "Baton")
    return templates.TemplateResponse(request, template, {"who": who, "nav": NAV, "path": request.url.path, **ctx}, status_code=status_code)


async def _action(request: Request) -> tuple[Viewer, Any] | Response:
    """An action's viewer (``runs:write``) and form, after the CSRF and rate-limit checks."""
    who = await _who(request, "runs:write")
    if isinstance(who, Response):
        return who
    form = await request.form()
    if not csrf_ok(request, who, form):
        return _page(request, "error.html", who, status_code=403, title="Refused",
                     message="The form's CSRF token is missing or stale; reload the page and try again.")
    svc = _svc(request)
    wait = svc.limiter.take(who.token.name)
    if wait > 0:
        return _page(request, "error.html", who, status_code=429, title="Slow down", message="This token is over its rate limit; try again in a moment.")
    return who, form


# -- static assets and login ---------------------------------------------------


@router.get("/static/dashboard/{path:path}")
async def static(path: str) -> Response:
    """Packaged CSS/JS (vendored htmx, its SSE extension and Chart.js with their licenses)."""
    target = (STATIC / path).resolve()
    if not target.is_relative_to(STATIC) or not target.is_file():
        return Response("not found", status_code=404, media_type="text/plain")
    media = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
    return FileResponse(target, media_type=media, headers={"Cache-Control": "public, max-age=3600"})


@router.get("/login")
async def login_form(request: Request, next: str = "/") -> Response:
    return _page(request, "login.html", None, title="Sign in", next=_safe_next(next), error=None)


def _safe_next(nxt: str) -> str:
    """Only local paths (no ``//host`` or scheme) are followed after sign-in."""
    return nxt if nxt.startswith("/") and not nxt.startswith("//") and "\\" not in nxt else "/"


@router.post("/login")
async def login(request: Request) -> Response:
    form = await request.form()
    token = str(form.get("token") or "").strip()
    nxt = _safe_next(str(form.get("next") or "/"))
    svc = _svc(request)
    origin = request.headers.get("origin")
    if origin and origin.rstrip("/") != f"{request.url.scheme}://{request.url.netloc}":
        return _page(request, "login.html", None, status_code=403, title="Sign in", next=nxt, error="Sign-in from another site was refused.")
    info = await svc.tokens.verify(token) if token else None
    if info is None:
        from bot.server.audit import AuditEntry

        await svc.audit.record(AuditEntry("dashboard", "api", "dashboard.login", "denied", None, None, None, "unknown or revoked token"))
        return _page(request, "login.html", None, status_code=401, title="Sign in", next=nxt, error="Unknown or revoked token.")
    value, _ = session_cookie(token)
    resp = RedirectResponse(nxt, status_code=303)
    set_cookie(resp, request, value)
    from bot.server.audit import AuditEntry

    await svc.audit.record(AuditEntry(info.principal, "api", "dashboard.login", "ok", None, None, None, None))
    return resp


@router.post("/logout")
async def logout(request: Request) -> Response:
    who = await viewer(request)
    form = await request.form()
    if who is not None and not csrf_ok(request, who, form):
        return Response("refused", status_code=403)
    resp = RedirectResponse("/login", status_code=303)
    resp.delete_cookie(COOKIE, path="/")
    return resp


# -- runs ------------------------------------------------------------------------


def _filters(request: Request) -> data.RunFilters:
    q = request.query_params
    status = q.get("status", "")
    return data.RunFilters(
        status=status if status in data.STATUSES else "",
        workflow=q.get("workflow", "").strip(),
        thread=q.get("thread", "").strip(),
        user=q.get("user", "").strip(),
        since=data.parse_when(q.get("since")),
        until=data.parse_when(q.get("until")),
    )


@router.get("/")
async def runs_page(request: Request) -> Response:
    who = await _who(request)
    if isinstance(who, Response):
        return who
    f = _filters(request)
    cursor = request.query_params.get("cursor")
    items, nxt = await data.list_runs(_svc(request).baton.db, f, cursor)
    workflows = sorted(_svc(request).baton.catalog.workflows)
    return _page(request, "runs.html", who, title="Runs", runs=items, next_cursor=nxt, f=f, q=f.query(), statuses=data.STATUSES,
                 workflows=workflows, **_qs(f, cursor, nxt))


@router.get("/ui/runs/rows")
async def runs_rows(request: Request) -> Response:
    who = await _who(request)
    if isinstance(who, Response):
        return who
    f = _filters(request)
    cursor = request.query_params.get("cursor")
    items, nxt = await data.list_runs(_svc(request).baton.db, f, cursor)
    return _page(request, "_run_rows.html", who, runs=items, next_cursor=nxt, **_qs(f, cursor, nxt))


def _qs(f: data.RunFilters, cursor: str | None, nxt: str | None) -> dict[str, str]:
    """Query strings of this page (for the live refresh) and of the next page."""
    q = f.query()
    return {"rows_qs": urlencode(q | ({"cursor": cursor} if cursor else {})), "next_qs": urlencode(q | {"cursor": nxt or ""})}


async def _watch_runs(request: Request) -> Any:
    """SSE: ``changed`` whenever a run is added or an active run changes status."""
    db = _svc(request).baton.db
    pulse = _pulse(_svc(request))
    last = await data.runs_fingerprint(db)
    yield {"event": "changed", "data": "connected"}  # covers changes between rendering the page and subscribing
    while True:
        await pulse.wait(timeout=1.0)
        if await request.is_disconnected():
            return
        now = await data.runs_fingerprint(db)
        if now != last:
            last = now
            yield {"event": "changed", "data": json.dumps({"at": datetime.now(UTC).isoformat()})}


@router.get("/ui/runs/live")
async def runs_live(request: Request) -> Response:
    who = await _who(request)
    if isinstance(who, Response):
        return who
    return EventSourceResponse(_watch_runs(request), ping=15)


class _Pulse:
    """A run-store hook that wakes the dashboard's SSE streams after every committed change
    (other processes' runs are seen by the streams' once-a-second poll)."""

    def __init__(self) -> None:
        self._cond: asyncio.Event = asyncio.Event()

    async def status_rows(self, run_id: int, status: str, error: str | None) -> list[dict[str, Any]]:
        """No outbox rows: the dashboard only listens (see :class:`bot.store.runs.RunHook`)."""
        return []

    def step_rows(self, records: Any) -> list[dict[str, Any]]:
        return []

    def committed(self, run_id: int, status: str) -> None:
        self._cond.set()

    def steps_committed(self, records: Any) -> None:
        self._cond.set()

    async def wait(self, timeout: float) -> None:
        """Return after the next change, or after ``timeout`` seconds."""
        try:
            async with asyncio.timeout(timeout):
                await self._cond.wait()
        except TimeoutError:
            return
        finally:
            self._cond.clear()


def _pulse(svc: Any) -> _Pulse:
    for h in svc.baton.runs.hooks:
        if isinstance(h, _Pulse):
            return h
    p = _Pulse()
    svc.baton.runs.hooks.append(p)
    return p


async def _run_ctx(request: Request, who: Viewer, run_id: int) -> dict[str, Any] | None:
    svc = _svc(request)
    got = await svc.baton.runs.get(run_id)
    if got is None:
        return None
    row, steps = got
    key = await svc.baton.sessions.key_for(row.thread_id)
    by_id = {s.node_id: s for s in steps}
    ordered = data.ordered_steps(row.graph, steps)
    svg = await data.graph_svg(row.graph, by_id, title=f"Run #{row.id}: {row.graph.name or row.source}")
    broker = svc.baton.bot.approvals
    waiting = [s for _, s, _ in await broker.waiting(run_id)] if broker is not None else []
    can_act = who.can("runs:write")
    return {
        "run": row,
        "thread": f"{key.platform}:{key.channel}:{key.thread}",
        "steps": ordered,
        "svg": svg,
        "fallback": None if svg else data.graph_fallback(row.graph, by_id),
        "timeline": data.timeline(ordered),
        "total_cost": sum(s.cost_usd for s in ordered),
        "total_tokens": sum(s.tokens_in + s.tokens_out for s in ordered),
        "terminal": row.status in TERMINAL,
        "can_cancel": can_act and row.status in data.ACTIVE,
        "can_rerun": can_act and row.status in TERMINAL,
        "can_decide": can_act and bool(waiting) and broker is not None and broker.may_decide(who.principal, ()),
        "waiting": waiting,
        "rerun_steps": [n for n in row.graph.steps],
        "csrf": who.csrf,
    }


@router.get("/runs/{run_id}")
async def run_page(request: Request, run_id: int) -> Response:
    who = await _who(request)
    if isinstance(who, Response):
        return who
    ctx = await _run_ctx(request, who, run_id)
    if ctx is None:
        return _page(request, "error.html", who, status_code=404, title="No such run", message=f"There is no run #{run_id}.")
    return _page(request, "run.html", who, title=f"Run #{run_id}", flash=request.query_params.get("flash"), **ctx)


@router.get("/ui/runs/{run_id}/body")
async def run_body(request: Request, run_id: int) -> Response:
    who = await _who(request)
    if isinstance(who, Response):
        return who
    ctx = await _run_ctx(request, who, run_id)
    if ctx is None:
        return Response("no such run", status_code=404)
    return _page(request, "_run_body.html", who, **ctx)


async def _watch_run(request: Request, run_id: int) -> Any:
    """SSE for one run: ``changed`` after every committed step or status change, then ``done``;
    the stream stays open (pings) after the result so the browser does not reconnect in a loop."""
    svc = _svc(request)
    q = svc.hook.bus.subscribe(run_id)
    try:
        got = await svc.baton.runs.get(run_id)
        seen = (got[0].status, tuple((s.node_id, s.status, s.attempt) for s in got[1])) if got else None
        done = got is None or got[0].status in TERMINAL
        # the page was rendered before this stream subscribed: one refresh covers that gap
        yield {"event": "changed", "data": str(run_id)}
        while not done:
            try:
                async with asyncio.timeout(1.0):
                    kind, val = await q.get()
                changed = True
                done = kind == "status" and val in TERMINAL
            except TimeoutError:  # runs of other processes: poll the database
                if await request.is_disconnected():
                    return
                got = await svc.baton.runs.get(run_id)
                now = (got[0].status, tuple((s.node_id, s.status, s.attempt) for s in got[1])) if got else None
                changed = now != seen
                seen = now
                done = got is None or got[0].status in TERMINAL
            if changed or done:
                while not q.empty():  # coalesce a burst of checkpoints into one refresh
                    kind, val = q.get_nowait()
                    done = done or (kind == "status" and val in TERMINAL)
                yield {"event": "changed", "data": str(run_id)}
        yield {"event": "done", "data": str(run_id)}
        while not await request.is_disconnected():
            await asyncio.sleep(1.0)
    finally:
        svc.hook.bus.unsubscribe(run_id, q)


@router.get("/ui/runs/{run_id}/live")
async def run_live(request: Request, run_id: int) -> Response:
    who = await _who(request)
    if isinstance(who, Response):
        return who
    return EventSourceResponse(_watch_run(request, run_id), ping=15)


async def _after_action(request: Request, who: Viewer, run_id: int, flash: str, *, to: int | None = None) -> Response:
    if request.headers.get("hx-request"):
        ctx = await _run_ctx(request, who, run_id)
        if to is not None and to != run_id:
            return Response(status_code=204, headers={"HX-Redirect": f"/runs/{to}?" + urlencode({"flash": flash})})
        return _page(request, "_run_body.html", who, flash=flash, **(ctx or {}))
    return RedirectResponse(f"/runs/{to or run_id}?" + urlencode({"flash": flash}), status_code=303)


@router.post("/runs/{run_id}/cancel")
async def run_cancel(request: Request, run_id: int) -> Response:
    got = await _action(request)
    if isinstance(got, Response):
        return got
    who, _ = got
    from bot.server.api_runs import cancel_run

    try:
        await cancel_run(run_id, request, who.token)
        flash = f"Run #{run_id} cancelled."
    except Problem as e:
        flash = f"Not cancelled: {e.detail}"
    return await _after_action(request, who, run_id, flash)


@router.post("/runs/{run_id}/rerun")
async def run_rerun(request: Request, run_id: int) -> Response:
    got = await _action(request)
    if isinstance(got, Response):
        return got
    who, form = got
    from bot.server.api_runs import RerunBody, rerun

    step = str(form.get("from") or "").strip() or None
    try:
        res = await rerun(run_id, request, RerunBody.model_validate({"from": step}), who.token)
    except Problem as e:
        return await _after_action(request, who, run_id, f"Not rerun: {e.detail}")
    return await _after_action(request, who, run_id, f"Rerun of #{run_id}" + (f" from {step}" if step else "") + f" started as #{res['id']}.", to=res["id"])


async def _decision(request: Request, run_id: int, approve_it: bool) -> Response:
    got = await _action(request)
    if isinstance(got, Response):
        return got
    who, form = got
    from bot.server.api_runs import DecisionBody, approve, reject

    body = DecisionBody(step=str(form.get("step") or "") or None)
    try:
        res = await (approve if approve_it else reject)(run_id, request, body, who.token)
        flash = str(res.get("message") or res.get("decision"))
    except Problem as e:
        flash = f"Not {'approved' if approve_it else 'rejected'}: {e.detail}"
    return await _after_action(request, who, run_id, flash)


@router.post("/runs/{run_id}/approve")
async def run_approve(request: Request, run_id: int) -> Response:
    return await _decision(request, run_id, True)


@router.post("/runs/{run_id}/reject")
async def run_reject(request: Request, run_id: int) -> Response:
    return await _decision(request, run_id, False)


# -- workflows -------------------------------------------------------------------


def _params_of(graph: Any, defn: Any) -> list[str]:
    from engine.picture import picture

    params = list(picture(graph).params)
    raw = (defn.spec.get("inputs") if defn is not None and isinstance(defn.spec, dict) else None) or {}
    if not params and isinstance(raw, dict):
        params = [f"{k}" + (f" = {v.get('default')!r}" if isinstance(v, dict) and "default" in v else "") for k, v in raw.items()]
    return params


@router.get("/workflows")
async def workflows_page(request: Request) -> Response:
    who = await _who(request)
    if isinstance(who, Response):
        return who
    cat = _svc(request).baton.catalog
    items = [{"name": n, "description": d.description} for n, d in sorted(cat.workflows.items())]
    return _page(request, "workflows.html", who, title="Workflows", workflows=items, csrf=who.csrf)


@router.get("/workflows/{name}")
async def workflow_page(request: Request, name: str) -> Response:
    who = await _who(request)
    if isinstance(who, Response):
        return who
    svc = _svc(request)
    defn = svc.baton.catalog.workflows.get(name)
    if defn is None:
        return _page(request, "error.html", who, status_code=404, title="No such workflow", message=f"There is no workflow {name!r}.")
    try:
        graph = svc.baton.bot.compile(name)
    except EngineError as e:
        return _page(request, "error.html", who, status_code=422, title="Invalid workflow", message=str(e))
    svg = await data.graph_svg(graph, None)
    return _page(request, "workflow.html", who, title=f"Workflow {name}", name=name, defn=defn, svg=svg,
                 fallback=None if svg else data.graph_fallback(graph, None), params=_params_of(graph, defn),
                 describe=graph.describe(), csrf=who.csrf)


@router.post("/ui/workflows/check")
async def workflow_check(request: Request) -> Response:
    who = await _who(request)
    if isinstance(who, Response):
        return who
    form = await request.form()
    if not csrf_ok(request, who, form):
        return Response("refused: stale CSRF token; reload the page", status_code=403)
    text = str(form.get("text") or "")
    if not text.strip():
        return _page(request, "_check.html", who, error={"reason": "Paste some workflow text first."}, svg=None, fallback=None)
    bot = _svc(request).baton.bot
    try:
        graph = bot.compile(text.strip())
    except WorkflowSyntaxError as e:
        return _page(request, "_check.html", who, error={"reason": e.reason, "line": e.line, "column": e.column, "caret": e.caret()}, svg=None, fallback=None)
    except EngineError as e:
        return _page(request, "_check.html", who, error={"reason": str(e)}, svg=None, fallback=None)
    svg = await data.graph_svg(graph, None)
    return _page(request, "_check.html", who, error=None, svg=svg, fallback=None if svg else data.graph_fallback(graph, None), describe=graph.describe())


# -- schedules -------------------------------------------------------------------


@router.get("/schedules")
async def schedules_page(request: Request) -> Response:
    who = await _who(request)
    if isinstance(who, Response):
        return who
    svc = _svc(request)
    sc = svc.baton.scheduler
    items = []
    if sc is not None:
        rows = await sc.list(everywhere=True)
        async with svc.baton.db.begin("schedules' last runs") as conn:
            last = {}
            if rows:
                names = [f"schedule #{r.id}" for r in rows]
                q = select(runs.c.requested_by, func.max(runs.c.id)).where(runs.c.requested_by.in_(names)).group_by(runs.c.requested_by)
                ids = {rb: rid for rb, rid in (await conn.execute(q)).all()}
                if ids:
                    st = (await conn.execute(select(runs.c.id, runs.c.status).where(runs.c.id.in_(list(ids.values()))))).all()
                    status = dict(st)
                    last = {rb: (rid, status.get(rid)) for rb, rid in ids.items()}
        for r in rows:
            try:
                upcoming = sc.upcoming(r, 3) if r.status == "active" else []
            except Exception:  # an inconsistent stored spec shows no firings rather than breaking the page
                upcoming = []
            items.append({"row": r, "upcoming": upcoming, "last": last.get(f"schedule #{r.id}"),
                          "thread": f"{r.key.platform}:{r.key.channel}:{r.key.thread}"})
    return _page(request, "schedules.html", who, title="Schedules", schedules=items, scheduling=sc is not None,
                 can_act=who.can("runs:write"), csrf=who.csrf, flash=request.query_params.get("flash"))


async def _schedule_state(request: Request, schedule_id: int, pause: bool) -> Response:
    got = await _action(request)
    if isinstance(got, Response):
        return got
    who, _ = got
    svc = _svc(request)
    sc = svc.baton.scheduler
    from bot.server.audit import AuditEntry

    action = "schedule.pause" if pause else "schedule.resume"
    row = await sc.get(schedule_id) if sc is not None else None
    if row is None:
        return RedirectResponse("/schedules?" + urlencode({"flash": f"No schedule #{schedule_id}."}), status_code=303)
    admins = svc.baton.settings.permissions.get("admin", [])
    if row.created_by != who.principal and not who.can("admin") and who.principal not in admins:
        await svc.audit.record(AuditEntry(who.principal, row.key.platform, "permission.denied", "denied", row.key.channel, row.key.thread,
                                          f"schedule:{schedule_id}", f"{action}: not the author or an admin"))
        flash = f"Schedule #{schedule_id} was created by {row.created_by}; only they or an admin may change it."
        return RedirectResponse("/schedules?" + urlencode({"flash": flash}), status_code=303)
    try:
        _, changed = await (sc.pause if pause else sc.resume)(schedule_id)
    except LookupError as e:
        return RedirectResponse("/schedules?" + urlencode({"flash": str(e)}), status_code=303)
    await svc.audit.record(AuditEntry(who.principal, row.key.platform, action, "ok" if changed else "unchanged", row.key.channel, row.key.thread,
                                      f"schedule:{schedule_id}", row.phrase))
    flash = f"Schedule #{schedule_id} {'paused' if pause else 'resumed'}." if changed else f"Schedule #{schedule_id} was already {'paused' if pause else 'active'}."
    return RedirectResponse("/schedules?" + urlencode({"flash": flash}), status_code=303)


@router.post("/schedules/{schedule_id}/pause")
async def schedule_pause(request: Request, schedule_id: int) -> Response:
    return await _schedule_state(request, schedule_id, True)


@router.post("/schedules/{schedule_id}/resume")
async def schedule_resume(request: Request, schedule_id: int) -> Response:
    return await _schedule_state(request, schedule_id, False)


# -- threads ---------------------------------------------------------------------


@router.get("/threads")
async def threads_page(request: Request) -> Response:
    who = await _who(request)
    if isinstance(who, Response):
        return who
    db = _svc(request).baton.db
    async with db.begin("listing threads") as conn:
        rows = (await conn.execute(select(threads).order_by(threads.c.updated_at.desc()).limit(200))).mappings().all()
        ids = [r["id"] for r in rows]
        counts = dict((await conn.execute(select(messages.c.thread_id, func.count()).where(messages.c.thread_id.in_(ids)).group_by(messages.c.thread_id))).all()) if ids else {}
        rcounts = dict((await conn.execute(select(runs.c.thread_id, func.count()).where(runs.c.thread_id.in_(ids)).group_by(runs.c.thread_id))).all()) if ids else {}
    items = [{"id": r["id"], "key": f"{r['platform']}:{r['channel']}:{r['thread']}", "updated_at": _aware(r["updated_at"]),
              "messages": counts.get(r["id"], 0), "runs": rcounts.get(r["id"], 0)} for r in rows]
    return _page(request, "threads.html", who, title="Threads", threads=items)


@router.get("/threads/{thread_id}")
async def thread_page(request: Request, thread_id: int) -> Response:
    who = await _who(request)
    if isinstance(who, Response):
        return who
    svc = _svc(request)
    try:
        key: ThreadKey = await svc.baton.sessions.key_for(thread_id)
    except Exception:
        return _page(request, "error.html", who, status_code=404, title="No such thread", message=f"There is no thread {thread_id}.")
    msgs = await svc.baton.sessions.history(key, limit=200)
    run_rows = await svc.baton.runs.list(thread_id=thread_id, limit=50)
    context = None
    memory = svc.baton.bot.memory
    if memory is not None:
        from bot.sessions import render_breakdown

        try:
            window = await memory.context(key, "(the next message)")
            cfg = memory.config_for(key)
            context = f"Session mode: {cfg.mode}; strategy: {window.strategy}; encoding: {window.encoding}\n" + render_breakdown(window)
        except Exception as e:  # shown on the page, and logged: the rest of the page still answers
            log.warning("context breakdown of thread %s failed: %s", thread_id, e)
            context = f"(the context breakdown failed: {type(e).__name__}: {e})"
    return _page(request, "thread.html", who, title=f"Thread {key.platform}:{key.channel}:{key.thread}",
                 key=f"{key.platform}:{key.channel}:{key.thread}", messages=msgs, runs=run_rows, context=context)


# -- stats -----------------------------------------------------------------------


@router.get("/stats")
async def stats_page(request: Request) -> Response:
    who = await _who(request)
    if isinstance(who, Response):
        return who
    from bot.server.api_more import stats

    days = request.query_params.get("days", "7")
    n = int(days) if days.isdigit() and 1 <= int(days) <= 90 else 7
    s = await stats(request, datetime.now(UTC) - timedelta(days=n), who.token)
    series = await data.daily_series(_svc(request).baton.db, days=max(n, 7))
    wfs = s["workflows"]
    charts = {
        "daily": series,
        "workflows": list(wfs),
        "success": [round(100 * (w["success_rate"] or 0), 1) for w in wfs.values()],
        "avg": [w["avg_duration_s"] or 0 for w in wfs.values()],
        "p95": [w["p95_duration_s"] or 0 for w in wfs.values()],
        "cost": [w["cost_usd"] for w in wfs.values()],
        "llm_labels": [f"{x['provider']} / {x['model']}" for x in s["llm"]],
        "llm_tokens": [x["tokens_in"] + x["tokens_out"] for x in s["llm"]],
        "llm_cost": [x["cost_usd"] for x in s["llm"]],
    }
    return _page(request, "stats.html", who, title="Stats", s=s, days=n, charts=charts)


__all__ = ["router"]
