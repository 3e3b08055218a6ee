"""Fault 18 (issue 14): a gateway event discord.py cannot parse is logged once and skipped; the
adapter never dies of one. Everything goes through the fake gateway's real websocket."""

from __future__ import annotations

import asyncio
import logging

import pytest

from adapters.discord_adapter import serve_discord
from bot.app import App
from tests.discord.support import CHANNEL_ID, GUILD_ID, DiscordEnv, load, make_settings
from tests.fakes.discord_api import FakeDiscordAPI

ORIGINAL = "PATCH /webhooks/{application_id}/{token}/messages/{message_id}"

# what Discord sends when only an embed of a message changed: no type, author, content …
PARTIAL_MESSAGE_UPDATE = {
    "t": "MESSAGE_UPDATE",
    "d": {"id": "1100000000000000001", "channel_id": CHANNEL_ID, "guild_id": GUILD_ID, "embeds": []},
}


async def _ask_workflows(api: FakeDiscordAPI, app: App, dsettings) -> str:  # type: ignore[no-untyped-def]
    builder = DiscordEnv(app, None, None, api, dsettings)  # type: ignore[arg-type]
    frame = builder.slash("workflows")
    api.register_interaction(frame["d"])
    await api.dispatch(frame)
    [answer] = await api.wait_route(ORIGINAL, token=frame["d"]["token"], timeout=20)
    return answer.json["content"]


async def test_an_unparsable_gateway_event_is_logged_once_and_skipped(
    sqlite_url: str, api: FakeDiscordAPI, caplog: pytest.LogCaptureFixture
) -> None:
    settings, dsettings = make_settings(api, sqlite_url, {"dev_guild_id": int(GUILD_ID)})
    api.on_identify(load("gateway/Ready.json"), load("gateway/GuildCreate.json"))
    app = await App.start(settings, {}, migrate=True)
    caplog.set_level(logging.INFO)
    task = asyncio.create_task(serve_discord(app, dsettings, connector=api.connector()))
    try:
        await api.wait_identify()
        assert "disk-check" in await _ask_workflows(api, app, dsettings)
        for n in (2, 3):  # each is skipped; the client connects again (a new Identify)
            await api.dispatch(PARTIAL_MESSAGE_UPDATE)
            async with asyncio.timeout(20):
                while len(api.identifies) < n or not api._sockets:
                    await asyncio.sleep(0.02)  # polling a condition, not ordering by time
        # the adapter is still serving: a later interaction is answered
        assert "disk-check" in await _ask_workflows(api, app, dsettings)
        assert not task.done()
        skipped = [r for r in caplog.records if "could not parse" in r.getMessage() and r.levelno >= logging.WARNING]
        assert len(skipped) == 1, [r.getMessage() for r in skipped]
        assert "MESSAGE_UPDATE" in skipped[0].getMessage() and not skipped[0].exc_info
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await app.aclose()
