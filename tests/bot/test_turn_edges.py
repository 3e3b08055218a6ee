"""Issue 14 faults at the turn level (in-process bot, real SQLite store)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from adapters.base import Message
from bot.app import App
from bot.settings import Settings
from tests.conftest import REPO, RecordingOutlet


def msg(text: str, *, channel: str = "C1", thread: str = "T1", author: str = "alice", roles: tuple[str, ...] = ()) -> Message:
    return Message("test", channel, thread, author, text, roles=roles)


async def start(sqlite_url: str, outlet: RecordingOutlet, **kw) -> App:  # type: ignore[no-untyped-def]
    return await App.start(Settings(config_dir=REPO / "config", database_url=sqlite_url, **kw), {"test": outlet}, migrate=True)


async def test_command_output_is_kept_for_history_but_out_of_recall_and_context(sqlite_url: str, outlet: RecordingOutlet) -> None:
    """Fault 17: answers to /history, /recall … came back in /recall results and in the LLM context."""
    app = await start(sqlite_url, outlet)
    try:
        key = msg("x").key
        await app.bot.handle(msg("the canary runs in eu-west-1"), outlet)
        await app.bot.drain()  # answers come in the thread's order
        await app.bot.handle(msg("/history 5"), outlet)
        await app.bot.drain()  # answers come in the thread's order
        await app.bot.handle(msg("/recall canary"), outlet)
        await app.bot.drain()  # answers come in the thread's order
        assert "alice: the canary runs in eu-west-1" in outlet.texts[-1]
        await app.bot.handle(msg("/help"), outlet)
        await app.bot.drain()  # answers come in the thread's order
        # the second /recall finds the one real message, not the answers quoting it
        await app.bot.handle(msg("/recall canary"), outlet)
        await app.bot.drain()  # answers come in the thread's order
        found = outlet.texts[-1].splitlines()
        assert found == [l for l in found if l.endswith("alice: the canary runs in eu-west-1")] and len(found) == 1
        window = await app.memory.context(key, "next")
        texts = [m.content for m in window.messages]
        assert "the canary runs in eu-west-1" in texts
        assert not any("/history" in t or "/recall" in t or "baton:" in t or "Workflow language" in t for t in texts), texts
        assert len(texts) == 3  # system prompt, the one conversation message, the new one
        # still stored: /history shows the commands and their answers
        history = await app.sessions.history(key, limit=50)
        assert sum(1 for m in history if m.kind == "command") == 9  # 4 commands, 4 answers, the "no provider" notice
        assert [m.text for m in history if m.kind is None] == ["the canary runs in eu-west-1"]
    finally:
        await app.aclose()


async def test_summaries_are_made_extractively_without_an_llm(sqlite_url: str, outlet: RecordingOutlet) -> None:
    """Fault 16: with strategy = "summary" and no provider, /summary said none were stored."""
    sessions = {"strategy": "summary", "summary_frequency": 5, "max_tokens": 8000, "reserve_tokens": 2000}
    app = await start(sqlite_url, outlet, sessions=sessions)
    try:
        assert app.llm is None
        key = msg("x").key
        for i in range(30):
            await app.bot.handle(msg(f"note {i}: the build server number {i} restarts at {i} o'clock"), outlet)
        await app.bot.drain()
        await app.memory.settle()
        await app.bot.handle(msg("/summary"), outlet)
        assert "No summaries stored" not in outlet.texts[-1]
        stored = await app.memory.summaries(key)
        assert stored and all(s.level >= 1 and s.text for s in stored)
        assert any("build server" in s.text for s in stored)
    finally:
        await app.aclose()


def test_the_shipped_config_shows_the_sessions_section_the_readme_describes() -> None:
    """Fault 16: config/baton.toml had no [sessions] section."""
    import tomllib

    shipped = tomllib.loads((REPO / "config" / "baton.toml").read_text())
    s = shipped["sessions"]
    assert {"mode", "strategy", "max_tokens", "reserve_tokens", "summary_frequency"} <= set(s)
    assert Settings(config_dir=REPO / "config").sessions["strategy"] == s["strategy"]


async def test_a_schedule_phrase_is_a_schedule_to_confirm_never_an_immediate_run(sqlite_url: str, outlet: RecordingOutlet) -> None:
    """Fault 15: "every weekday at 9am run disk-check" started disk-check at once (routed by keyword)."""
    app = await start(sqlite_url, outlet)
    try:
        await app.bot.handle(msg("every weekday at 9am run disk-check"), outlet)
        await app.bot.drain()
        assert await app.runs.list(limit=5) == []
        assert "reads as a schedule" in outlet.texts[-1] and "Monday through Friday" in outlet.texts[-1]
        assert app.scheduler is not None and await app.scheduler.list(msg("x").key) == []
        await app.bot.handle(msg("yes"), outlet)
        await app.bot.drain()
        assert outlet.texts[-1].startswith("Scheduled #1:")
        assert await app.runs.list(limit=5) == []
        # a plain request is still routed and run at once
        await app.bot.handle(msg("can you check the disk space?"), outlet)
        await app.bot.drain()
        assert [r.source for r in await app.runs.list(limit=5)] == ["disk-check"]
    finally:
        await app.aclose()


async def test_runs_are_scoped_to_their_thread_their_starter_or_a_granted_role(
    sqlite_url: str, outlet: RecordingOutlet, caplog: pytest.LogCaptureFixture
) -> None:
    """Fault 7: /cancel, /run show, /runs all, /rerun and /approve from anyone anywhere acted on any run."""
    permissions = {"*": ["*"], "cancel_any": ["role:oncall"], "view_any": ["carol"]}
    app = await start(sqlite_url, outlet, permissions=permissions)
    caplog.set_level(logging.WARNING, logger="baton.turn")
    try:
        await app.bot.handle(msg("run: sleep 30", author="alice"), outlet)
        async with asyncio.timeout(10):
            while not app.manager.active:
                await asyncio.sleep(0.01)
        run_id = (await app.runs.list(limit=1))[0].id
        elsewhere = {"channel": "C2", "thread": "T9"}

        async def answer(text: str, **kw) -> str:  # type: ignore[no-untyped-def]
            await app.bot.handle(msg(text, **kw), outlet)
            return outlet.texts[-1]

        assert (await answer(f"/run show {run_id}", author="mallory", **elsewhere)).startswith(f"You may not see run #{run_id}")
        assert "sleep 30" not in await answer("/runs all", author="mallory", **elsewhere)
        assert (await answer(f"/cancel {run_id}", author="mallory", **elsewhere)).startswith(f"You may not cancel run #{run_id}")
        assert (await answer(f"/approve {run_id}", author="mallory", **elsewhere)).startswith("You may not approve or reject")
        await app.bot.handle(msg(f"/rerun {run_id}", author="mallory", **elsewhere), outlet)
        assert (await outlet.wait_for(f"You may not rerun run #{run_id}")).startswith("You may not rerun")
        assert [r.status for r in await app.runs.list(limit=5)] == ["running"]
        refusals = [r for r in caplog.records if r.getMessage().startswith("refused ")]
        assert len(refusals) == 4 and all("mallory" in r.getMessage() for r in refusals)
        # granted: view_any lets carol look from anywhere; someone in the run's thread may look too
        assert (await answer(f"/run show {run_id}", author="carol", **elsewhere)).startswith(f"Run #{run_id}: running")
        assert "sleep 30" in await answer("/runs all", author="carol", **elsewhere)
        assert (await answer(f"/run show {run_id}", author="bob")).startswith(f"Run #{run_id}")
        # the starter may act from another thread; the on-call role may cancel from anywhere
        assert (await answer(f"/run show {run_id}", author="alice", **elsewhere)).startswith(f"Run #{run_id}")
        assert await answer(f"/cancel {run_id}", author="dave", roles=("oncall",), **elsewhere) == f"Cancelling run #{run_id}."
        await app.bot.drain()
        assert [r.status for r in await app.runs.list(limit=5)] == ["cancelled"]
    finally:
        await app.aclose()


async def test_a_run_queued_behind_a_pending_approval_is_acknowledged_at_once(sqlite_url: str, outlet: RecordingOutlet) -> None:
    """Fault 14: a pending approval silently blocked the thread; a later run: got no answer until it ended."""
    app = await start(sqlite_url, outlet)
    try:
        await app.bot.handle(msg("run: approve go on? THEN echo first"), outlet)
        async with asyncio.timeout(10):
            while not (app.bot.approvals and app.bot.approvals.pending()):
                await asyncio.sleep(0.01)  # polling a condition
        await app.bot.handle(msg("run: echo second"), outlet)
        assert outlet.texts[-1] == "Queued behind run #1 (waiting for approval); it starts when that is done."
        # the thread's later read-only commands are not held up by the waiting run
        await app.bot.handle(msg("/run show 1"), outlet)
        await outlet.wait_for("Run #1: running", timeout=5)
        await app.bot.handle(msg("/approve 1"), outlet)
        await app.bot.drain()
        assert [r.status for r in reversed(await app.runs.list(limit=5))] == ["succeeded", "succeeded"]
    finally:
        await app.aclose()
