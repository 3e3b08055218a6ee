"""OpenAI Chat Completions provider (official ``openai`` SDK), also for OpenAI-compatible servers.

OpenAI-compatible servers (Ollama ``http://localhost:11434/v1``, vLLM, llama.cpp
``llama-server``, ...) are served by the same class with ``compatible=True``: the
API key may be absent, and the token cap is sent as ``max_tokens`` (which those
servers understand) instead of ``max_completion_tokens`` (OpenAI's current name;
its API reference marks ``max_tokens`` deprecated and not supported by o-series
reasoning models).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import httpx
import httpx2
import openai

from ._redact import redact, safe_url
from ._translate import context_length_error, error_field, looks_like_context_length
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
from .types import ChatMessage, StreamEnd, StreamEvent, TextDelta, Usage, normalise_openai_finish

OPENAI_BASE_URL = "https://api.openai.com/v1"

NO_KEY_PLACEHOLDER = "sk-no-key-required"
"""Sent as the bearer token to keyless OpenAI-compatible servers. The SDK refuses to build a
client without a key (``OpenAIError: Missing credentials``); llama.cpp's server docs use this
exact placeholder and Ollama/vLLM ignore the header unless started with a key."""



class _ChunkStream(openai.AsyncStream[object]):
    """Chat-completion chunks as plain dicts, decoded from the SSE body with httpx's line iterator.

    The SDK's own ``AsyncStream`` stops at ``data: [DONE]`` with ``break``, which leaves its
    inner async generators (event, byte and chunk iterators) unfinished; the event loop's
    async-generator finalizer then schedules one ``aclose`` task per generator, four per
    reply, while the bot is storing the reply. This class reads the body to its end instead
    (HTTP/1.1 needs that anyway to reuse the connection), so nothing is left to finalize.

    SSE framing (https://html.spec.whatwg.org/multipage/server-sent-events.html): ``data:``
    lines accumulate until a blank line dispatches the event; other fields and ``:``
    comments are ignored. An event whose JSON has an ``error`` member raises
    ``openai.APIError`` (as the SDK's stream does). Timeouts and transport errors propagate
    as httpx exceptions.
    """

    async def __stream__(self) -> AsyncIterator[object]:
        response = self.response
        data: list[str] = []
        try:
            async for line in response.aiter_lines():
                if line:
                    if line.startswith("data:"):
                        value = line[5:]
                        data.append(value[1:] if value.startswith(" ") else value)
                    continue
                if not data:
                    continue
                payload = "\n".join(data)
                data.clear()
                if payload.startswith("[DONE]"):
                    continue  # read on to the end of the body
                chunk = json.loads(payload)
                if isinstance(chunk, dict) and chunk.get("error"):
                    error = chunk["error"]
                    message = error.get("message") if isinstance(error, dict) else None
                    raise openai.APIError(
                        message=message if isinstance(message, str) and message else "An error occurred during streaming",
                        request=response.request,
                        body=error,
                    )
                yield chunk
        finally:
            await response.aclose()


class OpenAIProvider(ResilientProvider):
    """Streams chat completions through ``openai.AsyncOpenAI``.

    Args (keyword-only):
        name: configured provider name (used in errors/logs).
        model: default model id, e.g. ``"gpt-4o-mini"`` or ``"llama3.1:8b"``.
        api_key: the key itself (read from the environment by the registry); ``None``
            is allowed only with ``compatible=True``, else :class:`ProviderNotConfigured`.
        api_key_env: name of the env var the key came from — only used in messages.
        base_url: API root including ``/v1`` (default ``https://api.openai.com/v1``;
            passed explicitly so ``OPENAI_BASE_URL`` in the environment cannot redirect it).
        compatible: OpenAI-compatible server semantics (see module docstring).
        http_client: ``httpx2.AsyncClient`` or ``httpx.AsyncClient`` to use (the SDK
            accepts both; it is not closed by :meth:`aclose`).
        timeout_s: seconds; the SDK applies it to connect, write, pool and to each
            read, i.e. the longest silence tolerated mid-stream — not a total deadline.
        max_tokens: default reply cap (tokens).
        retry / breaker / sleep / clock: see :class:`ResilientProvider`.

    The SDK's own retries are disabled (``max_retries=0``) so that tenacity in
    :class:`ResilientProvider` is the single retry layer. Chunks are read as plain dicts
    through the SDK's ``client.post`` (see ``_attempt``). Usage comes from the final
    chunk requested with ``stream_options={"include_usage": true}`` (OpenAI docs:
    "an additional chunk will be streamed before the data: [DONE] message ... the
    choices field will always be an empty array").
    """

    kind: ClassVar[str] = "openai"

    def __init__(
        self,
        *,
        name: str,
        model: str,
        api_key: str | None,
        api_key_env: str | None = "OPENAI_API_KEY",
        base_url: str | None = None,
        compatible: bool = False,
        http_client: httpx2.AsyncClient | httpx.AsyncClient | None = None,
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
        if compatible and not base_url:
            raise ProviderNotConfigured(
                f"provider {name!r} is OpenAI-compatible but has no base_url; set base_url in "
                f"[providers.{name}] (e.g. \"http://localhost:11434/v1\" for Ollama)",
                provider=name,
                setting=f"[providers.{name}] base_url",
            )
        if not api_key and not compatible:
            env = api_key_env or "OPENAI_API_KEY"
            raise ProviderNotConfigured(
                f"{env} is not set (provider {name!r}); set it, or configure a local model instead, e.g. "
                f"[providers.local] kind = \"openai_compatible\" with base_url = \"http://localhost:11434/v1\"",
                provider=name,
                setting=env,
            )
        if http_client is not None and not isinstance(http_client, (httpx2.AsyncClient, httpx.AsyncClient)):
            raise TypeError("http_client must be an httpx2.AsyncClient or httpx.AsyncClient")
        self.compatible = compatible
        self.kind_label = "openai_compatible" if compatible else "openai"
        self.api_key_env = api_key_env
        self.base_url = base_url or OPENAI_BASE_URL
        self._has_key = bool(api_key)
        self._secrets: tuple[str | None, ...] = (api_key,)
        self._owns_http_client = http_client is None
        self._client = openai.AsyncOpenAI(
            api_key=api_key or NO_KEY_PLACEHOLDER,
            base_url=self.base_url,
            timeout=timeout_s,
            max_retries=0,
            http_client=http_client,
        )

    def __repr__(self) -> str:
        return (
            f"OpenAIProvider(name={self.name!r}, kind={self.kind_label!r}, model={self.model!r}, "
            f"base_url={safe_url(self.base_url)!r})"
        )

    async def aclose(self) -> None:
        """Close the SDK client's own HTTP pool (an injected ``http_client`` is left open)."""
        if self._owns_http_client:
            await self._client.close()

    def _payload(self, messages: tuple[ChatMessage, ...], system: str | None) -> list[dict[str, str]]:
        system_prompt, turns = split_system(messages, system)
        payload = [{"role": "system", "content": system_prompt}] if system_prompt else []
        payload.extend({"role": m.role, "content": m.content} for m in turns)
        return payload

    async def _attempt(
        self, messages: tuple[ChatMessage, ...], *, model: str, max_tokens: int, system: str | None
    ) -> AsyncIterator[StreamEvent]:
        cap: dict[str, Any] = {"max_tokens": max_tokens} if self.compatible else {"max_completion_tokens": max_tokens}
        finish: str | None = None
        usage: Usage | None = None
        served_model: str | None = None
        body: dict[str, Any] = {
            "model": model,
            "messages": self._payload(messages, system),
            "stream": True,
            "stream_options": {"include_usage": True},
            **cap,
        }
        error: ProviderError | None = None
        try:
            # Same request as `chat.completions.create(stream=True, ...)`, through the SDK's documented
            # `client.post` ("Making custom/undocumented requests" in its README): auth, headers,
            # timeouts and HTTP errors are the SDK's; chunks stay plain dicts instead of pydantic
            # ChatCompletionChunk models (~0.5 ms per chunk), decoded by _ChunkStream (see there).
            # This leans on client.post/stream_cls and AsyncStream.__stream__, which is why the SDK
            # major is pinned; tests/providers/test_sdk_seams.py fails loudly when a new SDK changes them.
            stream = await self._client.post("/chat/completions", cast_to=object, body=body, stream=True, stream_cls=_ChunkStream)
            async with stream:
                while True:
                    # anext() on the stream object itself: `async for` would go through
                    # AsyncStream.__aiter__, one more async-generator hop per event.
                    try:
                        chunk = await anext(stream)
                    except StopAsyncIteration:
                        break
                    if not isinstance(chunk, dict):
                        continue
                    served_model = chunk.get("model") or served_model
                    raw_usage = chunk.get("usage")
                    if isinstance(raw_usage, dict):
                        details = raw_usage.get("prompt_tokens_details")
                        usage = Usage(
                            input_tokens=int(raw_usage.get("prompt_tokens") or 0),
                            output_tokens=int(raw_usage.get("completion_tokens") or 0),
                            cache_read_tokens=int(details.get("cached_tokens") or 0) if isinstance(details, dict) else 0,
                        )
                    for choice in chunk.get("choices") or ():
                        if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                            continue
                        delta = choice.get("delta")
                        text = delta.get("content") if isinstance(delta, dict) else None
                        if text:
                            yield TextDelta(text)
                        if choice.get("finish_reason") is not None:
                            finish = str(choice["finish_reason"])
        except openai.APIError as exc:
            error = self._translate(exc, model)
        except (*self.HTTP_TIMEOUTS, *self.HTTP_TRANSPORT_ERRORS) as exc:
            error = self._http_error(exc)
        if error is not None:
            # Raised outside the except block so the SDK exception is neither __cause__ nor
            # __context__: it holds the request (Authorization header) and the raw body.
            raise error
        if finish is None:
            # The body ended cleanly but before the chunk carrying finish_reason (and [DONE]).
            raise ProviderConnectionError(
                f"provider {self.name!r}: stream ended before its finish_reason", provider=self.name
            )
        yield StreamEnd(
            usage=usage or Usage(),
            model=served_model or model,
            finish_reason=normalise_openai_finish(finish),
            raw_finish_reason=finish,
            provider=self.name,
            usage_reported=usage is not None,
        )

    def _translate(self, exc: openai.APIError, model: str) -> ProviderError:
        """Map an SDK exception to a :class:`ProviderError` without echoing credentials."""
        name = self.name
        if isinstance(exc, (openai.APITimeoutError, openai.APIConnectionError)):  # a timeout is a connection error too
            return self._sdk_network_error(timed_out=isinstance(exc, openai.APITimeoutError), base_url=self.base_url)
        body = exc.body
        message = error_field(body, "message") or exc.message or ""
        code = exc.code or error_field(body, "code")
        etype = exc.type or error_field(body, "type")
        detail = redact(message, self._secrets)
        status = exc.status_code if isinstance(exc, openai.APIStatusError) else None

        if status in (401, 403):
            if status == 401 and not self._has_key:
                text = (
                    f"authentication failed for provider {name!r} (HTTP 401): the server at "
                    f"{safe_url(self.base_url)} requires an API key; set api_key_env in [providers.{name}] "
                    f"and export that variable"
                )
            elif status == 401:
                text = (
                    f"authentication failed for provider {name!r} (HTTP 401): the API key from "
                    f"{self.api_key_env or 'the configured variable'} was rejected"
                )
            else:
                text = (
                    f"permission denied for provider {name!r} (HTTP 403): the API key from "
                    f"{self.api_key_env or 'the configured variable'} may not use model {model!r} here"
                )
            return ProviderAuthError(text, provider=name, status_code=status, api_key_env=self.api_key_env)
        if (status in (400, 413, 422) or status is None) and looks_like_context_length(
            message, code=code, error_type=etype
        ):
            return context_length_error(provider=name, model=model, message=message, body=body, secrets=self._secrets)
        if status == 429:
            if code == "insufficient_quota" or etype == "insufficient_quota":
                return ProviderRequestError(
                    f"provider {name!r}: quota exhausted (HTTP 429 insufficient_quota): {detail}",
                    provider=name,
                    status_code=429,
                    error_type=etype,
                    error_code=code,
                )
            retry_after = parse_retry_after(exc.response.headers) if isinstance(exc, openai.APIStatusError) else None
            return RateLimited(
                f"provider {name!r}: rate limited (HTTP 429): {detail}",
                provider=name,
                retry_after_s=retry_after,
                status_code=429,
            )
        if status is not None and (status >= 500 or status in (408, 409)):
            retry_after = parse_retry_after(exc.response.headers) if isinstance(exc, openai.APIStatusError) else None
            return ProviderServerError(
                f"provider {name!r}: server error (HTTP {status}): {detail}",
                provider=name,
                retry_after_s=retry_after,
                status_code=status,
            )
        if status is None:
            # An error object inside the SSE stream (no HTTP status of its own).
            if etype in ("server_error", "api_error", "overloaded_error") or code in ("server_error", "rate_limit_exceeded"):
                return ProviderServerError(f"provider {name!r}: server error in stream: {detail}", provider=name)
            return ProviderRequestError(
                f"provider {name!r}: error in stream: {detail}", provider=name, error_type=etype, error_code=code
            )
        return ProviderRequestError(
            f"provider {name!r}: request rejected (HTTP {status}{', ' + code if code else ''}): {detail}",
            provider=name,
            status_code=status,
            error_type=etype,
            error_code=code,
        )
