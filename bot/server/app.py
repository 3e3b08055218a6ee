"""The ASGI application of ``baton serve`` and its factory.

:func:`create_app` builds one FastAPI app serving the REST API v1 (``/api/v1``), the
Slack Events endpoint (``/slack/events``, when Slack is configured), ``/metrics``,
``/healthz``, ``/readyz`` and the OpenAPI docs (``/docs``, ``/openapi.json``). Other
features (the dashboard) add their pages with ``extra_routers``; they find the running
services in ``request.app.state.services`` (a :class:`Services`).

Runs are started through the app's admission (``baton.admission``, :mod:`bot.queue.admission`),
the same path as chat; a POST to the API counts as arriving work from its first byte
(:class:`bot.queue.admission.Priority`), so runs starting yield to requests being admitted.

Lifecycle (lifespan): start Baton (or use the one passed in), register the ``api``
outlet, install the run hook (outbox, metrics, live events, spans), resume unfinished
API runs, start the webhook dispatcher and the audit retention loop; on shutdown stop
them, then runs (they stay resumable) and the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from sqlalchemy import text
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bot.server import metrics
from bot.server.audit import AuditStore
from bot.server.auth import RateLimiter, TokenStore
from bot.server.events import ServiceHook, install
from bot.server.outlet import ApiOutlet
from bot.server.problems import MEDIA_TYPE, Problem, install_handlers, problem_response
from bot.server import tracing
from bot.server.tracing import setup_tracing
from bot.server.webhooks import Dispatcher
from bot.tasks import TaskOwner
from bot.settings import Settings

log = logging.getLogger("baton.server")

API_PREFIX = "/api/v1"


@dataclass
class Services:
    """What the routers use; ``request.app.state.services``.

    Attributes:
        baton: the running :class:`bot.app.App`.
        tokens, audit: the token and audit stores.
        limiter: per-token rate limit.
        hook: run hook (live events for SSE).
        dispatcher: webhook delivery.
        slack: whether ``/slack/events`` is served.
    """

    baton: Any
    tokens: TokenStore
    audit: AuditStore
    limiter: RateLimiter
    hook: ServiceHook
    dispatcher: Dispatcher
    slack_endpoint: Any = None
    tasks: TaskOwner = field(default_factory=lambda: TaskOwner("server", logger=log))


def create_app(
    settings: Settings,
    *,
    baton: Any = None,
    extra_routers: Sequence[APIRouter] = (),
    slack: bool | None = None,
    resume: bool = True,
) -> FastAPI:
    """The ``baton serve`` application.

    Args:
        settings: Baton's settings (``[server]``, ``[webhooks.*]``, ``[retention]`` …).
        baton: an already started :class:`bot.app.App` to serve (tests); default: start
            one in the lifespan and close it on shutdown.
        extra_routers: more routers to include (the dashboard's pages).
        slack: serve ``/slack/events``; default: when ``BATON_SLACK_BOT_TOKEN`` and
            ``BATON_SLACK_SIGNING_SECRET`` are set.
        resume: resume unfinished runs of API threads at start.
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from bot.app import App

        setup_tracing()
        owned = baton is None
        outlet = ApiOutlet()
        running = await App.start(settings, {"api": outlet}) if owned else baton
        if not owned:
            running.add_outlet(outlet)
        hook = install(running)
        dispatcher = Dispatcher(running.db, settings)
        hook.on_outbox.append(dispatcher.wake)
        svc = Services(
            baton=running,
            tokens=TokenStore(running.db),
            audit=AuditStore(running.db),
            limiter=RateLimiter(settings.server.rate_limit, settings.server.rate_burst),
            hook=hook,
            dispatcher=dispatcher,
        )
        app.state.services = svc
        try:
            if _want_slack(slack):
                svc.slack_endpoint = _slack_endpoint(running)
            platforms = {"api"} | ({"slack"} if svc.slack_endpoint else set())
            if resume:
                await running.manager.resume_unfinished(platforms)
            svc.tasks.start(dispatcher.run(), name="baton-webhooks")
            svc.tasks.start(_prune_loop(svc, settings), name="baton-audit-retention")
            if owned:
                settle_heap()
            yield
        finally:
            await svc.tasks.aclose()
            await asyncio.shield(_close(svc, owned))

    app = FastAPI(
        title="Baton API",
        version="1",
        summary="Start and follow workflow runs, read threads and statistics, receive signed webhooks.",
        lifespan=lifespan,
        docs_url="/docs",
        openapi_url="/openapi.json",
        # Baton makes the server span of each request itself (_Observe); FastAPI's native
        # telemetry would add a second one per request (and costs a check per request)
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    install_handlers(app)
    from bot.server.api_more import router as more_router
    from bot.server.api_runs import router as runs_router

    app.include_router(runs_router, prefix=API_PREFIX)
    app.include_router(more_router, prefix=API_PREFIX)
    ops = _ops_router()
    app.include_router(ops)
    for r in extra_routers:  # the dashboard mounts its pages here
        app.include_router(r)
    from bot.server.fastpath import SLACK_PATH, FastRunStart, route_of

    app.add_middleware(FastRunStart, slack_route=route_of(ops.routes, SLACK_PATH))  # inside _Observe: measured, traced and counted as arriving work
    app.add_middleware(_Observe)
    return app


async def _close(svc: Services, owned: bool) -> None:
    await svc.dispatcher.aclose()
    if owned:
        await svc.baton.aclose()


def settle_heap() -> None:
    """Move everything alive after start-up out of the cyclic garbage collector's view
    (:func:`gc.freeze`): the modules, the catalogue, the FastAPI app are never garbage, and
    a full collection walking them stopped the event loop for 100-300 ms every few thousand
    requests (the API's p99); afterwards full collections walk only what was made since."""
    gc.collect()
    gc.freeze()


def _want_slack(flag: bool | None) -> bool:
    import os

    if flag is not None:
        return flag
    return bool(os.environ.get("BATON_SLACK_BOT_TOKEN") and os.environ.get("BATON_SLACK_SIGNING_SECRET"))


#: The Slack adapter's ASGI entry point, looked up by module name: the core imports no
#: adapter (the adapters depend on the core; see bot.cli.LAUNCHER and docs/architecture.md).
SLACK_ENDPOINT = "adapters.slack_asgi"


def _slack_endpoint(baton: Any) -> Any:
    import importlib

    slack = importlib.import_module(SLACK_ENDPOINT)
    return slack.slack_endpoint(baton, slack.SlackSettings(), on_ack=metrics.SLACK_ACK_SECONDS.observe)


async def _prune_loop(svc: Services, settings: Settings) -> None:
    """``[retention] audit_days``: delete old audit rows and delivery records, every ``interval``."""
    while True:
        try:
            n = await svc.audit.prune(settings.retention.audit_days)
            if n:
                log.info("audit retention: deleted %d rows older than %s days", n, settings.retention.audit_days)
        except Exception as e:  # the next pass retries; never swallow cancellation (not an Exception)
            log.warning("audit retention failed: %s", e)
        await asyncio.sleep(settings.retention.interval)


def _ops_router() -> APIRouter:
    r = APIRouter()

    @r.get("/healthz", tags=["operations"], summary="Liveness: the process answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @r.get("/readyz", tags=["operations"], summary="Readiness: database reachable and migrations current")
    async def readyz(request: Request) -> Response:
        svc: Services = request.app.state.services
        try:
            current, head = await _revisions(svc.baton.db)
        except Exception as e:
            return problem_response(Problem(503, "not-ready", f"database unreachable: {type(e).__name__}"), request)
        if current != head:
            return problem_response(
                Problem(503, "not-ready", f"database at migration {current}, code expects {head}; run baton db upgrade", current=current, head=head),
                request,
            )
        return JSONResponse({"status": "ready", "migration": current})

    @r.get("/metrics", tags=["operations"], summary="Prometheus metrics", response_class=PlainTextResponse)
    async def metrics_endpoint(request: Request) -> Response:
        _breakers(request.app.state.services.baton)
        queue = getattr(request.app.state.services.baton.bot, "queue", None)
        if queue is not None and hasattr(queue, "queued"):
            metrics.QUEUE_DEPTH.set(queue.queued)
        return Response(metrics.render(), media_type=metrics.CONTENT_TYPE_LATEST)

    @r.post("/slack/events", tags=["slack"], summary="Slack Events API, interactivity and slash commands (signed by Slack)")
    async def slack_events(request: Request) -> Response:
        svc: Services = request.app.state.services
        if svc.slack_endpoint is None:
            raise Problem(404, "slack-not-configured", "Slack is not configured on this server (set BATON_SLACK_BOT_TOKEN and BATON_SLACK_SIGNING_SECRET)")
        return await svc.slack_endpoint(request)

    return r


def _breakers(baton: Any) -> None:
    """Refresh ``baton_provider_circuit_open`` from each configured provider's circuit breaker."""
    llm = getattr(baton, "llm", None)
    if llm is None:
        return
    for name in llm.names:
        try:
            state = llm.registry.get(name).breaker.state
        except Exception:  # an unconfigured provider (no key) has no breaker
            continue
        metrics.CIRCUIT_STATE.labels(name).set(1.0 if state == "open" else 0.0)


async def _revisions(db: Any) -> tuple[str | None, str]:
    from alembic.script import ScriptDirectory

    from bot.store.db import alembic_config

    # reading the migration scripts is file I/O: off the event loop
    head = await asyncio.to_thread(lambda: ScriptDirectory.from_config(alembic_config(db.url)).get_current_head())
    async with db.engine.connect() as conn:
        current = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()
    return current, head or ""


class _Observe:
    """ASGI middleware: a span and metrics per API request (route template as label)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        code = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal code
            if message["type"] == "http.response.start":
                code = message["status"]
            await send(message)

        method = scope["method"]
        svc = getattr(scope["app"].state, "services", None) if "app" in scope else None
        admission = getattr(svc.baton, "admission", None) if method == "POST" and svc is not None else None
        arriving = admission.priority.arriving() if admission is not None else contextlib.nullcontext()
        span_cm = tracing.tracer().start_as_current_span(f"HTTP {method}", kind=_server_kind()) if tracing.enabled() else contextlib.nullcontext()
        with span_cm as span, arriving:
            try:
                await self.app(scope, receive, send_wrapper)
            finally:
                route = getattr(scope.get("route"), "path", None) or "unmatched"
                if scope["path"].startswith(API_PREFIX) and route.startswith("/") and not route.startswith(API_PREFIX):
                    route = API_PREFIX + route  # routers included with a prefix report their own paths
                if span is not None:
                    span.update_name(f"HTTP {method} {route}")
                    span.set_attribute("http.route", route)
                    span.set_attribute("http.response.status_code", code)
                if route != "/metrics":
                    count, seconds = _children(method, route, code)
                    count.inc()
                    seconds.observe(time.perf_counter() - t0)


_CHILDREN: dict[tuple[str, str, int], tuple[Any, Any]] = {}


def _children(method: str, route: str, code: int) -> tuple[Any, Any]:
    """The request counter and duration histogram of ``(method, route, code)``; the labelled
    children looked up once (``labels()`` takes a lock and builds a key on every call).
    Bounded: routes are templates, codes a few; cleared past 4096 entries."""
    key = (method, route, code)
    got = _CHILDREN.get(key)
    if got is None:
        if len(_CHILDREN) >= 4096:
            _CHILDREN.clear()
        got = _CHILDREN[key] = (metrics.API_REQUESTS.labels(method, route, str(code)), metrics.API_REQUEST_SECONDS.labels(method, route))
    return got


def _server_kind() -> Any:
    from opentelemetry.trace import SpanKind

    return SpanKind.SERVER


__all__ = ["API_PREFIX", "MEDIA_TYPE", "Services", "create_app"]
