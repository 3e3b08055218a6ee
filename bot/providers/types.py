"""Domain values exchanged with LLM providers (frozen dataclasses, no I/O).

A reply streams as zero or more :class:`TextDelta` events followed by exactly one
:class:`StreamEnd`; :class:`Completion` is the same reply collected.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypeAlias, get_args

Role: TypeAlias = Literal["system", "user", "assistant"]
"""Conversation roles understood by every provider.

``system`` turns found inside a message list are hoisted into the provider's system
prompt (OpenAI: leading ``system`` message; Anthropic: the ``system`` parameter)."""

FinishReason: TypeAlias = Literal["stop", "length", "tool_use", "content_filter", "refusal", "other"]
"""Provider-neutral reason a reply ended.

Mapping (raw value kept in ``StreamEnd.raw_finish_reason``):

* OpenAI ``finish_reason``: ``stop``→stop, ``length``→length,
  ``tool_calls``/``function_call``→tool_use, ``content_filter``→content_filter.
* Anthropic ``stop_reason``: ``end_turn``/``stop_sequence``→stop,
  ``max_tokens``/``model_context_window_exceeded``→length, ``tool_use``→tool_use,
  ``refusal``→refusal, ``pause_turn``→other.
"""

_ROLES = frozenset(get_args(Role))


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One conversation turn: ``role`` (``"system" | "user" | "assistant"``) and plain-text ``content``.

    Raises ``ValueError`` for an unknown role and ``TypeError`` if ``content`` is not a str.
    """

    role: Role
    content: str

    def __post_init__(self) -> None:
        if self.role not in _ROLES:
            raise ValueError(f"ChatMessage.role must be one of {sorted(_ROLES)}, got {self.role!r}")
        if not isinstance(self.content, str):
            raise TypeError(f"ChatMessage.content must be str, got {type(self.content).__name__}")


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts for one reply, as reported by the provider.

    ``input_tokens``: prompt tokens billed (Anthropic: ``input_tokens`` +
    ``cache_creation_input_tokens`` + ``cache_read_input_tokens``, which Anthropic's
    docs give as the total input; OpenAI: ``usage.prompt_tokens``).
    ``output_tokens``: generated tokens billed (OpenAI ``completion_tokens``,
    including reasoning tokens; Anthropic cumulative ``output_tokens`` from the last
    ``message_delta``).
    ``cache_read_tokens`` / ``cache_write_tokens``: the part of ``input_tokens`` read from
    / written to the provider's prompt cache (OpenAI ``prompt_tokens_details.cached_tokens``;
    Anthropic ``cache_read_input_tokens`` / ``cache_creation_input_tokens``), priced at the
    cache rates (:mod:`bot.providers.cost`).
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        """``input_tokens + output_tokens``."""
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of reply text, in order; concatenating every ``text`` gives the reply."""

    text: str


@dataclass(frozen=True, slots=True)
class StreamEnd:
    """Final event of every successful stream.

    ``usage``: token counts (``usage_reported`` is False when the server sent none,
    e.g. an OpenAI-compatible server ignoring ``stream_options.include_usage``; the
    counts are then 0). ``model``: the model id the server says answered (falls back
    to the requested id). ``provider``: the configured provider name that answered.
    ``finish_reason``: see :data:`FinishReason`; ``raw_finish_reason``: the vendor's
    own value.
    """

    usage: Usage
    model: str
    finish_reason: FinishReason
    raw_finish_reason: str | None = None
    provider: str = ""
    usage_reported: bool = True


StreamEvent: TypeAlias = TextDelta | StreamEnd
"""What :meth:`Provider.stream` yields: ``TextDelta``\\* then one ``StreamEnd``."""


@dataclass(frozen=True, slots=True)
class Completion:
    """A whole reply, as collected by :meth:`Provider.complete`.

    ``text``: the concatenated deltas; other fields as in :class:`StreamEnd`.
    """

    text: str
    usage: Usage
    model: str
    finish_reason: FinishReason
    raw_finish_reason: str | None = None
    provider: str = ""
    usage_reported: bool = True

    @classmethod
    def from_stream(cls, text: str, end: StreamEnd) -> Completion:
        """Build from the collected ``text`` and the stream's final event."""
        return cls(
            text=text,
            usage=end.usage,
            model=end.model,
            finish_reason=end.finish_reason,
            raw_finish_reason=end.raw_finish_reason,
            provider=end.provider,
            usage_reported=end.usage_reported,
        )


def normalise_openai_finish(raw: str | None) -> FinishReason:
    """Map an OpenAI ``finish_reason`` to :data:`FinishReason` (see its docstring)."""
    return _OPENAI_FINISH.get(raw or "", "other")


def normalise_anthropic_stop(raw: str | None) -> FinishReason:
    """Map an Anthropic ``stop_reason`` to :data:`FinishReason` (see its docstring)."""
    return _ANTHROPIC_STOP.get(raw or "", "other")


_OPENAI_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "content_filter",
}
_ANTHROPIC_STOP: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_use",
    "refusal": "refusal",
    "pause_turn": "other",
}
