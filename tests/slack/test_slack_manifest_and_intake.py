"""The shipped app manifest matches the adapter; intake priority (acks before handing work over)."""

from __future__ import annotations

import asyncio
import time

import yaml

from adapters._slack_listeners import AcksFirst
from adapters.slack import SlackSettings
from tests.conftest import REPO

MANIFEST = REPO / "config" / "slack-manifest.yaml"


def test_manifest_matches_what_the_adapter_listens_for() -> None:
    m = yaml.safe_load(MANIFEST.read_text())
    defaults = SlackSettings()
    (cmd,) = m["features"]["slash_commands"]
    assert cmd["command"] == defaults.command
    urls = [cmd["url"], m["settings"]["event_subscriptions"]["request_url"], m["settings"]["interactivity"]["request_url"]]
    assert all(u.startswith("https://") and u.endswith(defaults.path) for u in urls)
    scopes = set(m["oauth_config"]["scopes"]["bot"])
    assert {"app_mentions:read", "chat:write", "channels:history", "groups:history", "im:history", "commands", "files:write"} <= scopes
    events = set(m["settings"]["event_subscriptions"]["bot_events"])
    assert {"app_mention", "message.channels", "message.groups", "message.im", "assistant_thread_started"} <= events
    assert m["settings"]["interactivity"]["is_enabled"] is True
    assert m["settings"]["socket_mode_enabled"] is False


async def test_work_waits_while_a_request_awaits_its_ack_then_goes_one_by_one() -> None:
    gate = AcksFirst(max_defer=5.0)
    release = asyncio.Event()
    order: list[str] = []

    async def request() -> None:  # a bolt request in flight until `release`
        async def next_() -> str:
            await release.wait()
            order.append("ack")
            return "ok"

        await gate.middleware(next_)

    async def handover(name: str) -> None:
        await gate.turn()
        order.append(name)

    req = asyncio.create_task(request())
    await asyncio.sleep(0)
    work = [asyncio.create_task(handover(f"w{i}")) for i in range(3)]
    await asyncio.sleep(0.05)
    assert order == [] and gate.in_flight == 1
    release.set()
    await asyncio.gather(req, *work)
    assert order == ["ack", "w0", "w1", "w2"]
    assert gate.in_flight == 0


async def test_work_is_not_starved_by_a_stream_of_requests() -> None:
    gate = AcksFirst(max_defer=0.1)
    gate.in_flight = 1  # a request that never ends
    t0 = time.monotonic()
    await gate.turn()
    assert 0.09 <= time.monotonic() - t0 < 1.0
    gate.in_flight = 0
    t0 = time.monotonic()
    await gate.turn()
    assert time.monotonic() - t0 < 0.01


class _RecordingAssistant:
    """Stands in for bolt's AsyncAssistant: records which request bodies reach it."""

    def __init__(self) -> None:
        self.seen: list[dict] = []

    async def async_process(self, *, req, resp, next):  # noqa: A002 (bolt's protocol)
        self.seen.append(req.body)
        return "assistant"


class _Req:
    def __init__(self, body: dict) -> None:
        self.body = body


def _event(**event: object) -> dict:
    return {"type": "event_callback", "event_id": "Ev1", "event": event}


async def test_the_assistant_gate_passes_only_assistant_requests_to_bolts_assistant() -> None:
    from adapters._slack_listeners import AssistantGate

    rec = _RecordingAssistant()
    gate = AssistantGate(rec)  # type: ignore[arg-type]
    passed_on = 0

    async def next_() -> str:
        nonlocal passed_on
        passed_on += 1
        return "next"

    assistant_bodies = [
        _event(type="assistant_thread_started", assistant_thread={"channel_id": "D1", "thread_ts": "1.0"}),
        _event(type="assistant_thread_context_changed", assistant_thread={"channel_id": "D1", "thread_ts": "1.0", "context": {}}),
        _event(type="message", channel_type="im", channel="D1", user="W2", text="hi", ts="2.0", thread_ts="1.0"),
        _event(type="message", channel_type="im", channel="D1", subtype="message_changed", message={"thread_ts": "1.0"}),
    ]
    other_bodies = [
        _event(type="app_mention", channel="C1", user="W2", text="<@W1> run: x", ts="3.0"),
        _event(type="message", channel_type="channel", channel="C1", user="W2", text="hi", ts="4.0", thread_ts="3.0"),
        _event(type="message", channel_type="im", channel="D1", user="W2", text="top-level DM", ts="5.0"),
        {"type": "block_actions", "actions": [{"action_id": "baton_retry"}]},
        {"command": "/baton", "text": "runs"},
    ]
    async with asyncio.timeout(5):
        for b in assistant_bodies:
            assert await gate.async_process(req=_Req(b), resp=None, next=next_) == "assistant"
        for b in other_bodies:
            assert await gate.async_process(req=_Req(b), resp=None, next=next_) == "next"
    assert rec.seen == assistant_bodies
    assert passed_on == len(other_bodies)
