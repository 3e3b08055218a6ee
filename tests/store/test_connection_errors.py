"""Issue 14, fault 4: a database that refuses connections is a StoreError (one clear line), not a
raw asyncpg/OS error with a traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from sqlalchemy import text

from bot.store import Database, StoreError
from tests.conftest import REPO

REFUSED = "postgresql+asyncpg://postgres@127.0.0.1:1/none"  # nothing listens on port 1


async def test_a_refused_connection_is_a_store_error_naming_what_was_done() -> None:
    db = Database(REFUSED)
    try:
        with pytest.raises(StoreError, match=r"while reading runs: cannot reach the database \(ConnectionRefusedError"):
            async with db.begin("reading runs") as conn:
                await conn.execute(text("select 1"))
    finally:
        await db.dispose()


async def test_a_database_not_accepting_connections_is_a_store_error(pg_url: str) -> None:
    """asyncpg's ObjectNotInPrerequisiteStateError (raised by connect, so SQLAlchemy never wraps it)."""
    import asyncpg

    name = pg_url.rsplit("/", 1)[1]
    admin = await asyncpg.connect(pg_url.rsplit("/", 1)[0].replace("postgresql+asyncpg://", "postgresql://") + "/postgres")
    db = Database(pg_url)
    try:
        await admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
        with pytest.raises(StoreError, match="ObjectNotInPrerequisiteStateError"):
            async with db.begin("listing runs") as conn:
                await conn.execute(text("select 1"))
    finally:
        await admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
        await admin.close()
        await db.dispose()


def test_the_console_with_an_unreachable_database_prints_one_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = {**os.environ, "BATON_CONFIG_DIR": str(REPO / "config"), "BATON_DATABASE_URL": REFUSED, "BATON_DATA_DIR": str(tmp_path)}
    p = subprocess.run(
        [sys.executable, "-m", "bot.cli", "console"], input="run: echo hi\n", capture_output=True, text=True, env=env, timeout=120
    )
    assert p.returncode == 1, (p.stdout, p.stderr)
    assert "Traceback" not in p.stderr, p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("baton: database error while") and "cannot reach the database" in lines[0], p.stderr
