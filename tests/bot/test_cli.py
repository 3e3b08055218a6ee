"""The `baton` command's non-interactive subcommands."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import PG_SKIP, PG_URL, REPO


def baton(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    e = {**os.environ, "BATON_CONFIG_DIR": str(REPO / "config"), **env}
    return subprocess.run([sys.executable, "-m", "bot.cli", *args], capture_output=True, text=True, env=e, timeout=60)


def test_workflow_check_prints_the_graph() -> None:
    p = baton("workflow", "check", "disk-check AND echo b THEN IF_FAILURE echo fix")
    assert p.returncode == 0, p.stderr
    assert "s1.usage disk: disk-check › disk usage" in p.stdout and "on failure" in p.stdout


def test_workflow_check_reports_position() -> None:
    p = baton("workflow", "check", "echo a THEN\nAND b")
    assert p.returncode == 1
    assert "line 2, column 1: expected a step, got 'AND'" in p.stderr and "\nAND b\n^" in p.stderr


async def test_db_upgrade_on_postgresql(pg_url: str) -> None:
    p = baton("db", "upgrade", BATON_DATABASE_URL=pg_url)
    assert p.returncode == 0, p.stderr
    import asyncpg

    conn = await asyncpg.connect(pg_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        tables = {r["tablename"] for r in await conn.fetch("select tablename from pg_tables where schemaname='public'")}
        version = await conn.fetchval("select version_num from alembic_version")
    finally:
        await conn.close()
    assert {"threads", "messages", "runs", "step_runs", "processed_events", "summaries"} <= tables
    from alembic.script import ScriptDirectory

    from bot.store.db import alembic_config

    # revision ids are descriptive (0004_api_server), not the file name's number
    assert version == ScriptDirectory.from_config(alembic_config(pg_url)).get_current_head()


def test_pg_skip_reason_is_clear() -> None:
    if PG_URL:
        pytest.skip("PostgreSQL is configured here")
    assert "BATON_TEST_POSTGRES_URL" in PG_SKIP


def test_unreachable_database_is_one_clear_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    p = baton("db", "upgrade", BATON_DATABASE_URL="postgresql+asyncpg://nobody@127.0.0.1:1/none")
    assert p.returncode == 1
    assert p.stderr.startswith("baton: migrating the database failed")
