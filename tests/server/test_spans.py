"""OpenTelemetry spans of a chat turn: turn → route → run → step, and the provider call of a chat reply.

Spans are recorded with the SDK's InMemorySpanExporter through ``tracing.use_provider``
(the global provider can be set once per process); the real App handles the messages,
and the LLM reply comes from the local fake OpenAI-compatible server over HTTP.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry import trace

from adapters.base import Message
from bot.app import App
from bot.server import tracing
from bot.server.events import install
from bot.settings import Settings
from tests.conftest import REPO, RecordingOutlet
from tests.fakes.llm_server import FakeLLMServer

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use_provider(provider)
    try:
        yield exporter
    finally:
        tracing.use_provider(None)
        provider.shutdown()


def one(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, [s.name for s in spans]
    return found[0]


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


async def test_a_turn_routed_to_a_workflow_is_turn_route_run_step(sqlite_url: str, outlet: RecordingOutlet, spans: InMemorySpanExporter) -> None:
    app = await App.start(Settings(config_dir=REPO / "config", database_url=sqlite_url), {"test": outlet}, migrate=True)
    try:
        install(app)  # run and step spans come from the run store's hook (as under baton serve)
        msg = Message("test", "C1", "T1", "alice", "can you check the disk space?", event_id="Ev-span-1")
        await app.bot.handle(msg, outlet)
        await app.bot.drain()
        assert outlet.texts[-1].startswith("Run #1 succeeded")
    finally:
        await app.aclose()
    got = list(spans.get_finished_spans())
    turn, route, run = one(got, "turn"), one(got, "route"), one(got, "run")
    steps = [s for s in got if s.name.startswith("step ")]
    assert turn.parent is None  # the root of the trace
    attrs = dict(turn.attributes or {})
    assert {k: attrs.get(k) for k in ("baton.thread", "baton.platform", "baton.message_id")} == {
        "baton.thread": "test:C1:T1", "baton.platform": "test", "baton.message_id": "Ev-span-1"
    }
    assert parent_of(route) == turn.context.span_id
    assert (route.attributes or {})["baton.route.outcome"] == "run"
    assert (route.attributes or {})["baton.route.layer"] == "rules"
    assert (route.attributes or {})["baton.route.workflow"] == "disk-check"
    assert (route.attributes or {})["baton.route.score"] == pytest.approx(0.9)
    assert parent_of(run) == route.context.span_id
    assert (run.attributes or {})["baton.run_id"] == 1 and (run.attributes or {})["baton.workflow"] == "disk-check"
    assert steps and all(parent_of(s) == run.context.span_id for s in steps)
    assert len({s.context.trace_id for s in (turn, route, run, *steps)}) == 1  # one trace for the whole turn
    assert turn.end_time is not None and route.end_time is not None and route.end_time <= run.start_time  # type: ignore[operator]


async def test_a_chat_turn_has_a_provider_span_with_tokens_and_cost(sqlite_url: str, outlet: RecordingOutlet, spans: InMemorySpanExporter) -> None:
    async with FakeLLMServer(reply="Hello from the fake", usage=(120, 40)) as llm:
        providers = {"local": {"kind": "openai_compatible", "model": "gpt-4o-mini", "base_url": llm.openai_base_url, "default": True}}
        settings = Settings(config_dir=REPO / "config", database_url=sqlite_url, providers=providers)
        app = await App.start(settings, {"test": outlet}, migrate=True)
        try:
            await app.bot.handle(Message("test", "C1", "T2", "bob", "tell me a joke about penguins", event_id="Ev-span-2"), outlet)
            await app.bot.drain()
            assert "Hello from the fake" in outlet.texts[-1]
        finally:
            await app.aclose()
    got = list(spans.get_finished_spans())
    turn, route = one(got, "turn"), one(got, "route")
    assert (route.attributes or {})["baton.route.outcome"] == "chat"
    calls = {parent_of(s): s for s in got if s.name == "llm local"}
    assert set(calls) == {route.context.span_id, turn.context.span_id}  # the router's LLM layer asked first, then the chat reply
    call = calls[turn.context.span_id]
    assert call.context.trace_id == turn.context.trace_id
    attrs = dict(call.attributes or {})
    assert attrs["baton.provider"] == "local" and attrs["gen_ai.request.model"] == "gpt-4o-mini"
    assert attrs["gen_ai.usage.input_tokens"] == 120 and attrs["gen_ai.usage.output_tokens"] == 40
    assert attrs["baton.cost_usd"] > 0  # gpt-4o-mini is priced (genai-prices)
    assert call.status.status_code is not trace.StatusCode.ERROR


def test_no_spans_without_an_exporter() -> None:
    """Tracing off (no OTLP endpoint, no provider): nothing is made, the API's no-op span is returned."""
    assert not tracing.enabled()
    span = tracing.start_span("turn", {"baton.thread": "x"})
    assert span is trace.INVALID_SPAN and not span.is_recording()
