"""The step cache in SQL (``step_cache`` table): :class:`engine.cache.StepCache` for the bot."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from bot.store.db import Database, _aware
from bot.store.tables import step_cache
from engine.actions import StepOutput


class SqlStepCache:
    """Cached step results keyed by :func:`engine.cache.cache_key`; expired rows are
    ignored on read and deleted by :meth:`purge` (retention may call it)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self, key: str, now: datetime) -> StepOutput | None:
        """The unexpired result for ``key``, or ``None``. Raises ``StoreError`` on database errors."""
        async with self.db.begin("reading the step cache") as conn:
            row = (await conn.execute(select(step_cache).where(step_cache.c.key == key))).mappings().first()
        if row is None:
            return None
        expires = _aware(row["expires_at"])
        if expires is None or expires <= now:
            return None
        return StepOutput(row["output"], row["tokens_in"], row["tokens_out"], row["cost_usd"])

    async def put(self, key: str, output: StepOutput, now: datetime, ttl_s: float) -> None:
        """Store (or replace) the result for ``key`` until ``now + ttl_s``."""
        values = {
            "key": key,
            "output": output.text,
            "tokens_in": output.tokens_in,
            "tokens_out": output.tokens_out,
            "cost_usd": output.cost_usd,
            "created_at": now,
            "expires_at": now + timedelta(seconds=ttl_s),
        }
        ins = (pg_insert if self.db.dialect == "postgresql" else sqlite_insert)(step_cache).values(**values)
        stmt = ins.on_conflict_do_update(index_elements=["key"], set_={k: v for k, v in values.items() if k != "key"})
        async with self.db.begin("writing the step cache") as conn:
            await conn.execute(stmt)

    async def purge(self, now: datetime) -> int:
        """Delete expired entries; returns how many."""
        async with self.db.begin("purging the step cache") as conn:
            res = await conn.execute(delete(step_cache).where(step_cache.c.expires_at <= now))
        return int(res.rowcount or 0)
