"""Helpers the adapters share: status boards and throttled in-place messages.

The seam itself (:class:`Message`, :class:`Outlet`, :class:`RunView`, the abilities)
lives in :mod:`bot.core` and is re-exported here. An adapter turns a platform event
into one :class:`Message` and hands it to the core (``bot.turn.Bot.handle``); the
core talks back through the adapter's :class:`Outlet`: plain replies in the thread,
and one :class:`RunView` per workflow run that shows live status (a console block,
or one platform message edited in place). Adapters translate; the core decides.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from bot.core import Ability, Message, Outlet, ReplyStream, RunView, ThreadKey
from bot.tasks import TaskOwner
from bot.texts import ICONS, step_line
from engine.events import RunEvent, StepRecord

__all__ = [
    "Ability",
    "ICONS",
    "Message",
    "Outlet",
    "ReplyStream",
    "RunView",
    "StatusBoard",
    "ThreadKey",
    "ThrottledMessage",
    "ThrottledReply",
    "ThrottledStatusMessage",
    "step_line",
]


class StatusBoard:
    """The state a status display shows: each step's latest record, in graph order."""

    def __init__(self, run_id: int, title: str, step_ids: list[str] | None = None) -> None:
        self.run_id = run_id
        self.title = title
        self.status = "queued"
        self.error: str | None = None
        self.steps: dict[str, StepRecord] = {}
        self.order = list(step_ids or [])
        self.started = time.monotonic()

    def apply(self, event: RunEvent) -> None:
        """Fold one event in."""
        if event.kind in ("run_started", "run_finished"):
            self.status = event.status or self.status
            self.error = event.error
            for s in event.steps:
                self._put(s)
        elif event.step is not None:
            self._put(event.step)

    def _put(self, rec: StepRecord) -> None:
        if rec.node_id not in self.order:
            self.order.append(rec.node_id)
        self.steps[rec.node_id] = rec

    def rows(self) -> list[StepRecord]:
        """Known steps in order."""
        return [self.steps[n] for n in self.order if n in self.steps]


class ThrottledMessage:
    """One platform message edited in place, at most once per ``min_interval`` seconds.

    Platforms limit edits (Slack's ``chat.update`` is Tier 3, ~50/min per app, and
    about one update per second per message is the safe rate; Discord rate-limits
    message edits per channel), so intermediate states are coalesced: the latest
    render wins and the final state is always flushed by :meth:`aclose`.

    Args:
        render: builds the current payload.
        post: posts the first payload, returns the platform's message handle.
        edit: replaces the message ``handle`` with a new payload.
    """

    def __init__(
        self,
        render: Callable[[], object],
        post: Callable[[object], Awaitable[object]],
        edit: Callable[[object, object], Awaitable[None]],
        *,
        min_interval: float = 1.0,
        name: str = "status",
    ) -> None:
        self._render_now = render
        self._post = post
        self._edit = edit
        self.min_interval = min_interval
        self._handle: object | None = None
        self._dirty = asyncio.Event()
        self._closed = False
        self._task: asyncio.Task[None] = TaskOwner(name).start(self._loop(), name=name)  # awaited by aclose(); a failure is logged
        self.edits = 0

    def touch(self) -> None:
        """The state changed: render again (soon)."""
        self._dirty.set()

    async def _loop(self) -> None:
        last = 0.0
        while True:
            await self._dirty.wait()
            wait = self.min_interval - (time.monotonic() - last)
            if wait > 0 and self._handle is not None and not self._closed:
                await asyncio.sleep(wait)
            self._dirty.clear()
            payload = self._render_now()
            if self._handle is None:
                self._handle = await self._post(payload)
            else:
                await self._edit(self._handle, payload)
                self.edits += 1
            last = time.monotonic()
            if self._closed and not self._dirty.is_set():
                return

    async def aclose(self) -> None:
        """Flush the final state and stop."""
        self._closed = True
        self._dirty.set()
        await self._task


class ThrottledStatusMessage(ThrottledMessage):
    """A run's status board as one message edited in place (a :class:`RunView`)."""

    def __init__(
        self,
        board: StatusBoard,
        post: Callable[[object], Awaitable[object]],
        edit: Callable[[object, object], Awaitable[None]],
        render: Callable[[StatusBoard], object],
        *,
        min_interval: float = 1.0,
    ) -> None:
        self.board = board
        super().__init__(lambda: render(board), post, edit, min_interval=min_interval, name=f"status-{board.run_id}")

    def on_event(self, event: RunEvent) -> None:
        self.board.apply(event)
        self.touch()


class ThrottledReply:
    """A :class:`ReplyStream` over :class:`ThrottledMessage`: posts once, then edits in place."""

    def __init__(
        self,
        post: Callable[[object], Awaitable[object]],
        edit: Callable[[object, object], Awaitable[None]],
        *,
        min_interval: float = 1.0,
        render: Callable[[str], object] = lambda t: t,
    ) -> None:
        self.text = ""
        self._msg = ThrottledMessage(lambda: render(self.text or "…"), post, edit, min_interval=min_interval, name="reply")

    def update(self, text: str) -> None:
        self.text = text
        self._msg.touch()

    async def finish(self, text: str) -> None:
        self.text = text
        self._msg.touch()
        await self._msg.aclose()
