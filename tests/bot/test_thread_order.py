"""The core decides a thread's order (bot/lanes.py): messages are processed in the order they were stored."""

from __future__ import annotations

import asyncio

from adapters.base import Message
from bot.app import App
from bot.settings import Settings
from bot.tasks import TaskOwner
from tests.conftest import REPO, RecordingOutlet


def msg(text: str, event_id: str) -> Message:
    return Message("test", "C1", "T1", "alice", text, event_id=event_id, dedupe_ids=(event_id,))


async def start(sqlite_url: str, outlet: RecordingOutlet) -> App:
    return await App.start(Settings(config_dir=REPO / "config", database_url=sqlite_url), {"test": outlet}, migrate=True)


async def test_a_later_delivery_waits_for_the_earlier_one_whatever_task_hands_it_on(sqlite_url: str, outlet: RecordingOutlet) -> None:
    app = await start(sqlite_url, outlet)
    try:
        first = await app.bot.accept(msg("/help", "Ev1"))
        second = await app.bot.accept(msg("/workflows", "Ev2"))
        assert first is not None and second is not None
        assert await app.bot.accept(msg("/help", "Ev1")) is None  # a redelivery: the core drops it
        # the adapter's task for the later delivery happens to run first: it waits for the earlier one
        later = asyncio.create_task(app.bot.process(second, outlet))
        done, _ = await asyncio.wait({later}, timeout=0.3)
        assert not done and outlet.texts == []
        await app.bot.process(first, outlet)
        async with asyncio.timeout(10):
            await later
        assert len(outlet.texts) == 2
        assert "/workflows" in outlet.texts[0] and "disk-check" in outlet.texts[1]  # help first, then the workflows
    finally:
        await app.aclose()


async def test_lanes_are_tasks_of_the_apps_task_owner(sqlite_url: str, outlet: RecordingOutlet) -> None:
    """Shutdown (App.aclose → TaskOwner.aclose) cancels and awaits a lane still serving a thread."""
    app = await start(sqlite_url, outlet)
    closed = False
    try:
        assert isinstance(app.bot.tasks, TaskOwner) and app.bot.tasks is app.tasks
        await app.bot.handle(msg("run: sleep 30", "Ev3"), outlet)  # the lane waits for the run (busy_policy queue)
        [lane] = [t for t in app.tasks.pending if t.get_name().startswith("lane-")]
        await app.aclose()
        closed = True
        assert lane.done() and lane.cancelled()
        assert app.tasks.failures == 0
    finally:
        if not closed:
            await app.aclose()
