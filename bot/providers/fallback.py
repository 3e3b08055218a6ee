"""Try several providers in order until one starts answering."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence

from .base import Provider, check_messages, collect
from .errors import (
    AllProvidersFailed,
    ProviderAuthError,
    ProviderError,
    ProviderNotConfigured,
    ProviderRequestError,
    ProviderUnavailable,
    TransientProviderError,
)
from .types import ChatMessage, Completion, StreamEvent

log = logging.getLogger(__name__)

DEFAULT_FALLBACK_ON: tuple[type[ProviderError], ...] = (
    ProviderUnavailable,
    TransientProviderError,
    ProviderNotConfigured,
    ProviderAuthError,
    ProviderRequestError,
)
"""Errors that move a :class:`FallbackChain` on to the next provider. Not included:
``ContextLengthError`` (the caller should shorten the prompt) and ``StreamInterrupted``
(text has already been shown; mixing two models' output in one reply is worse)."""


class FallbackChain:
    """A :class:`~bot.providers.base.Provider` that tries ``providers`` in order.

    A provider is abandoned only if it fails *before its first event* with one of
    ``fallback_on`` (after its own retries); from the first event on, the chain is
    committed to it and its errors (including ``StreamInterrupted``) propagate.
    ``StreamEnd.provider`` says which provider answered. If all fail,
    :class:`AllProvidersFailed` lists each ``(name, error)``. ``model=`` is passed to
    every provider — usually leave it ``None`` so each uses its own.
    """

    def __init__(
        self,
        providers: Sequence[Provider],
        *,
        fallback_on: tuple[type[ProviderError], ...] = DEFAULT_FALLBACK_ON,
        name: str | None = None,
    ) -> None:
        if not providers:
            raise ValueError("FallbackChain needs at least one provider")
        self.providers: tuple[Provider, ...] = tuple(providers)
        self.fallback_on = fallback_on
        self._name = name or " > ".join(p.name for p in self.providers)

    @property
    def name(self) -> str:
        """``"a > b > c"`` unless given."""
        return self._name

    @property
    def model(self) -> str:
        """The first provider's model."""
        return self.providers[0].model

    def __repr__(self) -> str:
        return f"FallbackChain({[p.name for p in self.providers]!r})"

    async def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        model: str | None = None,
        max_tokens: int | None = None,
        system: str | None = None,
    ) -> AsyncIterator[StreamEvent]:
        """Stream from the first provider that starts answering (see class docstring)."""
        msgs = check_messages(messages)
        failures: list[tuple[str, ProviderError]] = []
        for provider in self.providers:
            events = provider.stream(msgs, model=model, max_tokens=max_tokens, system=system)
            try:
                first = await anext(events)
            except self.fallback_on as exc:
                await events.aclose()  # type: ignore[attr-defined]
                failures.append((provider.name, exc))
                log.warning("provider %r failed before answering (%s); trying the next one", provider.name, exc)
                continue
            except BaseException:
                await events.aclose()  # type: ignore[attr-defined]
                raise
            try:
                yield first
                async for event in events:
                    yield event
            finally:
                await events.aclose()  # type: ignore[attr-defined]
            return
        raise AllProvidersFailed(tuple(failures))

    async def complete(
        self,
        messages: Sequence[ChatMessage],
        *,
        model: str | None = None,
        max_tokens: int | None = None,
        system: str | None = None,
    ) -> Completion:
        """Collected :meth:`stream`."""
        return await collect(self.stream(messages, model=model, max_tokens=max_tokens, system=system))

    async def aclose(self) -> None:
        """No-op: the chain does not own its providers (the registry does)."""
