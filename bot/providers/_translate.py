"""Shared helpers for turning vendor errors into :mod:`bot.providers.errors` values."""

from __future__ import annotations

import re
from collections.abc import Mapping

from ._redact import redact
from .errors import ContextLengthError

_CONTEXT_HINT = re.compile(
    r"context[ _]length|context window|context limit|context size|prompt is too long|maximum context",
    re.IGNORECASE,
)
# "This model's maximum context length is 128000 tokens. However, your messages resulted in
#  130532 tokens" (OpenAI, vLLM) / "... However, you requested 8200 tokens (...)"
_OPENAI_LIMIT = re.compile(r"maximum context length is (\d+)", re.IGNORECASE)
_OPENAI_REQUESTED = re.compile(r"(?:resulted in|you requested|requested)\s+(\d+)\s+tokens", re.IGNORECASE)
# vLLM >= 0.6: "... maximum context length is 4096 tokens and your request has 3500 input tokens (1000 > 4096 - 3500)"
_VLLM_ARITH = re.compile(r"\((\d+)\s*>\s*(\d+)\s*-\s*(\d+)\)")
# Anthropic: "prompt is too long: 208310 tokens > 200000 maximum"
_ANTHROPIC_TOO_LONG = re.compile(r"prompt is too long:\s*(\d+)\s*tokens?\s*>\s*(\d+)", re.IGNORECASE)
# Anthropic: "input length and `max_tokens` exceed context limit: 198000 + 8192 > 200000"
_ANTHROPIC_SUM = re.compile(r"exceed context limit:\s*(\d+)\s*\+\s*(\d+)\s*>\s*(\d+)", re.IGNORECASE)


def looks_like_context_length(message: str, *, code: str | None = None, error_type: str | None = None) -> bool:
    """Whether a 400-class error means "prompt exceeds the context window".

    OpenAI sets ``code: "context_length_exceeded"``; llama.cpp ``type:
    "exceed_context_size_error"``; Anthropic, vLLM and others only say it in the message.
    """
    if code == "context_length_exceeded" or error_type == "exceed_context_size_error":
        return True
    return bool(_CONTEXT_HINT.search(message or ""))


def parse_context_numbers(message: str, body: object = None) -> tuple[int | None, int | None]:
    """``(limit_tokens, requested_tokens)`` stated by the server, each ``None`` if absent.

    Understands the OpenAI/vLLM, Anthropic and llama.cpp (``n_ctx`` / ``n_prompt_tokens``
    fields in the error body) wordings listed in this module.
    """
    if isinstance(body, Mapping):
        n_ctx, n_prompt = body.get("n_ctx"), body.get("n_prompt_tokens")
        if isinstance(n_ctx, int) and isinstance(n_prompt, int):
            return n_ctx, n_prompt
    message = message or ""
    if m := _ANTHROPIC_TOO_LONG.search(message):
        return int(m.group(2)), int(m.group(1))
    if m := _ANTHROPIC_SUM.search(message):
        return int(m.group(3)), int(m.group(1)) + int(m.group(2))
    if m := _VLLM_ARITH.search(message):
        requested_output, limit, prompt = (int(g) for g in m.groups())
        return limit, prompt + requested_output
    limit = _OPENAI_LIMIT.search(message)
    requested = _OPENAI_REQUESTED.search(message)
    return (
        int(limit.group(1)) if limit else None,
        int(requested.group(1)) if requested else None,
    )


def context_length_error(
    *, provider: str, model: str, message: str, body: object, secrets: tuple[str | None, ...]
) -> ContextLengthError:
    """Build a :class:`ContextLengthError` whose message says by how much the prompt is over, when known."""
    limit, requested = parse_context_numbers(message, body)
    if limit is not None and requested is not None:
        text = (
            f"prompt too long for provider {provider!r} (model {model}): {requested} tokens requested, "
            f"limit {limit} — over by {requested - limit} tokens; shorten the conversation or lower max_tokens"
        )
    else:
        text = (
            f"prompt too long for provider {provider!r} (model {model}); the server did not say by how much: "
            f"{redact(message, secrets)}"
        )
    return ContextLengthError(text, provider=provider, model=model, limit_tokens=limit, requested_tokens=requested)


def error_field(body: object, key: str) -> str | None:
    """``body[key]`` or ``body["error"][key]`` as a string, if present (vendor error bodies nest differently)."""
    if isinstance(body, Mapping):
        value = body.get(key)
        if value is None and isinstance(body.get("error"), Mapping):
            value = body["error"].get(key)
        if value is not None:
            return str(value)
    return None
