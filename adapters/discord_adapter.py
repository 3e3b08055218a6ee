"""The Discord adapter (discord.py): slash commands, threads as sessions, live status, buttons.

What it does
------------
* Application commands (``discord.app_commands``): ``/run workflow:<name>`` (with
  autocomplete over the known workflows), ``/flow text:<workflow text>``,
  ``/schedule text:…`` (forwarded to the core as ``schedule …``), ``/workflows``
  and ``/runs``. Commands are synced to ``dev_guild_id`` when set (guild commands
  update at once, for development) and globally otherwise (production).
* Interactions are acknowledged at once with a deferred response (type 5,
  ``DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE``) and answered by follow-ups (a PATCH of
  ``@original``, then follow-up messages): Discord fails any interaction not
  answered within 3 seconds, and the interaction token then stays valid for 15
  minutes (https://discord.com/developers/docs/interactions/receiving-and-responding#responding-to-an-interaction).
  Autocomplete cannot be deferred; it is answered directly (type 8) from memory.
* Threads are sessions: a run started in a channel opens a thread named after the
  workflow, and the session key is ``ThreadKey("discord", channel id, thread id)``.
  Messages in that thread (with ``chat_in_channels``) or mentioning the bot continue
  it; a mention in a channel opens a thread from that message. In DMs the DM
  channel is the session.
* One status message per run, edited in place through
  :class:`~adapters.base.ThrottledStatusMessage` (at most one edit per
  ``status_min_interval`` s; discord.py also honours Discord's per-route rate
  limit headers and retries 429s, https://discord.com/developers/docs/topics/rate-limits).
  The result follows in the thread; a failed run's result carries *Retry*
  (``/rerun ID from STEP`` as the clicking user) and *Show log* (``/run show ID``)
  buttons; while an ``approve`` step waits, the status message carries Approve and
  Reject buttons (``/approve ID STEP`` / ``/reject ID STEP`` as the clicking user).
  Buttons are persistent (:class:`ActionButton`, ``custom_id``
  ``baton:<action>:<run>[:<step>]``), so they work after a restart; actions are
  looked up in :data:`BUTTON_ACTIONS`.
* Chat replies (LLM) stream into one message edited in place
  (:meth:`DiscordOutlet.stream_reply`), as markdown without code fences.
* Permissions: before anything runs, the core's ``preflight`` (:class:`bot.core.CoreAPI`)
  is asked with the member's role names (and ids); a refusal is ephemeral and nothing
  is recorded or run. The adapter only translates: it never compiles workflows,
  checks permissions or words refusals itself (texts come from :mod:`bot.texts`).

Layout: settings and constants in ``_discord_settings``, the outlet (replies, status
messages, streamed chat) in ``_discord_outlet``, slash commands in
``_discord_commands``, buttons in ``_discord_buttons``, text helpers in
``_discord_text``; this module holds the client (gateway events, tasks, lifecycle)
and the entry points.

Only this module (and ``adapters/_discord_*``) imports discord.py. Secrets: the bot
token is a ``SecretStr`` and a :class:`~adapters._discord_text.RedactSecrets` filter
on discord.py's loggers removes it and interaction tokens from log records.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Coroutine
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import discord
from discord import app_commands

from adapters._discord_buttons import BUTTON_ACTIONS, ActionButton, ButtonsMixin
from adapters._discord_commands import CommandsMixin, define_commands
from adapters._discord_outlet import DiscordOutlet, DiscordReplyStream, DiscordRunView, approval_buttons
from adapters._discord_settings import (
    _IN_PLACE,
    _LOGGERS,
    NO_MENTIONS,
    PLATFORM,
    REDACT,
    DiscordConfigError,
    DiscordSettings,
    gateway_intents,
    member_roles,
    strip_mention,
)
from adapters._discord_text import NameIndex, split_message, thread_name
from adapters.base import Message
from bot.core import CoreAPI, ThreadKey
from bot.store import StoreError
from bot.tasks import TaskOwner
from bot.turn import parse_command

log = logging.getLogger("baton.discord")


# --------------------------------------------------------------------------- client


class _BatonTree(app_commands.CommandTree):
    """The command tree; ``interaction_check`` (run first in every command's task) adopts that task.

    discord.py runs each application command (and autocomplete) in a task it does
    not keep; the client keeps a reference so the task is not garbage-collected and
    can be cancelled at shutdown.
    """

    async def interaction_check(self, interaction: discord.Interaction, /) -> bool:
        client = self.client
        if isinstance(client, BatonDiscordClient):
            client.adopt_current_task()
        return True


class BatonDiscordClient(CommandsMixin, ButtonsMixin, discord.Client):
    """discord.py client wired to a Baton :class:`~bot.app.App`.

    Args:
        app: the running Baton; the client talks to its core (``app.bot``) through
            :class:`~bot.core.CoreAPI` only (``handle``, ``preflight``, ``run_info`` …).
        settings: adapter settings.
        outlet: the outlet registered with the app for ``discord``.
        **options: passed to :class:`discord.Client` (its public options: tests pass
            ``connector`` (an aiohttp connector that reaches a local fake Discord) and
            ``guild_ready_timeout``). ``settings.proxy`` becomes ``proxy`` unless given.

    Attributes:
        tree: the application command tree.
        threads: thread id → parent channel id for the session threads this process opened.
    """

    def __init__(self, app: Any, settings: DiscordSettings, outlet: DiscordOutlet, **options: Any) -> None:
        options.setdefault("chunk_guilds_at_startup", False)
        if settings.proxy:
            options.setdefault("proxy", settings.proxy)
        super().__init__(intents=gateway_intents(settings), allowed_mentions=NO_MENTIONS, **options)
        self.app = app
        self.core: CoreAPI = app.bot
        self.settings = settings
        self.outlet = outlet
        self.tree = _BatonTree(self)
        self.threads: dict[int, int] = {}
        self.tasks = TaskOwner("discord", logger=log)  # handler tasks: kept, failures logged, cancelled by close()
        self._resumed = False
        self._index: NameIndex | None = None
        define_commands(self)

    # -- tasks ---------------------------------------------------------------

    def adopt_current_task(self) -> None:
        """Keep a reference to the running task until it ends (cancelled by :meth:`close`)."""
        task = asyncio.current_task()
        if task is not None:
            self.tasks.adopt(task)

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """Start ``coro`` as a task the client owns (referenced until done, a failure logged, cancelled by :meth:`close`)."""
        return self.tasks.start(coro, name)

    async def settle(self) -> None:
        """Wait until every handler task the client owns has finished (tests, shutdown)."""
        await self.tasks.settle()

    # -- lifecycle -----------------------------------------------------------

    async def setup_hook(self) -> None:
        """After login: register the persistent buttons, sync commands, resume unfinished runs (once)."""
        self.add_dynamic_items(ActionButton)
        if self.settings.sync_commands:
            await self.sync_commands()
        if not self._resumed:
            self._resumed = True
            ids = await self.core.resume_unfinished({PLATFORM})
            if ids:
                log.info("discord: resumed runs %s", ", ".join(f"#{i}" for i in ids))

    async def sync_commands(self) -> list[app_commands.AppCommand]:
        """Bulk-overwrite the commands: to ``dev_guild_id`` if set, else globally.

        Failures are logged with the usual cause (a missing ``applications.commands``
        scope) and return ``[]``; existing commands keep working.
        """
        try:
            if self.settings.dev_guild_id:
                guild = discord.Object(id=self.settings.dev_guild_id)
                self.tree.copy_global_to(guild=guild)
                synced = await self.tree.sync(guild=guild)
            else:
                synced = await self.tree.sync()
        except discord.Forbidden as e:
            log.error(
                "discord: syncing commands was refused (%s): invite the bot with the 'applications.commands' scope%s",
                e.text,
                f" to guild {self.settings.dev_guild_id}" if self.settings.dev_guild_id else "",
            )
            return []
        except discord.HTTPException as e:
            log.error("discord: syncing commands failed: %s %s", e.status, e.text)
            return []
        log.info("discord: synced %d commands %s", len(synced), f"to guild {self.settings.dev_guild_id}" if self.settings.dev_guild_id else "globally")
        return synced

    async def close(self) -> None:
        """Cancel the handler tasks, close the gateway and HTTP session."""
        await self.tasks.cancel_all()
        self.outlet.closed = True
        await super().close()

    # -- helpers ---------------------------------------------------------------

    def key_for(self, channel: object, channel_id: int) -> ThreadKey:
        """The session key of a channel: ``(parent, thread)`` for threads, ``(id, id)`` otherwise."""
        parent = channel.parent_id if isinstance(channel, discord.Thread) else self.threads.get(channel_id)
        if parent is not None:
            return ThreadKey(PLATFORM, str(parent), str(channel_id))
        return ThreadKey(PLATFORM, str(channel_id), str(channel_id))

    def _key_here(self, interaction: discord.Interaction) -> ThreadKey:
        return self.key_for(interaction.channel, int(interaction.channel_id or 0))

    @staticmethod
    def baton_message(user: discord.abc.User, text: str, key: ThreadKey, event_id: str) -> Message:
        """The core :class:`Message` for ``text`` said by ``user`` in session ``key``."""
        return Message(
            PLATFORM,
            key.channel,
            key.thread,
            str(user.id),
            text,
            event_id=event_id,
            author_name=user.display_name,
            roles=member_roles(user),
        )

    def is_session_thread(self, channel: object) -> bool:
        """A thread this bot opened (known id, or owned by the bot user)."""
        cid = getattr(channel, "id", None)
        if cid in self.threads:
            return True
        return isinstance(channel, discord.Thread) and self.user is not None and channel.owner_id == self.user.id

    async def _private(self, interaction: discord.Interaction, text: str) -> None:
        """Answer only the user: an ephemeral deferral, then the text (split as needed)."""
        if not interaction.response.is_done():
            await interaction.response.defer(ephemeral=True, thinking=True)
        chunks = split_message(text)
        await interaction.edit_original_response(content=chunks[0], allowed_mentions=NO_MENTIONS)
        for chunk in chunks[1:]:
            await interaction.followup.send(chunk, ephemeral=True, allowed_mentions=NO_MENTIONS)

    async def _guarded(self, interaction: discord.Interaction, what: str, work: Awaitable[None]) -> None:
        """Run a handler; report an unexpected failure to the user (ephemeral) and the log."""
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.exception("discord: %s failed", what)
            try:
                await self._private(interaction, f"Internal error while handling {what}: {type(e).__name__}")
            except discord.HTTPException as e2:
                log.error("discord: reporting the failure of %s failed: %s %s", what, e2.status, e2.text)

    # -- messages ----------------------------------------------------------------

    def wants(self, message: discord.Message) -> bool:
        """Whether a MESSAGE_CREATE is for Baton (decided without I/O).

        Ignored: bots (including itself), webhooks, system messages. Taken: DMs,
        messages mentioning the bot, and, with ``chat_in_channels``, any message in
        a session thread (without the message_content intent Discord sends those
        with empty content).
        """
        me = self.user
        if me is None or message.author.bot or message.webhook_id is not None or message.author.id == me.id:
            return False
        if message.type not in (discord.MessageType.default, discord.MessageType.reply):
            return False
        if isinstance(message.channel, discord.DMChannel):
            return True
        if self.mentions_me(message):
            return True
        return self.settings.chat_in_channels and self.is_session_thread(message.channel)

    def mentions_me(self, message: discord.Message) -> bool:
        """The message mentions the bot user, or the bot's own managed role (what "@Baton" often picks)."""
        me = self.user
        if me is None:
            return False
        if any(u.id == me.id for u in message.mentions):
            return True
        own = message.guild.self_role if message.guild is not None else None
        return own is not None and own in message.role_mentions

    async def on_message(self, message: discord.Message) -> None:
        """MESSAGE_CREATE: if :meth:`wants` it, handle it in a task the client owns.

        discord.py runs event handlers in tasks it does not keep and its runner
        swallows ``CancelledError``; the work therefore runs in a task spawned here.
        """
        if self.wants(message):
            self.spawn(self.handle_message(message), name=f"discord-message-{message.id}")

    async def handle_message(self, message: discord.Message) -> None:
        """Hand a wanted message to the core in its session (opening a thread for a mention in a channel)."""
        assert self.user is not None
        text = strip_mention(message.content, self.user.id)
        own = message.guild.self_role if message.guild is not None else None
        if own is not None:
            text = text.replace(own.mention, " ").strip()
        if not text:
            return
        event_id = f"message:{message.id}"
        try:
            if await self.core.seen(PLATFORM, [event_id]):  # before a thread is opened for it
                log.info("discord: dropped redelivered message %s", message.id)
                return
        except StoreError as e:  # bot.handle reports database trouble in the thread
            log.error("discord: checking event %s failed: %s", message.id, e)
        key = await self._session_for_message(message, text)
        # recorded with the stored message, in one transaction (SessionStore.append_once)
        msg = dataclasses.replace(self.baton_message(message.author, text, key, event_id), dedupe_ids=(event_id,))
        await self.core.handle(msg, self.outlet)

    async def _session_for_message(self, message: discord.Message, text: str) -> ThreadKey:
        channel = message.channel
        if isinstance(channel, discord.Thread) or channel.id in self.threads:
            return self.key_for(channel, channel.id)
        cmd = parse_command(text)
        if isinstance(channel, discord.TextChannel) and (cmd is None or cmd.name not in _IN_PLACE):
            title = cmd.arg if cmd is not None and cmd.name == "run" and cmd.arg else text
            try:
                thread = await message.create_thread(name=thread_name(title), auto_archive_duration=self.settings.thread_archive_minutes)
            except discord.HTTPException as e:
                log.warning("discord: opening a thread in %s failed: %s %s; answering in the channel", channel.id, e.status, e.text)
            else:
                self.threads[thread.id] = channel.id
                return ThreadKey(PLATFORM, str(channel.id), str(thread.id))
        return self.key_for(channel, channel.id)

    # -- errors ------------------------------------------------------------------

    async def on_error(self, event_method: str, /, *args: Any, **kwargs: Any) -> None:
        """An exception escaped a discord.py event handler: log it (the redaction filter applies)."""
        log.exception("discord: error in %s", event_method)

    async def connect(self, *, reconnect: bool = True) -> None:
        """discord.py's connection loop, kept alive across a gateway event it cannot parse.

        discord.py parses each dispatch before any handler runs, and an error there (e.g. a
        partial ``MESSAGE_UPDATE`` without ``type``: ``KeyError``) escapes its loop and would end
        the bot. Such an event is logged once per event type and error (WARNING, no traceback;
        repeats at DEBUG) and skipped: the socket is closed and the client connects again after
        :data:`UNPARSABLE_BACKOFF` (doubling, up to a minute, reset after a connection that
        lasted a minute). Connection failures keep discord.py's own reconnect with backoff;
        login, intent and close-code errors still end the loop (they need a person).
        """
        delay = UNPARSABLE_BACKOFF[0]
        seen: set[tuple[str, str]] = set()
        while True:
            started = time.monotonic()
            try:
                await super().connect(reconnect=reconnect)
                return
            except _PARSE_ERRORS as e:
                if self.is_closed():
                    raise
                event = _unparsed_event(e)
                what = (event, f"{type(e).__name__}: {e}")
                if what in seen:
                    log.debug("discord: skipped another %s event discord.py could not parse (%s)", *what)
                else:
                    seen.add(what)
                    log.warning("discord: could not parse a %s gateway event (%s); skipped it, reconnecting", *what)
            if self.ws is not None:
                with contextlib.suppress(Exception):
                    await self.ws.close(code=4000)  # not 1000: the session may be resumed by Discord's rules
            if time.monotonic() - started > 60:
                delay = UNPARSABLE_BACKOFF[0]
            await asyncio.sleep(delay)
            delay = min(delay * 2, UNPARSABLE_BACKOFF[1])


UNPARSABLE_BACKOFF = (0.5, 60.0)
"""Seconds before reconnecting after an unparsable gateway event: first wait, longest wait."""

_PARSE_ERRORS = (KeyError, TypeError, ValueError, AttributeError, IndexError)
"""What discord.py's event parsers raise on a payload they do not expect (never connection errors)."""


def _unparsed_event(e: BaseException) -> str:
    """The gateway event whose parser raised ``e`` (discord.py's ``parse_<event>`` methods), else ``"unknown"``."""
    tb = e.__traceback__
    name = "unknown"
    while tb is not None:
        fn = tb.tb_frame.f_code.co_name
        if fn.startswith("parse_") and tb.tb_frame.f_globals.get("__name__", "").startswith("discord."):
            name = fn[len("parse_"):].upper()
        tb = tb.tb_next
    return name


# --------------------------------------------------------------------------- entry points


def _safe_url(url: str) -> str:
    """``url`` without any ``user:password@`` part (proxy URLs may carry credentials)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}"


def build_discord_client(
    app: Any, settings: DiscordSettings | None = None, *, outlet: DiscordOutlet | None = None, **client_options: Any
) -> tuple[BatonDiscordClient, DiscordOutlet]:
    """A client and outlet for ``app``, not yet logged in (tests call ``client.login`` themselves).

    The outlet is ``outlet``, else the :class:`DiscordOutlet` already registered in
    ``app.outlet_for("discord")``, else a new one; it is registered with ``app.add_outlet`` so
    run results reach Discord. ``client_options`` go to :class:`discord.Client` (e.g.
    ``connector``); nothing process-wide is changed: the client talks to
    ``https://discord.com`` and ``wss://gateway.discord.gg`` (through ``settings.proxy``
    if set). The token (if set) is added to the log redaction filter.

    Returns:
        ``(client, outlet)``.
    """
    settings = settings or DiscordSettings()
    existing = app.outlet_for(PLATFORM)
    if outlet is None:
        outlet = existing if isinstance(existing, DiscordOutlet) else DiscordOutlet(settings)
    outlet.settings = settings
    if existing is not outlet:
        app.add_outlet(outlet)
    REDACT.attach(_LOGGERS)
    if settings.token:
        REDACT.add(settings.token.get_secret_value())
    client = BatonDiscordClient(app, settings, outlet, **client_options)
    outlet.attach(client)
    return client, outlet


async def serve_discord(app: Any, settings: DiscordSettings | None = None, **client_options: Any) -> None:
    """Serve ``app`` on Discord until cancelled (or the connection fails for good).

    ``client_options`` go to :class:`discord.Client` (tests pass ``connector``).

    Logs in (``GET /users/@me``), syncs the commands, resumes unfinished Discord
    runs, then holds the gateway connection (discord.py reconnects and resumes).
    On exit the client is closed; the caller then closes ``app`` (runs still active
    stay resumable).

    Raises:
        DiscordConfigError: no token, a token Discord rejects, or the privileged
            message_content intent requested (``chat_in_channels``) but not enabled.
        asyncio.CancelledError: when cancelled (the normal way to stop).
    """
    settings = settings or DiscordSettings()
    token = settings.require_token()
    client, _ = build_discord_client(app, settings, **client_options)
    try:
        try:
            await client.login(token)
        except (aiohttp.ClientError, OSError) as e:  # at start: one clear line, not a traceback
            via = f" through the proxy {_safe_url(settings.proxy)}" if settings.proxy else ""
            raise DiscordConfigError(
                f"cannot reach Discord at https://discord.com{via} ({type(e).__name__}); check the network or BATON_DISCORD_PROXY"
            ) from None
        await client.connect(reconnect=True)  # discord.py reconnects with backoff
    except discord.LoginFailure:
        raise DiscordConfigError("Discord rejected BATON_DISCORD_TOKEN (401 Unauthorized): reset the bot token and export the new one.") from None
    except discord.PrivilegedIntentsRequired:
        raise DiscordConfigError(
            "BATON_DISCORD_CHAT_IN_CHANNELS needs the privileged Message Content intent: enable it in the Developer "
            "Portal (Bot → Privileged Gateway Intents) or set BATON_DISCORD_CHAT_IN_CHANNELS=false."
        ) from None
    finally:
        await client.close()


__all__ = [
    "ActionButton",
    "BUTTON_ACTIONS",
    "BatonDiscordClient",
    "DiscordConfigError",
    "DiscordOutlet",
    "DiscordReplyStream",
    "DiscordRunView",
    "DiscordSettings",
    "approval_buttons",
    "build_discord_client",
    "gateway_intents",
    "member_roles",
    "serve_discord",
    "strip_mention",
]

