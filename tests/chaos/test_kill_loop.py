"""SIGKILL loop on SQLite and PostgreSQL: every run terminal after restart, no completed step's
effect repeated, no stored request without its reply (issue 14's central promise)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.chaos.stats import count
from tests.chaos.killloop import KillLoop, Report

KILLS = int(os.environ.get("BATON_CHAOS_KILLS", "20"))


def _finish(backend: str, loop: KillLoop, report: Report) -> None:
    count(backend, kills=report.kills, resume_kills=report.resume_kills, runs=report.runs, terminal=report.terminal, duplicates=report.duplicates, lost=report.lost)
    assert report.kills >= KILLS
    assert report.runs >= KILLS, f"seed {loop.seed}: only {report.runs} runs were stored"
    assert not report.problems, f"seed {loop.seed}: " + "; ".join(report.problems)
    assert report.terminal == report.runs and report.duplicates == 0 and report.lost == 0


@pytest.mark.timeout(900)
def test_sigkill_loop_on_sqlite(tmp_path: Path) -> None:
    loop = KillLoop(tmp_path, kills=KILLS)
    report = Report()
    loop.run(report)
    db = sqlite3.connect(tmp_path / "data" / "baton.db")
    try:
        runs = db.execute("select id, source, status from runs order by id").fetchall()
        steps = db.execute("select run_id, label, status from step_runs").fetchall()
        messages = db.execute("select role, text from messages order by id").fetchall()
    finally:
        db.close()
    loop.check(report, runs, steps, messages)
    _finish("sqlite", loop, report)


@pytest.mark.timeout(900)
async def test_sigkill_loop_on_postgresql(tmp_path: Path, pg_url: str) -> None:
    import asyncio

    import asyncpg

    env = {"BATON_DATABASE_URL": pg_url}
    up = subprocess.run([sys.executable, "-m", "bot.cli", "db", "upgrade"], capture_output=True, text=True, env={**os.environ, **env}, timeout=120)
    assert up.returncode == 0, up.stderr
    loop = KillLoop(tmp_path, env=env, kills=KILLS)
    report = Report()
    await asyncio.to_thread(loop.run, report)
    conn = await asyncpg.connect(pg_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        runs = [tuple(r) for r in await conn.fetch("select id, source, status from runs order by id")]
        steps = [tuple(r) for r in await conn.fetch("select run_id, label, status from step_runs")]
        messages = [tuple(r) for r in await conn.fetch("select role, text from messages order by id")]
    finally:
        await conn.close()
    loop.check(report, runs, steps, messages)
    _finish("postgresql", loop, report)
