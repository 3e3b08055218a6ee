"""Dashboard sign-in: an API token exchanged for a signed session cookie, and CSRF.

* ``POST /login`` takes an API token (from ``baton token create``), checks it with the
  API's :class:`~bot.server.auth.TokenStore`, and sets the cookie ``baton_session``:
  the token's SHA-256 and a random CSRF secret, signed with itsdangerous
  (HMAC-SHA1 over the payload and a timestamp), ``HttpOnly``, ``SameSite=Strict``,
  ``Secure`` over HTTPS, valid :data:`MAX_AGE_S`. The token itself is never stored in
  the cookie, so a leaked cookie cannot be used against the API.
* Every request re-reads the token row (cached :data:`CACHE_TTL_S`), so a revoked token
  signs its sessions out within seconds; scopes are the token's scopes.
* Every state-changing request must carry the session's CSRF secret (form field
  ``csrf`` or header ``X-CSRF-Token``, which the pages' htmx sends) and, when the
  browser sends one, an ``Origin`` equal to the server's.

The signing key is ``BATON_DASHBOARD_SECRET`` when set (use it when several
``baton serve`` processes sit behind one address); otherwise a random key per process,
so sessions end when the server restarts.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
import time
from dataclasses import dataclass
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import select
from starlette.requests import Request

from bot.server.auth import TokenInfo, hash_token
from bot.store.db import _aware
from bot.store.tables import api_tokens

log = logging.getLogger("baton.dashboard")

COOKIE = "baton_session"
MAX_AGE_S = 12 * 3600
CACHE_TTL_S = 2.0
_SECRET = os.environ.get("BATON_DASHBOARD_SECRET") or secrets.token_urlsafe(32)
_signer = URLSafeTimedSerializer(_SECRET, salt="baton-dashboard-session")
_cache: dict[str, tuple[float, TokenInfo | None]] = {}


@dataclass(frozen=True, slots=True)
class Viewer:
    """The signed-in token: who (``api:NAME``), its scopes, and the session's CSRF secret."""

    token: TokenInfo
    csrf: str

    @property
    def principal(self) -> str:
        return self.token.principal

    def can(self, scope: str) -> bool:
        """Whether the token has ``scope`` (``admin`` has all)."""
        return self.token.allows(scope)


def session_cookie(token: str) -> tuple[str, str]:
    """The signed cookie value for a verified ``token``, and its CSRF secret."""
    csrf = secrets.token_urlsafe(24)
    return _signer.dumps({"t": hash_token(token), "c": csrf}), csrf


def set_cookie(response: Any, request: Request, value: str) -> None:
    """Attach the session cookie (HttpOnly, SameSite=Strict, Secure over HTTPS)."""
    response.set_cookie(
        COOKIE, value, max_age=MAX_AGE_S, httponly=True, samesite="strict", secure=request.url.scheme == "https", path="/"
    )


async def _token_by_hash(db: Any, token_hash: str) -> TokenInfo | None:
    now = time.monotonic()
    hit = _cache.get(token_hash)
    if hit is not None and now - hit[0] < CACHE_TTL_S:
        return hit[1]
    async with db.begin("checking a dashboard session") as conn:
        r = (await conn.execute(select(api_tokens).where(api_tokens.c.token_hash == token_hash))).mappings().first()
    info = None
    if r is not None and r["revoked_at"] is None:
        scopes = tuple(s for s in r["scopes"].split(",") if s)
        info = TokenInfo(r["name"], scopes, _aware(r["created_at"]), None)  # type: ignore[arg-type]
    if len(_cache) > 10000:
        _cache.clear()
    _cache[token_hash] = (now, info)
    return info


async def viewer(request: Request) -> Viewer | None:
    """The signed-in viewer of ``request``, or ``None`` (no cookie, bad signature, expired, revoked)."""
    raw = request.cookies.get(COOKIE)
    if not raw:
        return None
    try:
        data = _signer.loads(raw, max_age=MAX_AGE_S)
    except BadSignature:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("t"), str) or not isinstance(data.get("c"), str):
        return None
    info = await _token_by_hash(request.app.state.services.baton.db, data["t"])
    return Viewer(info, data["c"]) if info is not None else None


def csrf_ok(request: Request, who: Viewer, form: Any) -> bool:
    """The request carries the session's CSRF secret and, if sent, a same-origin ``Origin``."""
    origin = request.headers.get("origin")
    if origin and origin.rstrip("/") != f"{request.url.scheme}://{request.url.netloc}":
        return False
    sent = request.headers.get("x-csrf-token") or (form.get("csrf") if form is not None else None) or ""
    return hmac.compare_digest(str(sent), who.csrf)


__all__ = ["COOKIE", "MAX_AGE_S", "Viewer", "csrf_ok", "session_cookie", "set_cookie", "viewer"]
