"""The core's own types: what adapters hand in and what the core talks back through.

This module is the seam between chat platforms (``adapters/``) and the core
(``bot/``). It depends on nothing but the standard library (the run events it
mentions are only imported for type checking), so both sides import it without
pulling each other in:

* :class:`SessionKey` / :data:`ThreadKey` — one conversation ``(platform, channel, thread)``.
* :class:`Message` — one incoming chat message, platform-neutral.
* :class:`Outlet` — how the core answers in a thread: plain replies and one
  :class:`RunView` per run. Optional abilities are *declared* by the outlet in
  :attr:`Outlet.abilities` (an :class:`Ability` set) and each has its own small
  protocol (:class:`StreamingOutlet`, :class:`ResultControlsOutlet`); the core
  asks :func:`reply_stream` / :func:`has_ability`, never ``hasattr``.
* :class:`RunInfo` / :class:`StepInfo` — read-only views of a stored run, for an
  adapter's buttons (which step failed, which thread the run belongs to).
* :class:`CoreAPI` — the narrow API an adapter gets (in the spirit of bolt's
  listener arguments): ``handle``, ``preflight``, ``run_info`` and a few lookups.
  :class:`bot.turn.Bot` implements it.

Direction of imports: ``adapters → bot.core ← bot``; ``engine`` imports neither.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, NamedTuple, Protocol, cast

if TYPE_CHECKING:  # types only: the engine's event records, the core's stored delivery
    from bot.intake import Accepted
    from engine.events import RunEvent

__all__ = [
    "Ability",
    "ChoicesOutlet",
    "CoreAPI",
    "FilesOutlet",
    "Message",
    "Outlet",
    "ReplyStream",
    "ResultControlsOutlet",
    "RunInfo",
    "RunView",
    "SessionKey",
    "StepInfo",
    "StreamingOutlet",
    "ThreadKey",
    "has_ability",
    "reply_stream",
    "safe_text",
    "send_run_result",
]


def safe_text(text: str) -> str:
    """``text`` with what cannot be stored or printed as UTF-8 replaced by U+FFFD.

    Lone surrogates (what Python's ``surrogateescape`` makes of an invalid UTF-8
    byte read from a terminal or pipe, and what a platform's broken JSON
    ``\\udXXX`` escape decodes to) and NUL (refused by PostgreSQL's ``text``)
    become ``\ufffd``, one per bad byte; valid text comes back unchanged (and is
    the same object, so the check costs one encode on the common path).
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = "".join("\ufffd" if "\ud800" <= ch <= "\udfff" else ch for ch in text)
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


class SessionKey(NamedTuple):
    """Identity of one conversation: ``(platform, channel, thread)``.

    ``thread`` is the platform's thread id, or ``""`` for a channel-level
    conversation. All three parts are opaque strings.
    """

    platform: str
    channel: str
    thread: str = ""


ThreadKey = SessionKey
"""The session key of a thread (the name the chat side uses for :class:`SessionKey`)."""


@dataclass(frozen=True, slots=True)
class Message:
    """One incoming chat message, platform-neutral.

    Attributes:
        platform: ``console``, ``slack``, ``discord``.
        channel, thread: where it was said; ``thread`` is the platform's thread id
            (Slack ``thread_ts``, a Discord thread id, the console's thread name).
        author: the platform's user id; ``author_name`` a display name when known.
        text: the message text with any bot mention removed; what is not valid
            UTF-8 (lone surrogates) and NUL become U+FFFD (:func:`safe_text`).
        received_at: UTC time the adapter received it.
        event_id: the platform's delivery id.
        roles: the author's roles/groups on the platform (for permissions).
        dedupe_ids: ids recorded together with the stored message (the delivery's event
            id, the message's own id); a message with an id recorded before is a
            redelivery and is dropped by the core (``SessionStore.append_once``).
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
    def key(self) -> SessionKey:
        """The session key of the message's thread."""
        return SessionKey(self.platform, self.channel, self.thread)


class Ability(enum.StrEnum):
    """Optional things an outlet can do, declared in :attr:`Outlet.abilities`.

    * ``STREAM_REPLY`` — show a reply while it is written, editing one message in
      place (:class:`StreamingOutlet`).
    * ``RESULT_CONTROLS`` — post a run's result with the platform's controls for it,
      e.g. Retry and Show log buttons (:class:`ResultControlsOutlet`).
    * ``CHOICES`` — ask a question with one button per answer (:class:`ChoicesOutlet`).
    * ``FILES`` — post a file in the thread, e.g. a run's picture (:class:`FilesOutlet`).
    """

    STREAM_REPLY = "stream_reply"
    RESULT_CONTROLS = "result_controls"
    CHOICES = "choices"
    FILES = "files"


class RunView(Protocol):
    """Live status of one run in its thread.

    ``on_event`` is called synchronously by the executor for every event and must
    be cheap (update state, schedule a redraw); ``aclose`` flushes the final state.
    """

    def on_event(self, event: RunEvent) -> None: ...

    async def aclose(self) -> None: ...


class ReplyStream(Protocol):
    """A reply shown while it is being written (LLM tokens arriving)."""

    def update(self, text: str) -> None:
        """The text so far (cheap; the display is throttled)."""
        ...

    async def finish(self, text: str) -> None:
        """Show the final text and stop."""
        ...


class Outlet(Protocol):
    """What the core needs from an adapter to talk back to threads.

    Attributes:
        platform: the platform name (the ``platform`` of the keys it serves).
        abilities: the optional abilities it has; each comes with the methods of
            its protocol (:class:`StreamingOutlet`, :class:`ResultControlsOutlet`).
            An outlet without the attribute has none.
    """

    platform: str

    async def send(self, key: SessionKey, text: str) -> None:
        """Post ``text`` as a reply in the thread ``key``."""
        ...

    def run_view(self, key: SessionKey, run_id: int, title: str) -> RunView:
        """A status display for run ``run_id`` in thread ``key``."""
        ...


class StreamingOutlet(Outlet, Protocol):
    """An outlet with :attr:`Ability.STREAM_REPLY`."""

    def stream_reply(self, key: SessionKey) -> ReplyStream:
        """A reply in thread ``key`` shown while it is written."""
        ...


class ResultControlsOutlet(Outlet, Protocol):
    """An outlet with :attr:`Ability.RESULT_CONTROLS`."""

    async def send_run_result(self, key: SessionKey, text: str, run_id: int, status: str) -> None:
        """Post run ``run_id``'s result ``text`` (final ``status``) with the platform's controls."""
        ...


class ChoicesOutlet(Outlet, Protocol):
    """An outlet with :attr:`Ability.CHOICES`."""

    async def send_choices(self, key: SessionKey, text: str, choices: list[tuple[str, str]]) -> None:
        """Ask ``text`` with one button per ``(label, reply)``; a click is the clicker's message ``reply``."""
        ...


class FilesOutlet(Outlet, Protocol):
    """An outlet with :attr:`Ability.FILES` (Slack uploads, Discord attaches, the console writes to disk)."""

    async def send_file(self, key: SessionKey, filename: str, data: bytes, comment: str) -> None:
        """Post ``data`` as ``filename`` with ``comment`` in thread ``key``."""
        ...


def has_ability(outlet: object, ability: Ability) -> bool:
    """Whether ``outlet`` declares ``ability`` in its ``abilities`` (none declared: False)."""
    return ability in getattr(outlet, "abilities", ())


def reply_stream(outlet: Outlet, key: SessionKey) -> ReplyStream | None:
    """A :class:`ReplyStream` in ``key`` when the outlet streams replies, else ``None``."""
    if has_ability(outlet, Ability.STREAM_REPLY):
        return cast(StreamingOutlet, outlet).stream_reply(key)
    return None


async def send_run_result(outlet: Outlet, key: SessionKey, text: str, run_id: int, status: str) -> None:
    """Post a run's result: with the outlet's controls when it has them, else as a plain reply."""
    if has_ability(outlet, Ability.RESULT_CONTROLS):
        await cast(ResultControlsOutlet, outlet).send_run_result(key, text, run_id, status)
    else:
        await outlet.send(key, text)


@dataclass(frozen=True, slots=True)
class StepInfo:
    """One step of a stored run as an adapter may show it (read-only)."""

    node_id: str
    label: str
    status: str


@dataclass(frozen=True, slots=True)
class RunInfo:
    """A stored run as an adapter may show it (read-only; e.g. for Retry buttons).

    Attributes:
        id: the run id.
        key: the session key of the thread the run belongs to.
        status: ``queued``, ``running``, ``succeeded``, ``failed``, ``cancelled``.
        source: the workflow text (or name) it ran.
        steps: its steps that have a record, in graph order.
    """

    id: int
    key: SessionKey
    status: str
    source: str
    steps: tuple[StepInfo, ...] = ()

    def failed_step(self) -> str | None:
        """The id of the first failed step, if any."""
        return next((s.node_id for s in self.steps if s.status == "failed"), None)


class CoreAPI(Protocol):
    """The narrow API an adapter gets from the core: one place decides, adapters render.

    Implemented by :class:`bot.turn.Bot`.
    """

    async def handle(self, msg: Message, outlet: Outlet) -> None:
        """Store ``msg`` and answer it in its thread (redeliveries are dropped)."""
        ...

    async def accept(self, msg: Message) -> Accepted | None:
        """Store ``msg`` (with its delivery ids and, for a run request, its queued run) in one
        transaction, before the platform is acknowledged; ``None`` for a redelivery.

        Raises:
            StoreError: nothing was recorded; do not acknowledge (the platform redelivers).
        """
        ...

    async def process(self, accepted: Accepted, outlet: Outlet) -> None:
        """Act on a delivery :meth:`accept` stored (answer it, start its admitted run).

        The core keeps each thread's order: deliveries are processed in the order
        :meth:`accept` stored them, whichever task calls this, so adapters keep no
        per-thread locks. Every accepted delivery must be processed (a later one of its
        thread waits for it).
        """
        ...

    async def preflight(self, msg: Message, text: str) -> str | None:
        """Would ``text`` (a workflow, ``/run NAME`` or ``/rerun ID …``) start for ``msg``'s author?

        Compiles and checks permission without storing or running anything.

        Returns:
            ``None`` when it may go ahead, else the refusal to show the author.
        """
        ...

    async def run_info(self, run_id: int) -> RunInfo | None:
        """Read-only view of stored run ``run_id`` (``None`` when unknown)."""
        ...

    async def seen(self, platform: str, event_ids: Sequence[str]) -> bool:
        """Whether any of ``event_ids`` of ``platform`` was recorded with a stored message."""
        ...

    def may_decide(self, author: str, roles: Sequence[str]) -> bool:
        """Whether ``author`` may approve or reject waiting runs."""
        ...

    def workflow_names(self) -> list[tuple[str, str]]:
        """``(name, description)`` of every named workflow and action (for autocomplete)."""
        ...

    async def knows(self, key: SessionKey) -> bool:
        """Whether thread ``key`` has stored messages (the bot takes part in it)."""
        ...

    async def resume_unfinished(self, platforms: set[str]) -> list[int]:
        """Start again the unfinished runs of ``platforms`` after a restart; returns their ids."""
        ...
