"""Fixtures for ``baton serve``: a real uvicorn server on a free port around a real App,
and a local webhook receiver (aiohttp) that verifies Standard Webhooks signatures."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from aiohttp import web
from standardwebhooks import Webhook

from bot.app import App
from bot.server.app import create_app
from bot.server.auth import TokenStore
from bot.settings import Settings, WebhookEntry
from tests.uvicorn_server import free_port, served

SECRET = "whsec_" + base64.b64encode(b"baton-test-webhook-secret-32byte").decode()




@dataclass
class Receiver:
    """A webhook receiver: verifies each request's signature; ``fail`` decides a 500 instead."""

    secret: str = SECRET
    fail: Callable[[int], bool] = lambda n: False
    requests: int = 0
    bad_signatures: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    url: str = ""
    _new: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        body = await request.read()
        try:
            payload = Webhook(self.secret).verify(body, dict(request.headers))
        except Exception:
            self.bad_signatures += 1
            return web.Response(status=400)
        if self.fail(self.requests):
            return web.Response(status=500, text="flaky receiver")
        self.events.append(payload)
        self.ids.append(request.headers["webhook-id"])
        self._new.set()
        return web.Response(status=204)

    async def wait_for(self, pred: Callable[[list[dict[str, Any]]], bool], timeout: float = 20.0) -> None:
        async with asyncio.timeout(timeout):
            while not pred(self.events):
                self._new.clear()
                await self._new.wait()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/hook", rec.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    rec.url = f"http://127.0.0.1:{port}/hook"
    try:
        yield rec
    finally:
        await runner.cleanup()


@dataclass
class Served:
    """A running server: its base URL, the App, and an authenticated client factory."""

    url: str
    baton: App
    settings: Settings
    http: httpx.AsyncClient

    async def token(self, name: str, scopes: tuple[str, ...] = ("runs:read", "runs:write")) -> dict[str, str]:
        tok = await TokenStore(self.baton.db).create(name, scopes)
        return {"Authorization": f"Bearer {tok}"}

    async def wait_run(self, run_id: int, headers: dict[str, str], timeout: float = 20.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                r = await self.http.get(f"/api/v1/runs/{run_id}", headers=headers)
                if r.json()["status"] in ("succeeded", "failed", "cancelled"):
                    return r.json()
                await asyncio.sleep(0.05)


def make_settings(tmp_path, **overrides: Any) -> Settings:  # type: ignore[no-untyped-def]
    base: dict[str, Any] = {"data_dir": tmp_path / ".baton"}
    base.update(overrides)
    return Settings(**base)


@pytest.fixture
def serve(tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    """``async with serve(**settings) as s:`` a real server (uvicorn, free port) around a started App."""
    import contextlib

    monkeypatch.setenv("BATON_TEST_WEBHOOK_SECRET", SECRET)

    @contextlib.asynccontextmanager
    async def go(**overrides: Any) -> AsyncIterator[Served]:
        settings = make_settings(tmp_path, **overrides)
        baton = await App.start(settings, {}, migrate=True)
        try:
            async with served(create_app(settings, baton=baton)) as (url, http):
                yield Served(url, baton, settings, http)
        finally:
            await baton.aclose()

    return go


def hook(url: str, **kw: Any) -> dict[str, WebhookEntry]:
    """One ``[webhooks.recv]`` entry pointing at ``url`` with the test secret."""
    return {"recv": WebhookEntry(url=url, secret_env="BATON_TEST_WEBHOOK_SECRET", **kw)}


def sse_events(text: str) -> list[tuple[str, Any]]:
    """Parse a text/event-stream body into ``(event, data)`` pairs."""
    out = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        ev, data = "message", []
        for line in block.split("\n"):
            if line.startswith("event:"):
                ev = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
        if data:
            out.append((ev, json.loads("\n".join(data))))
    return out


__all__ = ["SECRET", "Receiver", "Served", "free_port", "hook", "make_settings", "os", "sse_events"]
