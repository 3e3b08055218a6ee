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
* Permissions: before anything runs, ``app.bot.allowed`` is asked with the member's
  role names (and ids); a refusal is ephemeral and nothing is recorded or run.

Only this module (and ``adapters/_discord_*``) imports discord.py. Secrets: the bot
token is a ``SecretStr`` and a :class:`~adapters._discord_text.RedactSecrets` filter
on discord.py's loggers removes it and interaction tokens from log records.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import io
import logging
import re
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, replace
from typing import Any, Literal

import aiohttp
import discord
import discord.gateway
import discord.http
import yarl
from discord import app_commands
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from adapters._discord_text import (
    NameIndex,
    RedactSecrets,
    choice_label,
    escape_inline,
    render_status,
    split_message,
    split_plain,
    thread_name,
)
from adapters.base import Message, RunView, StatusBoard, ThrottledStatusMessage
from bot.store import StoreError, ThreadKey
from bot.turn import parse_command
from engine.catalog import close_names
from engine.errors import DefinitionError, EngineError, UnknownWorkflowError, WorkflowSyntaxError
from engine.events import RunEvent

log = logging.getLogger("baton.discord")

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
        api_base: REST base URL (default Discord's ``https://discord.com/api/v10``);
            tests point it at a local fake. Process-wide (``discord.http.Route.BASE``).
        gateway_url: gateway websocket URL override (tests); process-wide.
        status_min_interval: seconds between edits of a run's status message.
        sync_commands: bulk-overwrite the application commands at start-up.
        thread_archive_minutes: auto-archive duration of threads the bot opens
            (Discord allows 60, 1440, 4320 or 10080).
    """

    model_config = SettingsConfigDict(env_prefix="BATON_DISCORD_", extra="ignore")

    token: SecretStr | None = Field(None, description="bot token (BATON_DISCORD_TOKEN)")
    dev_guild_id: int | None = Field(None, description="sync commands to this guild only (development)")
    chat_in_channels: bool = Field(False, description="read plain messages in session threads (privileged intent)")
    api_base: str | None = Field(None, description="REST base URL, e.g. http://127.0.0.1:8999/api/v10 (tests)")
    gateway_url: str | None = Field(None, description="gateway websocket URL (tests)")
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


# --------------------------------------------------------------------------- outlet


@dataclass
class _Responder:
    """Routes the core's replies for ``key`` to a deferred interaction while its handler runs.

    Bound to the handling task through :data:`_RESPONDER` (a context variable), and
    closed as soon as ``bot.handle`` returns, so tasks the core starts meanwhile
    (which inherit the context) post to the channel instead.
    """

    interaction: discord.Interaction
    key: ThreadKey
    ephemeral: bool
    open: bool = True
    used: bool = False

    async def answer(self, chunks: list[str], view: discord.ui.View | None) -> None:
        """The first chunk edits ``@original``; later chunks are follow-up messages (``view`` on the last)."""
        for i, chunk in enumerate(chunks):
            last = i == len(chunks) - 1
            kw: dict[str, Any] = {"allowed_mentions": NO_MENTIONS}
            if last and view is not None:
                kw["view"] = view
            if not self.used:
                self.used = True
                await self.interaction.edit_original_response(content=chunk, **kw)
            else:
                await self.interaction.followup.send(chunk, ephemeral=self.ephemeral, wait=True, **kw)


_RESPONDER: contextvars.ContextVar[_Responder | None] = contextvars.ContextVar("baton_discord_responder", default=None)


class DiscordRunView:
    """A run's live status: one message in the session thread, edited in place.

    ``on_event`` is synchronous and cheap (it folds the event into the board and
    wakes the editor); edits are coalesced to at most one per
    ``settings.status_min_interval`` seconds; ``aclose`` flushes the final state.
    While a step waits for approval (``step_waiting``), the message carries
    Approve/Reject buttons for it; they go away once it is decided.
    """

    def __init__(self, outlet: DiscordOutlet, key: ThreadKey, run_id: int, title: str) -> None:
        self.outlet = outlet
        self.key = key
        self.board = StatusBoard(run_id, title)
        self.status = ThrottledStatusMessage(
            self.board, self._post, self._edit, self._render, min_interval=outlet.settings.status_min_interval
        )

    def on_event(self, event: RunEvent) -> None:
        """Fold ``event`` into the board and schedule a redraw (sync, no I/O)."""
        self.status.on_event(event)

    @staticmethod
    def _render(board: StatusBoard) -> tuple[str, tuple[str, ...]]:
        waiting = tuple(r.node_id for r in board.rows() if r.status == "waiting") if board.status == "running" else ()
        return render_status(board), waiting

    async def _post(self, payload: object) -> object:
        content, waiting = payload  # type: ignore[misc]
        return await self.outlet.post(self.key, content, approval_buttons(self.board.run_id, waiting))

    async def _edit(self, handle: object, payload: object) -> None:
        content, waiting = payload  # type: ignore[misc]
        await self.outlet.edit(handle, content, view=approval_buttons(self.board.run_id, waiting))

    async def aclose(self) -> None:
        """Write the final state; remember a failed run's steps for its result's Retry button."""
        await self.status.aclose()
        if self.board.status == "failed":
            self.outlet.remember_failure(self.board)


def approval_buttons(run_id: int, steps: tuple[str, ...]) -> discord.ui.View | None:
    """Approve/Reject buttons for the steps of run ``run_id`` waiting for a decision (``None`` when none).

    Discord allows 5 rows of 5 buttons per message; at most 12 waiting steps get buttons.
    """
    steps = tuple(s for s in steps if _STEP_ID.match(s))[:12]
    if not steps:
        return None
    view = discord.ui.View(timeout=None)
    for step in steps:
        suffix = f" {step}" if len(steps) > 1 else ""
        view.add_item(ActionButton("approve", run_id, step, label=f"Approve{suffix}"[:80], style=discord.ButtonStyle.success))
        view.add_item(ActionButton("reject", run_id, step, label=f"Reject{suffix}"[:80], style=discord.ButtonStyle.danger))
    return view


class DiscordReplyStream:
    """A chat reply shown while the LLM writes it (:class:`adapters.base.ReplyStream`).

    One message is posted, then edited in place at most once per
    ``min_interval`` seconds with the text so far (the latest text wins); the
    final text is always written by :meth:`finish`. Replies are markdown, so they
    are split without code fences (:func:`split_plain`): the first 2000 characters
    stay in the edited message, the rest is posted after it at the end.
    """

    def __init__(self, outlet: DiscordOutlet, key: ThreadKey, *, min_interval: float) -> None:
        self.outlet = outlet
        self.key = key
        self.min_interval = min_interval
        self.text = ""
        self._final = False
        self._handle: discord.Message | None = None
        self._dirty = asyncio.Event()
        self._task: asyncio.Task[None] = asyncio.create_task(self._loop(), name=f"discord-reply-{key.thread}")

    def update(self, text: str) -> None:
        """The reply so far (sync, cheap; the message is edited soon)."""
        self.text = text
        self._dirty.set()

    async def finish(self, text: str) -> None:
        """Show the final ``text`` (over several messages when longer than 2000 characters) and stop."""
        self.text = text
        self._final = True
        self._dirty.set()
        await self._task
        for chunk in split_plain(text)[1:]:
            await self.outlet.post(self.key, chunk)

    async def _loop(self) -> None:
        last = 0.0
        while True:
            await self._dirty.wait()
            wait = self.min_interval - (time.monotonic() - last)
            if wait > 0 and self._handle is not None and not self._final:
                await asyncio.sleep(wait)
            self._dirty.clear()
            content = split_plain(self.text)[0]
            if self._handle is None:
                self._handle = await self.outlet.post(self.key, content)
            else:
                await self.outlet.edit(self._handle, content)
            last = time.monotonic()
            if self._final and not self._dirty.is_set():
                return


class DiscordOutlet:
    """The core's way back into Discord (:class:`adapters.base.Outlet`).

    ``send(key, text)`` posts in the thread (channel id ``key.thread``), or answers
    the interaction being handled for that key. Multi-line text goes in code
    blocks, split at 2000 characters. A failed run's result gets Retry/Show log
    buttons. Discord errors are logged (never with a token) and do not propagate
    into the core; ``asyncio.CancelledError`` always propagates.

    Create it before ``App.start(settings, {"discord": outlet})``, or let
    :func:`build_discord_client` create and register it.
    """

    platform = PLATFORM

    def __init__(self, settings: DiscordSettings | None = None) -> None:
        self.settings = settings or DiscordSettings()
        self.client: BatonDiscordClient | None = None
        self.closed = False
        self._failed: dict[int, StatusBoard] = {}

    def attach(self, client: BatonDiscordClient) -> None:
        """Use ``client`` for all REST calls."""
        self.client = client
        self.closed = False

    def remember_failure(self, board: StatusBoard) -> None:
        """Keep a failed run's board until its result is posted (for the Retry button's step)."""
        self._failed[board.run_id] = board
        while len(self._failed) > 256:
            self._failed.pop(next(iter(self._failed)))

    def _ready(self, what: str) -> BatonDiscordClient | None:
        if self.client is None or self.closed or self.client.is_closed():
            log.warning("discord: dropped %s: the Discord client is not running", what)
            return None
        return self.client

    async def post(self, key: ThreadKey, content: str, view: discord.ui.View | None = None) -> discord.Message | None:
        """Post one message (≤ 2000 characters) in ``key``'s thread; ``None`` when Discord refused it."""
        client = self._ready(f"a message to {key}")
        if client is None:
            return None
        channel = client.get_partial_messageable(int(key.thread))
        try:
            return await channel.send(content, view=view if view is not None else MISSING, allowed_mentions=NO_MENTIONS)
        except discord.HTTPException as e:
            log.error("discord: posting in %s failed: %s %s", key, e.status, e.text)
            return None

    async def edit(self, handle: object, content: str, *, view: discord.ui.View | None = MISSING) -> None:
        """Replace the content (and, when ``view`` is given, the buttons; ``None`` removes them) of a posted message.

        Failures are logged, not raised.
        """
        if not isinstance(handle, discord.Message) or self._ready("a message edit") is None:
            return
        try:
            await handle.edit(content=content, view=view, allowed_mentions=NO_MENTIONS)
        except discord.HTTPException as e:
            log.error("discord: editing message %s failed: %s %s", handle.id, e.status, e.text)

    async def send(self, key: ThreadKey, text: str) -> None:
        """Post ``text`` as a reply in the thread ``key`` (see the class docstring)."""
        await self._send(key, text, None)

    async def send_choices(self, key: ThreadKey, text: str, choices: list[tuple[str, str]]) -> None:
        """Ask ``text`` with one button per ``(label, reply)`` (routing's ask outcome); a
        click is the clicker's message ``reply`` in the thread (:meth:`BatonDiscordClient.button_choice`)."""
        view = discord.ui.View(timeout=None)
        for i, (label, reply) in enumerate(choices[:5]):
            if re.fullmatch(r"[^\s:]{1,64}", reply):
                style = discord.ButtonStyle.primary if i == 0 else discord.ButtonStyle.secondary
                view.add_item(ActionButton("choice", 0, reply, label=label[:80], style=style))
        await self._send(key, text, view if view.children else None)

    async def send_file(self, key: ThreadKey, filename: str, data: bytes, comment: str) -> None:
        """Post ``data`` as an attachment named ``filename`` with ``comment`` in ``key``'s thread."""
        client = self._ready(f"a file to {key}")
        if client is None:
            return
        channel = client.get_partial_messageable(int(key.thread))
        try:
            await channel.send(comment, file=discord.File(io.BytesIO(data), filename=filename), allowed_mentions=NO_MENTIONS)
        except discord.HTTPException as e:
            log.error("discord: attaching %s in %s failed: %s %s", filename, key, e.status, e.text)

    async def send_run_result(self, key: ThreadKey, text: str, run_id: int, status: str) -> None:
        """Post run ``run_id``'s result; a failed run's result gets Retry and Show log buttons."""
        await self._send(key, text, await self._result_buttons(run_id) if status == "failed" else None)

    async def _send(self, key: ThreadKey, text: str, view: discord.ui.View | None) -> None:
        chunks = split_message(text)
        responder = _RESPONDER.get()
        if responder is not None and responder.open and responder.key == key:
            try:
                await responder.answer(chunks, view)
                return
            except discord.HTTPException as e:  # e.g. the interaction token expired: fall back to the channel
                log.warning("discord: answering the interaction failed (%s %s); posting instead", e.status, e.text)
        for i, chunk in enumerate(chunks):
            await self.post(key, chunk, view if i == len(chunks) - 1 else None)

    def run_view(self, key: ThreadKey, run_id: int, title: str) -> RunView:
        """A :class:`DiscordRunView` for run ``run_id`` in thread ``key``."""
        return DiscordRunView(self, key, run_id, title)

    def stream_reply(self, key: ThreadKey) -> DiscordReplyStream:
        """A :class:`DiscordReplyStream` in thread ``key`` (chat replies shown while written)."""
        return DiscordReplyStream(self, key, min_interval=self.settings.status_min_interval)

    async def _result_buttons(self, run_id: int) -> discord.ui.View | None:
        """Retry (from the failed step, when known) and Show log for failed run ``run_id``."""
        if self.client is None:
            return None
        step = await self._failed_step(run_id)
        view = discord.ui.View(timeout=None)
        label = f"Retry from {step}" if step else "Retry"
        view.add_item(ActionButton("retry", run_id, step, label=label[:80], style=discord.ButtonStyle.primary))
        view.add_item(ActionButton("log", run_id, label="Show log", style=discord.ButtonStyle.secondary))
        return view

    async def _failed_step(self, run_id: int) -> str | None:
        board = self._failed.pop(run_id, None)
        if board is not None:
            rows = board.rows()
        else:  # e.g. a run resumed after a restart: ask the store
            assert self.client is not None
            try:
                got = await self.client.app.runs.get(run_id)
            except StoreError as e:
                log.error("discord: reading run %s failed: %s", run_id, e)
                return None
            if got is None:
                return None
            row, steps = got
            by_id = {s.node_id: s for s in steps}
            rows = [by_id[n.id] for n in row.graph.nodes if n.id in by_id]
        for r in rows:
            if r.status == "failed" and _STEP_ID.match(r.node_id):
                return r.node_id
        return None


