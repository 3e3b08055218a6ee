"""Migration drift: a fresh database upgraded by Alembic matches ``bot.store.tables.metadata``.

Every table Baton uses is declared in that one metadata (issue 13); if a model and the
migrations disagree, ``alembic.autogenerate.compare_metadata`` lists the difference and
this test prints it. Runs on SQLite and (with BATON_TEST_POSTGRES_URL) PostgreSQL.
"""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine

from bot.store import upgrade
from bot.store.tables import metadata

# objects that live outside the SQLAlchemy models on purpose (created by raw SQL in 0002)
_OUTSIDE_MODELS = {"ix_messages_text_fts"}


def _include(obj, name, type_, reflected, compare_to):  # type: ignore[no-untyped-def]
    if type_ == "table" and name and (name.startswith("messages_fts") or name.startswith("procrastinate")):
        return False
    return name not in _OUTSIDE_MODELS


def _diff(sync_conn):  # type: ignore[no-untyped-def]
    ctx = MigrationContext.configure(sync_conn, opts={"include_object": _include, "compare_type": True})
    return compare_metadata(ctx, metadata)


async def test_upgraded_database_matches_the_models(db_url: str) -> None:
    await upgrade(db_url)
    engine = create_async_engine(db_url)
    try:
        async with engine.connect() as conn:
            diff = await conn.run_sync(_diff)
    finally:
        await engine.dispose()
    assert diff == [], "models and migrations disagree:\n" + "\n".join(map(repr, diff))


def test_every_table_is_in_the_one_metadata() -> None:
    import bot.scheduling  # noqa: F401  (importing the users of tables must not add tables elsewhere)

    assert {"threads", "messages", "runs", "step_runs", "summaries", "processed_events", "schedules"} <= set(metadata.tables)
