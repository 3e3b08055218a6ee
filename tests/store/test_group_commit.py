"""Group commit of transactions on the SQLite writer thread (SqliteWorker.transact).

Transactions queued while the thread is busy share one ``BEGIN IMMEDIATE … COMMIT``, each in
its own savepoint: one that fails is rolled back alone, the others commit, and every caller
learns its outcome only after the shared commit. The tests queue the transactions behind a
call that holds the thread until they are all queued (the loop runs tasks in creation order:
a task created after them runs after their first step, which queues them), never by sleeping.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest

from bot.store.sqlite_worker import SqliteWorker, SqliteWorkerError


async def _worker(tmp_path: Path) -> SqliteWorker:
    worker = await asyncio.to_thread(SqliteWorker, str(tmp_path / "g.db"))  # opening blocks: not on the loop
    await worker.call(lambda c: c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT UNIQUE)"), "schema")
    return worker


async def _queued_behind_a_busy_thread(worker: SqliteWorker, fns: list) -> list:  # type: ignore[type-arg]
    """Run ``transact(fn)`` for each of ``fns`` while the writer thread is held, so they are
    taken as one group; returns their outcomes (result or exception) in order."""
    held, go = threading.Event(), threading.Event()

    def hold(_c: sqlite3.Connection) -> None:
        held.set()
        assert go.wait(30)

    blocker = asyncio.create_task(worker.call(hold, "holding the thread"))
    assert await asyncio.to_thread(held.wait, 30)
    tasks = [asyncio.create_task(worker.transact(fn, f"tx {i}")) for i, fn in enumerate(fns)]
    await asyncio.create_task(asyncio.sleep(0))  # created after them: runs after each queued its transaction
    go.set()
    await blocker
    return await asyncio.gather(*tasks, return_exceptions=True)


async def test_queued_transactions_share_one_commit(tmp_path: Path) -> None:
    worker = await _worker(tmp_path)
    try:
        commits: list[str] = []
        await worker.call(lambda c: c.set_trace_callback(lambda sql: commits.append(sql) if sql == "COMMIT" else None), "tracing")
        out = await _queued_behind_a_busy_thread(
            worker, [lambda c, i=i: c.execute("INSERT INTO t(v) VALUES (?)", (f"v{i}",)).lastrowid for i in range(5)]
        )
        assert out == [1, 2, 3, 4, 5]
        assert commits == ["COMMIT"]  # one commit for the five
        with sqlite3.connect(tmp_path / "g.db") as other:  # committed, seen by another connection
            assert other.execute("SELECT count(*) FROM t").fetchone()[0] == 5
    finally:
        await asyncio.to_thread(worker.close)


async def test_a_failing_transaction_is_rolled_back_alone(tmp_path: Path) -> None:
    worker = await _worker(tmp_path)
    try:

        def two_rows_then_fail(c: sqlite3.Connection) -> None:
            c.execute("INSERT INTO t(v) VALUES ('doomed-1')")
            c.execute("INSERT INTO t(v) VALUES ('a')")  # UNIQUE: 'a' was written before it in the group

        def raises(c: sqlite3.Connection) -> None:
            c.execute("INSERT INTO t(v) VALUES ('doomed-2')")
            raise LookupError("the body gave up")

        out = await _queued_behind_a_busy_thread(
            worker,
            [
                lambda c: c.execute("INSERT INTO t(v) VALUES ('a')").lastrowid,
                two_rows_then_fail,
                raises,
                lambda c: c.execute("SELECT count(*) FROM t").fetchone()[0],  # sees the group's writes so far
                lambda c: c.execute("INSERT INTO t(v) VALUES ('b')").lastrowid,
            ],
        )
        assert out[0] == 1
        assert isinstance(out[1], SqliteWorkerError) and "tx 1" in str(out[1]) and "UNIQUE" in str(out[1])
        assert isinstance(out[2], LookupError)  # the body's own exception, as from a lone transaction
        assert out[3] == 1
        assert isinstance(out[4], int)
        rows = await worker.call(lambda c: [r[0] for r in c.execute("SELECT v FROM t ORDER BY id")], "reading")
        assert rows == ["a", "b"]
    finally:
        await asyncio.to_thread(worker.close)


async def test_a_lone_transaction_and_the_database_stores_run(tmp_path: Path) -> None:
    """One queued transaction is an ordinary transaction (no savepoint)."""
    worker = await _worker(tmp_path)
    try:
        assert await worker.transact(lambda c: c.execute("INSERT INTO t(v) VALUES ('x')").lastrowid, "one") == 1
        with pytest.raises(SqliteWorkerError, match="inserting twice"):
            await worker.transact(lambda c: c.execute("INSERT INTO t(v) VALUES ('x')"), "inserting twice")
        assert await worker.call(lambda c: c.in_transaction, "checking") is False
    finally:
        await asyncio.to_thread(worker.close)


async def test_work_submitted_to_a_closed_worker_fails_instead_of_waiting_forever(tmp_path: Path) -> None:
    """Nothing takes what is queued behind close()'s stop: a call, transaction or write submitted
    then (e.g. while Database.dispose runs) raises instead of leaving its caller waiting."""
    worker = await _worker(tmp_path)
    await asyncio.to_thread(worker.close)
    submits = (
        lambda: worker.call(lambda c: c.execute("SELECT 1").fetchone(), "reading"),
        lambda: worker.transact(lambda c: c.execute("INSERT INTO t(v) VALUES ('late')"), "writing"),
        lambda: worker.write("INSERT INTO t(v) VALUES (?)", [("late",)], "writing many"),
    )
    for submit in submits:
        with pytest.raises(SqliteWorkerError, match="closed"):
            await asyncio.wait_for(submit(), 5)
