"""Conversational session memory: the pure, storage-independent core.

* :mod:`.tokens` — :class:`TokenCounter` (tiktoken per model, offline fallback).
* :mod:`.records` — :class:`MemoryMessage`, :class:`SummaryRecord`, :class:`SessionKey`.
* :mod:`.config` — :class:`SessionConfig`, :class:`ContextConfig`, :class:`ContextBudgetError`.
* :mod:`.summarize` — :class:`Summarizer` protocol, extractive default, fallback wrapper.
* :mod:`.context` — context strategies (sliding_window / summary / hierarchical),
  :class:`ContextWindow`, :func:`ensure_summaries`, :func:`render_breakdown`.
* :mod:`.store` — async :class:`SessionStore` protocol, :class:`MemorySessionStore`,
  :class:`NullSessionStore`, :func:`build_context`.

Modes and strategies follow /work/shared/seeds/001_087264de11ee0cf8.txt
("Session Management", "Context Management").
"""

from .config import ContextBudgetError, ContextConfig, HierarchyLevels, SessionConfig, SessionMode, StrategyName
from .context import (
    ContextStrategy,
    ContextWindow,
    HierarchicalStrategy,
    PromptMessage,
    SlidingWindowStrategy,
    SummarySpan,
    SummaryStrategy,
    TailRequest,
    TokenBreakdown,
    ensure_summaries,
    make_strategy,
    render_breakdown,
    summarize_span,
    summary_cover,
)
from .records import MemoryMessage, MessageDraft, Role, SessionKey, SummaryRecord
from .store import MemorySessionStore, NullSessionStore, SessionStore, build_context, store_for
from .summarize import (
    CallableSummarizer,
    ExtractiveSummarizer,
    FallbackSummarizer,
    Summarizer,
    as_summarizer,
    compress_text,
    extractive_summary,
    summarize_with_fallback,
)
from .tokens import TokenCounter, encoding_for_model

__all__ = [
    "CallableSummarizer",
    "ContextBudgetError",
    "ContextConfig",
    "ContextStrategy",
    "ContextWindow",
    "ExtractiveSummarizer",
    "FallbackSummarizer",
    "HierarchicalStrategy",
    "HierarchyLevels",
    "MemoryMessage",
    "MemorySessionStore",
    "MessageDraft",
    "NullSessionStore",
    "PromptMessage",
    "Role",
    "SessionConfig",
    "SessionKey",
    "SessionMode",
    "SessionStore",
    "SlidingWindowStrategy",
    "StrategyName",
    "Summarizer",
    "SummaryRecord",
    "SummarySpan",
    "SummaryStrategy",
    "TailRequest",
    "TokenBreakdown",
    "TokenCounter",
    "as_summarizer",
    "build_context",
    "compress_text",
    "encoding_for_model",
    "ensure_summaries",
    "extractive_summary",
    "make_strategy",
    "render_breakdown",
    "store_for",
    "summarize_span",
    "summarize_with_fallback",
    "summary_cover",
]
