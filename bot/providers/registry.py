"""Build providers by configured name."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .base import Provider, ResilientProvider
from .config import DEFAULT_CONFIG_PATH, ProviderEntry, ProvidersConfig, load_providers_config
from .errors import NoProvidersConfigured, ProviderNotConfigured, UnknownProvider
from .fallback import DEFAULT_FALLBACK_ON, FallbackChain
from .resilience import CircuitBreaker, Clock, Sleep
from .types import ChatMessage, Completion, StreamEvent

if TYPE_CHECKING:  # the SDKs are imported only when a provider is built (they take seconds to import)
    import httpx
    import httpx2

    from .cost import PriceTable

NO_PROVIDERS_MESSAGE = (
    "no LLM providers are configured. Add one to config/baton.toml, e.g.\n"
    "  [providers.primary]\n"
    '  kind = "openai"            # or "anthropic" / "openai_compatible"\n'
    '  model = "gpt-4o-mini"\n'
    '  api_key_env = "OPENAI_API_KEY"\n'
    "or set BATON_PROVIDERS__PRIMARY__KIND=openai and BATON_PROVIDERS__PRIMARY__MODEL=gpt-4o-mini "
    "in the environment (plus the key variable itself). For a local model: "
    'kind = "openai_compatible", base_url = "http://localhost:11434/v1".'
)


def missing_key_message(name: str, entry: ProviderEntry) -> str:
    """Operator message for an entry whose key variable is unset, naming the variable to set."""
    env = entry.effective_api_key_env
    if entry.kind == "openai_compatible":
        return (
            f"{env} is not set (provider {name!r}); set it, or remove api_key_env from "
            f"[providers.{name}] if the server at its base_url needs no key"
        )
    return (
        f"{env} is not set (provider {name!r}); set it, or configure a local model instead, e.g. "
        f'[providers.local] kind = "openai_compatible" with base_url = "http://localhost:11434/v1"'
    )


class UnconfiguredProvider:
    """Stand-in for an entry that cannot be used yet: every call raises :class:`ProviderNotConfigured`.

    Returned by :meth:`ProviderRegistry.get` so the bot can start without keys and
    tell the operator in the thread what to set when the provider is first used.
    """

    def __init__(self, name: str, entry: ProviderEntry, message: str, setting: str | None) -> None:
        self._name = name
        self._entry = entry
        self._message = message
        self._setting = setting

    @property
    def name(self) -> str:
        """Configured provider name."""
        return self._name

    @property
    def model(self) -> str:
        """Configured model id."""
        return self._entry.model

    def __repr__(self) -> str:
        return f"UnconfiguredProvider(name={self._name!r}, setting={self._setting!r})"

    def error(self) -> ProviderNotConfigured:
        """The error every call raises."""
        return ProviderNotConfigured(self._message, provider=self._name, setting=self._setting)

    async def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        model: str | None = None,
        max_tokens: int | None = None,
        system: str | None = None,
    ) -> AsyncIterator[StreamEvent]:
        """Raises :class:`ProviderNotConfigured` on first iteration."""
        raise self.error()
        yield  # pragma: no cover  (makes this an async generator)

    async def complete(
        self,
        messages: Sequence[ChatMessage],
        *,
        model: str | None = None,
        max_tokens: int | None = None,
        system: str | None = None,
    ) -> Completion:
        """Raises :class:`ProviderNotConfigured`."""
        raise self.error()

    async def aclose(self) -> None:
        """Nothing to release."""


def build_provider(
    name: str,
    entry: ProviderEntry,
    *,
    api_key: str | None,
    http_client: httpx2.AsyncClient | httpx.AsyncClient | None = None,
    sleep: Sleep = asyncio.sleep,
    clock: Clock = time.monotonic,
) -> ResilientProvider:
    """Construct the provider for ``entry`` with ``api_key`` (already read from the environment).

    Raises :class:`ProviderNotConfigured` when a required key is missing.
    """
    common: dict[str, Any] = {
        "name": name,
        "model": entry.model,
        "api_key": api_key,
        "api_key_env": entry.effective_api_key_env,
        "base_url": entry.base_url,
        "timeout_s": entry.timeout_s,
        "max_tokens": entry.max_tokens,
        "retry": entry.retry_policy(),
        "breaker": CircuitBreaker(
            failure_threshold=entry.breaker_threshold, cooldown_s=entry.breaker_cooldown_s, clock=clock, name=name
        ),
        "sleep": sleep,
        "clock": clock,
    }
    if entry.kind == "anthropic":
        from .anthropic_provider import AnthropicProvider

        return AnthropicProvider(http_client=http_client, **common)  # type: ignore[arg-type]
    from .openai_provider import OpenAIProvider

    return OpenAIProvider(compatible=entry.kind == "openai_compatible", http_client=http_client, **common)


class ProviderRegistry:
    """Named providers built lazily from a :class:`ProvidersConfig`.

    * :meth:`get` — the provider for a name (default: the configured default), cached so
      its circuit breaker persists. Raises :class:`NoProvidersConfigured` when nothing is
      configured and :class:`UnknownProvider` (listing configured names) for unknown names.
      An entry whose key variable is unset yields an :class:`UnconfiguredProvider`
      (raising :class:`ProviderNotConfigured` naming the variable when called); it is
      not cached, so exporting the variable later takes effect.
    * :meth:`chain` — a :class:`FallbackChain` over names.
    * :meth:`problems` — human-readable configuration issues (e.g. unset keys) for startup checks.

    ``env`` (default ``os.environ``) is where keys are read; it is never logged or shown
    in the repr. ``http_client`` / ``sleep`` / ``clock`` are passed to every provider (tests).
    """

    def __init__(
        self,
        config: ProvidersConfig | None = None,
        *,
        env: Mapping[str, str] | None = None,
        http_client: httpx2.AsyncClient | httpx.AsyncClient | None = None,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = time.monotonic,
    ) -> None:
        self.config = config or ProvidersConfig()
        self._env = env
        self._http_client = http_client
        self._sleep = sleep
        self._clock = clock
        self._built: dict[str, ResilientProvider] = {}
        self.prices: PriceTable | None = None  # for the cost on provider spans (set by bot.llm.LLM)

    @classmethod
    def from_toml(
        cls,
        path: str | os.PathLike[str] | None = DEFAULT_CONFIG_PATH,
        *,
        env: Mapping[str, str] | None = None,
        implicit_from_keys: bool = False,
        **kwargs: Any,
    ) -> ProviderRegistry:
        """Registry from ``[providers]`` in ``path`` overlaid with ``BATON_PROVIDERS__*`` from ``env``
        (see :func:`~bot.providers.config.load_providers_config`)."""
        return cls(load_providers_config(path, env=env, implicit_from_keys=implicit_from_keys), env=env, **kwargs)

    @classmethod
    def from_mapping(cls, providers: Mapping[str, Any], **kwargs: Any) -> ProviderRegistry:
        """Registry from an already-merged ``[providers]`` mapping, e.g. ``bot.settings.Settings().providers``."""
        return cls(ProvidersConfig.model_validate(dict(providers)), **kwargs)

    def __repr__(self) -> str:
        return f"ProviderRegistry(names={list(self.names)!r}, default={self.config.default_name!r})"

    @property
    def names(self) -> tuple[str, ...]:
        """Configured provider names."""
        return self.config.names

    @property
    def default_name(self) -> str:
        """The default provider name; raises :class:`NoProvidersConfigured` if there are none."""
        name = self.config.default_name
        if name is None:
            raise NoProvidersConfigured(NO_PROVIDERS_MESSAGE, setting="[providers.<name>] in config/baton.toml")
        return name

    def entry(self, name: str | None = None) -> ProviderEntry:
        """The validated entry for ``name`` (default provider if ``None``)."""
        if not self.config.entries:
            raise NoProvidersConfigured(NO_PROVIDERS_MESSAGE, setting="[providers.<name>] in config/baton.toml")
        resolved = name or self.default_name
        try:
            return self.config.entries[resolved]
        except KeyError:
            raise UnknownProvider(resolved, self.names) from None

    def _environ(self) -> Mapping[str, str]:
        return os.environ if self._env is None else self._env

    def get(self, name: str | None = None) -> Provider:
        """The provider called ``name`` (default provider if ``None``); see class docstring."""
        entry = self.entry(name)
        resolved = name or self.default_name
        if resolved in self._built:
            return self._built[resolved]
        key_env = entry.effective_api_key_env
        api_key = self._environ().get(key_env) if key_env else None
        if entry.needs_api_key and not api_key:
            return UnconfiguredProvider(resolved, entry, missing_key_message(resolved, entry), key_env)
        provider = build_provider(
            resolved,
            entry,
            api_key=api_key or None,
            http_client=self._http_client,
            sleep=self._sleep,
            clock=self._clock,
        )
        provider.prices = self.prices
        self._built[resolved] = provider
        return provider

    def chain(self, *names: str, fallback_on: tuple[type[Exception], ...] | None = None) -> FallbackChain:
        """A :class:`FallbackChain` over ``names`` (default: the default provider, then the others in config order)."""
        order = names or (self.default_name, *(n for n in self.names if n != self.default_name))
        return FallbackChain(
            [self.get(n) for n in order],
            fallback_on=fallback_on or DEFAULT_FALLBACK_ON,  # type: ignore[arg-type]
        )

    def problems(self) -> list[str]:
        """Configuration problems an operator should fix (empty list = all providers usable)."""
        if not self.config.entries:
            return [NO_PROVIDERS_MESSAGE]
        env = self._environ()
        out = []
        for name, entry in self.config.entries.items():
            key_env = entry.effective_api_key_env
            if entry.needs_api_key and not env.get(key_env or ""):
                out.append(missing_key_message(name, entry))
        return out

    async def aclose(self) -> None:
        """Close every provider built so far."""
        built, self._built = list(self._built.values()), {}
        for provider in built:
            await provider.aclose()
