"""The Slack outlet: threaded replies, one live status message per run, background tasks.

Everything goes to the thread of the session key (``chat.postMessage`` with
``thread_ts``). A run's status is one message edited in place with
``chat.update`` through :class:`adapters.base.ThrottledStatusMessage`, at most
once per ``status_min_interval`` seconds per message: ``chat.update`` is a Tier 3
method (about 50 calls per minute per workspace, https://docs.slack.dev/reference/methods/chat.update)
and Slack asks for no more than about one update per second per message
(https://docs.slack.dev/apis/web-api/rate-limits). When Slack still answers 429,
the client's ``AsyncRateLimitErrorRetryHandler`` waits ``Retry-After`` seconds
and tries again.

Delivery failures (after the SDK's retries) are logged and not raised: the core
has already recorded the reply, and an outlet that raises would take the
thread's lane down with it. Cancellation is never swallowed.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Coroutine
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from adapters._slack_render import (
    SECTION_LIMIT,
    choice_buttons,
    escape,
    first_line,
    fits_inline,
    reply_blocks,
    result_run,
    run_buttons,
    status_payload,
    truncate,
)
from adapters._slack_settings import SlackSettings, create_web_client
from adapters._slack_translate import PLATFORM
from adapters.base import RunView, StatusBoard, ThrottledReply, ThrottledStatusMessage
from bot.core import Ability, ThreadKey
from bot.tasks import TaskOwner
from engine.events import RunEvent

log = logging.getLogger("baton.slack")

_DELIVERY_ERRORS = (SlackApiError, SlackClientError, aiohttp.ClientError, TimeoutError)


class _NoMessage:
    """The status handle when posting the status message failed: later edits are skipped."""

    def __repr__(self) -> str:
        return "<no status message>"


NO_MESSAGE = _NoMessage()


def _api_error(e: BaseException) -> str:
    """A log-safe description of a Web API failure (Slack's error code, never the request)."""
    if isinstance(e, SlackApiError):
        return str(e.response.get("error", "unknown_error"))
    return type(e).__name__


class SlackRunView:
    """One run's live status in its thread: posted on the first event, edited in place after.

    ``on_event`` is synchronous and cheap (folds the event into the board and
    wakes the editor); :meth:`aclose` flushes the final state.
    """

    def __init__(self, outlet: SlackOutlet, key: ThreadKey, run_id: int, title: str) -> None:
        self.outlet = outlet
        self.key = key
        self.board = StatusBoard(run_id, title)
        self.message = ThrottledStatusMessage(
            self.board, self._post, self._edit, self._render, min_interval=outlet.status_min_interval
        )

    def _render(self, board: StatusBoard) -> dict[str, Any]:
        return status_payload(board, thread=self.key.thread)

    def on_event(self, event: RunEvent) -> None:
        self.message.on_event(event)

    async def aclose(self) -> None:
        """Flush the last state (one final ``chat.update``) and remember how the run ended."""
        try:
            await self.message.aclose()
        finally:
            self.outlet._remember_run(self.key, self.board)

    async def _post(self, payload: Any) -> object:
        try:
            resp = await self.outlet.client.chat_postMessage(
                channel=self.key.channel, thread_ts=self.key.thread, text=payload["text"], blocks=payload["blocks"]
            )
        except _DELIVERY_ERRORS as e:
            log.warning("run %s: posting the status message in %s failed: %s", self.board.run_id, self.key, _api_error(e))
            return NO_MESSAGE
        return resp["ts"]

    async def _edit(self, handle: object, payload: Any) -> None:
        if handle is NO_MESSAGE:
            return
        try:
            await self.outlet.client.chat_update(
                channel=self.key.channel, ts=str(handle), text=payload["text"], blocks=payload["blocks"]
            )
        except _DELIVERY_ERRORS as e:
            log.warning("run %s: updating the status message failed: %s", self.board.run_id, _api_error(e))


class SlackOutlet:
    """Baton's voice in Slack: the :class:`adapters.base.Outlet` for platform ``slack``.

    Also owns the adapter's background tasks (the work started after an ack), so
    they are kept referenced, can be drained in tests and are finished on shutdown.

    Args:
        client: the Web API client (its ``base_url`` may point at a local fake).
        status_min_interval: seconds between edits of one status message.
        inline_limit: characters a reply may have inline (per section, ≤ 3000);
            longer replies are uploaded as a text file in the thread, or cut
            with a note when the upload fails.
        session: the aiohttp session the client uses; closed by :meth:`aclose`.
    """

    platform = PLATFORM
    abilities = frozenset({Ability.STREAM_REPLY, Ability.CHOICES, Ability.FILES})

    def __init__(
        self,
        client: AsyncWebClient,
        *,
        status_min_interval: float = 1.0,
        inline_limit: int = SECTION_LIMIT - 100,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.client = client
        self.status_min_interval = status_min_interval
        self.inline_limit = min(inline_limit, SECTION_LIMIT)
        self._session = session
        self._tasks = TaskOwner("slack", logger=log)  # handler tasks: kept, failures logged, stopped by aclose()
        self._ended: OrderedDict[int, tuple[ThreadKey, str, str | None]] = OrderedDict()
        self.known_threads: OrderedDict[ThreadKey, None] = OrderedDict()

    @classmethod
    def from_settings(cls, settings: SlackSettings) -> SlackOutlet:
        """An outlet with its own Web API client (:func:`create_web_client`); call inside the event loop."""
        client, session = create_web_client(settings)
        return cls(client, status_min_interval=settings.status_min_interval, inline_limit=settings.inline_limit, session=session)

    # -- Outlet ----------------------------------------------------------------

    async def send_choices(self, key: ThreadKey, text: str, choices: list[tuple[str, str]]) -> None:
        """Ask ``text`` in the thread with one button per ``(label, reply)`` (routing's
        ask outcome); a click comes back as the clicker's message ``reply``."""
        self._touch(key)
        await self._post(key, text, reply_blocks(text) + [choice_buttons(key.thread, choices)])

    async def send(self, key: ThreadKey, text: str) -> None:
        """Reply ``text`` in the thread ``key`` (``chat.postMessage`` with ``thread_ts``).

        The first line is the message text, the rest a code block. A failed run's
        result gets "Retry failed step" / "Show log" buttons. Text too long for one
        message is uploaded as a file (``files.uploadV2``) and a cut summary is
        posted; if the upload fails the summary says it was truncated.
        """
        self._touch(key)
        actions = self._actions_for(key, text)
        if fits_inline(text, self.inline_limit):
            await self._post(key, text, reply_blocks(text) + actions)
            return
        kept, dropped = truncate(text, self.inline_limit)
        run = result_run(text)
        filename = f"baton-run-{run[0]}.txt" if run else "baton-reply.txt"
        uploaded = await self._upload(key, text, filename)
        note = (
            f"{dropped} more characters in the attached {filename}."
            if uploaded
            else f"Truncated: {dropped} more characters not shown."
        )
        await self._post(key, kept, reply_blocks(kept, note=note) + actions)

    async def send_file(self, key: ThreadKey, filename: str, data: bytes, comment: str) -> None:
        """Upload ``data`` as ``filename`` into the thread (``files.uploadV2``) with ``comment``;
        a failed upload is logged and said in the thread."""
        self._touch(key)
        try:
            await self.client.files_upload_v2(
                channel=key.channel, thread_ts=key.thread, content=data, filename=filename, title=comment, initial_comment=comment
            )
        except _DELIVERY_ERRORS as e:
            log.warning("uploading %s in %s failed (%s)", filename, key, _api_error(e))
            await self._post(key, f"{comment}: the upload failed.", reply_blocks(f"{comment}: the upload failed."))

    def stream_reply(self, key: ThreadKey) -> ThrottledReply:
        """A chat reply written while the LLM streams: one threaded message, edited in place
        with ``chat.update`` at most once per ``status_min_interval`` seconds (Tier 3 limits)."""
        self._touch(key)

        def blocks(text: str) -> list[dict[str, Any]]:
            body = escape(text)
            if len(body) > SECTION_LIMIT:  # one section holds 3000 characters; the whole reply stays in /history
                body = body[: SECTION_LIMIT - 60] + "\n…[cut here; the full reply is in /history]"
            return [{"type": "section", "text": {"type": "mrkdwn", "text": body}}]

        async def post(text: Any) -> object:
            return await self._post(key, str(text), blocks(str(text))) or NO_MESSAGE

        async def edit(handle: object, text: Any) -> None:
            if handle is NO_MESSAGE:
                return
            try:
                await self.client.chat_update(
                    channel=key.channel, ts=str(handle), text=escape(first_line(str(text))), blocks=blocks(str(text))
                )
            except _DELIVERY_ERRORS as e:
                log.warning("updating a streamed reply in %s failed: %s", key, _api_error(e))

        return ThrottledReply(post, edit, min_interval=self.status_min_interval)

    def run_view(self, key: ThreadKey, run_id: int, title: str) -> RunView:
        """A live status message for run ``run_id`` in thread ``key`` (see :class:`SlackRunView`)."""
        self._touch(key)
        return SlackRunView(self, key, run_id, title)

    # -- delivery --------------------------------------------------------------

    async def _post(self, key: ThreadKey, text: str, blocks: list[dict[str, Any]]) -> str | None:
        try:
            resp = await self.client.chat_postMessage(
                channel=key.channel, thread_ts=key.thread, text=escape(first_line(text)), blocks=blocks, unfurl_links=False
            )
        except _DELIVERY_ERRORS as e:
            log.error("replying in %s failed: %s", key, _api_error(e))
            return None
        return str(resp["ts"])

    async def _upload(self, key: ThreadKey, text: str, filename: str) -> bool:
        try:
            await self.client.files_upload_v2(
                channel=key.channel, thread_ts=key.thread, content=text, filename=filename, title=filename
            )
        except _DELIVERY_ERRORS as e:
            log.warning("uploading %s in %s failed (%s); posting it truncated", filename, key, _api_error(e))
            return False
        return True

    # -- run buttons -------------------------------------------------------------

    def _remember_run(self, key: ThreadKey, board: StatusBoard) -> None:
        failed = next((r.node_id for r in board.rows() if r.status == "failed"), None)
        self._ended[board.run_id] = (key, board.status, failed)
        while len(self._ended) > 1000:
            self._ended.popitem(last=False)

    def _actions_for(self, key: ThreadKey, text: str) -> list[dict[str, Any]]:
        """Buttons for a failed run's result; the seam for approval buttons later."""
        run = result_run(text)
        if run is None or run[1] != "failed":
            return []
        ended = self._ended.get(run[0])
        failed_step = ended[2] if ended and ended[0] == key else None
        return [run_buttons(run[0], key.thread, failed_step)]

    # -- threads the bot takes part in ----------------------------------------

    def _touch(self, key: ThreadKey) -> None:
        self.known_threads[key] = None
        self.known_threads.move_to_end(key)
        while len(self.known_threads) > 10_000:
            self.known_threads.popitem(last=False)

    # -- background tasks --------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
        """Run ``coro`` as a task this outlet keeps until it ends; failures are logged."""
        return self._tasks.start(coro, name)

    @property
    def pending(self) -> int:
        """Background tasks still running."""
        return len(self._tasks.pending)

    async def drain(self) -> None:
        """Wait until no background task is left (tasks started meanwhile are waited for too)."""
        await self._tasks.settle()

    async def aclose(self, timeout: float = 5.0) -> None:
        """Let background tasks finish (up to ``timeout`` seconds), cancel the rest, close the HTTP session."""
        if running := self._tasks.pending:
            await asyncio.wait(running, timeout=timeout)
        await self._tasks.cancel_all()
        if self._session is not None and not self._session.closed:
            await self._session.close()