# --------------------------------------------------------------------------- buttons


class ActionButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=r"baton:(?P<action>[a-z]+):(?P<run>[0-9]+)(?::(?P<step>[^\s:]{1,64}))?",
):
    """A persistent button whose ``custom_id`` (``baton:<action>:<run>[:<step>]``, ≤ 100 chars) carries its meaning.

    Persistent through :meth:`discord.Client.add_dynamic_items`, so buttons on old
    messages keep working after a restart. A click is dispatched to
    :meth:`BatonDiscordClient.on_button`, which looks the action up in
    :data:`BUTTON_ACTIONS`.
    """

    def __init__(
        self,
        action: str,
        run_id: int,
        step: str | None = None,
        *,
        label: str | None = None,
        style: discord.ButtonStyle = discord.ButtonStyle.secondary,
    ) -> None:
        custom_id = f"baton:{action}:{run_id}" + (f":{step}" if step else "")
        super().__init__(discord.ui.Button(label=label or action, style=style, custom_id=custom_id))
        self.action = action
        self.run_id = run_id
        self.step = step

    @classmethod
    async def from_custom_id(  # type: ignore[override]
        cls, interaction: discord.Interaction, item: discord.ui.Button[Any], match: re.Match[str], /
    ) -> ActionButton:
        """Rebuild the button from a clicked component's ``custom_id`` (called by discord.py)."""
        return cls(match["action"], int(match["run"]), match["step"], label=item.label, style=item.style)

    async def callback(self, interaction: discord.Interaction) -> None:  # type: ignore[override]
        """A click: hand it to :meth:`BatonDiscordClient.on_button`."""
        client = interaction.client
        if isinstance(client, BatonDiscordClient):
            await client.on_button(interaction, self.action, self.run_id, self.step)


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


