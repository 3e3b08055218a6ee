"""Fault injection into the database under a running bot: a read-only and a full SQLite file,
and a PostgreSQL outage (the test database's own connections terminated, new ones refused).

Each time: nothing crashes, the thread is told in one clear line, a request that could not be
recorded is not acted on, and after the fault ends a restart brings every run to a terminal state.
"""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from adapters.base import Message
from bot.app import App
from bot.settings import Settings
from tests.chaos.stats import count
from tests.conftest import REPO, RecordingOutlet

TERMINAL = ("succeeded", "failed", "cancelled")


def _msg(text: str) -> Message:
    return Message("test", "C1", "T1", "alice", text)


async def _until_step_started(outlet: RecordingOutlet, label: str) -> None:
    async with asyncio.timeout(20):
        while not any(e.kind == "step_started" and e.step.label == label for e in outlet.events):
            await asyncio.sleep(0.01)  # polling a condition


async def _restart_and_finish(settings: Settings, run_ids: list[int]) -> RecordingOutlet:
    outlet = RecordingOutlet()
    app = await App.start(settings, {"test": outlet}, migrate=settings.db_url.startswith("sqlite"))
    try:
        await app.manager.resume_unfinished({"test"})
        async with asyncio.timeout(60):
            await app.manager.wait_idle()
        for rid in run_ids:
            got = await app.runs.get(rid)
            assert got is not None and got[0].status in TERMINAL, (rid, got and got[0].status)
        for _, text in outlet.sent:
            assert "Internal error" not in text
    finally:
        await app.aclose()
    return outlet


async def _fault_mid_run(app: App, outlet: RecordingOutlet, inject, needle: str, *, big: str = "") -> None:  # type: ignore[no-untyped-def]
    """``big``: text added to the step after the fault and to the refused request, so that on a
    full file they need new pages (small rows fit in the free space of existing ones)."""
    await app.bot.handle(_msg(f"run: echo first THEN sleep 1 THEN echo after{big}"), outlet)
    await _until_step_started(outlet, "sleep 1")
    await inject()
    try:
        stopped = await outlet.wait_for("Run #1 stopped", timeout=30)
    except TimeoutError:
        raise AssertionError(f"{outlet.texts} {[(e.kind, getattr(e.step, 'label', None)) for e in outlet.events]}")
    assert needle in stopped and "resumes from its last checkpoint" in stopped
    async with asyncio.timeout(10):
        await app.manager.wait_idle()
    sent = len(outlet.sent)
    await app.bot.handle(_msg(f"run: echo never{big}"), outlet)
    await app.bot.drain()
    refused = outlet.texts[sent:]
    assert refused and "I could not record your message" in refused[0] and "nothing was run" in refused[0], refused
    assert not any(e.kind == "step_started" and e.step.label.startswith("echo never") for e in outlet.events)
    assert all("Internal error" not in t and "Traceback" not in t for t in outlet.texts)


async def test_a_read_only_sqlite_database_mid_run(sqlite_url: str) -> None:
    settings = Settings(config_dir=REPO / "config", database_url=sqlite_url)
    outlet = RecordingOutlet()
    app = await App.start(settings, {"test": outlet}, migrate=True)
    try:

        async def read_only() -> None:
            await app.db.worker.call(lambda c: c.execute("PRAGMA query_only=ON"), "injecting a read-only file")

        await _fault_mid_run(app, outlet, read_only, "readonly")
    finally:
        await app.aclose()
    after = await _restart_and_finish(settings, [1])
    assert any(t.startswith("Run #1 succeeded") for t in after.texts), after.texts
    count("sqlite", injected_faults=1)


async def test_a_full_sqlite_database_mid_run(sqlite_url: str) -> None:
    """``max_page_count`` pinned to the current size: every write that needs a new page fails
    with SQLITE_FULL, as on a full disk (the step checkpoint is forced to need one by a large output)."""
    settings = Settings(config_dir=REPO / "config", database_url=sqlite_url)
    outlet = RecordingOutlet()
    app = await App.start(settings, {"test": outlet}, migrate=True)
    try:

        async def full() -> None:
            def pin(c):  # type: ignore[no-untyped-def]
                c.execute("CREATE TABLE IF NOT EXISTS _ballast (b BLOB)")
                c.execute(f"PRAGMA max_page_count={c.execute('PRAGMA page_count').fetchone()[0]}")
                try:  # use up the free pages, so the very next write needs a new one
                    while True:
                        c.execute("INSERT INTO _ballast VALUES (zeroblob(3000))")
                except sqlite3.OperationalError as e:
                    assert "full" in str(e)

            await app.db.worker.call(pin, "injecting a full disk")

        await _fault_mid_run(app, outlet, full, "full", big=" " + "x" * 3000)

        await app.db.worker.call(lambda c: c.execute("PRAGMA max_page_count=1073741823"), "ending the fault")
    finally:
        await app.aclose()
    after = await _restart_and_finish(settings, [1])
    assert any(t.startswith("Run #1 succeeded") for t in after.texts), after.texts
    count("sqlite", injected_faults=1)


async def test_a_postgresql_outage_mid_run(pg_url: str) -> None:
    import asyncpg

    name = pg_url.rsplit("/", 1)[1]
    admin = await asyncpg.connect(pg_url.rsplit("/", 1)[0].replace("postgresql+asyncpg://", "postgresql://") + "/postgres")
    from bot.store import upgrade

    await upgrade(pg_url)
    settings = Settings(config_dir=REPO / "config", database_url=pg_url)
    outlet = RecordingOutlet()
    app = await App.start(settings, {"test": outlet}, migrate=False)
    try:

        async def outage() -> None:
            await admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
            await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()", name)

        await _fault_mid_run(app, outlet, outage, "cannot reach the database")
    finally:
        await admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
        await app.aclose()
        await admin.close()
    after = await _restart_and_finish(settings, [1])
    assert any(t.startswith("Run #1 succeeded") for t in after.texts), after.texts
    count("postgresql", injected_faults=1)
