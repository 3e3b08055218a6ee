"""The step cache in SQL (``step_cache`` table): :class:`engine.cache.StepCache` for the bot."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from bot.store.db import Database, _aware
from bot.store.tables import step_cache
from bot.store.tx import Body
from engine.actions import StepOutput

_GET = select(
    step_cache.c.output, step_cache.c.tokens_in, step_cache.c.tokens_out, step_cache.c.cost_usd, step_cache.c.expires_at
).where(step_cache.c.key == bindparam("key"))
_PURGE = delete(step_cache).where(step_cache.c.expires_at <= bindparam("now", type_=step_cache.c.expires_at.type))
_COLS = ("key", "output", "tokens_in", "tokens_out", "cost_usd", "created_at", "expires_at")
_PUT: dict[str, Any] = {}


def _put_stmt(dialect: str) -> Any:
    """The ``step_cache`` upsert for ``dialect`` (built once)."""
    got = _PUT.get(dialect)
    if got is None:
        ins = (pg_insert if dialect == "postgresql" else sqlite_insert)(step_cache).values(**{c: bindparam(c) for c in _COLS})
        got = _PUT[dialect] = ins.on_conflict_do_update(index_elements=["key"], set_={c: getattr(ins.excluded, c) for c in _COLS if c != "key"})
    return got


class SqlStepCache:
    """Cached step results keyed by :func:`engine.cache.cache_key`; expired rows are
    ignored on read and deleted by :meth:`purge` (retention may call it)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._put = _put_stmt(db.dialect)

    async def get(self, key: str, now: datetime) -> StepOutput | None:
        """The unexpired result for ``key``, or ``None``. Raises ``StoreError`` on database errors."""
        rows = await self.db.execute(_GET, {"key": key}, what="reading the step cache")
        if not rows:
            return None
        output, tokens_in, tokens_out, cost, expires = rows[0]
        expires = _aware(expires)
        if expires is None or expires <= now:
            return None
        return StepOutput(output, tokens_in, tokens_out, cost)

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
        await self.db.execute(self._put, values, what="writing the step cache")

    async def purge(self, now: datetime) -> int:
        """Delete expired entries; returns how many."""

        def body() -> Body[int]:
            return int((yield _PURGE, {"now": now}).rowcount or 0)

        return await self.db.run(body, "purging the step cache", atomic=False)
