"""Approve/Reject button clicks on ``baton serve``'s Slack endpoint leave the audit rows ``/approve``/``/reject`` leave.

A real uvicorn server around a started App, with ``/slack/events`` mounted (as
``baton serve`` does when ``BATON_SLACK_*`` is set); requests are signed like
Slack's; the audit trail is read back through the REST API (``GET /api/v1/audit``).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from bot.app import App
from bot.server.app import create_app
from bot.server.auth import TokenStore
from bot.settings import Settings
from tests.conftest import REPO
from tests.fakes.slack_api import FakeSlackAPI
from tests.slack.conftest import BOT_TOKEN, SIGNING_SECRET, mention, need_data, sign
from tests.slack.test_slack_interactivity import click_stored
from tests.uvicorn_server import served

pytestmark = pytest.mark.timeout(90)


async def _post(http: httpx.AsyncClient, body: str, content_type: str) -> int:
    r = await http.post("/slack/events", content=body.encode(), headers={"Content-Type": content_type, **sign(body)})
    return r.status_code


async def _status_with_buttons(slack: FakeSlackAPI, thread: str, run_id: int) -> str:
    """The ts of run ``run_id``'s status message once it shows Approve/Reject."""
    async with asyncio.timeout(15):
        while True:
            for (channel, ts), m in list(slack.messages.items()):
                if m.get("thread_ts") == thread and m.get("text", "").startswith(f"Run #{run_id} running") and "baton_approve" in json.dumps(m.get("blocks", [])):
                    return ts
            await asyncio.sleep(0.02)


async def _audit_rows(http: httpx.AsyncClient, admin: dict[str, str], actor: str, count: int) -> list[dict[str, Any]]:
    async with asyncio.timeout(15):
        while True:
            items = (await http.get("/api/v1/audit", params={"actor": actor}, headers=admin)).json()["items"]
            if len(items) >= count:
                return items
            await asyncio.sleep(0.05)


async def test_button_clicks_on_the_served_slack_endpoint_are_audited(sqlite_url: str, slack_api: FakeSlackAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    need_data()
    monkeypatch.setenv("BATON_SLACK_BOT_TOKEN", BOT_TOKEN)
    monkeypatch.setenv("BATON_SLACK_SIGNING_SECRET", SIGNING_SECRET)
    monkeypatch.setenv("BATON_SLACK_API_BASE_URL", slack_api.api_url)
    settings = Settings(config_dir=REPO / "config", database_url=sqlite_url, permissions={"*": ["*"], "approve": ["W333"]})
    baton = await App.start(settings, {}, migrate=True)
    try:
        async with served(create_app(settings, baton=baton, slack=True)) as (_url, http):
            admin = {"Authorization": f"Bearer {await TokenStore(baton.db).create('auditor', ('admin',))}"}
            body = mention("run: echo plan THEN approve deploy to prod? THEN echo deployed")
            thread = body["event"]["ts"]
            assert await _post(http, json.dumps(body), "application/json") == 200
            status_ts = await _status_with_buttons(slack_api, thread, 1)

            # W444 is not an approver: refused and audited; W333 approves: audited like /approve
            click = click_stored(_Stored(slack_api), "C111", status_ts, "baton_reject", user="W444", name="bob")
            assert await _post(http, urlencode(click), "application/x-www-form-urlencoded") == 200
            [denied] = await _audit_rows(http, admin, "W444", 1)
            assert {k: denied[k] for k in ("platform", "channel", "thread", "action", "outcome", "target")} == {
                "platform": "slack", "channel": "C111", "thread": thread, "action": "permission.denied", "outcome": "denied", "target": "run:1"
            }
            click = click_stored(_Stored(slack_api), "C111", status_ts, "baton_approve", user="W333", name="carol")
            assert await _post(http, urlencode(click), "application/x-www-form-urlencoded") == 200
            [approved] = await _audit_rows(http, admin, "W333", 1)
            assert {k: approved[k] for k in ("platform", "channel", "thread", "action", "outcome", "target")} == {
                "platform": "slack", "channel": "C111", "thread": thread, "action": "run.approve", "outcome": "ok", "target": "run:1"
            }
            assert approved["detail"].startswith("Approved step s2 of run #1")
            unsigned = await http.post("/slack/events", content=urlencode(click).encode(), headers={"Content-Type": "application/x-www-form-urlencoded"})
            assert unsigned.status_code == 401  # an unsigned click is refused before anything is recorded
            assert len(await _audit_rows(http, admin, "W333", 1)) == 1
    finally:
        await baton.aclose()


class _Stored:
    """What :func:`click_stored` reads from a harness: the fake Slack API as ``.slack``."""

    def __init__(self, slack: FakeSlackAPI) -> None:
        self.slack = slack
