"""The Discord outlet: the core's way back into Discord (replies, live run status, streamed chat).

See :class:`DiscordOutlet`. Replies the core sends while an interaction is being
handled answer that interaction (:class:`_Responder`, bound through a context
variable); everything else is posted in the session thread.
"""

from __future__ import annotations

import asyncio
import contextvars
import io
import logging
import re
import time
from dataclasses import dataclass
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import discord

from adapters._discord_buttons import ActionButton
from adapters._discord_settings import _LOGGERS, _STEP_ID, MISSING, NO_MENTIONS, PLATFORM, REDACT, DiscordSettings
from adapters._discord_text import render_status, split_message, split_plain
from adapters.base import RunView, StatusBoard, ThrottledStatusMessage
from bot.core import Ability, ThreadKey
from bot.store import StoreError
from bot.tasks import TaskOwner
from engine.events import RunEvent

if TYPE_CHECKING:
    from adapters.discord_adapter import BatonDiscordClient

log = logging.getLogger("baton.discord")

__all__ = ["DiscordOutlet", "DiscordReplyStream", "DiscordRunView", "approval_buttons", "open_rest_outlet"]


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
        # awaited by finish(); a failure is logged
        self._task: asyncio.Task[None] = TaskOwner("discord", logger=log).start(self._loop(), name=f"discord-reply-{key.thread}")

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
    abilities = frozenset({Ability.STREAM_REPLY, Ability.RESULT_CONTROLS, Ability.CHOICES, Ability.FILES})

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
        click is the clicker's message ``reply`` in the thread (:meth:`ButtonsMixin.button_choice`)."""
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
            rows: list[Any] = board.rows()
        else:  # e.g. a run resumed after a restart: ask the core
            core = getattr(self.client, "core", None)
            if core is None:  # a worker's REST-only client (open_rest_outlet): Retry from the start
                return None
            try:
                info = await core.run_info(run_id)
            except StoreError as e:
                log.error("discord: reading run %s failed: %s", run_id, e)
                return None
            if info is None:
                return None
            rows = list(info.steps)
        for r in rows:
            if r.status == "failed" and _STEP_ID.match(r.node_id):
                return r.node_id
        return None


async def open_rest_outlet(settings: DiscordSettings, **client_options: Any) -> tuple[DiscordOutlet, Callable[[], Awaitable[None]]]:
    """A :class:`DiscordOutlet` that talks to Discord's REST API only, for a ``baton worker``
    (scale-out): it posts the live status message of the runs it executes, edits it, and
    posts their results (with Retry/Show log buttons, which the front's gateway client
    answers), as the front would. No gateway connection: a worker receives nothing.

    Logs in with ``GET /users/@me``. Nothing process-wide is changed: the client talks to
    ``https://discord.com`` (through ``settings.proxy`` when set, discord.py's own ``proxy``
    option); ``client_options`` go to :class:`discord.Client` (tests pass ``connector``).
    Returns ``(outlet, close)``; await ``close()`` at exit.

    Raises:
        DiscordConfigError: no token (``BATON_DISCORD_TOKEN``).
        discord.LoginFailure: Discord rejected the token.
    """
    token = settings.require_token()
    REDACT.attach(_LOGGERS)
    REDACT.add(token)
    if settings.proxy:
        client_options.setdefault("proxy", settings.proxy)
    client = discord.Client(intents=discord.Intents(guilds=True), allowed_mentions=NO_MENTIONS, **client_options)  # intents: never sent
    try:
        await client.login(token)
    except BaseException:
        await client.close()
        raise
    outlet = DiscordOutlet(settings)
    outlet.attach(client)  # type: ignore[arg-type]  # post/edit/send_file use the public REST calls only

    async def close() -> None:
        outlet.closed = True
        await client.close()

    return outlet, close
