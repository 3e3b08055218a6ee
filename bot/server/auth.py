"""API tokens, scopes and the per-token rate limit.

A token is ``baton_<43 url-safe chars>`` (256 random bits). Only its SHA-256 is stored
(a slow password hash buys nothing for a random 256-bit secret); the token is shown
once, by ``baton token create``. A request authenticates with
``Authorization: Bearer <token>`` and then acts as the principal ``api:NAME``: the
same ``[permissions]`` rules as chat apply to it (list ``"api:ci"`` there to allow
the token ``ci``).

Scopes: ``runs:read`` (read runs, workflows, schedules, threads, stats),
``runs:write`` (start, cancel, rerun, approve, reject runs; change schedules) and
``admin`` (everything, plus the audit trail and webhook deliveries).

Rate limit: a token bucket per token (``[server] rate_limit`` requests/s refill,
``rate_burst`` size); an empty bucket answers 429 with ``Retry-After`` (whole seconds,
rounded up).
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import bindparam, select, update

from bot.store.db import Database, _aware
from bot.store.tables import api_tokens
from bot.store.tx import Body

SCOPES = ("runs:read", "runs:write", "admin")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
CACHE_TTL_S = 2.0
"""How long a verified token is trusted without reading the table again (a revocation
takes effect within this time in a running server)."""

# Core statements built once (bot.store.db.Database.compiled caches them per object); on
# SQLite they run on the file's one writer connection (issue 13), elsewhere on the engine
_COLS = ("name", "scopes", "created_at", "revoked_at")
_LIVE = select(api_tokens.c.id).where(api_tokens.c.name == bindparam("name"), api_tokens.c.revoked_at.is_(None))
_CREATE = api_tokens.insert().values(**{c: bindparam(c) for c in ("name", "token_hash", "scopes", "created_at")})
_LIST = select(*(api_tokens.c[c] for c in _COLS)).order_by(api_tokens.c.id.desc())
_BY_HASH = select(*(api_tokens.c[c] for c in _COLS)).where(api_tokens.c.token_hash == bindparam("h"))
_REVOKE = (
    update(api_tokens)
    .where(api_tokens.c.name == bindparam("n"), api_tokens.c.revoked_at.is_(None))
    .values(revoked_at=bindparam("at", type_=api_tokens.c.revoked_at.type))
)


class TokenError(ValueError):
    """A token command's input is invalid (bad name, unknown scope, duplicate, unknown)."""


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """A stored token (never the token itself)."""

    name: str
    scopes: tuple[str, ...]
    created_at: datetime
    revoked_at: datetime | None

    @property
    def principal(self) -> str:
        """The identity the token acts as in permissions and the audit trail."""
        return f"api:{self.name}"

    def allows(self, scope: str) -> bool:
        """Whether the token has ``scope`` (``admin`` has them all)."""
        return "admin" in self.scopes or scope in self.scopes


def hash_token(token: str) -> str:
    """SHA-256 hex of a token (what is stored and looked up)."""
    return hashlib.sha256(token.encode()).hexdigest()


def parse_scopes(text: str) -> tuple[str, ...]:
    """``"runs:read,runs:write"`` → a tuple of known scopes.

    Raises:
        TokenError: an unknown scope (the message lists the known ones).
    """
    scopes = tuple(dict.fromkeys(s.strip() for s in text.split(",") if s.strip()))
    bad = [s for s in scopes if s not in SCOPES]
    if bad or not scopes:
        raise TokenError(f"unknown scope {', '.join(bad) or '(none)'}; use a comma-separated list of {', '.join(SCOPES)}")
    return scopes


