"""Fixtures for the dashboard: a real ``baton serve`` app (uvicorn on a free port) with the
dashboard mounted, around a started App, and tokens to sign in with."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.app import App
from bot.dashboard import router as dashboard
from bot.server.app import create_app
from bot.server.auth import TokenStore
from bot.settings import Settings
from tests.uvicorn_server import served


@dataclass
class Dash:
    """A running server with the dashboard: base URL, the App, an HTTP client."""

    url: str
    baton: App
    http: httpx.AsyncClient

    async def token(self, name: str, scopes: tuple[str, ...] = ("runs:read", "runs:write")) -> str:
        return await TokenStore(self.baton.db).create(name, scopes)

    async def login(self, token: str) -> httpx.AsyncClient:
        """A new client signed in with ``token`` (cookie set by POST /login)."""
        c = httpx.AsyncClient(base_url=self.url, timeout=10)
        r = await c.post("/login", data={"token": token, "next": "/"})
        assert r.status_code == 303, r.text
        return c

    async def wait_run(self, run_id: int, statuses: tuple[str, ...] = ("succeeded", "failed", "cancelled"), timeout: float = 20) -> str:
        async with asyncio.timeout(timeout):
            while True:
                got = await self.baton.runs.get(run_id)
                if got and got[0].status in statuses:
                    return got[0].status
                await asyncio.sleep(0.05)


def csrf_of(html: str) -> str:
    """The CSRF secret a page embeds in its forms."""
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, "no CSRF field on the page"
    return m.group(1)


@pytest.fixture
def dash(tmp_path: Path):  # type: ignore[no-untyped-def]
    """``async with dash(**settings) as d:`` a real server with the dashboard."""

    @contextlib.asynccontextmanager
    async def go(**overrides: Any) -> AsyncIterator[Dash]:
        settings = Settings(**({"data_dir": tmp_path / ".baton"} | overrides))
        baton = await App.start(settings, {})
        try:
            async with served(create_app(settings, baton=baton, extra_routers=[dashboard])) as (url, http):
                yield Dash(url, baton, http)
        finally:
            await baton.aclose()

    return go
