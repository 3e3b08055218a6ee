"""The App's task owner: background tasks are kept, their failures logged, and all stopped on close."""

from __future__ import annotations

import asyncio
import logging

import pytest

from bot.app import App
from bot.settings import Settings
from bot.tasks import TaskOwner
from tests.conftest import REPO, RecordingOutlet


async def test_a_failed_background_task_is_logged_not_dropped(caplog: pytest.LogCaptureFixture) -> None:
    owner = TaskOwner("test")

    async def boom() -> None:
        raise RuntimeError("sweep failed")

    with caplog.at_level(logging.ERROR, logger="baton.tasks"):
        task = owner.start(boom(), name="sweep")
        await asyncio.gather(task, return_exceptions=True)
        await owner.settle()
    assert owner.failures == 1
    rec = next(r for r in caplog.records if "sweep" in r.getMessage())
    assert rec.exc_info is not None and "sweep failed" in str(rec.exc_info[1])


async def test_close_cancels_and_awaits_every_task_and_refuses_new_ones() -> None:
    owner = TaskOwner("test")
    started, stopped = asyncio.Event(), asyncio.Event()

    async def forever() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            stopped.set()

    task = owner.start(forever(), name="forever")
    await started.wait()
    await owner.aclose()
    assert task.cancelled() and stopped.is_set() and owner.pending == []
    coro = forever()
    with pytest.raises(RuntimeError, match="closed"):
        owner.start(coro, name="late")
    assert owner.failures == 0


async def test_the_app_starts_its_long_lived_tasks_through_its_owner(sqlite_url: str, outlet: RecordingOutlet) -> None:
    app = await App.start(Settings(config_dir=REPO / "config", database_url=sqlite_url), {"test": outlet}, migrate=True)
    try:
        names = {t.get_name() for t in app.tasks.pending}
        assert "baton-retention" in names
        assert app.bot.scheduler is app.scheduler is not None  # built in construction, not patched afterwards
        assert app.bot.compiler is not None and app.bot.compile("echo hi") is app.bot.compile("echo hi")
        retention = next(t for t in app.tasks.pending if t.get_name() == "baton-retention")
    finally:
        await app.aclose()
    assert retention.done() and app.tasks.pending == []
