"""Run events for the outside world: the webhooks outbox, metrics and live API streams.

:class:`ServiceHook` is a :class:`bot.store.runs.RunHook`: the run store calls it inside
the transaction of every run status change and step checkpoint, and it returns the
``webhook_outbox`` rows for the webhooks subscribed to that event, so the event is in
the outbox exactly when the change commits (transactional outbox). After the commit it
counts metrics and wakes listeners (the webhook dispatcher, SSE streams).

Event types (the ``type`` field of a webhook payload, Standard Webhooks style
``{"type", "timestamp", "data"}``): ``run.succeeded``, ``run.failed``,
``run.cancelled``, ``step.finished``, ``step.failed``, ``approval.requested``.
Each event has one id (``msg_…``), shared by every webhook that receives it and stable
across retries, so receivers can dedupe on the ``webhook-id`` header.

Installed by :func:`install` (``App.start`` calls it), so runs executed by any Baton
process write their events; ``baton serve`` delivers them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from bot.server import metrics, tracing
from bot.settings import WebhookEntry
from bot.store import ThreadKey
from bot.store.db import Database, _aware
from bot.store.tables import runs, threads
from engine.events import StepRecord
from engine.graph import Graph

if TYPE_CHECKING:
    from bot.app import App

log = logging.getLogger("baton.server.events")

_CACHE_MAX = 4096
_rng = random.Random()


@dataclass(frozen=True, slots=True)
class RunInfo:
    """What an event says about its run (cached per run id while it executes)."""

    run_id: int
    workflow: str
    source: str
    thread: dict[str, str]
    created_at: datetime | None
    providers: dict[str, str | None]  # node id -> provider entry name (LLM steps)


def _thread(key: ThreadKey) -> dict[str, str]:
    return {"platform": key.platform, "channel": key.channel, "thread": key.thread}


def _providers(graph: Graph) -> dict[str, str | None]:
    return {n.id: n.args.get("provider") for n in graph.steps if n.kind == "llm"}


def workflow_label(name: str | None) -> str:
    """The metric/webhook-filter label of a run: its workflow name, or ``adhoc`` for typed text."""
    return name or "adhoc"


def _ns(dt: datetime) -> int:
    return int(dt.timestamp() * 1e9)


def event_id() -> str:
    """A new event id in the Standard Webhooks ``msg_…`` style: 128 random bits.

    Not a secret, only unique: drawn from :mod:`random` (seeded from the OS once)
    rather than ``uuid4`` (an ``os.urandom`` system call per event, measurably slow
    on a loaded machine)."""
    return f"msg_{_rng.getrandbits(128):032x}"


def step_json(s: StepRecord) -> dict[str, Any]:
    """One step record as JSON (times ISO 8601 UTC, durations in seconds, cost in USD)."""
    return {
        "id": s.node_id,
        "label": s.label,
        "kind": s.kind,
        "status": s.status,
        "attempt": s.attempt,
        "started_at": s.started_at.isoformat() if s.started_at else None,
        "finished_at": s.finished_at.isoformat() if s.finished_at else None,
        "duration_s": s.duration_s,
        "output": s.output,
        "error": s.error,
        "tokens_in": s.tokens_in,
        "tokens_out": s.tokens_out,
        "cost_usd": s.cost_usd,
        "reused": s.reused,
    }


class LiveBus:
    """Fan-out of committed run changes to in-process listeners (SSE streams).

    ``subscribe(run_id)`` returns a queue receiving ``("step", StepRecord)`` and
    ``("status", str)`` items, committed order; ``unsubscribe`` when done. Queues are
    unbounded but live only as long as a client follows one run.
    """

    def __init__(self) -> None:
        self._subs: dict[int, list[asyncio.Queue[tuple[str, Any]]]] = {}

    def subscribe(self, run_id: int) -> asyncio.Queue[tuple[str, Any]]:
        q: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._subs.setdefault(run_id, []).append(q)
        return q

    def unsubscribe(self, run_id: int, q: asyncio.Queue[tuple[str, Any]]) -> None:
        subs = self._subs.get(run_id, [])
        if q in subs:
            subs.remove(q)
        if not subs:
            self._subs.pop(run_id, None)

    def publish(self, run_id: int, item: tuple[str, Any]) -> None:
        for q in self._subs.get(run_id, ()):
            q.put_nowait(item)


class ServiceHook:
    """Outbox rows, metrics and live events for every run of this process.

    Args:
        db: where to read a run's name and thread at its first status change.
        webhooks: ``[webhooks.NAME]`` entries (may be empty: then no outbox rows).
        models: provider entry name (``None``: the default) → model id, for metric labels.
    """

    def __init__(self, db: Database | None, webhooks: dict[str, WebhookEntry], models: dict[str | None, str] | None = None) -> None:
        self.db = db
        self.webhooks = webhooks
        self.models = models or {}
        self.bus = LiveBus()
        self._info: OrderedDict[int, RunInfo] = OrderedDict()
        self.on_outbox: list[Callable[[], None]] = []
        self._pending_outbox = False
        self._started: dict[int, datetime] = {}
        self._spans: dict[int, Any] = {}

    # -- RunHook -------------------------------------------------------------

    def remember_run(self, run_id: int, key: ThreadKey, graph: Graph, created_at: datetime) -> None:
        """Tell the hook about a run just admitted (saves reading it back at its first status change)."""
        self._remember(RunInfo(run_id, workflow_label(graph.name), graph.source, _thread(key), created_at, _providers(graph)))

    async def status_rows(self, run_id: int, status: str, error: str | None) -> list[dict[str, Any]]:
        """Outbox rows for a run status change (the run's name and thread are read once per run)."""
        info = self._info.get(run_id)
        if info is None:
            if self.db is None:
                return []
            async with self.db.begin(f"reading run {run_id}") as conn:
                r = (
                    await conn.execute(
                        select(runs.c.name, runs.c.source, runs.c.graph, runs.c.created_at, threads.c.platform, threads.c.channel, threads.c.thread)
                        .join(threads, threads.c.id == runs.c.thread_id)
                        .where(runs.c.id == run_id)
                    )
                ).first()
            if r is None:
                return []
            try:
                providers = _providers(Graph.from_json(r.graph))
            except Exception:  # an unreadable graph must not stop the status change
                log.warning("run %s: graph unreadable for metrics", run_id)
                providers = {}
            info = RunInfo(
                run_id,
                workflow_label(r.name),
                r.source,
                _thread(ThreadKey(r.platform, r.channel, r.thread)),
                _aware(r.created_at),
                providers,
            )
            self._remember(info)
        if status not in ("succeeded", "failed", "cancelled"):
            return []
        data = {"run_id": run_id, "workflow": info.workflow, "source": info.source, "status": status, "error": error, "thread": info.thread}
        return self._rows(f"run.{status}", info, data)

    def step_rows(self, records: Sequence[StepRecord]) -> list[dict[str, Any]]:
        """Outbox rows for step checkpoints: finished, failed, or waiting for approval."""
        if not self.webhooks:
            return []
        out: list[dict[str, Any]] = []
        for s in records:
            kind = {"succeeded": "step.finished", "failed": "step.failed", "waiting": "approval.requested"}.get(s.status)
            if kind is None or s.reused:
                continue
            info = self._info.get(int(s.run_id))
            if info is None:
                info = RunInfo(int(s.run_id), "adhoc", "", {}, None, {})
            data = {"run_id": info.run_id, "workflow": info.workflow, "thread": info.thread, "step": step_json(s)}
            out += self._rows(kind, info, data)
        return out

    def committed(self, run_id: int, status: str) -> None:
        """After a status change committed: metrics, live listeners, wake the dispatcher."""
        info = self._info.get(run_id)
        wf = info.workflow if info else "adhoc"
        now = datetime.now(UTC)
        if tracing.enabled():
            self._trace_run(run_id, status, info, now)
        if status == "running":
            metrics.RUNS_STARTED.labels(wf).inc()
            self._started[run_id] = now
            if info is not None and info.created_at is not None:
                metrics.ADMISSION_TO_START.observe(max(0.0, (now - info.created_at).total_seconds()))
        elif status in ("succeeded", "failed", "cancelled"):
            metrics.RUNS_FINISHED.labels(wf, status).inc()
            started = self._started.pop(run_id, None)
            if started is not None:
                metrics.RUN_SECONDS.labels(wf, status).observe((now - started).total_seconds())
            self._info.pop(run_id, None)
        self.bus.publish(run_id, ("status", status))
        self._wake()

    def steps_committed(self, records: Sequence[StepRecord]) -> None:
        """After checkpoints committed: step metrics, LLM usage, live listeners."""
        woke = False
        traced = tracing.enabled()
        for s in records:
            rid = int(s.run_id)
            self.bus.publish(rid, ("step", s))
            if traced and s.finished_at is not None and not s.reused:
                self._trace_step(rid, s)
            if s.reused or s.status not in ("succeeded", "failed", "cancelled", "skipped", "waiting"):
                continue
            if s.status == "waiting":
                woke = True
                continue
            woke = True
            if s.duration_s is not None:
                metrics.STEP_SECONDS.labels(s.kind, s.status).observe(s.duration_s)
            if s.attempt > 1:
                metrics.STEP_RETRIES.labels(s.kind).inc(s.attempt - 1)
            if s.kind == "llm" and (s.tokens_in or s.tokens_out or s.cost_usd):
                info = self._info.get(rid)
                prov = info.providers.get(s.node_id) if info else None
                model = self.models.get(prov) or self.models.get(None) or "unknown"
                pname = prov or self.models.get("__default__", "default")
                metrics.LLM_TOKENS.labels(pname, model, "in").inc(s.tokens_in)
                metrics.LLM_TOKENS.labels(pname, model, "out").inc(s.tokens_out)
                metrics.LLM_COST.labels(pname, model).inc(s.cost_usd)
        if woke:
            self._wake()

    # -- traces (only when OTLP export is configured) ---------------------------

    def _trace_run(self, run_id: int, status: str, info: RunInfo | None, now: datetime) -> None:
        """A ``run`` span from the run's start to its end, with run id, workflow and thread."""
        if status == "running":
            attrs = {"baton.run_id": run_id, "baton.workflow": info.workflow if info else "adhoc"}
            if info and info.thread:
                attrs["baton.thread"] = ":".join(info.thread.values())
            parent = tracing.run_parent(run_id)  # the route/turn span that started it, if this process has it
            self._spans[run_id] = tracing.tracer().start_span("run", context=parent, start_time=_ns(now), attributes=attrs)
        elif status in ("succeeded", "failed", "cancelled"):
            span = self._spans.pop(run_id, None)
            if span is not None:
                span.set_attribute("baton.status", status)
                span.end(end_time=_ns(now))

    def _trace_step(self, run_id: int, s: StepRecord) -> None:
        """A ``step`` span (child of its run's span) over the step's last attempt."""
        from opentelemetry import trace

        parent = self._spans.get(run_id)
        ctx = trace.set_span_in_context(parent) if parent is not None else None
        start = s.started_at or s.finished_at
        span = tracing.tracer().start_span(
            f"step {s.label[:60]}",
            context=ctx,
            start_time=_ns(start),  # type: ignore[arg-type]
            attributes={"baton.run_id": run_id, "baton.step": s.node_id, "baton.step.kind": s.kind, "baton.step.status": s.status,
                        "baton.step.attempt": s.attempt, "baton.tokens_in": s.tokens_in, "baton.tokens_out": s.tokens_out},
        )
        span.end(end_time=_ns(s.finished_at))  # type: ignore[arg-type]

    # -- helpers -------------------------------------------------------------

    def _remember(self, info: RunInfo) -> None:
        self._info[info.run_id] = info
        while len(self._info) > _CACHE_MAX:
            self._info.popitem(last=False)

    def _rows(self, kind: str, info: RunInfo, data: dict[str, Any]) -> list[dict[str, Any]]:
        targets = [
            name
            for name, w in self.webhooks.items()
            if kind in w.events and (not w.workflows or info.workflow in w.workflows)
        ]
        if not targets:
            return []
        now = datetime.now(UTC)
        eid = event_id()
        payload = json.dumps({"type": kind, "timestamp": now.isoformat(), "data": data}, separators=(",", ":"), default=str)
        self._pending_outbox = True
        return [
            {
                "event_id": eid,
                "webhook": name,
                "event_type": kind,
                "payload": payload,
                "status": "pending",
                "attempts": 0,
                "created_at": now,
                "next_attempt_at": now,
            }
            for name in targets
        ]

    def _wake(self) -> None:
        if self._pending_outbox:
            self._pending_outbox = False
            for cb in self.on_outbox:
                cb()


def install(app: App) -> ServiceHook:
    """Attach a :class:`ServiceHook` to ``app``'s run store (idempotent); returns it."""
    for h in app.runs.hooks:
        if isinstance(h, ServiceHook):
            return h
    models: dict[str | None, str] = {}
    if app.llm is not None:
        for name in app.llm.names:
            try:
                models[name] = app.llm.registry.entry(name).model
            except Exception:
                continue
        try:
            default = app.llm.registry.default_name
            models["__default__"] = default
            if default in models:
                models[None] = models[default]
        except Exception:
            pass
    hook = ServiceHook(app.db, dict(app.settings.webhooks), models)
    app.runs.hooks.append(hook)
    return hook
