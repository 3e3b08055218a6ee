"""Traces (OpenTelemetry) and JSON log lines.

Spans: one per API request (``HTTP <method> <route>``), one per run (``run``, from its
start to its end) with a child span per step (``step <label>``), carrying
``baton.run_id``, ``baton.workflow``, ``baton.thread`` and step attributes. Spans
are exported over OTLP only when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set and the
``otel`` extra (``opentelemetry-sdk``, ``opentelemetry-exporter-otlp``) is installed;
otherwise the OpenTelemetry API's no-op tracer is used, which costs next to nothing.

Logs: :class:`JsonFormatter` writes one JSON object per line with ``ts``, ``level``,
``logger``, ``msg``, and when known ``run_id`` (the executing step's run),
``thread`` and ``trace_id``/``span_id`` of the current span.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace

from engine.context import current_run_id

log = logging.getLogger("baton.server.tracing")

current_thread: ContextVar[str | None] = ContextVar("baton_current_thread", default=None)
"""The thread key (``platform:channel:thread``) a request or run works in, for log lines."""

_configured = False


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


def enabled() -> bool:
    """Whether spans are exported (OTLP configured by :func:`setup_tracing`)."""
    return _configured


def tracer() -> trace.Tracer:
    """Baton's tracer (no-op unless :func:`setup_tracing` configured an exporter)."""
    return trace.get_tracer("baton")


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
