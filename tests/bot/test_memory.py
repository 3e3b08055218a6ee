"""Session memory wired into the bot: modes, /context, /recall, /forget, /summary, budgets and retention."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from adapters.base import Message
from bot.app import App
from bot.settings import ConfigError, Settings
from tests.conftest import REPO, RecordingOutlet


def msg(text: str, channel: str = "C1", thread: str = "T1") -> Message:
    return Message("test", channel, thread, "alice", text)


async def start(sqlite_url: str, outlet: RecordingOutlet, **kw) -> App:  # type: ignore[no-untyped-def]
    return await App.start(Settings(config_dir=REPO / "config", database_url=sqlite_url, **kw), {"test": outlet}, migrate=True)


async def test_context_and_recall_commands(sqlite_url: str, outlet: RecordingOutlet) -> None:
    app = await start(sqlite_url, outlet)
    try:
        for t in ["we deploy the canary to eu-west-1", "the database is postgres 15", "rollback uses the monday snapshot"]:
            await app.bot.handle(msg(t), outlet)
        await app.bot.handle(msg("/recall postgres version"), outlet)
        await app.bot.drain()  # a command is answered after the thread's earlier messages
        assert "alice: the database is postgres 15" in outlet.texts[-1]
        await app.bot.handle(msg("/context"), outlet)
        ctx = outlet.texts[-1]
        assert "Session mode: persistent; strategy: sliding_window" in ctx and "Reserved for response: 2000 tokens" in ctx
        window = await app.memory.context(msg("x").key, "next")
        texts = [m.content for m in window.messages]
        assert texts[0] == app.settings.system_prompt and "rollback uses the monday snapshot" in texts and texts[-1] == "next"
        assert window.breakdown.prompt <= 8000 - 2000 and window.breakdown.total <= 8000
    finally:
        await app.aclose()


async def test_forget_needs_confirmation(sqlite_url: str, outlet: RecordingOutlet) -> None:
    app = await start(sqlite_url, outlet)
    try:
        await app.bot.handle(msg("secret-ish note"), outlet)
        await app.bot.handle(msg("/forget confirm"), outlet)
        await app.bot.drain()  # a command is answered after the thread's earlier messages
        assert outlet.texts[-1] == "Nothing to confirm: send /forget first."
        await app.bot.handle(msg("/forget"), outlet)
        assert "Send /forget confirm within 60 s" in outlet.texts[-1]
        await app.bot.handle(msg("/forget confirm"), outlet)
        assert outlet.texts[-1].startswith("Forgot ")
        assert await app.memory.recall(msg("x").key, "secret") == []
    finally:
        await app.aclose()


async def test_session_modes_per_channel(sqlite_url: str, outlet: RecordingOutlet) -> None:
    app = await start(
        sqlite_url,
        outlet,
        session_channels={"test:stateless-chan": {"mode": "stateless"}, "test:mem-chan": {"mode": "memory", "max_messages": 2}},
    )
    try:
        for ch in ("C1", "stateless-chan", "mem-chan"):
            for i in range(4):
                await app.bot.handle(msg(f"note {i} in {ch}", channel=ch), outlet)
        await app.bot.drain()
        def history(ch: str) -> list[str]:
            return [m.content for m in w[ch].messages if m.kind == "history"]

        w = {ch: await app.memory.context(msg("x", channel=ch).key, "now?") for ch in ("C1", "stateless-chan", "mem-chan")}
        assert len([h for h in history("C1") if h.startswith("note")]) == 4
        assert history("stateless-chan") == []
        # memory mode keeps only the newest max_messages=2 messages of the 8 exchanged
        assert len(history("mem-chan")) == 2 and not any("note 0" in h or "note 1" in h for h in history("mem-chan"))
        # every message is still recorded in the database whatever the mode
        assert await app.sessions.count(msg("x", channel="stateless-chan").key) == 8
    finally:
        await app.aclose()


async def test_budget_smaller_than_system_prompt_is_a_start_error(sqlite_url: str, outlet: RecordingOutlet) -> None:
    with pytest.raises(ConfigError, match=r"system prompt takes \d+ tokens but max_tokens \(120\) minus reserve_tokens \(100\)"):
        await start(sqlite_url, outlet, sessions={"mode": "persistent", "max_tokens": 120, "reserve_tokens": 100})


async def test_summary_strategy_stores_and_reuses_summaries(sqlite_url: str, outlet: RecordingOutlet) -> None:
    app = await start(sqlite_url, outlet, sessions={"strategy": "summary", "summary_frequency": 4, "keep_recent": 2, "max_tokens": 4000, "reserve_tokens": 500})
    try:
        key = msg("x").key
        for i in range(12):
            await app.sessions.append(key, "user", "alice", f"Fact {i}: service-{i} listens on port {8000 + i}.")
        w0 = await app.memory.context(key, "which port?")
        # the turn did not wait for summaries: its window holds the messages themselves
        assert not any(m.kind == "summary" for m in w0.messages) and "Fact 0:" in w0.messages[1].content
        await app.memory.settle()  # they were made in the background
        w1 = await app.memory.context(key, "which port?")
        stored = await app.sessions.summaries(key)
        assert stored and all(s.level == 1 for s in stored)
        assert any(m.kind == "summary" for m in w1.messages)
        w2 = await app.memory.context(key, "which port?")
        assert await app.sessions.summaries(key) == stored  # reused, not recomputed
        assert [m.content for m in w2.messages] == [m.content for m in w1.messages]
        await app.bot.handle(msg("/summary"), outlet)
        assert outlet.texts[-1].startswith("level 1, messages ")
    finally:
        await app.aclose()


async def test_a_slow_summarizer_never_holds_up_a_turn_and_forget_stops_it(sqlite_url: str, outlet: RecordingOutlet) -> None:
    app = await start(sqlite_url, outlet, sessions={"strategy": "summary", "summary_frequency": 4, "keep_recent": 2})
    started, never = asyncio.Event(), asyncio.Event()

    async def slow_llm(messages, max_tokens):  # type: ignore[no-untyped-def]
        started.set()
        await never.wait()  # an LLM that does not answer
        return "never"

    app.memory.summarize = slow_llm
    try:
        key = msg("x").key
        for i in range(10):
            await app.sessions.append(key, "user", "alice", f"Fact {i}: service-{i} listens on port {8000 + i}.")
        window = await asyncio.wait_for(app.memory.context(key, "which port?"), 5)
        assert "Fact 0: service-0 listens on port 8000." in [m.content for m in window.messages]
        await asyncio.wait_for(started.wait(), 5)  # summarizing in the background meanwhile
        gone = await asyncio.wait_for(app.memory.forget(key), 5)
        assert gone.messages == 10
        await app.memory.settle()
        assert await app.sessions.summaries(key) == [] and await app.sessions.count(key) == 0
    finally:
        await app.aclose()


async def test_background_summaries_are_bounded_across_threads(sqlite_url: str, outlet: RecordingOutlet) -> None:
    from bot.memory import MAX_CONCURRENT_SUMMARIES

    app = await start(sqlite_url, outlet, sessions={"strategy": "summary", "summary_frequency": 4, "keep_recent": 2})
    running, peak, release = 0, 0, asyncio.Event()

    async def llm(messages, max_tokens):  # type: ignore[no-untyped-def]
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await release.wait()
        running -= 1
        return "people discussed ports"

    app.memory.summarize = llm
    try:
        keys = [msg("x", thread=f"T{t}").key for t in range(MAX_CONCURRENT_SUMMARIES + 3)]
        for key in keys:
            for i in range(8):
                await app.sessions.append(key, "user", "alice", f"service-{i} uses port {8000 + i}")
            await app.memory.context(key, "which port?")  # each starts its thread's summarization
        for _ in range(50):
            await asyncio.sleep(0.01)
        assert peak == MAX_CONCURRENT_SUMMARIES
        release.set()
        await app.memory.settle()
        for k in keys:
            assert {s.text for s in await app.sessions.summaries(k)} == {"people discussed ports"}
    finally:
        await app.aclose()


async def test_retention_rules(sqlite_url: str, outlet: RecordingOutlet) -> None:
    app = await start(sqlite_url, outlet, retention={"max_messages_per_thread": 10, "idle_session_days": 30, "run_days": 7, "interval": 3600})
    try:
        long, idle = msg("x", thread="long").key, msg("x", thread="idle").key
        for i in range(25):
            await app.sessions.append(long, "user", "alice", f"Line {i} about the billing service migration.")
        await app.sessions.append(idle, "user", "alice", "old news", created_at=datetime.now(UTC) - timedelta(days=60))
        await app.bot.handle(msg("run: echo old", thread="runs"), outlet)
        await app.bot.drain()
        report = await app.retention.run_once()
        assert report.messages_deleted >= 16 and report.summaries_created >= 1 and report.idle_threads == 1
        assert await app.sessions.count(long) == 10 and await app.sessions.count(idle) == 0
        sums = await app.sessions.summaries(long)
        assert sums and min(s.first_id for s in sums) == 1  # the pruned messages live on as summaries
        assert report.runs_deleted == 0  # the run is fresh
        app.retention.clock = lambda: datetime.now(UTC) + timedelta(days=8)
        assert (await app.retention.run_once()).runs_deleted == 1
        assert await app.runs.get(1) is None
    finally:
        await app.aclose()


async def test_retention_loop_keeps_going_after_a_failure(sqlite_url: str, outlet: RecordingOutlet) -> None:
    app = await start(sqlite_url, outlet, retention={"interval": 0.01})
    calls = 0

    async def flaky() -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("db away")

    app.retention.run_once = flaky  # type: ignore[method-assign]
    try:
        await asyncio.sleep(0.1)
        assert calls >= 2
    finally:
        await app.aclose()
