"""Summarizers: the :class:`Summarizer` protocol, a model-free extractive
default, and a fallback wrapper for abstractive (LLM) summarizers.

The extractive method follows the seed's "Compression methods → Extractive —
select important sentences" (/work/shared/seeds/001_087264de11ee0cf8.txt,
"Compression-Based Context"): sentences are scored with TF-IDF over the span
(each sentence is a "document"), weighted by position and length, the best
ones are kept within the token limit and emitted in their original order.
No model or data download is involved.

The pure functions (:func:`extractive_summary`, :func:`compress_text`) are
sync and CPU-bound; :class:`ExtractiveSummarizer` runs them in
``asyncio.to_thread``.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import Awaitable, Callable, Protocol, Sequence, runtime_checkable

from .records import MemoryMessage
from .tokens import TokenCounter

__all__ = [
    "Summarizer",
    "SummarizeFn",
    "ExtractiveSummarizer",
    "CallableSummarizer",
    "FallbackSummarizer",
    "as_summarizer",
    "summarize_with_fallback",
    "extractive_summary",
    "compress_text",
    "split_sentences",
    "SUMMARY_AUTHOR",
]

log = logging.getLogger(__name__)


@runtime_checkable
class Summarizer(Protocol):
    """Anything that can summarize a span of messages.

    ``summarize(messages, max_tokens)`` receives the messages of one span in
    chronological order (for roll-ups: the lower-level summaries, presented as
    ``role="system", author="summary"`` messages) and returns plain text of at
    most ``max_tokens`` tokens. Longer results are truncated by the caller
    (:func:`bot.sessions.context.summarize_span`). It may raise; wrap it in
    :class:`FallbackSummarizer` to fall back to the extractive method.
    """

    async def summarize(self, messages: Sequence[MemoryMessage], max_tokens: int) -> str: ...


SummarizeFn = Callable[[Sequence[MemoryMessage], int], Awaitable[str]]
"""An async callable ``(messages, max_tokens) -> str`` usable as a summarizer
(e.g. a closure over an LLM provider)."""

_SENT_SPLIT = re.compile(r"(?<=[.!?])\s+(?=\S)|\n+")
_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)?", re.UNICODE)
_STOP = frozenset(
    """a an the and or but if then so of to in on at by for with from as is are was were be been being it its
    this that these those i you he she we they me him her us them my your our their what which who whom whose
    do does did doing have has had having not no yes can could would should will shall may might must just
    about into over than too very also there here when where why how all any some such only own same s t
    i'm it's don't ok okay thanks thank please lol hi hello hey""".split()
)


SUMMARY_AUTHOR = "summary"
"""``author`` of the pseudo-messages that carry lower-level summaries into a
roll-up; :func:`extractive_summary` does not prefix their lines with it."""


def split_sentences(text: str) -> list[str]:
    """Split text into sentences at ``.``/``!``/``?`` + whitespace and at line
    breaks; empty pieces are dropped. Code-ish lines stay whole."""
    return [s.strip() for s in _SENT_SPLIT.split(text) if s and s.strip()]


def _terms(sentence: str) -> list[str]:
    return [w for w in (m.group(0).lower() for m in _WORD.finditer(sentence)) if len(w) > 1 and w not in _STOP]


@dataclass(frozen=True, slots=True)
class _Sentence:
    msg: int  # index of the message in the span
    pos: int  # index of the sentence within its message
    text: str
    terms: frozenset[str]
    score: float


def _score_sentences(units: Sequence[Sequence[str]], roles: Sequence[str] | None = None) -> list[_Sentence]:
    """Score every sentence of every unit (message) of a span.

    score = sum over distinct terms t of tf_span(t) * idf(t), divided by
    sqrt(#terms) (dense sentences win), times weights: first sentence of a
    message x1.25, questions x1.15, later messages up to x1.2 (recency),
    fewer than 3 content terms x0.4 (not for questions), more than 60 terms x0.8.
    idf(t) = ln((1 + N) / (1 + df(t))) + 1 with N = number of sentences.
    """
    raw: list[tuple[int, int, str, list[str]]] = []
    for mi, sentences in enumerate(units):
        for si, s in enumerate(sentences):
            raw.append((mi, si, s, _terms(s)))
    n = len(raw)
    if n == 0:
        return []
    df: Counter[str] = Counter()
    tf: Counter[str] = Counter()
    for _, _, _, terms in raw:
        tf.update(terms)
        df.update(set(terms))
    idf = {t: math.log((1 + n) / (1 + c)) + 1.0 for t, c in df.items()}
    n_units = max(1, len(units) - 1)
    out: list[_Sentence] = []
    for mi, si, s, terms in raw:
        uniq = set(terms)
        if uniq:
            base = sum(tf[t] * idf[t] for t in uniq) / math.sqrt(len(terms))
        else:
            base = 0.1
        w = 1.0
        if si == 0:
            w *= 1.25
        if s.endswith("?"):
            w *= 1.15
        w *= 1.0 + 0.2 * (mi / n_units)
        if len(terms) < 3 and not s.endswith("?"):
            w *= 0.4
        elif len(terms) > 60:
            w *= 0.8
        if roles is not None and roles[mi] == "system":
            w *= 1.1
        out.append(_Sentence(mi, si, s, frozenset(uniq), base * w))
    return out


