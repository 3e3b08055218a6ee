"""Discord adapter settings, constants and small translations (no I/O).

Only ``adapters/discord_adapter.py`` and ``adapters/_discord_*`` import discord.py.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import discord
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from adapters._discord_text import RedactSecrets

PLATFORM = "discord"
NO_MENTIONS = discord.AllowedMentions.none()
MISSING: Any = discord.utils.MISSING

#: Loggers that may see secrets (discord.py logs webhook URLs and raw gateway events at DEBUG).
_LOGGERS = (
    "baton.discord",
    "discord",
    "discord.client",
    "discord.http",
    "discord.gateway",
    "discord.state",
    "discord.webhook.async_",
    "discord.interactions",
    "discord.app_commands.tree",
    "discord.ui.view",
)
REDACT = RedactSecrets()

#: Core commands that answer in place (they read or stop things); a mention with one
#: of these in a channel is answered there instead of opening a thread.
_IN_PLACE = {
    "help", "workflows", "runs", "run_show", "cancel", "history", "recall", "context", "summary", "forget", "approve", "reject", "unknown",
}  # fmt: skip
_STEP_ID = re.compile(r"^[^\s:]{1,64}$")


class DiscordConfigError(ValueError):
    """The Discord adapter cannot start: a missing or rejected token, or a missing intent.

    The message names the setting to fix and never contains the token.
    """


class DiscordSettings(BaseSettings):
    """Settings of the Discord adapter, from ``BATON_DISCORD_*`` environment variables.

    Attributes:
        token: the bot token (Developer Portal → your application → Bot → Reset
            Token). Required by :func:`serve_discord`; kept as a ``SecretStr`` so it
            never appears in ``repr``/logs.
        dev_guild_id: a guild id; when set, commands are synced to that guild only
            (they update immediately), else globally (production).
        chat_in_channels: also continue a session from plain messages in its thread
            (without a mention). Only then is the *privileged* ``message_content``
            gateway intent requested, which must be enabled in the Developer Portal
            (and, for bots in 100+ servers, approved by Discord). Without it Discord
            still delivers the content of messages that mention the bot and of DMs.
        proxy: an HTTP proxy URL for all Discord traffic (REST and gateway), passed
            to discord.py's public ``proxy`` option; ``None``: connect directly to
            ``https://discord.com`` and ``wss://gateway.discord.gg``. (Tests reach a
            local fake through the client's ``connector`` option, not a setting.)
        status_min_interval: seconds between edits of a run's status message.
        sync_commands: bulk-overwrite the application commands at start-up.
        thread_archive_minutes: auto-archive duration of threads the bot opens
            (Discord allows 60, 1440, 4320 or 10080).
    """

    model_config = SettingsConfigDict(env_prefix="BATON_DISCORD_", extra="ignore")

    token: SecretStr | None = Field(None, description="bot token (BATON_DISCORD_TOKEN)")
    dev_guild_id: int | None = Field(None, description="sync commands to this guild only (development)")
    chat_in_channels: bool = Field(False, description="read plain messages in session threads (privileged intent)")
    proxy: str | None = Field(None, description="HTTP proxy for Discord traffic, e.g. http://proxy.internal:3128")
    status_min_interval: float = Field(1.5, gt=0, description="seconds between status message edits")
    sync_commands: bool = Field(True, description="bulk-overwrite the slash commands at start-up")
    thread_archive_minutes: Literal[60, 1440, 4320, 10080] = 1440

    def require_token(self) -> str:
        """The bot token.

        Raises:
            DiscordConfigError: ``BATON_DISCORD_TOKEN`` is not set (or blank).
        """
        token = self.token.get_secret_value().strip() if self.token else ""
        if not token:
            raise DiscordConfigError(
                "BATON_DISCORD_TOKEN is not set: create a bot in the Discord Developer Portal "
                "(Applications → your app → Bot → Reset Token), invite it with the 'bot' and "
                "'applications.commands' scopes, and export the token as BATON_DISCORD_TOKEN."
            )
        return token


def gateway_intents(settings: DiscordSettings) -> discord.Intents:
    """The gateway intents the adapter needs (https://discord.com/developers/docs/events/gateway#gateway-intents).

    ``guilds`` (GUILD_CREATE: channels, threads and role names for permissions),
    ``guild_messages`` and ``dm_messages`` (MESSAGE_CREATE). ``message_content`` is a
    privileged intent and is requested only with ``chat_in_channels``; mentions and
    DMs carry their content without it. No ``members``/``presences`` (privileged,
    not needed: interactions and messages carry the member's roles).
    """
    intents = discord.Intents.none()
    intents.guilds = True
    intents.guild_messages = True
    intents.dm_messages = True
    intents.message_content = settings.chat_in_channels
    return intents


def member_roles(user: discord.abc.User | discord.Member) -> tuple[str, ...]:
    """The role names (then ids) of a guild member, for ``Message.roles``; ``()`` outside guilds.

    Permissions rules name roles as ``role:NAME``; ids are included too so that
    ``role:<id>`` works for roles whose name changes.
    """
    if not isinstance(user, discord.Member):
        return ()
    roles = user.roles
    return tuple(r.name for r in roles) + tuple(str(r.id) for r in roles)


def strip_mention(text: str, user_id: int) -> str:
    """``text`` without mentions of ``user_id`` (``<@id>`` and the legacy ``<@!id>``), trimmed."""
    return re.sub(rf"<@!?{user_id}>", " ", text).strip()
