"""Issue 14, fault 3: a checkpoint write failing inside a step is reported, never a hung run."""

from __future__ import annotations

import asyncio

from adapters.base import Message
from bot.app import App
from bot.settings import Settings
from tests.conftest import REPO, RecordingOutlet


async def test_a_failed_checkpoint_inside_a_step_is_reported_not_hung(sqlite_url: str, outlet: RecordingOutlet) -> None:
    """The database turns read-only while a step runs: the step's final checkpoint write fails
    inside the executor's task group (an ExceptionGroup). The run's thread is told, the run
    task ends, and the bot keeps answering.

    The step is a shell action not marked idempotent, so its final checkpoint is awaited
    before anything after it starts (an idempotent step's final record is written behind,
    see ``engine.run._Run._save_behind``: its dependents may start before the failure is
    known, and the failure is reported when the run ends)."""
    settings = Settings(
        config_dir=REPO / "config",
        database_url=sqlite_url,
        shell={"allow": ["sleep", "df", "uptime", "free", "uname", "cat", "ss", "ps", "nproc"]},
        actions={"slow": {"kind": "shell", "argv": ["sleep", "1"]}},
    )
    app = await App.start(settings, {"test": outlet}, migrate=True)
    try:
        await app.bot.handle(Message("test", "C1", "T1", "alice", "run: slow THEN echo after"), outlet)
        async with asyncio.timeout(10):
            while not any(getattr(e, "kind", "") == "step_started" for e in outlet.events):
                await asyncio.sleep(0.01)  # polling a condition, not ordering by time
        # the worker's connection (the one checkpoints go through) refuses writes from now on
        await app.db.worker.call(lambda c: c.execute("PRAGMA query_only=ON"), "injecting a read-only database")
        text = await outlet.wait_for("Run #1 stopped", timeout=10)
        assert "readonly" in text and "resumes from its last checkpoint" in text
        async with asyncio.timeout(5):
            await app.manager.wait_idle()
        assert not app.manager.active
        assert not any("echo after" == getattr(getattr(e, "step", None), "label", "") for e in outlet.events if e.kind == "step_started")
        await app.db.worker.call(lambda c: c.execute("PRAGMA query_only=OFF"), "ending the fault")
        await app.bot.handle(Message("test", "C1", "T1", "alice", "/runs"), outlet)
        await outlet.wait_for("#1", timeout=5)
    finally:
        await app.aclose()


async def test_a_finished_run_whose_reply_was_never_stored_is_told_at_restart(sqlite_url: str) -> None:
    """The kill loop found it: killed between recording a run's final status and storing its
    reply, a run was terminal with no result in its thread. The next start tells it (once)."""
    settings = Settings(config_dir=REPO / "config", database_url=sqlite_url)
    outlet = RecordingOutlet()
    app = await App.start(settings, {"test": outlet}, migrate=True)
    try:
        await app.bot.handle(Message("test", "C1", "T1", "alice", "run: echo told"), outlet)
        await app.bot.drain()
        await app.bot.handle(Message("test", "C1", "T1", "alice", "hello"), outlet)  # the told run, then chat
        thread = await app.sessions.thread_id(Message("test", "C1", "T1", "alice", "").key)
        untold = await app.runs.create_run(thread, "echo untold", app.bot.compile("echo untold"), "alice")
        await app.runs.save_steps([])
        await app.runs.set_status(untold, "succeeded")  # ... and the process died before the reply
    finally:
        await app.aclose()
    for _ in range(2):  # the second start finds the reply stored by the first
        again = RecordingOutlet()
        app = await App.start(settings, {"test": again}, migrate=True)
        try:
            await app.manager.resume_unfinished({"test"})
            await app.manager.wait_idle()
        finally:
            await app.aclose()
        if _ == 0:
            assert [t.split("\n")[0] for t in again.texts] == [f"Run #{untold} succeeded in 0.00s (0 steps)"], again.texts
        else:
            assert again.texts == []
