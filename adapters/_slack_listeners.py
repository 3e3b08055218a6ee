"""Bolt listeners: ack at once, then hand the message to the core in a kept background task.

Ack first. Slack expects the HTTP 200 (or the Socket Mode envelope ack) within
3 seconds and otherwise redelivers the event, up to three times, with
``X-Slack-Retry-Num`` / ``X-Slack-Retry-Reason`` headers
(https://docs.slack.dev/apis/events-api/#retries). The bolt app runs with
``process_before_response=True``, so a listener's response is exactly what it
acks; every listener here acks, filters the payload synchronously and starts its
slow part with :meth:`SlackOutlet.spawn` (a task the outlet keeps).

Dedupe. A message's ``event_id`` (and its own ``msg:<channel>:<ts>``, since one
message can arrive both as ``app_mention`` and as ``message``) travel with it as
``Message.dedupe_ids``; the core records them in the durable ``processed_events``
table in the same transaction that stores the message
(``SessionStore.append_once``), so a crash cannot record a delivery without
storing it. The core decides: :meth:`~bot.core.CoreAPI.accept` returns ``None``
for a delivery whose id is already recorded, whatever its retry number, and the
listener drops it; a retry whose first delivery was never stored (the process
died first) is processed. Retries are never dropped on the header alone. The record survives
restarts (same database).

Order. The core decides it: it processes a thread's deliveries in the order
:meth:`~bot.core.CoreAPI.accept` stored them (``bot.lanes``), so the listeners hand
deliveries on from independent tasks and keep no lock or dedupe of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
from collections import deque
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from slack_bolt.async_app import AsyncApp, AsyncAssistant
from slack_bolt.middleware.async_middleware import AsyncMiddleware
from slack_bolt.request.payload_utils import is_assistant_event, is_other_message_sub_event_in_assistant_thread
from slack_sdk.errors import SlackApiError

from adapters._slack_outlet import _DELIVERY_ERRORS, SlackOutlet, _api_error
from adapters._slack_render import ACTION_RETRY, escape, without_actions
from adapters._slack_translate import (
    PLATFORM,
    button_command,
    command_text,
    is_direct_message,
    is_person_speaking,
    mentions,
    message_identity,
    to_message,
)
from adapters.base import Message
from bot.store import StoreError
from bot.core import CoreAPI, ThreadKey

if TYPE_CHECKING:
    from bot.app import App
    from bot.intake import Accepted

log = logging.getLogger("baton.slack")

SUGGESTED_PROMPTS = [
    {"title": "List workflows", "message": "/workflows"},
    {"title": "Check disk and system", "message": "run: disk-check AND system-report"},
    {"title": "Recent runs", "message": "/runs"},
]
"""Prompts offered when a user opens Baton's assistant pane."""


class AcksFirst(AsyncMiddleware):
    """Intake priority: work is handed to the core only while no Slack request awaits its ack.

    Everything runs on one event loop, and a request's ack is delayed by every
    callback ready before it (asyncio serves ready callbacks in FIFO order). A
    burst of events would otherwise queue each ack behind the previous events'
    core work (parsing, database writes, Web API calls). So each handover waits
    its turn: turns are given one per loop iteration while no request is in
    flight, and at the latest after ``max_defer`` seconds (no starvation under a
    sustained stream). Slack's 3-second ack deadline is what this protects;
    the price is up to ``max_defer`` seconds later start of work during bursts.
    """

    def __init__(self, max_defer: float = 0.25) -> None:
        self.max_defer = max_defer
        self.in_flight = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._release_pending = False

    async def async_process(self, *, req: Any, resp: Any, next: Any) -> Any:
        """bolt's middleware protocol (``bolt.use(gate)``): as :meth:`middleware`, called by bolt
        directly (a function middleware has its arguments injected by signature, per request)."""
        return await self.middleware(next)

    async def middleware(self, next: Any) -> Any:
        """bolt global middleware counting requests between receipt and ack."""
        self.in_flight += 1
        try:
            return await next()
        finally:
            self.in_flight -= 1
            if self.in_flight == 0:
                self._release_soon()

    async def turn(self) -> None:
        """Return when it is this caller's turn to hand work to the core."""
        if self.in_flight == 0 and not self._waiters:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        self._release_soon()
        try:
            await asyncio.wait_for(fut, self.max_defer)
        except TimeoutError:
            pass  # waited long enough: go now
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(fut)
        self._release_soon()  # pass the turn on, next loop iteration

    def _release_soon(self) -> None:
        if not self._release_pending and self._waiters:
            self._release_pending = True
            asyncio.get_running_loop().call_soon(self._release)

    def _release(self) -> None:
        self._release_pending = False
        if self.in_flight:
            return
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return