def _jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    if not a or not b:
        return 0.0
    return len(a & b) / len(a | b)


def _select(
    scored: list[_Sentence],
    render: Callable[[list[_Sentence]], str],
    counter: TokenCounter,
    max_tokens: int,
) -> str:
    """Greedy best-first selection under an exact token limit on ``render(...)``."""
    chosen: list[_Sentence] = []
    order = sorted(scored, key=lambda s: (-s.score, s.msg, s.pos))
    # cheap estimate first (sum of sentence tokens + 2 per sentence for joins/prefixes)
    est = 0
    for s in order:
        if any(_jaccard(s.terms, c.terms) >= 0.7 for c in chosen):
            continue
        cost = counter.count(s.text) + 2
        if est + cost > max_tokens * 1.1 + 4:
            continue
        chosen.append(s)
        est += cost
    # exact: drop the lowest-scored until the rendering fits
    chosen.sort(key=lambda s: (s.msg, s.pos))
    text = render(chosen)
    while chosen and counter.count(text) > max_tokens:
        worst = min(range(len(chosen)), key=lambda i: (chosen[i].score, -i))
        del chosen[worst]
        text = render(chosen)
    if not chosen and order:
        # every sentence alone is too long: truncate the best one visibly
        text = counter.truncate(render([order[0]]), max_tokens)
    return text


def extractive_summary(messages: Sequence[MemoryMessage], max_tokens: int, counter: TokenCounter) -> str:
    """Extractive summary of a span of messages, at most ``max_tokens`` tokens.

    Output: one line per contributing message, ``"author: sentence sentence"``,
    in chronological order (sentences keep their order too); lines of roll-up
    inputs (``author == SUMMARY_AUTHOR``) are not prefixed again. Returns ``""``
    for an empty span or ``max_tokens <= 0``. Pure, deterministic, CPU-bound
    (O(total words)); call via ``asyncio.to_thread`` for large spans.
    """
    if max_tokens <= 0 or not messages:
        return ""
    units = [split_sentences(m.text) for m in messages]
    scored = _score_sentences(units, [m.role for m in messages])

    def render(sel: list[_Sentence]) -> str:
        lines: list[str] = []
        cur = -1
        for s in sel:
            if s.msg != cur:
                cur = s.msg
                m = messages[s.msg]
                if m.author == SUMMARY_AUTHOR and m.role == "system":
                    lines.append(s.text)  # a summary line already carries "author: ..."
                else:
                    lines.append(f"{m.author or m.role}: {s.text}")
            else:
                lines[-1] += " " + s.text
        return "\n".join(lines)

    return _select(scored, render, counter, max_tokens)


def compress_text(text: str, max_tokens: int, counter: TokenCounter) -> str:
    """Compress one message to at most ``max_tokens`` tokens by keeping its
    most informative sentences (same scoring as :func:`extractive_summary`,
    sentences of the message as the corpus). Text that fits is returned
    unchanged; a single over-long sentence is truncated with the
    ``…[truncated N tokens]`` marker. Pure and deterministic."""
    if max_tokens <= 0:
        return ""
    if counter.count(text) <= max_tokens:
        return text
    sentences = split_sentences(text)
    scored = _score_sentences([sentences])
    return _select(scored, lambda sel: " ".join(s.text for s in sel), counter, max_tokens)


