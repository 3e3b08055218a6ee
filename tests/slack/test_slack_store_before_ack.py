"""Fault 5 of issue 14: Slack's event is stored (message + event id + queued run) before the 200.

The bolt app answers after the listener returns (``process_before_response``); the
listener stores the delivery first. So the moment the HTTP response arrives, the
message, its delivery id and the queued run are committed; and when the database
cannot store it, Slack gets an error (and redelivers) instead of an ack for a lost event.
"""

from __future__ import annotations

import asyncio

import sqlite3
from pathlib import Path

from bot.store.sqlite_worker import SqliteWorker
from tests.slack.conftest import Harness, mention


def _committed(url: str, event_id: str, ts: str) -> tuple[int, int, int]:
    """Read the file from another connection: what a crash right now would leave behind."""
    conn = sqlite3.connect(url.split("///", 1)[1], timeout=5)
    try:
        ev = conn.execute("select count(*) from processed_events where event_id=?", (event_id,)).fetchone()[0]
        msg = conn.execute(
            "select count(*) from messages m join threads t on t.id = m.thread_id where t.thread=? and m.role='user'", (ts,)
        ).fetchone()[0]
        run = conn.execute("select count(*) from runs r join threads t on t.id = r.thread_id where t.thread=?", (ts,)).fetchone()[0]
        return ev, msg, run
    finally:
        conn.close()


async def test_the_delivery_and_its_run_are_committed_when_slack_gets_the_200(harness: Harness) -> None:
    for i in range(5):
        body = mention(f"run: echo stored-{i}")
        status, _, _ = await harness.event(body)
        assert status == 200
        # nothing awaited between the response and this read: a SIGKILL now would lose nothing
        assert _committed(harness.sqlite_url, body["event_id"], body["event"]["ts"]) == (1, 1, 1)
    await harness.settle()
    assert sorted(r.status for r in await harness.app.runs.list()) == ["succeeded"] * 5  # type: ignore[union-attr]


async def test_a_delivery_the_database_cannot_store_is_not_acknowledged(harness: Harness, tmp_path: Path) -> None:
    app = harness.app
    assert app is not None
    body = mention("run: echo must-not-be-lost")
    good = app.db._worker
    # a database without Baton's tables (its worker thread opens the file: off the loop)
    app.db._worker = await asyncio.to_thread(SqliteWorker, str(tmp_path / "empty.db"))
    try:
        status, _, _ = await harness.event(body)
    finally:
        await asyncio.to_thread(app.db._worker.close)
        app.db._worker = good
    assert status >= 500  # not acknowledged: Slack redelivers
    assert await app.runs.list() == []
    status, _, _ = await harness.event(body, retry=1)  # Slack's retry, database back
    assert status == 200
    await harness.settle()
    assert [r.status for r in await app.runs.list()] == ["succeeded"]
    assert any("must-not-be-lost" in c.args.get("text", "") for c in harness.posts())