class AssistantGate(AsyncMiddleware):
    """Runs bolt's :class:`AsyncAssistant` middleware only for requests it can act on.

    The assistant tries each of its listeners' matchers on every request, and
    bolt builds the full set of injectable arguments for each matcher: about a
    third of a millisecond per request, before the ack, for the channel
    mentions and buttons that are never assistant events. This gate asks bolt's
    own predicates first (an assistant-thread event, a user or bot message in
    a DM thread, or another message sub-event there: exactly the requests the
    assistant handles or acks) and otherwise passes the request straight on.
    """

    def __init__(self, assistant: AsyncAssistant) -> None:
        self.assistant = assistant

    async def async_process(self, *, req: Any, resp: Any, next: Any) -> Any:
        """bolt's middleware protocol: delegate to the assistant, or call ``next``."""
        body = req.body
        if is_assistant_event(body) or is_other_message_sub_event_in_assistant_thread(body):
            return await self.assistant.async_process(req=req, resp=resp, next=next)
        return await next()


def _header(request: Any, name: str) -> str | None:
    values = (getattr(request, "headers", None) or {}).get(name) or []
    return values[0] if values else None


class SlackListeners:
    """Registers Baton's listeners on a bolt :class:`AsyncApp` and does their slow part.

    Args:
        app: the running Baton; the listeners use its core through :class:`~bot.core.CoreAPI`
            (``handle``, ``seen``, ``knows``) only.
        outlet: where replies go and who keeps the background tasks.
        command: the slash command's name (``/baton``).
        assistant: also register bolt's :class:`AsyncAssistant` (assistant pane:
            suggested prompts on open, "is working…" status while handling).
    """

    def __init__(self, app: App, outlet: SlackOutlet, *, command: str = "/baton", assistant: bool = True) -> None:
        self.app = app
        self.core: CoreAPI = app.bot
        self.outlet = outlet
        self.command = command
        self.assistant = assistant
        self.acks_first = AcksFirst()

    def register(self, bolt: AsyncApp) -> None:
        """Attach the listeners. Order matters: bolt runs the first listener that matches."""
        bolt.use(self.acks_first)
        if self.assistant:
            a = AsyncAssistant(logger=logging.getLogger("baton.slack.bolt"))
            a.thread_started(self.on_assistant_thread_started)
            a.user_message(self.on_assistant_message)
            bolt.use(AssistantGate(a))
        bolt.event("app_mention")(self.on_mention)
        bolt.event("message")(self.on_message)
        bolt.command(self.command)(self.on_command)
        bolt.action(re.compile(r"^baton_"))(self.on_button)  # every Baton button, see _slack_translate.BUTTONS
        # Acknowledge every other event (member joins, reactions, uninstall, …): an
        # unhandled event answered 404 would be redelivered by Slack.
        bolt.event(re.compile(".*"))(self.on_other_event)
        bolt.action(re.compile(".*"))(self.on_other_action)

    # -- listeners (fast: ack, filter, spawn) -----------------------------------

    async def on_mention(self, ack: Any, body: dict[str, Any], event: dict[str, Any], context: Any, request: Any) -> None:
        """``app_mention``: start or continue the thread's session (stored before the ack)."""
        if not is_person_speaking(event):
            await ack()
            return
        await self._accept(body, event, context.bot_user_id, request, must_know_thread=False)
        await ack()

    async def on_message(self, ack: Any, body: dict[str, Any], event: dict[str, Any], context: Any, request: Any) -> None:
        """``message``: DMs always; in channels only replies in a thread Baton takes part in
        (stored before the ack)."""
        if not is_person_speaking(event):
            pass
        elif is_direct_message(event):
            await self._accept(body, event, context.bot_user_id, request, must_know_thread=False)
        elif mentions(event.get("text", ""), context.bot_user_id):
            pass  # the app_mention event of the same message handles it
        elif event.get("thread_ts"):
            await self._accept(body, event, context.bot_user_id, request, must_know_thread=True)
        await ack()

    async def on_other_event(self, ack: Any, event: dict[str, Any]) -> None:
        await ack()
        if event.get("type") in ("app_uninstalled", "tokens_revoked"):
            log.warning("Slack event %s: Baton's token no longer works in this workspace", event.get("type"))

    async def on_other_action(self, ack: Any, action: dict[str, Any]) -> None:
        """Any other block action (e.g. a link button): acked so Slack shows no error."""
        await ack()
        log.info("ignoring block action %s", action.get("action_id"))

    async def on_command(self, ack: Any, command: dict[str, Any], respond: Any) -> None:
        """``/baton ARGS``: ack within 3 s, then answer in a new thread of the channel."""
        await ack()
        self.outlet.spawn(self._run_command(command, respond), name=f"slack-command-{command.get('trigger_id', '')}")

    async def on_button(self, ack: Any, body: dict[str, Any], action: dict[str, Any]) -> None:
        """A run button: the click becomes the clicking user's command in the run's thread."""
        await ack()
        parsed = button_command(action.get("action_id", ""), action.get("value", ""))
        channel = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get("channel_id")
        user = body.get("user") or {}
        if parsed is None or not channel or not user.get("id"):
            log.warning("ignoring a button click without a Baton value (action %s)", action.get("action_id"))
            return
        thread, text = parsed
        msg = Message(PLATFORM, channel, thread, user["id"], text, author_name=user.get("name") or user.get("username"))
        self.outlet.spawn(self._run_button(msg, body, action), name=f"slack-button-{action.get('action_ts', '')}")

    async def on_assistant_thread_started(self, set_suggested_prompts: Any) -> None:
        """Assistant pane opened: offer a few prompts (after the ack)."""
        self.outlet.spawn(self._best_effort(set_suggested_prompts(prompts=SUGGESTED_PROMPTS)), name="slack-assistant-prompts")

    async def on_assistant_message(
        self, body: dict[str, Any], event: dict[str, Any], context: Any, request: Any, set_status: Any
    ) -> None:
        """A user's message in an assistant (DM) thread: like a DM, with a "working" status."""
        if not is_person_speaking(event):
            return
        await self._accept(body, event, context.bot_user_id, request, must_know_thread=False, set_status=set_status)

    # -- slow part (in kept tasks) --------------------------------------------------

    async def _accept(
        self,
        body: dict[str, Any],
        event: dict[str, Any],
        bot_user_id: str | None,
        request: Any,
        *,
        must_know_thread: bool,
        set_status: Any = None,
    ) -> None:
        event_id = body.get("event_id")
        msg = to_message(event, bot_user_id, event_id=event_id, received_at=datetime.now(UTC))
        retry = _header(request, "x-slack-retry-num")
        if retry:
            log.info("event %s is Slack's retry %s (%s)", event_id, retry, _header(request, "x-slack-retry-reason"))
        ids = [i for i in (event_id, message_identity(event)) if i]
        if must_know_thread and not await self._knows(msg.key):
            return
        # Store the delivery (message + event id, and a queued run when it asks for one) in one
        # transaction *before* the listener returns: with process_before_response the HTTP 200
        # goes out only then (fault 5 of issue 14). A database failure raises: bolt answers 500
        # and Slack redelivers; nothing acknowledged is lost.
        try:
            accepted = await self.core.accept(dataclasses.replace(msg, dedupe_ids=tuple(ids)))
        except StoreError as e:
            log.error("event %s not stored (%s); not acknowledged, Slack redelivers it", event_id, e)
            raise
        if accepted is None:
            log.info("dropping %s: already handled (%s)", msg.event_id or msg.key, ", ".join(ids))
            return
        self.outlet.spawn(self._deliver(accepted, set_status=set_status), name=f"slack-event-{event_id or msg.thread}")

    async def _deliver(self, accepted: Accepted, *, set_status: Any = None) -> None:
        """Hand a stored delivery to the core (which keeps the thread's order)."""
        await self.acks_first.turn()
        if set_status is not None:
            await self._best_effort(set_status("is working on it…"))
        await self.core.process(accepted, self.outlet)

    async def _knows(self, key: ThreadKey) -> bool:
        """Baton takes part in ``key``: it spoke there or has stored messages of it."""
        if key in self.outlet.known_threads:
            return True
        try:
            return await self.core.knows(key)
        except StoreError as e:
            log.error("checking thread %s failed: %s", key, e)
            return False

    async def _run_command(self, command: dict[str, Any], respond: Any) -> None:
        channel, user = command.get("channel_id", ""), command.get("user_id", "")
        args = command.get("text", "") or ""
        shown = f"{command.get('command', self.command)} {args}".strip()
        try:
            anchor = await self.outlet.client.chat_postMessage(
                channel=channel, text=f"<@{user}> ran `{escape(shown).replace('`', 'ˋ')}`", unfurl_links=False
            )
        except _DELIVERY_ERRORS as e:
            log.warning("/baton in %s: cannot post there (%s)", channel, _api_error(e))
            hint = "invite me with `/invite @Baton`" if isinstance(e, SlackApiError) else "try again"
            await self._best_effort(respond(text=f"I can't post in this conversation ({_api_error(e)}); {hint}, or DM me."))
            return
        msg = Message(PLATFORM, channel, str(anchor["ts"]), user, command_text(args), author_name=command.get("user_name"))
        await self.acks_first.turn()
        await self.core.handle(msg, self.outlet)

    async def _run_button(self, msg: Message, body: dict[str, Any], action: dict[str, Any]) -> None:
        original = body.get("message") or {}
        if action.get("action_id") == "baton_choice" and original.get("ts") and original.get("blocks"):
            # a routing question is answered once: its buttons give way to the answer
            await self._best_effort(
                self.outlet.client.chat_update(
                    channel=msg.channel,
                    ts=original["ts"],
                    text=original.get("text", ""),
                    blocks=without_actions(original["blocks"], f"Answered “{msg.text}” by <@{msg.author}>"),
                )
            )
        if action.get("action_id") == ACTION_RETRY and original.get("ts") and original.get("blocks"):
            # one retry per result: the buttons give way to who asked
            await self._best_effort(
                self.outlet.client.chat_update(
                    channel=msg.channel,
                    ts=original["ts"],
                    text=original.get("text", ""),
                    blocks=without_actions(original["blocks"], f"↻ Retry requested by <@{msg.author}>"),
                )
            )
        await self.acks_first.turn()
        await self.core.handle(msg, self.outlet)

    @staticmethod
    async def _best_effort(call: Any) -> None:
        """Await a Web API call whose failure only costs a nicety (logged, not raised)."""
        try:
            await call
        except _DELIVERY_ERRORS as e:
            log.info("Slack call failed (%s); carrying on", _api_error(e))
