"""Configuration of session modes and context strategies.

Both mirror the "Session Management" and "Context Management" sections of
/work/shared/seeds/001_087264de11ee0cf8.txt:

* session modes (seed "Session Management"): ``stateless``, ``memory``
  (``timeout``, ``max_messages``, ``max_tokens``), ``persistent`` (database);
* context strategies (seed "Context Management"): ``sliding_window``
  (seed "Window-Based Context": ``max_tokens``, ``window_size``,
  ``reserve_tokens``), ``summary`` (``summary_frequency``, ``summary_length``)
  and ``hierarchical`` (``levels``: full N / compressed M / summary rest).

Both classes are frozen dataclasses validated on construction and can be
built from the seed's YAML-shaped mappings with ``from_dict``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Literal, Mapping, get_args

__all__ = [
    "ContextBudgetError",
    "StrategyName",
    "SessionMode",
    "HierarchyLevels",
    "ContextConfig",
    "SessionConfig",
]

StrategyName = Literal["sliding_window", "summary", "hierarchical"]
SessionMode = Literal["stateless", "memory", "persistent"]


class ContextBudgetError(ValueError):
    """The token budget cannot hold the mandatory parts of a context
    (system prompt + reserve + framing + the newest message, at least truncated).
    The message names the numbers involved."""


def _pos(name: str, value: Any, *, allow_none: bool = False, allow_zero: bool = False) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{name} must be an int, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value}")


@dataclass(frozen=True, slots=True)
class HierarchyLevels:
    """Tier sizes of the hierarchical strategy (seed "Hierarchical Context").

    Fields:
        full: newest N history messages sent verbatim (seed default 5).
        compressed: the next M messages, each compressed extractively (seed 10).
        summary: how many older messages the summary tier may cover
            (seed 100); ``None`` = all of them (rolled-up summaries).

    Raises:
        ValueError: negative sizes or ``full == 0`` (the newest history message
            must be eligible in full).
    """

    full: int = 5
    compressed: int = 10
    summary: int | None = 100

    def __post_init__(self) -> None:
        _pos("levels.full", self.full)
        _pos("levels.compressed", self.compressed, allow_zero=True)
        _pos("levels.summary", self.summary, allow_none=True, allow_zero=True)

    @classmethod
    def from_list(cls, levels: list[Mapping[str, Any]]) -> "HierarchyLevels":
        """Parse the seed's ``levels: [{name: full, messages: 5}, ...]`` list."""
        values: dict[str, Any] = {}
        for item in levels:
            name = item.get("name")
            if name not in ("full", "compressed", "summary"):
                raise ValueError(f"unknown hierarchy level {name!r} (expected full, compressed, summary)")
            values[name] = item.get("messages")
        return cls(**values)


