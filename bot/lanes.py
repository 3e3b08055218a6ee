"""Thread order for :class:`bot.turn.Bot`: intake order, per-thread lanes, turn spans.

One place decides the order of a thread's messages: the core. Adapters store a delivery
with :meth:`Bot.accept` (before they acknowledge the platform) and hand it on with
:meth:`Bot.process` from whatever task they like; they keep no locks of their own.

* **Intake order.** :meth:`ThreadLanes.accept` gives each stored message a ticket in its
  thread, in the order the messages were stored. :meth:`ThreadLanes._intake_turn` (entered
  by ``process``) waits until every earlier ticket of the thread has been processed, so
  two deliveries of one thread reach the lane in the order they were stored, whatever
  order the adapter's tasks run in. Every accepted message must be processed
  (``process`` releases its ticket even when it fails); :meth:`ThreadLanes.aclose`
  releases the rest.
* **Lanes.** Everything that starts work goes through the thread's lane, a FIFO served by
  one task started through the :class:`~bot.tasks.TaskOwner` (the App's: shutdown
  cancels and awaits it; a failure is logged).
* **Turn spans.** Each processed message gets a ``turn`` span (see
  :mod:`bot.server.tracing`), current while the message is handled, in the lane too,
  and ended once it is answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections import deque
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry import trace

from bot import texts
from bot.intake import Accepted, Command, RunIntake
from bot.queue.local import LocalWorker
from bot.server import tracing
from bot.tasks import TaskOwner

if TYPE_CHECKING:
    from bot.core import Message, Outlet
    from bot.store import ThreadKey

__all__ = ["TURN", "ThreadLanes"]

TURN: contextvars.ContextVar[asyncio.Event | None] = contextvars.ContextVar("baton_turn", default=None)
"""The event of the lane item being handled (set once it is answered; see :meth:`Bot.handle`)."""

_LaneItem = tuple["Message", "Outlet", "Command | None", int, "int | None", asyncio.Event]


class ThreadLanes(RunIntake):
    """Mixin of :class:`bot.turn.Bot`: the thread-order machinery (see the module doc).

    Needs from the bot: ``manager``, ``settings``, ``queue``, ``approvals``,
    ``_safely``, ``_ordered``, ``_command_answer``.
    """

    tasks: TaskOwner
    manager: Any
    settings: Any
    queue: Any
    approvals: Any

    def _init_lanes(self, tasks: TaskOwner | None) -> None:
        self.tasks = tasks or TaskOwner("bot")
        self._lanes: dict[ThreadKey, deque[_LaneItem]] = {}
        self._lane_tasks: dict[ThreadKey, asyncio.Task[None]] = {}
        self._unanswered: dict[ThreadKey, list[asyncio.Event]] = {}  # per thread, in arrival order
        self._waiting_answers: set[asyncio.Task[None]] = set()
        self._intake: dict[ThreadKey, list[asyncio.Event]] = {}  # per thread, tickets in store order
        self._tickets: dict[int, asyncio.Event] = {}  # stored message id → its ticket
        self._turn_spans: dict[asyncio.Event, trace.Span] = {}

    # -- intake order ------------------------------------------------------------

    async def accept(self, msg: Message) -> Accepted | None:
        """Store ``msg`` (:meth:`RunIntake.accept`) and give it its place in the thread's intake order."""
        accepted = await super().accept(msg)
        if accepted is not None:
            ticket = asyncio.Event()
            self._intake.setdefault(msg.key, []).append(ticket)
            self._tickets[accepted.stored.id] = ticket
        return accepted

    @contextlib.asynccontextmanager
    async def _intake_turn(self, accepted: Accepted) -> AsyncIterator[trace.Span]:
        """Wait for the thread's earlier accepted messages to be processed; yields the turn span.

        The ticket is released on exit (also on failure or cancellation).
        """
        msg = accepted.msg
        ticket = self._tickets.pop(accepted.stored.id, None)
        queue = self._intake.get(msg.key, [])
        earlier = queue[: queue.index(ticket)] if ticket is not None and ticket in queue else []
        try:
            if earlier:
                await asyncio.gather(*(e.wait() for e in earlier))
            yield tracing.start_span(
                "turn", {"baton.thread": ":".join(msg.key), "baton.platform": msg.platform, "baton.message_id": msg.event_id or str(accepted.stored.id)}
            )
        finally:
            if ticket is not None:
                ticket.set()
                if ticket in queue:
                    queue.remove(ticket)
                if not queue:
                    self._intake.pop(msg.key, None)

    # -- lanes -------------------------------------------------------------------

    async def _enqueue(self, msg: Message, outlet: Outlet, cmd: Command | None, message_id: int, tokens: int | None, span: trace.Span = trace.INVALID_SPAN) -> None:
        """Put a stored message in its thread's lane (answered in arrival order); ``span`` ends once it is answered."""
        turn = self._turn(msg.key)
        if span is not trace.INVALID_SPAN:
            self._turn_spans[turn] = span
        if cmd is not None and cmd.name in ("run", "rerun", "admitted") and msg.key in self._lane_tasks:
            busy = self.manager.in_thread(msg.key)
            waiting = self.queue.pending_in(msg.key) if isinstance(self.queue, LocalWorker) else []  # admitted, not started yet
            if (busy or waiting) and self.settings.workflow.busy_policy == "queue":  # say so at once, not when the thread frees up
                await self._command_answer(msg.key, outlet, texts.queued_behind(self._describe(busy, waiting)))  # type: ignore[attr-defined]
                self._answered(msg.key, turn)
        lane = self._lanes.get(msg.key)
        if lane is None:
            lane = self._lanes[msg.key] = deque()
        lane.append((msg, outlet, cmd, message_id, tokens, turn))
        if msg.key not in self._lane_tasks:
            self._lane_tasks[msg.key] = self.tasks.start(self._serve_lane(msg.key), name=f"lane-{msg.key}")

    async def _serve_lane(self, key: ThreadKey) -> None:
        lane = self._lanes[key]
        try:
            while lane:
                msg, outlet, cmd, message_id, tokens, turn = lane.popleft()
                queue = self._unanswered.get(key, [])
                earlier = queue[: queue.index(turn)] if turn in queue else []
                await asyncio.gather(*(e.wait() for e in earlier))  # commands that arrived before it are answered first
                token = TURN.set(turn)
                span = self._turn_spans.pop(turn, trace.INVALID_SPAN)
                try:
                    with trace.use_span(span, end_on_exit=True):
                        await self._safely(lambda m, o, c: self._ordered(m, o, c, message_id, tokens), msg, outlet, cmd)  # type: ignore[attr-defined]
                finally:
                    TURN.reset(token)
                    self._answered(key, turn)
        except asyncio.CancelledError:
            self._lane_tasks.pop(key, None)
            raise
        self._lane_tasks.pop(key, None)
        if not lane:
            self._lanes.pop(key, None)
        else:  # raced with a put after the loop ended
            self._lane_tasks[key] = self.tasks.start(self._serve_lane(key), name=f"lane-{key}")

    def _answer_in_turn(self, earlier: list[asyncio.Event], msg: Message, outlet: Outlet, cmd: Command, span: trace.Span) -> None:
        """Answer read-only ``cmd`` once ``earlier`` are answered, without holding up the caller."""
        task = self.tasks.start(self._in_turn(earlier, self._turn(msg.key), msg, outlet, cmd, span), name=f"answer-{msg.key}")
        self._waiting_answers.add(task)
        task.add_done_callback(self._waiting_answers.discard)

    def _turn(self, key: ThreadKey) -> asyncio.Event:
        """A new message's place in its thread's order: set once the message is answered."""
        turn = asyncio.Event()
        self._unanswered.setdefault(key, []).append(turn)
        return turn

    def _answered(self, key: ThreadKey, turn: asyncio.Event) -> None:
        turn.set()
        got = self._unanswered.get(key)
        if got is not None:
            if turn in got:
                got.remove(turn)
            if not got:
                self._unanswered.pop(key, None)

    async def _in_turn(self, earlier: list[asyncio.Event], turn: asyncio.Event, msg: Message, outlet: Outlet, cmd: Command, span: trace.Span) -> None:
        try:
            with trace.use_span(span, end_on_exit=True):
                await asyncio.gather(*(e.wait() for e in earlier))
                await self._safely(self._immediate, msg, outlet, cmd)  # type: ignore[attr-defined]
        finally:
            self._answered(msg.key, turn)

    def _describe(self, busy: list, queued: Sequence[int] = ()) -> str:  # type: ignore[type-arg]
        """"run #3 (waiting for approval)" / "runs #3 (running), #4 (queued)"."""
        def state(run_id: int) -> str:
            return "waiting for approval" if self.approvals is not None and self.approvals.pending(run_id) else "running"

        parts = [f"#{r.id} ({state(r.id)})" for r in busy] + [f"#{i} (queued)" for i in queued]
        return ("run " if len(parts) == 1 else "runs ") + ", ".join(parts)

    async def drain(self) -> None:
        """Wait until every lane is empty, every command waiting its turn is answered, every
        queued run has been served and every run has finished."""
        while self._lane_tasks or self._waiting_answers or self.manager.active or (self.queue is not None and self.queue.busy):
            await asyncio.gather(*self._lane_tasks.values(), *self._waiting_answers, return_exceptions=True)
            if self.queue is not None:
                await self.queue.wait_idle()
            await self.manager.wait_idle()

    async def aclose(self) -> None:
        """Stop serving lanes (queued requests are stored; they are not acted on)."""
        tasks = [*self._lane_tasks.values(), *self._waiting_answers]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._lane_tasks.clear()
        self._lanes.clear()
        self._unanswered.clear()
        for tickets in self._intake.values():
            for t in tickets:
                t.set()
        self._intake.clear()
        self._tickets.clear()
        for span in self._turn_spans.values():
            span.end()
        self._turn_spans.clear()
