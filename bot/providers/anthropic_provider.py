"""Anthropic Messages provider (official ``anthropic`` SDK)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any, ClassVar

import anthropic
import httpx2

from ._redact import redact, safe_url
from ._translate import context_length_error, looks_like_context_length
from .base import DEFAULT_MAX_TOKENS, ResilientProvider, split_system
from .errors import (
    ProviderAuthError,
    ProviderConnectionError,
    ProviderError,
    ProviderNotConfigured,
    ProviderRequestError,
    ProviderServerError,
    RateLimited,
)
from .resilience import CircuitBreaker, Clock, RetryPolicy, Sleep, parse_retry_after
from .types import ChatMessage, StreamEnd, StreamEvent, TextDelta, Usage, normalise_anthropic_stop

ANTHROPIC_BASE_URL = "https://api.anthropic.com"

LEADING_USER_PLACEHOLDER = "(earlier conversation omitted)"
"""User turn inserted when a (trimmed) history starts with an assistant turn, so the
request keeps the user/assistant alternation the Messages API is built around."""

_TRANSIENT_TYPES = frozenset({"overloaded_error", "api_error", "rate_limit_error", "timeout_error"})


def _input_total(usage: Mapping[str, Any]) -> int:
    """Total input tokens: ``input_tokens + cache_creation_input_tokens + cache_read_input_tokens``
    (Anthropic's ``Usage`` docs: "Total input tokens in a request is the summation" of the three)."""
    return sum(int(usage.get(k) or 0) for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"))


def to_anthropic_messages(turns: list[ChatMessage]) -> list[dict[str, str]]:
    """Turn user/assistant :class:`ChatMessage` s into Messages API ``messages``.

    Rules (Messages API reference, ``messages`` parameter): turns alternate
    ``user``/``assistant`` — consecutive same-role turns are merged here (joined by a
    blank line) rather than left for the server to combine; turns with blank content
    are dropped (the API rejects empty text content); a leading assistant turn gets
    :data:`LEADING_USER_PLACEHOLDER` before it; a final assistant turn is kept as
    *prefill* with trailing whitespace stripped (the API rejects prefill ending in
    whitespace). Raises ``ValueError`` if nothing is left.
    """
    merged: list[dict[str, str]] = []
    for m in turns:
        if not m.content.strip():
            continue
        if merged and merged[-1]["role"] == m.role:
            merged[-1]["content"] += "\n\n" + m.content
        else:
            merged.append({"role": m.role, "content": m.content})
    if not merged:
        raise ValueError("messages must contain at least one non-empty user or assistant turn")
    if merged[0]["role"] == "assistant":
        merged.insert(0, {"role": "user", "content": LEADING_USER_PLACEHOLDER})
    if merged[-1]["role"] == "assistant":
        merged[-1]["content"] = merged[-1]["content"].rstrip()
    return merged


class AnthropicProvider(ResilientProvider):
    """Streams Claude replies through ``anthropic.AsyncAnthropic``.

    Args (keyword-only): as :class:`~bot.providers.openai_provider.OpenAIProvider`,
    except ``api_key`` is required (:class:`ProviderNotConfigured` otherwise),
    ``base_url`` defaults to ``https://api.anthropic.com`` (passed explicitly, so
    ``ANTHROPIC_BASE_URL`` and on-disk SDK profiles cannot redirect it), and
    ``http_client`` must be an ``httpx2.AsyncClient``: anthropic SDK 2.x is built on
    ``httpx2`` and rejects ``httpx`` objects (``_reject_httpx_object`` in its
    ``_base_client.py``), so a ``TypeError`` is raised here first with that advice.

    The system prompt goes in the ``system`` parameter, never in ``messages``
    (Messages API has no system role). Usage: ``input_tokens`` (plus cache
    creation/read tokens) from ``message_start``, cumulative ``output_tokens`` from
    the last ``message_delta``. A stream is complete once ``message_delta`` has
    carried the ``stop_reason``; ending before that raises ``ProviderConnectionError``.
    """

    kind: ClassVar[str] = "anthropic"

    def __init__(
        self,
        *,
        name: str,
        model: str,
        api_key: str | None,
        api_key_env: str | None = "ANTHROPIC_API_KEY",
        base_url: str | None = None,
        http_client: httpx2.AsyncClient | None = None,
        timeout_s: float = 60.0,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        retry: RetryPolicy | None = None,
        breaker: CircuitBreaker | None = None,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = time.monotonic,
    ) -> None:
        super().__init__(
            name=name,
            model=model,
            max_tokens=max_tokens,
            timeout_s=timeout_s,
            retry=retry,
            breaker=breaker,
            sleep=sleep,
            clock=clock,
        )
        if not api_key:
            env = api_key_env or "ANTHROPIC_API_KEY"
            raise ProviderNotConfigured(
                f"{env} is not set (provider {name!r}); set it, or configure a local model instead, e.g. "
                f"[providers.local] kind = \"openai_compatible\" with base_url = \"http://localhost:11434/v1\"",
                provider=name,
                setting=env,
            )
        if http_client is not None and not isinstance(http_client, httpx2.AsyncClient):
            raise TypeError(
                "AnthropicProvider http_client must be an httpx2.AsyncClient: the anthropic SDK "
                f"{anthropic.__version__} uses httpx2 and rejects httpx.{type(http_client).__name__}"
            )
        self.kind_label = "anthropic"
        self.api_key_env = api_key_env
        self.base_url = base_url or ANTHROPIC_BASE_URL
        self._secrets: tuple[str | None, ...] = (api_key,)
        self._owns_http_client = http_client is None
        self._client = anthropic.AsyncAnthropic(
            api_key=api_key,
            base_url=self.base_url,
            timeout=timeout_s,
            max_retries=0,
            http_client=http_client,
        )

    def __repr__(self) -> str:
        return (
            f"AnthropicProvider(name={self.name!r}, model={self.model!r}, base_url={safe_url(self.base_url)!r})"
        )

    async def aclose(self) -> None:
        """Close the SDK client's own HTTP pool (an injected ``http_client`` is left open)."""
        if self._owns_http_client:
            await self._client.close()

    async def _attempt(
        self, messages: tuple[ChatMessage, ...], *, model: str, max_tokens: int, system: str | None
    ) -> AsyncIterator[StreamEvent]:
        system_prompt, turns = split_system(messages, system)
        payload = to_anthropic_messages(turns)
        input_tokens = 0
        output_tokens = 0
        cache = (0, 0)  # (read, write) prompt-cache tokens, part of input_tokens
        usage_seen = False
        stop_reason: str | None = None
        served_model: str | None = None
        body: dict[str, Any] = {"model": model, "max_tokens": max_tokens, "messages": payload, "stream": True}
        if system_prompt:
            body["system"] = system_prompt
        error: ProviderError | None = None
        try:
            # Same request as `messages.create(stream=True, ...)`, through the SDK's `client.post` with
            # event type `object`: auth, headers, timeouts, SSE decoding, `ping` skipping and
            # `event: error` → APIStatusError stay the SDK's; events stay dicts instead of pydantic
            # models (cheaper per token; see bench/providers.py). This leans on client.post/stream_cls,
            # which is why the SDK major is pinned; tests/providers/test_sdk_seams.py fails loudly
            # when a new SDK changes them.
            stream = await self._client.post(
                "/v1/messages", cast_to=object, body=body, stream=True, stream_cls=anthropic.AsyncStream[object]
            )
            async with stream:
                while True:
                    # anext() on the stream object itself: `async for` would go through
                    # AsyncStream.__aiter__, one more async-generator hop per event.
                    try:
                        event = await anext(stream)
                    except StopAsyncIteration:
                        break
                    if not isinstance(event, dict):
                        continue
                    etype = event.get("type")
                    if etype == "content_block_delta":
                        delta = event.get("delta") or {}
                        if delta.get("type") == "text_delta" and delta.get("text"):
                            yield TextDelta(delta["text"])
                    elif etype == "message_start":
                        msg = event.get("message") or {}
                        served_model = msg.get("model") or served_model
                        u = msg.get("usage")
                        if isinstance(u, dict):
                            usage_seen = True
                            input_tokens = _input_total(u)
                            cache = (int(u.get("cache_read_input_tokens") or 0), int(u.get("cache_creation_input_tokens") or 0))
                            output_tokens = int(u.get("output_tokens") or 0)
                    elif etype == "message_delta":
                        delta = event.get("delta") or {}
                        stop_reason = delta.get("stop_reason") or stop_reason or "end_turn"
                        u = event.get("usage")
                        if isinstance(u, dict):
                            usage_seen = True
                            if u.get("output_tokens") is not None:  # cumulative
                                output_tokens = int(u["output_tokens"])
                            if u.get("input_tokens") is not None:  # cumulative when present
                                input_tokens = _input_total(u)
        except anthropic.APIError as exc:
            error = self._translate(exc, model)
        except (*self.HTTP_TIMEOUTS, *self.HTTP_TRANSPORT_ERRORS) as exc:
            # anthropic's AsyncStream does not wrap mid-body transport errors (e.g.
            # RemoteProtocolError "incomplete chunked read") in APIConnectionError.
            error = self._http_error(exc)
        if error is not None:
            # Raised outside the except block so the SDK exception is neither __cause__ nor
            # __context__: it holds the request (Authorization header) and the raw body.
            raise error
        if stop_reason is None:
            raise ProviderConnectionError(
                f"provider {self.name!r}: stream ended before message_delta/stop_reason", provider=self.name
            )
        yield StreamEnd(
            usage=Usage(input_tokens=input_tokens, output_tokens=output_tokens, cache_read_tokens=cache[0], cache_write_tokens=cache[1]),
            model=served_model or model,
            finish_reason=normalise_anthropic_stop(stop_reason),
            raw_finish_reason=stop_reason,
            provider=self.name,
            usage_reported=usage_seen,
        )

    def _translate(self, exc: anthropic.APIError, model: str) -> ProviderError:
        """Map an SDK exception to a :class:`ProviderError` (error types per docs.anthropic.com/en/api/errors)."""
        name = self.name
        if isinstance(exc, (anthropic.APITimeoutError, anthropic.APIConnectionError)):  # a timeout is a connection error too
            return self._sdk_network_error(timed_out=isinstance(exc, anthropic.APITimeoutError), base_url=self.base_url)
        body = exc.body
        # Anthropic error bodies: {"type": "error", "error": {"type": ..., "message": ...}, "request_id": ...}
        inner = body.get("error") if isinstance(body, Mapping) else None
        etype = inner.get("type") if isinstance(inner, Mapping) else None
        message = (inner.get("message") if isinstance(inner, Mapping) else None) or exc.message or ""
        message = str(message)
        detail = redact(message, self._secrets)
        status = exc.status_code if isinstance(exc, anthropic.APIStatusError) else None
        if status == 200:
            status = None  # an `event: error` inside a 200 stream; classify by error.type below

        if status in (401, 403) or etype in ("authentication_error", "permission_error"):
            code = status or (401 if etype == "authentication_error" else 403)
            if code == 401:
                text = (
                    f"authentication failed for provider {name!r} (HTTP 401): the API key from "
                    f"{self.api_key_env or 'the configured variable'} was rejected"
                )
            else:
                text = (
                    f"permission denied for provider {name!r} (HTTP 403): the API key from "
                    f"{self.api_key_env or 'the configured variable'} may not use model {model!r}"
                )
            return ProviderAuthError(text, provider=name, status_code=code, api_key_env=self.api_key_env)
        if (status in (400, 413) or etype == "invalid_request_error") and looks_like_context_length(message):
            return context_length_error(provider=name, model=model, message=message, body=body, secrets=self._secrets)
        retry_after = parse_retry_after(exc.response.headers) if status is not None else None
        if status == 429 or etype == "rate_limit_error":
            return RateLimited(
                f"provider {name!r}: rate limited (HTTP 429): {detail}",
                provider=name,
                retry_after_s=retry_after,
                status_code=429,
            )
        if (status is not None and (status >= 500 or status in (408, 409))) or etype in _TRANSIENT_TYPES:
            where = f"HTTP {status}" if status is not None else "in stream"
            return ProviderServerError(
                f"provider {name!r}: server error ({where}{', ' + etype if etype else ''}): {detail}",
                provider=name,
                retry_after_s=retry_after,
                status_code=status,
            )
        return ProviderRequestError(
            f"provider {name!r}: request rejected ({'HTTP ' + str(status) if status else 'in stream'}"
            f"{', ' + etype if etype else ''}): {detail}",
            provider=name,
            status_code=status,
            error_type=etype,
        )