class ExtractiveSummarizer:
    """Default :class:`Summarizer`: :func:`extractive_summary` in a worker thread.

    Args:
        counter: token counter used to respect ``max_tokens``
            (default: a ``cl100k_base`` :class:`TokenCounter`).
    """

    def __init__(self, counter: TokenCounter | None = None) -> None:
        self.counter = counter or TokenCounter()

    def summarize_sync(self, messages: Sequence[MemoryMessage], max_tokens: int) -> str:
        """Synchronous variant, see :func:`extractive_summary`."""
        return extractive_summary(messages, max_tokens, self.counter)

    async def summarize(self, messages: Sequence[MemoryMessage], max_tokens: int) -> str:
        """Summarize ``messages`` in at most ``max_tokens`` tokens (never raises
        for ordinary text)."""
        return await asyncio.to_thread(extractive_summary, list(messages), max_tokens, self.counter)


class CallableSummarizer:
    """Adapts an async callable ``(messages, max_tokens) -> str`` (e.g. an LLM
    provider call) to the :class:`Summarizer` protocol."""

    def __init__(self, fn: SummarizeFn) -> None:
        if not callable(fn):
            raise TypeError(f"expected an async callable, got {fn!r}")
        self.fn = fn

    async def summarize(self, messages: Sequence[MemoryMessage], max_tokens: int) -> str:
        result = self.fn(messages, max_tokens)
        if inspect.isawaitable(result):
            result = await result
        if not isinstance(result, str):
            raise TypeError(f"summarizer returned {type(result).__name__}, expected str")
        return result


def as_summarizer(obj: Summarizer | SummarizeFn | None, counter: TokenCounter | None = None) -> Summarizer:
    """Normalize ``obj`` to a :class:`Summarizer`: ``None`` → extractive,
    an object with ``summarize`` → itself, a callable → :class:`CallableSummarizer`.

    Raises:
        TypeError: anything else.
    """
    if obj is None:
        return ExtractiveSummarizer(counter)
    if hasattr(obj, "summarize"):
        return obj  # type: ignore[return-value]
    if callable(obj):
        return CallableSummarizer(obj)
    raise TypeError(f"not a summarizer: {obj!r}")


async def summarize_with_fallback(
    summarizer: Summarizer | SummarizeFn,
    messages: Sequence[MemoryMessage],
    max_tokens: int,
    *,
    fallback: Summarizer | None = None,
    timeout: float | None = None,
    logger: logging.Logger | None = None,
) -> str:
    """Run ``summarizer``; on any exception, timeout (``timeout`` seconds) or
    blank result, log a warning and return the ``fallback`` (default:
    :class:`ExtractiveSummarizer`) result instead. Cancellation propagates."""
    primary = as_summarizer(summarizer)
    lg = logger or log
    try:
        coro = primary.summarize(messages, max_tokens)
        text = await (asyncio.wait_for(coro, timeout) if timeout is not None else coro)
        if not isinstance(text, str) or not text.strip():
            raise ValueError("summarizer returned an empty summary")
        return text
    except Exception as exc:  # noqa: BLE001 - any failure falls back
        span = f"{messages[0].id}-{messages[-1].id}" if messages else "empty"
        lg.warning(
            "summarizer %s failed for span %s (%s: %s); falling back to extractive summary",
            type(primary).__name__,
            span,
            type(exc).__name__,
            exc,
        )
        fb = fallback or ExtractiveSummarizer()
        return await fb.summarize(messages, max_tokens)


class FallbackSummarizer:
    """A :class:`Summarizer` that tries ``primary`` (e.g. an LLM) and falls back
    to ``fallback`` (default :class:`ExtractiveSummarizer`) on failure, timeout
    or empty output, logging a warning each time. See
    :func:`summarize_with_fallback`.

    Attributes:
        failures: number of times the fallback was used.
    """

    def __init__(
        self,
        primary: Summarizer | SummarizeFn,
        fallback: Summarizer | None = None,
        *,
        timeout: float | None = None,
        counter: TokenCounter | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        self.primary = as_summarizer(primary)
        self.fallback = fallback or ExtractiveSummarizer(counter)
        self.timeout = timeout
        self.logger = logger or log
        self.failures = 0

    async def summarize(self, messages: Sequence[MemoryMessage], max_tokens: int) -> str:
        used_fallback = False

        class _Marking:
            def __init__(self, inner: Summarizer) -> None:
                self.inner = inner

            async def summarize(self, m: Sequence[MemoryMessage], n: int) -> str:
                nonlocal used_fallback
                used_fallback = True
                return await self.inner.summarize(m, n)

        text = await summarize_with_fallback(
            self.primary,
            messages,
            max_tokens,
            fallback=_Marking(self.fallback),
            timeout=self.timeout,
            logger=self.logger,
        )
        if used_fallback:
            self.failures += 1
        return text
