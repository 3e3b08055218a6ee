"""Builders for the Discord adapter tests: gateway frames from the vendored payloads, and the test environment.

Events are built from the payloads vendored in ``tests/fixtures/discord``
(Discord4J's gateway fixtures); fields the current API adds to interactions (the
partial ``channel`` object and ``attachment_size_limit``,
https://discord.com/developers/docs/interactions/receiving-and-responding#interaction-object)
are filled in. :meth:`DiscordEnv.feed` delivers a frame through the client's own
gateway parser (``client._connection.parsers[EVENT](d)``, the functions the
gateway connection calls), so handlers get genuine ``discord.Interaction`` and
``discord.Message`` objects.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any


from adapters.discord_adapter import BatonDiscordClient, DiscordOutlet, DiscordSettings, build_discord_client
from bot.app import App
from bot.settings import Settings
from tests.conftest import FIXTURES, REPO
from tests.fakes.discord_api import Call, FakeDiscordAPI

DATA = FIXTURES / "discord"
TOKEN = "MTIzNDU2Nzg5.test-bot-token.secret-part-xyz"

# ids from gateway/Ready.json and gateway/GuildCreate.json
BOT_ID = "344487830824943618"
APP_ID = "344487830824943618"
GUILD_ID = "135197118292819968"
CHANNEL_ID = "263607951971975168"  # #test2
ADMIN_ROLE = "136965347994632192"  # "admin"
ALICE = {"id": "134127815531560960", "username": "alice", "discriminator": "0", "global_name": "Alice", "avatar": None, "public_flags": 0}
BOB = {"id": "275616469906358273", "username": "bob", "discriminator": "0", "global_name": "Bob", "avatar": None, "public_flags": 0}


def load(name: str) -> dict[str, Any]:
    """A vendored payload (``gateway/Ready.json`` …), fresh each call."""
    return json.loads((DATA / name).read_text())


@dataclass
class DiscordEnv:
    """A logged-in client wired to a fresh Baton, plus event builders."""

    app: App
    client: BatonDiscordClient
    outlet: DiscordOutlet
    api: FakeDiscordAPI
    settings: DiscordSettings
    fed: list[dict[str, Any]] = field(default_factory=list)

    # -- feeding events ------------------------------------------------------
    def feed(self, frame: dict[str, Any]) -> dict[str, Any]:
        """Deliver a dispatch frame through the client's own gateway parser; returns its ``d``."""
        assert frame["op"] == 0
        if frame["t"] == "INTERACTION_CREATE":
            self.api.register_interaction(frame["d"])
        elif frame["t"] == "MESSAGE_CREATE":
            self.api.register_message(frame["d"])
        self.fed.append(frame)
        self.client._connection.parsers[frame["t"]](frame["d"])
        return frame["d"]

    def interaction(self, kind: int, data: dict[str, Any], *, user: dict[str, Any] = ALICE, roles: tuple[str, ...] = (ADMIN_ROLE,), channel: dict[str, Any] | None = None) -> dict[str, Any]:
        """An INTERACTION_CREATE frame built from ``gateway/InteractionCreate.json``."""
        frame = load("gateway/InteractionCreate.json")
        d = frame["d"]
        iid = self.api.snowflake()
        ch = channel or self.text_channel()
        d.update(
            id=iid,
            type=kind,
            token=f"interaction-token-{iid}-aW50ZXJhY3Rpb24",
            application_id=APP_ID,
            guild_id=GUILD_ID,
            channel_id=ch["id"],
            channel=ch,
            attachment_size_limit=10 * 1024 * 1024,
            app_permissions="2248473465835073",
            locale="en-US",
            data=data,
        )
        d["member"]["user"] = dict(user)
        d["member"]["roles"] = list(roles)
        return frame

    def text_channel(self, channel_id: str = CHANNEL_ID) -> dict[str, Any]:
        """The partial channel object of a guild text channel."""
        return {"id": channel_id, "type": 0, "guild_id": GUILD_ID, "name": "test2", "permissions": "2248473465835073", "nsfw": False, "position": 1}

    def thread_channel(self, thread_id: str) -> dict[str, Any]:
        """The channel object of a thread the fake created."""
        return dict(self.api.threads[thread_id], permissions="2248473465835073")

    def command_id(self, name: str) -> str:
        for cmds in self.api.commands.values():
            for c in cmds:
                if c["name"] == name:
                    return c["id"]
        return "1"

    def slash(self, name: str, options: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
        """A chat-input command interaction (type 2), e.g. ``slash("run", {"workflow": "disk-check"})``."""
        opts = [{"name": k, "type": 5 if isinstance(v, bool) else 3, "value": v} for k, v in (options or {}).items()]
        return self.interaction(2, {"id": self.command_id(name), "name": name, "type": 1, "options": opts, "guild_id": GUILD_ID}, **kw)

    def autocomplete(self, name: str, option: str, value: str, **kw: Any) -> dict[str, Any]:
        """An autocomplete interaction (type 4) with ``option`` focused."""
        opts = [{"name": option, "type": 3, "value": value, "focused": True}]
        return self.interaction(4, {"id": self.command_id(name), "name": name, "type": 1, "options": opts, "guild_id": GUILD_ID}, **kw)

    def click(self, message: dict[str, Any], custom_id: str, **kw: Any) -> dict[str, Any]:
        """A button click (component interaction, type 3) on a message the fake stored."""
        channel_id = message["channel_id"]
        channel = self.thread_channel(channel_id) if channel_id in self.api.threads else self.text_channel(channel_id)
        frame = self.interaction(3, {"custom_id": custom_id, "component_type": 2}, channel=channel, **kw)
        frame["d"]["message"] = copy.deepcopy(message)
        return frame

    def message(self, content: str, channel_id: str, *, author: dict[str, Any] = ALICE, roles: tuple[str, ...] = (ADMIN_ROLE,), mention_bot: bool = False) -> dict[str, Any]:
        """A MESSAGE_CREATE frame built from ``gateway/MessageCreate.Type0.json``."""
        frame = load("gateway/MessageCreate.Type0.json")
        d = frame["d"]
        d.update(id=self.api.snowflake(), channel_id=channel_id, guild_id=GUILD_ID, author=dict(author), nonce=None)
        d["member"]["roles"] = list(roles)
        if mention_bot:
            d["content"] = f"<@{BOT_ID}> {content}"
            d["mentions"] = [{"id": BOT_ID, "username": "Baton", "discriminator": "0", "avatar": None, "bot": True}]
        else:
            d["content"] = content
        return frame

    def thread_create(self, thread_id: str) -> dict[str, Any]:
        """The THREAD_CREATE Discord sends after the bot opened a thread."""
        return {"op": 0, "t": "THREAD_CREATE", "s": None, "d": dict(self.api.threads[thread_id], newly_created=True)}

    # -- waiting -------------------------------------------------------------
    async def settle(self) -> None:
        """Wait for the handlers, the bot's lanes and runs, then the handlers again."""
        await self.client.settle()
        await self.app.bot.drain()
        await self.client.settle()

    async def settle_handlers(self) -> None:
        """Wait for the client's handler tasks only (runs may still be going, e.g. waiting for approval)."""
        await self.client.settle()

    def callbacks(self, interaction_id: str) -> list[Call]:
        return self.api.find("POST /interactions/{interaction_id}/{token}/callback", interaction_id=interaction_id)

    async def original_edits(self, d: dict[str, Any], count: int = 1) -> list[Call]:
        """Wait for PATCHes of the interaction's ``@original`` response."""
        return await self.api.wait_route("PATCH /webhooks/{application_id}/{token}/messages/{message_id}", count=count, token=d["token"], message_id="@original")


def make_settings(api: FakeDiscordAPI, sqlite_url: str, overrides: dict[str, Any]) -> tuple[Settings, DiscordSettings]:
    """Core and adapter settings for a test; ``overrides`` keys go to whichever model has them."""
    core = {k: v for k, v in overrides.items() if k in Settings.model_fields}
    disc = {k: v for k, v in overrides.items() if k in DiscordSettings.model_fields}
    settings = Settings(config_dir=REPO / "config", database_url=sqlite_url, **core)
    dsettings = DiscordSettings(**{"token": TOKEN, "status_min_interval": 0.05, **disc})
    return settings, dsettings


async def start_env(api: FakeDiscordAPI, sqlite_url: str, overrides: dict[str, Any] | None = None) -> DiscordEnv:
    """Start Baton on ``sqlite_url`` and a client logged in to ``api`` that has seen READY and GUILD_CREATE.

    Close with :func:`stop_env`. Starting again on the same database is a restart.
    """
    settings, dsettings = make_settings(api, sqlite_url, overrides or {})
    outlet = DiscordOutlet(dsettings)
    app = await App.start(settings, {"discord": outlet}, migrate=True)
    client, registered = build_discord_client(app, dsettings, connector=api.connector(), guild_ready_timeout=0.05)
    assert registered is outlet and app.manager.outlets["discord"] is outlet
    e = DiscordEnv(app, client, outlet, api, dsettings)
    try:
        await client.login(dsettings.require_token())
        e.feed(load("gateway/Ready.json"))
        e.feed(load("gateway/GuildCreate.json"))
    except BaseException:
        await client.close()
        await app.aclose()
        raise
    return e


async def stop_env(e: DiscordEnv, *, settle: bool = True) -> None:
    """Close the client, then Baton (runs still active stay resumable)."""
    try:
        if settle:
            await e.settle()
    finally:
        await e.client.close()
        await e.app.aclose()