@dataclass(frozen=True, slots=True)
class ContextConfig:
    """How a context window is assembled. Units are tokens unless noted.

    Fields:
        strategy: ``"sliding_window" | "summary" | "hierarchical"``.
        max_tokens: total window of the model call, prompt + response (seed 8000).
        reserve_tokens: kept free for the response (seed 2000); < ``max_tokens``.
        window_size: sliding window: max number of history messages (seed 10);
            ``None`` = only the token budget limits it.
        summary_frequency: summarize every N messages (seed 10): a level-1
            summary covers exactly this many consecutive messages.
        summary_length: max tokens of one summary's text (seed 200).
        keep_recent: summary strategy: the newest K history messages are never
            summarized (so the last exchange is always verbatim).
        levels: hierarchical tiers, see :class:`HierarchyLevels`.
        compression_ratio: hierarchical compressed tier: target size of a
            compressed message relative to the original (seed 0.5), in (0, 1].
        rollup_factor: this many consecutive level-k summaries are folded into
            one level-(k+1) summary ("running summaries") once the summaries
            outgrow ``summary_share``, >= 2.
        summary_share: fraction of the budget for summaries: assembly
            guarantees them up to this share of the free budget before recent
            messages take the rest, and roll-ups start when the shown summaries
            exceed this share of ``max_tokens - reserve_tokens``; in [0, 1].
        max_pending_chunks: cap on how many not-yet-summarized chunks one turn
            may need (bounds the tail fetched from storage and the summarizer
            calls when a long thread first switches to a summarizing strategy);
            older pending messages beyond the cap are skipped, never summarized.

    Raises:
        ContextBudgetError: ``reserve_tokens >= max_tokens``.
        ValueError: any other invalid value.
    """

    strategy: StrategyName = "sliding_window"
    max_tokens: int = 8000
    reserve_tokens: int = 2000
    window_size: int | None = 10
    summary_frequency: int = 10
    summary_length: int = 200
    keep_recent: int = 4
    levels: HierarchyLevels = field(default_factory=HierarchyLevels)
    compression_ratio: float = 0.5
    rollup_factor: int = 4
    summary_share: float = 0.25
    max_pending_chunks: int = 20

    def __post_init__(self) -> None:
        if self.strategy not in get_args(StrategyName):
            raise ValueError(f"strategy must be one of {get_args(StrategyName)}, got {self.strategy!r}")
        _pos("max_tokens", self.max_tokens)
        _pos("reserve_tokens", self.reserve_tokens, allow_zero=True)
        if self.reserve_tokens >= self.max_tokens:
            raise ContextBudgetError(
                f"reserve_tokens ({self.reserve_tokens}) must be smaller than max_tokens ({self.max_tokens})"
            )
        _pos("window_size", self.window_size, allow_none=True)
        _pos("summary_frequency", self.summary_frequency)
        _pos("summary_length", self.summary_length)
        _pos("keep_recent", self.keep_recent, allow_zero=True)
        _pos("rollup_factor", self.rollup_factor)
        if self.rollup_factor < 2:
            raise ValueError(f"rollup_factor must be >= 2, got {self.rollup_factor}")
        _pos("max_pending_chunks", self.max_pending_chunks)
        if not isinstance(self.levels, HierarchyLevels):
            raise ValueError("levels must be a HierarchyLevels")
        if not (0.0 < float(self.compression_ratio) <= 1.0):
            raise ValueError(f"compression_ratio must be in (0, 1], got {self.compression_ratio}")
        if not (0.0 <= float(self.summary_share) <= 1.0):
            raise ValueError(f"summary_share must be in [0, 1], got {self.summary_share}")

    @property
    def prompt_budget(self) -> int:
        """``max_tokens - reserve_tokens``: tokens available to the prompt."""
        return self.max_tokens - self.reserve_tokens

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ContextConfig":
        """Build from a seed-style mapping.

        Accepts ``subtechnique``/``strategy`` (``window`` is an alias of
        ``sliding_window``), the seed's ``levels`` list, and the seed's
        sliding-window *session* form ``{subtechnique: sliding_window,
        window_size: N, include_summary: true}``, which becomes the ``summary``
        strategy keeping the newest N messages verbatim. Unknown keys raise
        ``ValueError``.
        """
        d = dict(data)
        strategy = d.pop("subtechnique", None) or d.pop("strategy", None) or "sliding_window"
        d.pop("strategy", None)
        if strategy == "window":
            strategy = "sliding_window"
        if d.pop("include_summary", False) and strategy == "sliding_window":
            strategy = "summary"
            if d.get("window_size") is not None:
                d.setdefault("keep_recent", d["window_size"])
        if isinstance(d.get("levels"), list):
            d["levels"] = HierarchyLevels.from_list(d["levels"])
        elif isinstance(d.get("levels"), Mapping):
            d["levels"] = HierarchyLevels(**d["levels"])
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown context option(s): {sorted(unknown)}")
        return cls(strategy=strategy, **d)


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """Session mode and storage limits (seed "Session Management").

    Fields:
        mode: ``"stateless"`` (no history), ``"memory"`` (in-process
            :class:`~bot.sessions.memory.MemorySessionStore`) or
            ``"persistent"`` (the SQL store in ``bot/store``).
        timeout: seconds of inactivity after which a ``memory`` session expires
            (seed 3600); ``None`` = never.
        max_messages: ``memory`` mode keeps at most this many messages per
            session, dropping the oldest (seed 100); ``None`` = unlimited.
        max_tokens: ``memory`` mode keeps at most this many message tokens per
            session (seed 8000); ``None`` = unlimited.
        context: how the context window is assembled.

    Raises:
        ValueError: invalid mode or limits.
    """

    mode: SessionMode = "memory"
    timeout: float | None = 3600.0
    max_messages: int | None = 100
    max_tokens: int | None = 8000
    context: ContextConfig = field(default_factory=ContextConfig)

    def __post_init__(self) -> None:
        if self.mode not in get_args(SessionMode):
            raise ValueError(f"mode must be one of {get_args(SessionMode)}, got {self.mode!r}")
        if self.timeout is not None and (isinstance(self.timeout, bool) or not self.timeout > 0):
            raise ValueError(f"timeout must be > 0 seconds or None, got {self.timeout!r}")
        _pos("max_messages", self.max_messages, allow_none=True)
        _pos("max_tokens", self.max_tokens, allow_none=True)
        if not isinstance(self.context, ContextConfig):
            raise ValueError("context must be a ContextConfig")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SessionConfig":
        """Build from a seed-style mapping: ``subtechnique``/``mode``,
        ``timeout``, ``max_messages``, ``max_tokens``, ``storage`` and an optional
        nested ``context`` mapping (see :meth:`ContextConfig.from_dict`).

        ``storage: database`` selects ``persistent``; ``storage: memory`` is the
        in-process store; ``redis`` is not supported (``ValueError``). Keys the
        seed uses that have no effect here (``session_id``, ``key_prefix``,
        ``compression``, ``summarization``, ``database_url``, ``table``) are
        ignored; other unknown keys raise ``ValueError``.
        """
        d = dict(data)
        mode = d.pop("subtechnique", None) or d.pop("mode", None) or "memory"
        d.pop("mode", None)
        storage = d.pop("storage", None)
        if storage == "database":
            mode = "persistent"
        elif storage not in (None, "memory"):
            raise ValueError(f"unsupported session storage {storage!r} (use memory or database)")
        for ignored in ("session_id", "key_prefix", "compression", "summarization", "database_url", "table", "redis_url"):
            d.pop(ignored, None)
        ctx = d.pop("context", None)
        context = ctx if isinstance(ctx, ContextConfig) else ContextConfig.from_dict(ctx or {})
        known = {f.name for f in fields(cls)} - {"mode", "context"}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown session option(s): {sorted(unknown)}")
        return cls(mode=mode, context=context, **d)
