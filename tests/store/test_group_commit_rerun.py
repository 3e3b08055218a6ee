"""Group commit run again: what a transaction body leaves in memory must hold after its group's
COMMIT failed and each transaction ran again on its own (SqliteWorker.transact).

A group's COMMIT fails on a full disk or an I/O error; the tests stand that in with a neighbour
whose COMMIT fails by itself every time (a deferred foreign-key violation: ``PRAGMA
defer_foreign_keys``), so it is also the one at fault when the group's transactions run again
one by one. It first creates a thread, so the ids SQLite gives the rows written after it differ
between the group's attempt and the re-run. Transactions are queued behind a call that holds
the writer thread until all are queued (the loop runs tasks in creation order), never by sleeping.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from bot.queue.admission import Admission
from bot.settings import Settings
from bot.store import Database, RunStore, SessionStore, ThreadKey, upgrade
from bot.store.sqlite_worker import SqliteWorkerError
from engine.catalog import Catalog
from engine.parse import compile_text
from tests.conftest import REPO

pytestmark = pytest.mark.timeout(60)

K1 = ThreadKey("slack", "C1", "1700000000.000100")
K2 = ThreadKey("slack", "C1", "1700000000.000200")
_TS = "2026-01-05 09:00:00.000000"


def _commit_fails(c: sqlite3.Connection) -> None:
    """A transaction whose COMMIT fails (as on a full disk), after it created a thread."""
    c.execute("PRAGMA defer_foreign_keys=ON")  # checked at COMMIT, and the COMMIT fails
    c.execute("INSERT INTO threads(platform, channel, thread, created_at, updated_at) VALUES ('slack', 'C0', 'x', ?, ?)", (_TS, _TS))
    c.execute("INSERT INTO messages(thread_id, role, author, text, created_at) VALUES (999999, 'user', 'U0', 'orphan', ?)", (_TS,))


async def _grouped(db: Database, *calls: Callable[[], Awaitable[Any]]) -> list[Any]:
    """Start ``calls`` (each queues one transaction in its first step) while the writer thread is
    held, so their transactions are taken as one group; returns their outcomes in order."""
    held, go = threading.Event(), threading.Event()

    def hold(_c: sqlite3.Connection) -> None:
        held.set()
        assert go.wait(30)

    blocker = asyncio.create_task(db.worker.call(hold, "holding the thread"))
    assert await asyncio.to_thread(held.wait, 30)
    tasks = [asyncio.create_task(c()) for c in calls]  # type: ignore[arg-type, var-annotated]
    await asyncio.create_task(asyncio.sleep(0))  # created after them: runs after each queued its transaction
    go.set()
    await blocker
    return await asyncio.gather(*tasks, return_exceptions=True)


@pytest.fixture
async def db(tmp_path: Path):  # type: ignore[no-untyped-def]
    url = f"sqlite+aiosqlite:///{tmp_path / 'g.db'}"
    await upgrade(url)
    d = Database(url)
    yield d
    await d.dispose()


async def test_a_thread_seen_uncommitted_in_a_group_is_not_cached(db: Database) -> None:
    """The second lookup of a new thread sees the first one's uncommitted row in the group; the
    group is run again, the thread gets another id: that first id must not stay cached (messages
    of K1 would go to whichever thread gets it next)."""
    sessions = SessionStore(db)
    out = await _grouped(
        db,
        lambda: db.worker.transact(_commit_fails, "a transaction whose commit fails"),
        lambda: sessions.thread_id(K1),
        lambda: sessions.thread_id(K1),
    )
    assert isinstance(out[0], SqliteWorkerError) and "FOREIGN KEY" in str(out[0])
    row = await db.worker.call(lambda c: c.execute("SELECT id FROM threads WHERE thread = ?", (K1.thread,)).fetchone(), "reading")
    assert row is not None, f"K1 was never stored, yet its lookups returned {out[1:]} (an id cached from the rolled-back group)"
    stored = row[0]
    assert out[1] == out[2] == stored
    assert await sessions.thread_id(K1) == stored
    await sessions.thread_id(K2)  # the next thread (it may get the id K1 had in the failed group)
    await sessions.append(K1, "user", "U1", "for K1")
    assert [m.text for m in await sessions.history(K1)] == ["for K1"]
    assert await sessions.history(K2) == []


async def test_an_admission_refused_when_run_again_reports_no_run(db: Database) -> None:
    """busy_policy reject: in the group the thread looked free (a neighbour finished its run) and
    a run was inserted; run again alone (the neighbour's commit failed) the thread is busy: the
    admission is a refusal, without the id of the run that was rolled back."""
    sessions, runs = SessionStore(db), RunStore(db)
    admission = Admission(Settings(config_dir=REPO / "config", database_url=db.url), sessions, runs)
    graph = compile_text("echo hi", Catalog())
    first = await admission.admit(K1, graph, requested_by="U1")
    assert first.run_id is not None

    def finishes_the_run_then_fails(c: sqlite3.Connection) -> None:
        c.execute("UPDATE runs SET status = 'succeeded' WHERE id = ?", (first.run_id,))
        _commit_fails(c)

    out = await _grouped(
        db,
        lambda: db.worker.transact(finishes_the_run_then_fails, "a transaction whose commit fails"),
        lambda: admission.admit(K1, graph, requested_by="U1", busy_policy="reject"),
    )
    assert isinstance(out[0], SqliteWorkerError)
    admitted = out[1]
    assert admitted.refusal is not None and admitted.ahead == (first.run_id,)
    assert admitted.run_id is None and admitted.created_at is None
    assert await db.worker.call(lambda c: c.execute("SELECT id FROM runs").fetchall(), "reading") == [(first.run_id,)]
    await runs.aclose()
