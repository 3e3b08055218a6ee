"""The provider interface and the resilience wrapper shared by every implementation."""

from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing
from typing import TYPE_CHECKING, ClassVar, Protocol, runtime_checkable

from opentelemetry.trace import Span, Status, StatusCode
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

import httpx
import httpx2

from bot.server import tracing

from ._redact import safe_url
from .errors import (
    ProviderConnectionError,
    ProviderError,
    ProviderTimeout,
    StreamInterrupted,
    TransientProviderError,
)
from .resilience import BreakerPermit, CircuitBreaker, Clock, RetryPolicy, Sleep
from .types import ChatMessage, Completion, StreamEnd, StreamEvent, TextDelta

if TYPE_CHECKING:
    from .cost import PriceTable

log = logging.getLogger(__name__)

DEFAULT_MAX_TOKENS = 1024
"""Reply cap (tokens) when neither the call nor the config gives one. Anthropic requires
``max_tokens`` on every request (Messages API reference), so there is always a value."""


@runtime_checkable
class Provider(Protocol):
    """An LLM behind one async interface.

    ``stream()`` yields :class:`~bot.providers.types.TextDelta` events in order and
    ends with exactly one :class:`~bot.providers.types.StreamEnd` (usage in tokens,
    model, finish reason). ``complete()`` is ``stream()`` collected into a
    :class:`~bot.providers.types.Completion`.

    Arguments: ``messages`` — the conversation, oldest first (``system`` turns are
    hoisted into the system prompt); ``model`` — overrides the configured model id;
    ``max_tokens`` — reply cap in tokens (default: configured, else 1024);
    ``system`` — system prompt, placed before any hoisted ``system`` turns.

    Raises (all :class:`~bot.providers.errors.ProviderError`):
    ``ProviderNotConfigured`` (missing key), ``ProviderAuthError``,
    ``ContextLengthError``, ``ProviderRequestError``, a ``TransientProviderError``
    once retries are exhausted, ``ProviderUnavailable`` (breaker open) — all before
    the first ``TextDelta`` — or ``StreamInterrupted`` (with ``partial_text``) after
    it. ``ValueError`` for an empty conversation or non-positive ``max_tokens``.
    """

    @property
    def name(self) -> str:
        """Configured provider name (``"primary"``, ``"cheap"``, ...)."""
        ...

    @property
    def model(self) -> str:
        """Default model id used when ``model=`` is not passed."""
        ...

    def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        model: str | None = None,
        max_tokens: int | None = None,
        system: str | None = None,
    ) -> AsyncIterator[StreamEvent]:
        """Stream one reply (see class docstring)."""
        ...

    async def complete(
        self,
        messages: Sequence[ChatMessage],
        *,
        model: str | None = None,
        max_tokens: int | None = None,
        system: str | None = None,
    ) -> Completion:
        """Whole reply (see class docstring)."""
        ...

    async def aclose(self) -> None:
        """Release network resources owned by the provider (not an injected http client)."""
        ...


def check_messages(messages: Sequence[ChatMessage]) -> tuple[ChatMessage, ...]:
    """Validate a conversation: a non-empty sequence of :class:`ChatMessage` with at least one non-system turn.

    Raises ``TypeError`` for non-ChatMessage items and ``ValueError`` otherwise.
    """
    if isinstance(messages, (str, bytes)):
        raise TypeError("messages must be a sequence of ChatMessage, not a string")
    msgs = tuple(messages)
    for m in msgs:
        if not isinstance(m, ChatMessage):
            raise TypeError(f"messages must contain ChatMessage items, got {type(m).__name__}")
    if not any(m.role != "system" for m in msgs):
        raise ValueError("messages must contain at least one user or assistant turn")
    return msgs


def split_system(messages: Sequence[ChatMessage], system: str | None) -> tuple[str | None, list[ChatMessage]]:
    """Hoist ``system`` turns out of ``messages``.

    Returns ``(system_prompt, turns)`` where ``system_prompt`` is ``system`` followed by the
    contents of any ``system`` messages, joined by blank lines (``None`` if all empty), and
    ``turns`` are the remaining user/assistant messages in order.
    """
    parts = [system] if system else []
    turns: list[ChatMessage] = []
    for m in messages:
        if m.role == "system":
            if m.content:
                parts.append(m.content)
        else:
            turns.append(m)
    return ("\n\n".join(parts) if parts else None), turns


