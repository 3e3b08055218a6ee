"""The context window's records: what a strategy builds and how ``/context`` shows it.

:class:`ContextWindow` (the prompt messages with their token breakdown), the
:class:`ContextStrategy` protocol every strategy implements (:mod:`.context`), and
:func:`render_breakdown` (the ``/context`` table).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol, Sequence, runtime_checkable

from .records import MemoryMessage, Role, SummaryRecord
from .summarize import SUMMARY_AUTHOR

if TYPE_CHECKING:
    from .config import ContextConfig
    from .tokens import TokenCounter

__all__ = [
    "COMPRESSED_PREFIX",
    "ContextStrategy",
    "ContextWindow",
    "PromptKind",
    "PromptMessage",
    "SummarySpan",
    "TailRequest",
    "TokenBreakdown",
    "plural",
    "render_breakdown",
]

PromptKind = Literal["system", "summary", "compressed", "history", "new"]
COMPRESSED_PREFIX = "[compressed] "


@dataclass(frozen=True, slots=True)
class PromptMessage:
    """One message of an assembled context window.

    Fields:
        role: chat role sent to the model (summaries are ``"system"``).
        content: exact text to send.
        tokens: chat-message cost of this message (content + framing), tokens.
        kind: ``"system" | "summary" | "compressed" | "history" | "new"``.
        first_id, last_id: ids of the stored message(s) it represents
            (``None`` for the system prompt).
        truncated: content was cut and carries the ``…[truncated N tokens]`` marker.
    """

    role: Role
    content: str
    tokens: int
    kind: PromptKind
    first_id: int | None = None
    last_id: int | None = None
    truncated: bool = False


@dataclass(frozen=True, slots=True)
class TokenBreakdown:
    """Token allocation of a context window (seed "Token allocation" example).

    All values are tokens of the strategy's encoding, chat framing included.
    ``budget`` is ``config.max_tokens``; ``total`` is everything allocated
    (prompt parts + reply priming + reserve) and is always ``<= budget``.
    """

    budget: int
    system: int
    summaries: int
    compressed: int
    history: int
    new_message: int
    framing: int
    reserve: int
    summary_count: int = 0
    summarized_messages: int = 0
    compressed_messages: int = 0
    history_messages: int = 0
    omitted_messages: int = 0
    omitted_summaries: int = 0

    @property
    def prompt(self) -> int:
        """Tokens of the request itself (``total - reserve``)."""
        return self.system + self.summaries + self.compressed + self.history + self.new_message + self.framing

    @property
    def total(self) -> int:
        """Allocated tokens including the response reserve; ``<= budget``."""
        return self.prompt + self.reserve

    @property
    def free(self) -> int:
        """Unallocated tokens (``budget - total``)."""
        return self.budget - self.total


@dataclass(frozen=True, slots=True)
class ContextWindow:
    """An assembled context: ordered messages plus their token breakdown.

    Fields:
        strategy: name of the strategy that built it.
        encoding: actual encoding of every count in it.
        messages: system prompt (if any), summaries (oldest first) rendered as
            system notes, compressed/full history (oldest first), new message.
        breakdown: see :class:`TokenBreakdown`.
    """

    strategy: str
    encoding: str
    messages: tuple[PromptMessage, ...]
    breakdown: TokenBreakdown

    @property
    def truncated(self) -> bool:
        """True if any message was cut to fit."""
        return any(m.truncated for m in self.messages)

    @property
    def message_ids(self) -> tuple[int, ...]:
        """Ids of stored messages included verbatim, compressed or as the new one."""
        return tuple(m.first_id for m in self.messages if m.kind in ("compressed", "history", "new") and m.first_id is not None)

    def to_chat(self) -> list[dict[str, str]]:
        """``[{"role": ..., "content": ...}, ...]`` for an OpenAI-style chat API."""
        return [{"role": m.role, "content": m.content} for m in self.messages]


@dataclass(frozen=True, slots=True)
class SummarySpan:
    """A span that needs a (new) summary, as reported by ``plan``.

    Fields:
        level: summary level to create (1 = messages, k+1 = level-k summaries).
        first_id, last_id: ids of the first/last message covered.
        message_count: messages covered.
        sources: the messages (level 1) or summaries (roll-ups) to summarize.
    """

    level: int
    first_id: int
    last_id: int
    message_count: int
    sources: tuple[MemoryMessage | SummaryRecord, ...]

    def as_messages(self) -> tuple[MemoryMessage, ...]:
        """Sources as messages for a :class:`Summarizer`; summaries become
        ``role="system", author="summary"`` messages with id ``first_id``."""
        out: list[MemoryMessage] = []
        for s in self.sources:
            if isinstance(s, MemoryMessage):
                out.append(s)
            else:
                out.append(
                    MemoryMessage(
                        id=s.first_id, role="system", author=SUMMARY_AUTHOR, text=s.text, tokens=0, encoding=""
                    )
                )
        return tuple(out)


@dataclass(frozen=True, slots=True)
class TailRequest:
    """Which history a strategy needs: the newest ``limit`` messages with
    ``id > after_id`` (``None`` = no lower bound), returned oldest first.

    ``token_budget``: a store may return fewer than ``limit`` messages once the
    newest ones it returns sum to at least this many tokens (nothing older could
    fit); ``None`` = return ``limit`` messages."""

    limit: int
    after_id: int | None = None
    token_budget: int | None = None


@runtime_checkable
class ContextStrategy(Protocol):
    """Common interface of all context strategies (see module docs).

    Attributes:
        name: ``"sliding_window" | "summary" | "hierarchical"``.
        config: the :class:`ContextConfig`.
        counter: the :class:`TokenCounter` of the target model.
    """

    name: str
    config: ContextConfig
    counter: TokenCounter

    def tail_request(self, summaries: Sequence[SummaryRecord]) -> TailRequest:
        """How much history ``plan``/``assemble`` need, given the stored summaries."""
        ...

    def plan(self, history: Sequence[MemoryMessage], summaries: Sequence[SummaryRecord]) -> tuple[SummarySpan, ...]:
        """Spans lacking a summary (empty if the strategy does not summarize)."""
        ...

    def assemble(
        self,
        system_prompt: str,
        history: Sequence[MemoryMessage],
        new_message: MemoryMessage,
        summaries: Sequence[SummaryRecord],
    ) -> ContextWindow:
        """Build the window. Raises :class:`ContextBudgetError` (see module docs)."""
        ...


# --------------------------------------------------------------------------------------
# /context


def plural(n: int, word: str) -> str:
    """``"1 message"``, ``"2 messages"``, ``"3 summaries"``."""
    if n == 1:
        return f"{n} {word}"
    return f"{n} {word[:-1]}ies" if word.endswith("y") else f"{n} {word}s"


def render_breakdown(window: ContextWindow) -> str:
    """Token-allocation table for the ``/context`` command, shaped like the
    seed's "Token allocation" example::

        Total: 8000 tokens (strategy sliding_window, encoding cl100k_base)
        - System prompt: 200 tokens
        - Summaries: 0 tokens (0 summaries)
        - History: 5800 tokens (10 messages)
        - New message: 40 tokens
        - Reply framing: 3 tokens
        - Reserved for response: 2000 tokens
        - Free: ... tokens

    Lines for compressed messages, omissions and truncation appear only when
    relevant.
    """
    b = window.breakdown
    lines = [f"Total: {b.budget} tokens (strategy {window.strategy}, encoding {window.encoding})"]
    lines.append(f"- System prompt: {b.system} tokens")
    summ = f"- Summaries: {b.summaries} tokens ({plural(b.summary_count, 'summary')}"
    if b.summarized_messages:
        summ += f", {plural(b.summarized_messages, 'message')}"
    lines.append(summ + ")")
    if b.compressed_messages or b.compressed:
        lines.append(f"- Compressed history: {b.compressed} tokens ({plural(b.compressed_messages, 'message')})")
    lines.append(f"- History: {b.history} tokens ({plural(b.history_messages, 'message')})")
    new_line = f"- New message: {b.new_message} tokens"
    new = window.messages[-1] if window.messages else None
    if new is not None and new.truncated:
        new_line += " (truncated)"
    lines.append(new_line)
    lines.append(f"- Reply framing: {b.framing} tokens")
    lines.append(f"- Reserved for response: {b.reserve} tokens")
    lines.append(f"- Free: {b.free} tokens")
    if b.omitted_messages or b.omitted_summaries:
        parts = []
        if b.omitted_messages:
            parts.append(plural(b.omitted_messages, "older message"))
        if b.omitted_summaries:
            parts.append(plural(b.omitted_summaries, "older summary"))
        lines.append(f"Not in context: {' and '.join(parts)}")
    return "\n".join(lines)
