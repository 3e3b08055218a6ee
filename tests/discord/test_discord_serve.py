"""Start-up and shutdown: settings, intents, serve_discord over the fake gateway, secrets kept out of logs."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import discord
import discord.gateway
import discord.http
import yarl
import pytest

from adapters.discord_adapter import (
    DiscordConfigError,
    DiscordOutlet,
    DiscordSettings,
    build_discord_client,
    gateway_intents,
    serve_discord,
)
from bot.app import App
from tests.discord.support import CHANNEL_ID, GUILD_ID, TOKEN, DiscordEnv, load, make_settings
from tests.fakes.discord_api import ConnectProxy, FakeDiscordAPI

MESSAGE_CONTENT = 1 << 15  # https://discord.com/developers/docs/events/gateway#list-of-intents
GUILD_COMMANDS = "PUT /applications/{application_id}/guilds/{guild_id}/commands"
ORIGINAL = "PATCH /webhooks/{application_id}/{token}/messages/{message_id}"


def test_missing_token_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BATON_DISCORD_TOKEN", raising=False)
    with pytest.raises(DiscordConfigError, match="BATON_DISCORD_TOKEN is not set"):
        DiscordSettings().require_token()
    with pytest.raises(DiscordConfigError, match="BATON_DISCORD_TOKEN"):
        DiscordSettings(token="   ").require_token()


async def test_serve_without_token_fails_before_any_connection(sqlite_url: str, api: FakeDiscordAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BATON_DISCORD_TOKEN", raising=False)
    settings, _ = make_settings(api, sqlite_url, {})
    app = await App.start(settings, {}, migrate=True)
    try:
        with pytest.raises(DiscordConfigError, match="BATON_DISCORD_TOKEN is not set"):
            await serve_discord(app, DiscordSettings(), connector=api.connector())
    finally:
        await app.aclose()
    assert api.calls == []


def test_settings_from_environment_hide_the_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATON_DISCORD_TOKEN", TOKEN)
    monkeypatch.setenv("BATON_DISCORD_DEV_GUILD_ID", GUILD_ID)
    monkeypatch.setenv("BATON_DISCORD_CHAT_IN_CHANNELS", "true")
    monkeypatch.setenv("BATON_DISCORD_STATUS_MIN_INTERVAL", "2.5")
    s = DiscordSettings()
    assert s.require_token() == TOKEN and s.dev_guild_id == int(GUILD_ID) and s.chat_in_channels and s.status_min_interval == 2.5
    assert TOKEN not in repr(s) and TOKEN not in str(s.model_dump())


def test_message_content_intent_only_with_chat_in_channels() -> None:
    plain = gateway_intents(DiscordSettings())
    assert not plain.message_content and plain.guilds and plain.guild_messages and plain.dm_messages
    assert not plain.members and not plain.presences  # privileged, not needed
    assert gateway_intents(DiscordSettings(chat_in_channels=True)).message_content


@pytest.mark.parametrize("chat_in_channels", [False, True])
async def test_serve_discord_over_the_gateway_until_cancelled(sqlite_url: str, api: FakeDiscordAPI, chat_in_channels: bool) -> None:
    settings, dsettings = make_settings(
        api, sqlite_url, {"dev_guild_id": int(GUILD_ID), "chat_in_channels": chat_in_channels}
    )
    api.on_identify(load("gateway/Ready.json"), load("gateway/GuildCreate.json"))
    app = await App.start(settings, {}, migrate=True)  # serve_discord registers its outlet
    original_base, original_gateway = discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    task = asyncio.create_task(serve_discord(app, dsettings, connector=api.connector()))
    try:
        identify = await api.wait_identify()
        assert identify["token_valid"] is True
        assert bool(identify["intents"] & MESSAGE_CONTENT) is chat_in_channels
        await api.wait_route(GUILD_COMMANDS, guild_id=GUILD_ID)  # development: synced to the guild
        assert {c["name"] for c in api.commands[GUILD_ID]} == {"run", "flow", "schedule", "workflows", "runs"}
        assert isinstance(app.manager.outlets["discord"], DiscordOutlet)

        builder = DiscordEnv(app, None, None, api, dsettings)  # type: ignore[arg-type]
        frame = builder.slash("workflows")
        api.register_interaction(frame["d"])
        await api.dispatch(frame)  # through the real websocket and discord.py's gateway handling
        [answer] = await api.wait_route(ORIGINAL, token=frame["d"]["token"])
        assert "disk-check" in answer.json["content"]
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await app.aclose()
    # nothing process-wide was patched: discord.py talked to Discord's own URLs, which the connector resolved to the fake
    assert discord.http.Route.BASE == original_base == "https://discord.com/api/v10"
    assert discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY == original_gateway == yarl.URL("wss://gateway.discord.gg/")
    assert api.find("GET /users/@me") and all(c.authorized for c in api.find("GET /users/@me"))


async def test_privileged_intent_not_enabled_is_a_clear_error(sqlite_url: str, api: FakeDiscordAPI) -> None:
    api.disallowed_intents = MESSAGE_CONTENT  # "Message Content Intent" off in the Developer Portal
    settings, dsettings = make_settings(api, sqlite_url, {"chat_in_channels": True})
    app = await App.start(settings, {}, migrate=True)
    try:
        with pytest.raises(DiscordConfigError, match="BATON_DISCORD_CHAT_IN_CHANNELS needs the privileged Message Content intent"):
            async with asyncio.timeout(20):
                await serve_discord(app, dsettings, connector=api.connector())
    finally:
        await app.aclose()
    assert api.identifies and api.identifies[0]["intents"] & MESSAGE_CONTENT


async def test_rejected_token_is_a_clear_error(sqlite_url: str, api: FakeDiscordAPI) -> None:
    settings, dsettings = make_settings(api, sqlite_url, {"token": "not-the-right-token-at-all"})
    app = await App.start(settings, {}, migrate=True)
    try:
        with pytest.raises(DiscordConfigError, match="rejected BATON_DISCORD_TOKEN") as info:
            await serve_discord(app, dsettings, connector=api.connector())
    finally:
        await app.aclose()
    assert "not-the-right-token" not in str(info.value)
    assert discord.http.Route.BASE == "https://discord.com/api/v10"


async def test_tokens_never_reach_logs_or_messages(env: DiscordEnv, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    d = env.feed(env.slash("flow", {"text": "echo hi THEN fail boom"}))
    await env.settle()
    text = caplog.text
    assert "/webhooks/" in text and "[redacted]" in text  # discord.py did log the webhook URLs…
    assert d["token"] not in text and TOKEN not in text  # …without the interaction token or the bot token
    bodies: list[Any] = [c.json for c in env.api.calls]
    assert all(TOKEN not in str(b) for b in bodies)
    assert all(c.authorized for c in env.api.calls if c.route.startswith(("POST /channels", "PATCH /channels")))
    assert env.api.find("POST /channels/{channel_id}/messages/{message_id}/threads", channel_id=CHANNEL_ID)


async def test_the_proxy_setting_carries_discord_traffic(sqlite_url: str, api: FakeDiscordAPI) -> None:
    """``BATON_DISCORD_PROXY``: discord.py's own ``proxy`` option; REST goes through an HTTP CONNECT proxy."""
    async with ConnectProxy(api) as proxy:
        settings, dsettings = make_settings(api, sqlite_url, {"proxy": proxy.url, "sync_commands": False})
        app = await App.start(settings, {}, migrate=True)
        try:
            client, _ = build_discord_client(app, dsettings, connector=api.connector())
            try:
                await client.login(TOKEN)
                assert client.user is not None and str(client.user.id) == api.user["id"]
            finally:
                await client.close()
        finally:
            await app.aclose()
    assert proxy.tunnels and set(proxy.tunnels) == {"discord.com:443"}  # discord.py asked the proxy for Discord itself
    assert api.find("GET /users/@me")
