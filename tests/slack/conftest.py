"""Slack adapter fixtures: the real bolt app served over HTTP, signed requests, a fake Web API.

Payloads come from ``tests/fixtures/slack`` (Slack's own SDK test fixtures, vendored
with their licenses).
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest

from adapters.slack import SlackHTTPServer, SlackOutlet, SlackSettings, build_slack_app
from bot.app import App
from bot.settings import Settings
from tests.conftest import FIXTURES, REPO
from tests.fakes.slack_api import FakeSlackAPI

DATA = FIXTURES / "slack"
SIGNING_SECRET = "test-signing-secret-0123456789abcdef"
BOT_TOKEN = "xoxb-111-222-test-bot-token"
APP_TOKEN = "xapp-1-A111-test-app-token"
BOT_USER = "W111"


def need_data() -> Path:
    """The vendored Slack fixture folder (tests/fixtures/slack)."""
    return DATA


def load(rel: str) -> Any:
    """A fixture file: JSON decoded, ``.txt`` as text."""
    p = need_data() / rel
    return p.read_text() if p.suffix == ".txt" else json.loads(p.read_text())


def sign(body: str, *, secret: str = SIGNING_SECRET, timestamp: int | None = None) -> dict[str, str]:
    """Slack's request signature headers: ``v0=hex(HMAC-SHA256(secret, "v0:{ts}:{body}"))``."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    sig = hmac.new(secret.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={sig}"}


_ts_counter = iter(range(1, 10**9))


def new_ts() -> str:
    return f"{int(time.time())}.{next(_ts_counter):06d}"


def mention(text: str, *, event_id: str | None = None, ts: str | None = None, thread_ts: str | None = None, user: str = "W222") -> dict[str, Any]:
    """``events/app_mention.json`` saying ``<@W111> text`` (fresh ``event_id``/``ts`` unless given)."""
    body = copy.deepcopy(load("events/app_mention.json"))
    ts = ts or new_ts()
    body["event_id"] = event_id or f"Ev{uuid.uuid4().hex[:10].upper()}"
    body["event"].update({"text": f"<@{BOT_USER}> {text}", "ts": ts, "event_ts": ts, "user": user})
    body["event"].pop("blocks", None)
    if thread_ts:
        body["event"]["thread_ts"] = thread_ts
    return body


def thread_reply(text: str, thread_ts: str, *, channel: str = "C111", event_id: str | None = None) -> dict[str, Any]:
    """``events/message_thread_reply_channel.json`` in ``thread_ts``, without a mention."""
    body = copy.deepcopy(load("events/message_thread_reply_channel.json"))
    ts = new_ts()
    body["event_id"] = event_id or f"Ev{uuid.uuid4().hex[:10].upper()}"
    body["event"].update({"text": text, "ts": ts, "event_ts": ts, "thread_ts": thread_ts, "channel": channel})
    return body


class Harness:
    """A Baton App + the bolt app over real HTTP on 127.0.0.1 + the fake Web API it talks to."""

    def __init__(self, sqlite_url: str, slack: FakeSlackAPI, *, baton: dict[str, Any] | None = None, **slack_kw: Any) -> None:
        self.sqlite_url = sqlite_url
        self.baton = baton or {}
        self.slack = slack
        self.slack_kw = slack_kw
        self.app: App | None = None
        self.outlet: SlackOutlet | None = None
        self.server: SlackHTTPServer | None = None
        self.http: aiohttp.ClientSession | None = None

    @property
    def settings(self) -> SlackSettings:
        kw = {"status_min_interval": 0.2, **self.slack_kw}
        return SlackSettings(
            bot_token=BOT_TOKEN, signing_secret=SIGNING_SECRET, api_base_url=self.slack.api_url, **kw
        )

    async def start(self) -> Harness:
        settings = Settings(config_dir=REPO / "config", database_url=self.sqlite_url, **self.baton)
        self.app = await App.start(settings, {}, migrate=True)
        bolt, self.outlet = build_slack_app(self.app, self.settings, verified_upstream=True)  # as serve_slack: only check_request verifies
        self.server = await SlackHTTPServer(bolt, host="127.0.0.1", port=0).start()
        self.http = self.http or aiohttp.ClientSession()
        return self

    async def stop(self) -> None:
        """Stop serving, let handed-over work finish, close the App (like a process exit)."""
        if self.server:
            await self.server.stop()
        if self.outlet:
            await self.outlet.drain()
        if self.app:
            await self.app.aclose()
        if self.outlet:
            await self.outlet.aclose()
        self.app = self.outlet = self.server = None

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    async def aclose(self) -> None:
        await self.stop()
        if self.http:
            await self.http.close()

    async def post(self, body: str, content_type: str, *, headers: dict[str, str] | None = None, signed: bool = True) -> tuple[int, str, float]:
        """POST ``body`` to the endpoint; returns ``(status, response text, seconds to the response)``."""
        assert self.server and self.http
        h = {"Content-Type": content_type, **(sign(body) if signed else {}), **(headers or {})}
        t0 = time.perf_counter()
        async with self.http.post(self.server.url, data=body.encode(), headers=h) as r:
            text = await r.text()
            return r.status, text, time.perf_counter() - t0

    async def event(self, payload: dict[str, Any], *, retry: int | None = None, headers: dict[str, str] | None = None) -> tuple[int, str, float]:
        """Deliver an Events API payload (as Slack does: JSON, signed; ``retry`` sets X-Slack-Retry-Num)."""
        extra = dict(headers or {})
        if retry:
            extra.update({"X-Slack-Retry-Num": str(retry), "X-Slack-Retry-Reason": "http_timeout"})
        return await self.post(json.dumps(payload), "application/json", headers=extra)

    async def form(self, fields: dict[str, str]) -> tuple[int, str, float]:
        """Deliver a form body (slash commands; interactivity as ``payload=<json>``)."""
        return await self.post(urlencode(fields), "application/x-www-form-urlencoded")

    async def settle(self) -> None:
        """Wait until every handed-over event, lane and run has finished."""
        assert self.app and self.outlet
        for _ in range(3):
            await self.outlet.drain()
            await self.app.bot.drain()
        await self.outlet.drain()

    def posts(self, channel: str | None = None, thread_ts: str | None = None) -> list[Any]:
        """Successful ``chat.postMessage`` calls (optionally in one channel/thread)."""
        return self.slack.calls_to(
            "chat.postMessage",
            lambda c: c.ok and (channel is None or c.args.get("channel") == channel) and (thread_ts is None or c.args.get("thread_ts") == thread_ts),
        )


@pytest.fixture
async def slack_api() -> AsyncIterator[FakeSlackAPI]:
    async with FakeSlackAPI(token=BOT_TOKEN, app_token=APP_TOKEN, bot_user_id=BOT_USER) as s:
        yield s


@pytest.fixture
async def harness(sqlite_url: str, slack_api: FakeSlackAPI) -> AsyncIterator[Harness]:
    need_data()
    h = await Harness(sqlite_url, slack_api).start()
    try:
        yield h
    finally:
        await h.aclose()
