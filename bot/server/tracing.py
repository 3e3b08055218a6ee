"""Traces (OpenTelemetry) and JSON log lines.

Spans: one per API request (``HTTP <method> <route>``); one per chat message handled
(``turn``: ``baton.thread``, ``baton.platform``, ``baton.message_id``) with a child
``route`` span around the routing decision (``baton.route.outcome``, ``.layer``,
``.workflow``, ``.score``); one per run (``run``, from its start to its end; its
parent is the ``route`` span that chose it, else the ``turn`` that asked for it, see
:func:`remember_run_parent`) with a child span per step (``step <label>``), carrying
``baton.run_id``, ``baton.workflow``, ``baton.thread`` and step attributes; and one
per LLM provider call (``llm <provider>``: ``gen_ai.system``, ``gen_ai.request.model``,
``gen_ai.usage.input_tokens``/``output_tokens``, ``baton.cost_usd``), a child of
whatever span is current (the ``turn`` for chat). Spans are exported over OTLP only
when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set and the ``otel`` extra
(``opentelemetry-sdk``, ``opentelemetry-exporter-otlp``) is installed, or when a
provider is given to :func:`use_provider` (tests: the SDK's ``InMemorySpanExporter``);
otherwise no span is made at all (:func:`start_span` returns the API's no-op
``INVALID_SPAN``), which costs next to nothing.

Logs: :class:`JsonFormatter` writes one JSON object per line with ``ts``, ``level``,
``logger``, ``msg``, and when known ``run_id`` (the executing step's run),
``thread`` and ``trace_id``/``span_id`` of the current span.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections import OrderedDict
from collections.abc import Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace

from engine.context import current_run_id

log = logging.getLogger("baton.server.tracing")

current_thread: ContextVar[str | None] = ContextVar("baton_current_thread", default=None)
"""The thread key (``platform:channel:thread``) a request or run works in, for log lines."""

_configured = False
_provider: trace.TracerProvider | None = None
_run_parents: OrderedDict[int, otel_context.Context] = OrderedDict()
_RUN_PARENTS_MAX = 10_000


def setup_tracing() -> bool:
    """Configure OTLP export when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set; returns whether it is on.

    A missing ``otel`` extra is logged once (a warning naming the extra) and tracing stays off.
    """
    global _configured
    if _configured or not os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return _configured
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        log.warning("OTEL_EXPORTER_OTLP_ENDPOINT is set but the otel extra is not installed (pip install 'baton[otel]'); no traces are exported")
        return False
    provider = TracerProvider(resource=Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "baton")}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _configured = True
    return True


def use_provider(provider: trace.TracerProvider | None) -> None:
    """Make spans with ``provider`` instead of the global one (``None``: back to the global).

    For tests and embedding (the global provider can be set only once per process):
    e.g. an SDK ``TracerProvider`` with a ``SimpleSpanProcessor(InMemorySpanExporter())``.
    """
    global _provider
    _provider = provider
    _run_parents.clear()


def enabled() -> bool:
    """Whether spans are made: OTLP configured by :func:`setup_tracing`, or :func:`use_provider` given one."""
    return _configured or _provider is not None


def tracer() -> trace.Tracer:
    """Baton's tracer (no-op unless :func:`setup_tracing` or :func:`use_provider` set one up)."""
    if _provider is not None:
        return _provider.get_tracer("baton")
    return trace.get_tracer("baton")


def start_span(name: str, attributes: Mapping[str, Any] | None = None, *, parent: otel_context.Context | None = None) -> trace.Span:
    """Start (not make current) span ``name``, a child of ``parent`` or of the current span.

    Returns :data:`opentelemetry.trace.INVALID_SPAN` (a no-op) when tracing is off, so callers
    may always ``end()`` it or pass it to :func:`opentelemetry.trace.use_span`. Attribute
    values that are ``None`` are left out.
    """
    if not enabled():
        return trace.INVALID_SPAN
    attrs = {k: v for k, v in (attributes or {}).items() if v is not None}
    return tracer().start_span(name, context=parent, attributes=attrs)


def remember_run_parent(run_id: int) -> None:
    """Record the current span as the parent of run ``run_id``'s ``run`` span (no-op when off).

    Called where a turn starts or hands on a run; :func:`run_parent` hands it to the
    code that opens the ``run`` span when the run starts (another task). Bounded: the
    oldest of 10,000 unclaimed entries are dropped.
    """
    if not enabled() or not trace.get_current_span().get_span_context().is_valid:
        return
    _run_parents[run_id] = otel_context.get_current()
    while len(_run_parents) > _RUN_PARENTS_MAX:
        _run_parents.popitem(last=False)


def run_parent(run_id: int) -> otel_context.Context | None:
    """The context :func:`remember_run_parent` recorded for ``run_id`` (claimed: removed), else ``None``."""
    return _run_parents.pop(run_id, None)


def route_attributes(span: trace.Span, routed: tuple[str, Any] | None, decision: Any | None) -> None:
    """Describe a routing decision on its ``route`` span.

    Args:
        routed: what the bot does: ``(workflow, args)`` to run, ``("", {})`` for chat,
            ``None`` when it asked a question or refused. ``baton.route.outcome`` is
            ``run``, ``chat``, ``ask`` or ``refused``.
        decision: the router's :class:`bot.routing.Decision` when the router decided
            this message (``None``: decided without it, e.g. a bare workflow name or an
            answer to a question).
    """
    if not span.is_recording():
        return
    if routed is not None:
        outcome = "run" if routed[0] else "chat"
    else:  # a question was asked, or the route refused its author
        outcome = "refused" if decision is not None and decision.outcome is not None and decision.outcome.value == "run" else "ask"
    span.set_attribute("baton.route.outcome", outcome)
    if decision is not None:
        span.set_attribute("baton.route.layer", str(decision.layer.value))
        span.set_attribute("baton.route.score", float(decision.score))
        if decision.route:
            span.set_attribute("baton.route.name", decision.route)
    else:
        span.set_attribute("baton.route.layer", "direct")
    if routed is not None and routed[0]:
        span.set_attribute("baton.route.workflow", routed[0])


class JsonFormatter(logging.Formatter):
    """One JSON object per log line (see the module docstring for the fields)."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = getattr(record, "run_id", None) or current_run_id.get()
        if rid:
            doc["run_id"] = rid
        th = getattr(record, "thread_key", None) or current_thread.get()
        if th:
            doc["thread"] = th
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            doc["trace_id"] = format(ctx.trace_id, "032x")
            doc["span_id"] = format(ctx.span_id, "016x")
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def setup_json_logs(level: str) -> None:
    """Send every log record to stderr as JSON lines (replaces the root logger's handlers)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
