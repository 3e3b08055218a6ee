"""Fault 1 of issue 14: a request queued behind a running run survives a SIGKILL.

A real ``baton console`` process on SQLite and on PostgreSQL: ``run: mark-a THEN sleep 3
THEN mark-b`` starts, ``run: mark-q`` is admitted behind it (a ``queued`` run in the
database), the process is killed mid-run; the next start resumes the first run
without repeating mark-a and then runs the queued one, in order.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from adapters.base import Message
from bot.app import App
from bot.settings import Settings
from tests.conftest import REPO, RecordingOutlet
from tests.console_process import console, console_env, shell_config, start_console, wait_line


def _config(tmp: Path, marks: Path) -> Path:
    return shell_config(tmp, {"mark-a": f"echo A >> {marks}", "mark-b": f"echo B >> {marks}", "mark-q": f"echo Q >> {marks}"})


def _sigkill_with_a_queued_request(tmp: Path, db_url: str | None) -> None:
    marks = tmp / "marks.txt"
    cfg = _config(tmp, marks)
    env = console_env(tmp, cfg, db_url)
    if db_url:
        up = subprocess.run([sys.executable, "-m", "bot.cli", "db", "upgrade"], env=env, cwd=tmp, capture_output=True, text=True, timeout=120)
        assert up.returncode == 0, up.stderr
    proc = start_console(tmp, cfg, db_url)
    try:
        assert proc.stdin is not None
        proc.stdin.write("run: mark-a THEN sleep 3 THEN mark-b\nrun: mark-q\n")
        proc.stdin.flush()
        wait_line(proc, "s2 started")  # mark-a done; the sleep runs; run #2 is queued behind it
        # the queued request is in the database before the kill (admission committed it)
        for _ in range(100):
            if _queued_count(tmp, db_url) == 1:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert marks.read_text() == "A\n"
    again = console(tmp, "", config=cfg, timeout=90, db_url=db_url)
    assert again.returncode == 0, again.stderr
    out = again.stdout
    assert "Resuming run #1 after a restart (1 of 3 steps already done)" in out
    assert "Run #1 succeeded" in out and "Run #2 succeeded" in out, out
    assert out.index("Run #1 succeeded") < out.index("Run #2 succeeded")  # thread order kept
    assert marks.read_text() == "A\nB\nQ\n"  # nothing repeated, nothing lost, in order


def _queued_count(tmp: Path, db_url: str | None) -> int:
    if db_url is None:
        import sqlite3

        path = tmp / "data" / "baton.db"
        if not path.exists():
            return 0
        conn = sqlite3.connect(path, timeout=5)
        try:
            return conn.execute("select count(*) from runs where status='queued'").fetchone()[0]
        except sqlite3.Error:
            return 0
        finally:
            conn.close()
    import asyncio

    import asyncpg

    async def count() -> int:
        conn = await asyncpg.connect(db_url.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            return int(await conn.fetchval("select count(*) from runs where status='queued'"))
        finally:
            await conn.close()

    return asyncio.run(count())


def test_sigkill_keeps_a_queued_request_on_sqlite(tmp_path: Path) -> None:
    _sigkill_with_a_queued_request(tmp_path, None)


def test_sigkill_keeps_a_queued_request_on_postgresql(tmp_path: Path, pg_url: str) -> None:
    _sigkill_with_a_queued_request(tmp_path, pg_url)


async def test_busy_policy_and_queued_cancel_are_decided_from_the_database(tmp_path: Path) -> None:
    """Admission reads the thread's queued/running runs from the database: under ``reject``
    a second request is refused while the first is queued; a queued run can be cancelled
    before it starts and never runs."""
    outlet = RecordingOutlet("test")
    settings = Settings(config_dir=REPO / "config", database_url=f"sqlite+aiosqlite:///{tmp_path / 'q.db'}")
    app = await App.start(settings, {"test": outlet}, migrate=True)
    try:
        key = Message("test", "c", "t", "U1", "x").key
        graph = app.bot.compile("sleep 2 THEN echo first")
        first = await app.admission.admit(key, graph, requested_by="U1")
        second = await app.admission.admit(key, app.bot.compile("echo second"), requested_by="U1")
        refused = await app.admission.admit(key, app.bot.compile("echo third"), requested_by="U1", busy_policy="reject")
        assert first.run_id and second.run_id and refused.run_id is None
        assert refused.ahead == (first.run_id, second.run_id) and "still active" in (refused.refusal or "")
        app.bot.queue.submit(first.run_id, key)
        app.bot.queue.submit(second.run_id, key)
        await app.bot.handle(Message("test", "c", "t", "U1", f"/cancel {second.run_id}"), outlet)
        await outlet.wait_for(f"Cancelled run #{second.run_id} before it started")
        await outlet.wait_for(f"Run #{first.run_id} succeeded")
        await app.bot.drain()
        statuses = {r.id: r.status for r in await app.runs.list()}
        assert statuses == {first.run_id: "succeeded", second.run_id: "cancelled"}
        assert not any("second" in t for t in outlet.texts if t.startswith("Run #"))
    finally:
        await app.aclose()