class ResilientProvider(ABC):
    """Base for concrete providers: retries, circuit breaking and stream bookkeeping.

    Subclasses implement :meth:`_attempt` — one network attempt yielding normalised
    events and raising only translated :class:`ProviderError` subclasses. This class
    then:

    * retries ``TransientProviderError`` with tenacity per ``retry``
      (:class:`RetryPolicy`), honouring ``Retry-After``, **only until the first
      event** (first text delta, or the end of an empty reply) has been received;
      nothing is yielded to the caller before that, so a retry is invisible;
    * asks the :class:`CircuitBreaker` before every attempt and reports the outcome
      (transient failures count; definite answers such as 400/401 count as success);
    * turns any failure after the first yielded token into :class:`StreamInterrupted`
      carrying the partial text (not retried: the caller has already shown it).

    ``sleep`` (seconds) and ``clock`` (monotonic seconds, for the breaker) can be
    injected for tests.
    """

    kind: ClassVar[str] = "abstract"

    def __init__(
        self,
        *,
        name: str,
        model: str,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        timeout_s: float = 60.0,
        retry: RetryPolicy | None = None,
        breaker: CircuitBreaker | None = None,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = time.monotonic,
    ) -> None:
        if not model:
            raise ValueError(f"provider {name!r}: model must be a non-empty model id")
        if max_tokens < 1:
            raise ValueError(f"provider {name!r}: max_tokens must be >= 1")
        if timeout_s <= 0:
            raise ValueError(f"provider {name!r}: timeout_s must be > 0 seconds")
        self._name = name
        self._model = model
        self.max_tokens = max_tokens
        self.timeout_s = timeout_s
        self.retry = retry or RetryPolicy()
        self.breaker = breaker or CircuitBreaker(name=name, clock=clock)
        if not self.breaker.name:
            self.breaker.name = name  # its messages name the provider
        self._sleep = sleep
        self.prices: PriceTable | None = None
        """Prices for the ``baton.cost_usd`` of this provider's spans (set by the registry;
        ``None``: genai-prices' bundled table, :func:`bot.providers.cost.default_price_table`)."""

    @property
    def name(self) -> str:
        """Configured provider name."""
        return self._name

    @property
    def model(self) -> str:
        """Default model id."""
        return self._model

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self._name!r}, model={self._model!r})"

    # ------------------------------------------------------------------ to implement
    @abstractmethod
    def _attempt(
        self, messages: tuple[ChatMessage, ...], *, model: str, max_tokens: int, system: str | None
    ) -> AsyncIterator[StreamEvent]:
        """One network attempt: yield ``TextDelta``\\* then one ``StreamEnd``.

        Must raise only :class:`ProviderError` subclasses (translated from the SDK, raised
        ``from None``), including :class:`ProviderConnectionError` if the stream ends without
        the vendor's final event.
        """

    # ------------------------------------------------------------------ for implementations
    HTTP_TIMEOUTS = (httpx2.TimeoutException, httpx.TimeoutException)
    """Timeouts of the HTTP clients the SDKs run on (read mid-body, outside the SDK's own wrapping)."""
    HTTP_TRANSPORT_ERRORS = (httpx2.TransportError, httpx.TransportError)
    """Transport errors of those clients (e.g. ``RemoteProtocolError``: an incomplete chunked read)."""

    def _http_error(self, exc: BaseException) -> ProviderError:
        """A read timeout (``timeout_s`` of silence) or a transport failure of the HTTP client, as a
        :class:`ProviderTimeout` / :class:`ProviderConnectionError` naming this provider."""
        if isinstance(exc, self.HTTP_TIMEOUTS):
            return ProviderTimeout(f"provider {self.name!r}: no data for {self.timeout_s:g} s", provider=self.name)
        return ProviderConnectionError(f"provider {self.name!r}: connection failed ({type(exc).__name__})", provider=self.name)

    def _sdk_network_error(self, *, timed_out: bool, base_url: str | None) -> ProviderError:
        """The SDK's own timeout / connection error (``APITimeoutError`` / ``APIConnectionError``)."""
        if timed_out:
            return ProviderTimeout(f"provider {self.name!r}: request timed out after {self.timeout_s:g} s", provider=self.name)
        return ProviderConnectionError(
            f"provider {self.name!r}: could not connect to {safe_url(base_url)} or the connection dropped", provider=self.name
        )

    async def aclose(self) -> None:
        """Release resources (override when the provider owns a client)."""

    # ------------------------------------------------------------------ public API
    async def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        model: str | None = None,
        max_tokens: int | None = None,
        system: str | None = None,
    ) -> AsyncIterator[StreamEvent]:
        """Stream one reply; see :class:`Provider` for events and errors.

        Each call is an ``llm <name>`` span (:mod:`bot.server.tracing`; nothing when tracing
        is off), a child of the caller's current span, from the call to the final event:
        provider, model, tokens in/out and cost USD, or the error.
        """
        msgs = check_messages(messages)
        resolved_model = model or self._model
        cap = self.max_tokens if max_tokens is None else max_tokens
        if cap < 1:
            raise ValueError("max_tokens must be >= 1")

        span = tracing.start_span(
            f"llm {self._name}",
            {"baton.provider": self._name, "gen_ai.system": self.kind, "gen_ai.request.model": resolved_model, "gen_ai.request.max_tokens": cap},
        )
        try:
            events, first, permit = await self._open(msgs, model=resolved_model, max_tokens=cap, system=system)
        except BaseException as exc:
            _span_failed(span, exc)
            raise
        parts: list[str] = []
        event: StreamEvent = first
        try:
            while True:
                if isinstance(event, StreamEnd):
                    permit.success()
                    if span.is_recording():
                        self._span_usage(span, event)
                    yield event
                    return
                parts.append(event.text)
                yield event
                try:
                    event = await anext(events)
                except StopAsyncIteration:
                    err: ProviderError = ProviderConnectionError(
                        f"provider {self._name!r}: stream ended without a final event", provider=self._name
                    )
                    permit.failure(err.message)
                    raise StreamInterrupted(provider=self._name, partial_text="".join(parts), cause=err) from err
                except TransientProviderError as exc:
                    permit.failure(exc.message)
                    raise StreamInterrupted(provider=self._name, partial_text="".join(parts), cause=exc) from exc
                except ProviderError as exc:
                    permit.success()
                    raise StreamInterrupted(provider=self._name, partial_text="".join(parts), cause=exc) from exc
        except (GeneratorExit, asyncio.CancelledError):
            # The caller stopped reading (or was cancelled) mid-reply; the server was answering.
            permit.success()
            raise
        except BaseException as exc:
            _span_failed(span, exc)
            raise
        finally:
            span.end()
            permit.release()  # no-op once settled; frees a half-open probe on cancellation
            await events.aclose()

    def _span_usage(self, span: Span, end: StreamEnd) -> None:
        """Tokens and cost of a finished reply on its span."""
        from .cost import default_price_table

        table = self.prices or default_price_table()
        span.set_attributes(
            {
                "gen_ai.response.model": end.model or "",
                "gen_ai.usage.input_tokens": end.usage.input_tokens,
                "gen_ai.usage.output_tokens": end.usage.output_tokens,
                "baton.cost_usd": table.cost_usd(end.model or self._model, end.usage),
                "baton.finish_reason": str(end.finish_reason),
            }
        )

    async def complete(
        self,
        messages: Sequence[ChatMessage],
        *,
        model: str | None = None,
        max_tokens: int | None = None,
        system: str | None = None,
    ) -> Completion:
        """Collect :meth:`stream` into a :class:`Completion` (same errors, incl. ``StreamInterrupted``)."""
        return await collect(self.stream(messages, model=model, max_tokens=max_tokens, system=system))

    # ------------------------------------------------------------------ internals
    async def _open(
        self, msgs: tuple[ChatMessage, ...], *, model: str, max_tokens: int, system: str | None
    ) -> tuple[AsyncIterator[StreamEvent], StreamEvent, BreakerPermit]:
        """Run attempts (with retries) until one produces its first event."""
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.retry.max_retries + 1),
            retry=retry_if_exception(self.retry.should_retry),
            wait=self._wait_s,
            sleep=self._sleep,
            before_sleep=self._log_retry,
            reraise=True,
        )
        return await retrying(self._open_once, msgs, model, max_tokens, system)

    async def _open_once(
        self, msgs: tuple[ChatMessage, ...], model: str, max_tokens: int, system: str | None
    ) -> tuple[AsyncIterator[StreamEvent], StreamEvent, BreakerPermit]:
        permit = self.breaker.acquire()  # raises ProviderUnavailable (not retried)
        events = self._attempt(msgs, model=model, max_tokens=max_tokens, system=system)
        try:
            first = await anext(events)
        except StopAsyncIteration:
            permit.failure("stream ended before any event")
            raise ProviderConnectionError(
                f"provider {self._name!r}: stream ended before any event", provider=self._name
            ) from None
        except TransientProviderError as exc:
            permit.failure(exc.message)
            await events.aclose()
            raise
        except ProviderError:
            permit.success()  # a definite answer: the server is up
            await events.aclose()
            raise
        except BaseException:
            permit.release()
            await events.aclose()
            raise
        return events, first, permit

    def _wait_s(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        return self.retry.delay_s(state.attempt_number, exc)

    def _log_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        log.warning(
            "provider %r: attempt %d/%d failed (%s: %s); retrying in %.2f s",
            self._name,
            state.attempt_number,
            self.retry.max_retries + 1,
            type(exc).__name__,
            exc,
            state.upcoming_sleep,
        )


def _span_failed(span: Span, exc: BaseException) -> None:
    """Mark a provider span failed (cancellation is not a failure)."""
    if isinstance(exc, asyncio.CancelledError | GeneratorExit) or not span.is_recording():
        return
    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, type(exc).__name__))


async def collect(events: AsyncIterator[StreamEvent]) -> Completion:
    """Drain a stream of events into a :class:`Completion` (closing the stream in all cases).

    Raises ``ProviderConnectionError`` if the stream ends without a ``StreamEnd``.
    """
    parts: list[str] = []
    end: StreamEnd | None = None
    async with aclosing(events) as stream:  # type: ignore[type-var]
        async for event in stream:
            if isinstance(event, TextDelta):
                parts.append(event.text)
            else:
                end = event
    if end is None:
        raise ProviderConnectionError("stream ended without a final event")
    return Completion.from_stream("".join(parts), end)