class BatonDiscordClient(discord.Client):
    """discord.py client wired to a Baton :class:`~bot.app.App`.

    Args:
        app: the running Baton (``app.bot.handle`` is the entry point).
        settings: adapter settings.
        outlet: the outlet registered as ``app.manager.outlets["discord"]``.
        **options: passed to :class:`discord.Client` (tests pass e.g.
            ``guild_ready_timeout``).

    Attributes:
        tree: the application command tree.
        threads: thread id → parent channel id for the session threads this process opened.
    """

    def __init__(self, app: Any, settings: DiscordSettings, outlet: DiscordOutlet, **options: Any) -> None:
        options.setdefault("chunk_guilds_at_startup", False)
        super().__init__(intents=gateway_intents(settings), allowed_mentions=NO_MENTIONS, **options)
        self.app = app
        self.settings = settings
        self.outlet = outlet
        self.tree = _BatonTree(self)
        self.threads: dict[int, int] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._resumed = False
        self._index: NameIndex | None = None
        self._restore: list[tuple[object, str, object]] = []
        _define_commands(self)

    # -- tasks ---------------------------------------------------------------

    def adopt_current_task(self) -> None:
        """Keep a reference to the running task until it ends (cancelled by :meth:`close`)."""
        task = asyncio.current_task()
        if task is not None and task not in self._tasks:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """Start ``coro`` as a task the client owns (referenced until done, cancelled by :meth:`close`)."""
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def settle(self) -> None:
        """Wait until every handler task the client owns has finished (tests, shutdown)."""
        await asyncio.sleep(0)
        while True:
            pending = [t for t in self._tasks if t is not asyncio.current_task() and not t.done()]
            if not pending:
                return
            await asyncio.gather(*pending, return_exceptions=True)

    # -- lifecycle -----------------------------------------------------------

    def patch_endpoints(self) -> None:
        """Point discord.py at ``settings.api_base`` / ``gateway_url`` (restored by :meth:`close`)."""
        if self.settings.api_base:
            self._restore.append((discord.http.Route, "BASE", discord.http.Route.BASE))
            discord.http.Route.BASE = self.settings.api_base.rstrip("/")
        if self.settings.gateway_url:
            ws = discord.gateway.DiscordWebSocket
            self._restore.append((ws, "DEFAULT_GATEWAY", ws.DEFAULT_GATEWAY))
            ws.DEFAULT_GATEWAY = yarl.URL(self.settings.gateway_url)

    async def setup_hook(self) -> None:
        """After login: register the persistent buttons, sync commands, resume unfinished runs (once)."""
        self.add_dynamic_items(ActionButton)
        if self.settings.sync_commands:
            await self.sync_commands()
        if not self._resumed:
            self._resumed = True
            ids = await self.app.manager.resume_unfinished({PLATFORM})
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
        """Cancel the handler tasks, close the gateway and HTTP session, restore patched endpoints."""
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current and not t.done()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.outlet.closed = True
        await super().close()
        while self._restore:
            obj, attr, value = self._restore.pop()
            setattr(obj, attr, value)

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

    # -- autocomplete ------------------------------------------------------------

    def workflow_choices(self, current: str) -> list[app_commands.Choice[str]]:
        """Autocomplete choices for ``/run workflow:`` (:meth:`NameIndex.rank`, at most 25), from memory.

        Autocomplete cannot be deferred, so this does no I/O; the index is rebuilt
        only when the catalogue's names change.
        """
        cat = self.app.catalog
        names = cat.names()
        if self._index is None or self._index.names != names:
            self._index = NameIndex(names)
        out = []
        for name in self._index.rank(current):
            d = cat.workflows.get(name)
            out.append(app_commands.Choice(name=choice_label(name, d.description if d else "action"), value=name[:100]))
        return out

    # -- commands ----------------------------------------------------------------

    async def command_run(self, interaction: discord.Interaction, workflow: str) -> None:
        """``/run workflow:NAME``: check, defer, open a thread, hand ``/run NAME`` to the core."""
        name = workflow.strip()
        known = self.app.catalog.names()
        if name not in known:
            near = close_names(name, known)
            hint = f"; did you mean {', '.join(near)}?" if near else "."
            await self._private(interaction, f"Unknown workflow '{name}'{hint} (/workflows lists them)")
            return
        await self._start(interaction, f"/run {name}", name, name)

    async def command_flow(self, interaction: discord.Interaction, text: str) -> None:
        """``/flow text:…``: like ``/run`` for workflow text (``run: TEXT`` to the core)."""
        text = text.strip()
        if not text:
            await self._private(interaction, "Run what? e.g. /flow text: disk-check AND system-report")
            return
        await self._start(interaction, f"run: {text}", text, text)

    async def _start(self, interaction: discord.Interaction, text: str, source: str, title: str) -> None:
        """Start work: compile and check permission *before* deferring, so refusals are ephemeral.

        Compiling and ``allowed`` are in memory (about a millisecond), so the
        deferral still goes out at once (Discord's 3-second rule); whether the
        answer is ephemeral must be chosen at deferral time.
        """
        draft = self.baton_message(interaction.user, text, self._key_here(interaction), f"interaction:{interaction.id}")
        try:
            graph = self.app.bot.compile(source)
        except WorkflowSyntaxError as e:
            await self._private(interaction, f"I could not parse that workflow: {e.reason} (line {e.line}, column {e.column})\n{e.caret()}")
            return
        except UnknownWorkflowError as e:
            await self._private(interaction, f"{e.sentence()} Known workflows: {', '.join(self.app.catalog.names()) or 'none'}.")
            return
        except (DefinitionError, EngineError) as e:
            await self._private(interaction, f"That workflow is invalid: {e}")
            return
        denied = self.app.bot.allowed(draft, graph)
        if denied:
            await self._private(interaction, f"Not run: {denied}.")
            return
        await interaction.response.defer(thinking=True)
        key = await self._open_session(interaction, title)
        await self.app.bot.handle(replace(draft, channel=key.channel, thread=key.thread), self.outlet)

    async def _open_session(self, interaction: discord.Interaction, title: str) -> ThreadKey:
        """Answer the deferred interaction and pick the session: a new thread from the answer in a text channel."""
        channel = interaction.channel
        cid = int(interaction.channel_id or 0)
        ack = f"▶ **{escape_inline(title if len(title) <= 80 else title[:79] + '…')}** requested by {interaction.user.mention}"
        if isinstance(channel, discord.TextChannel) and cid not in self.threads:
            original = await interaction.edit_original_response(content=f"{ack} — status and result follow in the thread.", allowed_mentions=NO_MENTIONS)
            try:
                thread = await original.create_thread(name=thread_name(title), auto_archive_duration=self.settings.thread_archive_minutes)
            except (discord.HTTPException, ValueError) as e:
                why = f"{e.status} {e.text}" if isinstance(e, discord.HTTPException) else str(e)
                log.warning("discord: opening a thread in %s failed: %s", cid, why)
                await interaction.edit_original_response(
                    content=f"{ack} — I could not open a thread ({why}); status and result follow here.", allowed_mentions=NO_MENTIONS
                )
                return self.key_for(channel, cid)
            self.threads[thread.id] = cid
            return ThreadKey(PLATFORM, str(cid), str(thread.id))
        await interaction.edit_original_response(content=f"{ack} — status and result follow here.", allowed_mentions=NO_MENTIONS)
        return self.key_for(channel, cid)

    async def forward(
        self,
        interaction: discord.Interaction,
        text: str,
        *,
        ephemeral: bool,
        key: ThreadKey | None = None,
        ack: str = "Done.",
    ) -> None:
        """Defer, then hand ``text`` to the core; its reply (if immediate) answers the interaction.

        Replies the core sends for ``key`` while ``bot.handle`` runs (the read-only
        commands answer there) become the interaction's answer; otherwise the
        interaction is answered with ``ack`` and later replies go to the channel.
        """
        if not interaction.response.is_done():
            await interaction.response.defer(ephemeral=ephemeral, thinking=True)
        key = key or self._key_here(interaction)
        msg = self.baton_message(interaction.user, text, key, f"interaction:{interaction.id}")
        responder = _Responder(interaction, key, ephemeral)
        token = _RESPONDER.set(responder)
        try:
            await self.app.bot.handle(msg, self.outlet)
        finally:
            responder.open = False  # before any other task can run
            _RESPONDER.reset(token)
        if not responder.used:
            await interaction.edit_original_response(content=ack, allowed_mentions=NO_MENTIONS)

    async def command_runs(self, interaction: discord.Interaction, everywhere: bool) -> None:
        """``/runs``: this thread's runs (in a session thread), else every run; ephemeral."""
        key = self._key_here(interaction)
        here = key.channel != key.thread and not everywhere
        await self.forward(interaction, "/runs" if here else "/runs all", ephemeral=True)

    # -- buttons -----------------------------------------------------------------

    async def on_button(self, interaction: discord.Interaction, action: str, run_id: int, step: str | None) -> None:
        """A click on an :class:`ActionButton`: dispatch through :data:`BUTTON_ACTIONS`."""
        self.adopt_current_task()
        handler = BUTTON_ACTIONS.get(action)
        if handler is None:
            await self._guarded(interaction, f"the {action} button", self._private(interaction, f"The '{action}' button is not supported by this version of Baton."))
            return
        await self._guarded(interaction, f"the {action} button", handler(self, interaction, run_id, step))

    async def button_retry(self, interaction: discord.Interaction, run_id: int, step: str | None) -> None:
        """Retry: ``/rerun ID from STEP`` in the run's own session, as the clicking user (permission-checked)."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        got = await self.app.runs.get(run_id)
        if got is None:
            await self._private(interaction, f"No run #{run_id}.")
            return
        row, _ = got
        key = await self.app.sessions.key_for(row.thread_id)
        text = f"/rerun {run_id}" + (f" from {step}" if step else "")
        msg = self.baton_message(interaction.user, text, key, f"interaction:{interaction.id}")
        denied = self.app.bot.allowed(msg, row.graph)
        if denied:
            await self._private(interaction, f"Not run: {denied}.")
            return
        where = f" from step `{step}`" if step else ""
        await interaction.edit_original_response(content=f"Retrying run #{run_id}{where}; status and result follow in the thread.", allowed_mentions=NO_MENTIONS)
        await self.app.bot.handle(msg, self.outlet)

    async def button_choice(self, interaction: discord.Interaction, run_id: int, step: str | None) -> None:
        """A routing question's reply button: the reply (``yes``, ``2``, ``no``, a value) becomes
        the clicking user's message in this thread; the core checks their permission."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        key = self._key_here(interaction)
        msg = self.baton_message(interaction.user, step or "", key, f"interaction:{interaction.id}")
        await interaction.edit_original_response(content=f"Answered “{step}”.", allowed_mentions=NO_MENTIONS)
        await self.app.bot.handle(msg, self.outlet)

    async def button_approve(self, interaction: discord.Interaction, run_id: int, step: str | None) -> None:
        """Approve: ``/approve ID STEP`` as the clicking user (public answer; a refusal only to them)."""
        await self._decide(interaction, run_id, step, "approve")

    async def button_reject(self, interaction: discord.Interaction, run_id: int, step: str | None) -> None:
        """Reject: ``/reject ID STEP`` as the clicking user (public answer; a refusal only to them)."""
        await self._decide(interaction, run_id, step, "reject")

    async def _decide(self, interaction: discord.Interaction, run_id: int, step: str | None, verb: str) -> None:
        approvals = getattr(self.app.bot, "approvals", None)
        may = approvals is None or approvals.may_decide(str(interaction.user.id), member_roles(interaction.user))
        await interaction.response.defer(ephemeral=not may, thinking=True)
        got = await self.app.runs.get(run_id)
        key = await self.app.sessions.key_for(got[0].thread_id) if got else self._key_here(interaction)
        text = f"/{verb} {run_id}" + (f" {step}" if step else "")
        await self.forward(interaction, text, ephemeral=not may, key=key)

    async def button_log(self, interaction: discord.Interaction, run_id: int, step: str | None) -> None:
        """Show log: the core's ``/run show ID``, answered to the clicking user only."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        got = await self.app.runs.get(run_id)
        key = await self.app.sessions.key_for(got[0].thread_id) if got else self._key_here(interaction)
        await self.forward(interaction, f"/run show {run_id}", ephemeral=True, key=key)

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
            if await self.app.sessions.seen_any(PLATFORM, [event_id]):  # before a thread is opened for it
                log.info("discord: dropped redelivered message %s", message.id)
                return
        except StoreError as e:  # bot.handle reports database trouble in the thread
            log.error("discord: checking event %s failed: %s", message.id, e)
        key = await self._session_for_message(message, text)
        # recorded with the stored message, in one transaction (SessionStore.append_once)
        msg = dataclasses.replace(self.baton_message(message.author, text, key, event_id), dedupe_ids=(event_id,))
        await self.app.bot.handle(msg, self.outlet)

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


ButtonHandler = Callable[[BatonDiscordClient, discord.Interaction, int, "str | None"], Awaitable[None]]

#: Button actions by the ``<action>`` of their ``custom_id`` (``baton:<action>:<run>[:<step>]``).
BUTTON_ACTIONS: dict[str, ButtonHandler] = {
    "retry": BatonDiscordClient.button_retry,
    "log": BatonDiscordClient.button_log,
    "approve": BatonDiscordClient.button_approve,
    "reject": BatonDiscordClient.button_reject,
    "choice": BatonDiscordClient.button_choice,
}


def _define_commands(client: BatonDiscordClient) -> None:
    """Register the slash commands on ``client.tree`` (names and descriptions ≤ 100 chars)."""
    tree = client.tree

    @tree.command(name="run", description="Run a named workflow; status and result follow in a new thread.")
    @app_commands.describe(workflow="the workflow to run (type to search)")
    async def run_cmd(interaction: discord.Interaction, workflow: str) -> None:
        await client._guarded(interaction, "/run", client.command_run(interaction, workflow))

    @run_cmd.autocomplete("workflow")
    async def run_complete(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return client.workflow_choices(current)

    @tree.command(name="flow", description="Run workflow text, e.g. disk-check AND system-report THEN echo done")
    @app_commands.describe(text="workflow text: A THEN B, A AND B, THEN IF_SUCCESS x ELSE y, ( )")
    async def flow_cmd(interaction: discord.Interaction, text: str) -> None:
        await client._guarded(interaction, "/flow", client.command_flow(interaction, text))

    @tree.command(name="schedule", description="Schedule a workflow (forwarded to Baton as 'schedule …').")
    @app_commands.describe(text="what and when, e.g. disk-check every day at 07:00")
    async def schedule_cmd(interaction: discord.Interaction, text: str) -> None:
        work = client.forward(interaction, f"schedule {text.strip()}", ephemeral=False, ack=f"Forwarded: schedule {text.strip()[:1800]}")
        await client._guarded(interaction, "/schedule", work)

    @tree.command(name="workflows", description="List the named workflows and actions.")
    async def workflows_cmd(interaction: discord.Interaction) -> None:
        await client._guarded(interaction, "/workflows", client.forward(interaction, "/workflows", ephemeral=True))

    @tree.command(name="runs", description="Recent runs in this thread (or everywhere).")
    @app_commands.describe(everywhere="list the runs of every thread")
    async def runs_cmd(interaction: discord.Interaction, everywhere: bool = False) -> None:
        await client._guarded(interaction, "/runs", client.command_runs(interaction, everywhere))


# --------------------------------------------------------------------------- entry points


def build_discord_client(
    app: Any, settings: DiscordSettings | None = None, *, outlet: DiscordOutlet | None = None, **client_options: Any
) -> tuple[BatonDiscordClient, DiscordOutlet]:
    """A client and outlet for ``app``, not yet logged in (tests call ``client.login`` themselves).

    The outlet is ``outlet``, else the :class:`DiscordOutlet` already registered in
    ``app.manager.outlets["discord"]``, else a new one; it is (re)registered there so
    run results reach Discord. ``settings.api_base``/``gateway_url`` are applied
    process-wide and restored by ``client.close()``. The token (if set) is added to
    the log redaction filter.

    Returns:
        ``(client, outlet)``.
    """
    settings = settings or DiscordSettings()
    existing = app.manager.outlets.get(PLATFORM)
    if outlet is None:
        outlet = existing if isinstance(existing, DiscordOutlet) else DiscordOutlet(settings)
    outlet.settings = settings
    app.manager.outlets[PLATFORM] = outlet
    REDACT.attach(_LOGGERS)
    if settings.token:
        REDACT.add(settings.token.get_secret_value())
    client = BatonDiscordClient(app, settings, outlet, **client_options)
    client.patch_endpoints()
    outlet.attach(client)
    return client, outlet


async def serve_discord(app: Any, settings: DiscordSettings | None = None) -> None:
    """Serve ``app`` on Discord until cancelled (or the connection fails for good).

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
    client, _ = build_discord_client(app, settings)
    try:
        try:
            await client.login(token)
        except (aiohttp.ClientError, OSError) as e:  # at start: one clear line, not a traceback
            where = settings.api_base or "https://discord.com/api/v10"
            raise DiscordConfigError(
                f"cannot reach Discord at {where} ({type(e).__name__}); check the network, a proxy, or BATON_DISCORD_API_BASE"
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
