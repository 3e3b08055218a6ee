"""The seam between chat platforms and the core.

An adapter turns a platform event into one :class:`Message` and hands it to the
core (``bot.turn.Bot.handle``); the core talks back through the adapter's
:class:`Outlet`: plain replies in the thread, and one :class:`RunView` per
workflow run that shows live status (a console block, or one platform message
edited in place). Adapters translate; the core decides.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from bot.sessions.records import safe_text
from bot.store.sessions import ThreadKey
from engine.events import RunEvent, StepRecord


@dataclass(frozen=True, slots=True)
class Message:
    """One incoming chat message, platform-neutral.

    Attributes:
        platform: ``console``, ``slack``, ``discord``.
        channel, thread: where it was said; ``thread`` is the platform's thread id
            (Slack ``thread_ts``, a Discord thread id, the console's thread name).
        author: the platform's user id; ``author_name`` a display name when known.
        text: the message text with any bot mention removed; what is not valid
            UTF-8 (lone surrogates) and NUL become U+FFFD (:func:`bot.sessions.records.safe_text`).
        received_at: UTC time the adapter received it.
        event_id: the platform's delivery id.
        roles: the author's roles/groups on the platform (for permissions).
        dedupe_ids: ids recorded together with the stored message (the delivery's event
            id, the message's own id); a message with an id recorded before is a
            redelivery and is dropped (``SessionStore.append_once``).
    """

    platform: str
    channel: str
    thread: str
    author: str
    text: str
    received_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    event_id: str | None = None
    author_name: str | None = None
    roles: tuple[str, ...] = ()
    dedupe_ids: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # any platform's text may carry what is not UTF-8 (a stray byte on a pipe, a broken
        # escape in a payload): it is kept, as U+FFFD, never a crash further down
        for name in ("text", "author", "author_name"):
            value = getattr(self, name)
            if value is not None and value is not (clean := safe_text(value)):
                object.__setattr__(self, name, clean)

    @property
    def key(self) -> ThreadKey:
        """The session key of the message's thread."""
        return ThreadKey(self.platform, self.channel, self.thread)


class RunView(Protocol):
    """Live status of one run in its thread.

    ``on_event`` is called synchronously by the executor for every event and must
    be cheap (update state, schedule a redraw); ``aclose`` flushes the final state.
    """

    def on_event(self, event: RunEvent) -> None: ...

    async def aclose(self) -> None: ...


class Outlet(Protocol):
    """What the core needs from an adapter to talk back to threads."""

    platform: str

    async def send(self, key: ThreadKey, text: str) -> None:
        """Post ``text`` as a reply in the thread ``key``."""
        ...

    def run_view(self, key: ThreadKey, run_id: int, title: str) -> RunView:
        """A status display for run ``run_id`` in thread ``key``."""
        ...

    # Optional: ``stream_reply(key) -> ReplyStream`` for platforms that can show a reply
    # while it is written (LLM chat). Without it the core sends the final text.
    # Optional: ``async send_run_result(key, text, run_id, status)`` posts a run's result
    # with the platform's controls for it (status: succeeded, failed, cancelled…);
    # without it the core uses ``send``.
    # Optional: ``async send_file(key, filename, data, comment)`` posts a file (a run's
    # picture) in the thread: Slack uploads it, Discord attaches it, the console writes it
    # to disk and prints the path. Without it the core says the platform cannot show files.


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


ICONS = {"running": "▶", "waiting": "⏸", "succeeded": "✓", "failed": "✗", "skipped": "·", "cancelled": "⊘", "pending": "…"}


def step_line(rec: StepRecord) -> str:
    """One plain-text status line for a step: icon, label, status, time, cost."""
    icon = ICONS.get(rec.status, "?")
    dur = rec.duration_s
    parts = [f"{icon} {rec.label}", rec.status]
    if rec.attempt > 1:
        parts.append(f"attempt {rec.attempt}")
    if dur is not None:
        parts.append(f"{dur:.2f}s")
    if rec.cost_usd:
        parts.append(f"${rec.cost_usd:.4f}")
    if getattr(rec, "cached", False):
        parts.append("(cached)")
    if rec.status in ("failed", "skipped") and rec.error:
        parts.append(rec.error)
    return " — ".join(parts)


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
        self._task: asyncio.Task[None] = asyncio.create_task(self._loop(), name=name)
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


class ReplyStream(Protocol):
    """A reply shown while it is being written (LLM tokens arriving)."""

    def update(self, text: str) -> None:
        """The text so far (cheap; the display is throttled)."""
        ...

    async def finish(self, text: str) -> None:
        """Show the final text and stop."""
        ...


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