class TokenStore:
    """API tokens in the ``api_tokens`` table.

    Args:
        db: the database.
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        self._cache: dict[str, tuple[float, TokenInfo | None]] = {}
        self._inflight: dict[str, asyncio.Future[TokenInfo | None]] = {}

    async def create(self, name: str, scopes: tuple[str, ...]) -> str:
        """Store a new token for ``name``; returns the token (the only time it exists in clear).

        Raises:
            TokenError: a bad name, or an active token of that name exists.
        """
        if not _NAME.match(name):
            raise TokenError(f"bad token name {name!r}: use letters, digits, '.', '_' or '-' (at most 64)")
        token = "baton_" + secrets.token_urlsafe(32)
        row = {"name": name, "token_hash": hash_token(token), "scopes": ",".join(scopes), "created_at": datetime.now(UTC)}

        def body() -> Body[None]:
            if (yield _LIVE, {"name": name}).first() is not None:
                raise TokenError(f"an active token named {name!r} exists; revoke it first (baton token revoke {name})")
            yield _CREATE, row

        await self.db.run(body, "creating an API token")
        return token

    async def list(self) -> list[TokenInfo]:
        """Every token, newest first (revoked ones included, marked)."""
        rows = await self.db.execute(_LIST, what="listing API tokens")
        return [_info(dict(zip(_COLS, r))) for r in rows]

    async def revoke(self, name: str) -> bool:
        """Revoke the active token ``name``; False when there is none."""

        def body() -> Body[int]:
            return (yield _REVOKE, {"n": name, "at": datetime.now(UTC)}).rowcount

        n = await self.db.run(body, "revoking an API token")
        self._cache.clear()
        return bool(n)

    async def verify(self, token: str) -> TokenInfo | None:
        """The active token's info, or ``None`` (unknown or revoked). Cached for :data:`CACHE_TTL_S`."""
        h = hash_token(token)
        now = time.monotonic()
        hit = self._cache.get(h)
        if hit is not None and now - hit[0] < CACHE_TTL_S:
            return hit[1]
        pending = self._inflight.get(h)
        if pending is not None:  # one read per token at a time, however many requests wait for it
            return await asyncio.shield(pending)
        fut: asyncio.Future[TokenInfo | None] = asyncio.get_running_loop().create_future()
        self._inflight[h] = fut
        try:
            got = await self.db.execute(_BY_HASH, {"h": h}, what="checking an API token")
            r = dict(zip(_COLS, got[0])) if got else None
            info = _info(r) if r is not None and r["revoked_at"] is None else None
            if len(self._cache) > 10000:
                self._cache.clear()
            self._cache[h] = (now, info)
            fut.set_result(info)
            return info
        except BaseException as e:
            if not fut.done():
                fut.set_exception(e if isinstance(e, Exception) else asyncio.CancelledError())
                fut.exception()  # retrieved here, so a future nobody awaited logs nothing
            raise
        finally:
            self._inflight.pop(h, None)


def _info(r) -> TokenInfo:  # type: ignore[no-untyped-def]
    return TokenInfo(r["name"], tuple(s for s in r["scopes"].split(",") if s), _aware(r["created_at"]), _aware(r["revoked_at"]))  # type: ignore[arg-type]


class RateLimiter:
    """Token buckets, one per key.

    Args:
        rate: tokens added per second.
        burst: bucket size (and the initial fill).
        clock: monotonic seconds (tests pass their own).
    """

    def __init__(self, rate: float, burst: int, clock=time.monotonic) -> None:  # type: ignore[no-untyped-def]
        self.rate = rate
        self.burst = max(1, burst)
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, key: str) -> float:
        """Take one token for ``key``: returns 0 when allowed, else seconds until one is available."""
        now = self.clock()
        level, last = self._buckets.get(key, (float(self.burst), now))
        level = min(float(self.burst), level + (now - last) * self.rate)
        if level >= 1.0:
            self._buckets[key] = (level - 1.0, now)
            return 0.0
        self._buckets[key] = (level, now)
        return (1.0 - level) / self.rate if self.rate > 0 else math.inf


def retry_after_header(wait_s: float) -> str:
    """``Retry-After`` as whole seconds (RFC 9110 delay-seconds), at least 1."""
    return str(max(1, math.ceil(wait_s)))
