"""LLM providers behind one async interface.

Typical use::

    registry = ProviderRegistry.from_toml("config/baton.toml")   # [providers.*] + BATON_PROVIDERS__*
    provider = registry.get()                  # default provider; registry.get("cheap"), ...
    async for event in provider.stream([ChatMessage("user", "hi")], system="Be brief."):
        if isinstance(event, TextDelta):
            print(event.text, end="")
        else:                                  # StreamEnd: usage (tokens), model, finish_reason
            print(cost_usd(event.model, event.usage))

    reply = await registry.chain("primary", "local").complete(messages)   # fallback in order

Errors are in :mod:`bot.providers.errors`; everything raised is a ``ProviderError``
except ``ValueError``/``TypeError`` for malformed arguments.

``OpenAIProvider`` / ``AnthropicProvider`` are loaded on first access: the two SDKs
take seconds to import, which CLI commands that never call an LLM should not pay.
"""

from typing import TYPE_CHECKING, Any

from .base import Provider, ResilientProvider, collect
from .config import ProviderEntry, ProviderKind, ProvidersConfig, load_providers_config
from .cost import Cost, ModelPrice, PriceTable, cost_usd, default_price_table
from .errors import (
    AllProvidersFailed,
    ContextLengthError,
    NoProvidersConfigured,
    ProviderAuthError,
    ProviderConnectionError,
    ProviderError,
    ProviderNotConfigured,
    ProviderRequestError,
    ProviderServerError,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
    StreamInterrupted,
    TransientProviderError,
    UnknownProvider,
)
from .fallback import DEFAULT_FALLBACK_ON, FallbackChain
from .registry import ProviderRegistry, UnconfiguredProvider, build_provider
from .resilience import BreakerPermit, CircuitBreaker, RetryPolicy, parse_retry_after
from .types import ChatMessage, Completion, FinishReason, Role, StreamEnd, StreamEvent, TextDelta, Usage

if TYPE_CHECKING:
    from .anthropic_provider import AnthropicProvider
    from .openai_provider import OpenAIProvider


def __getattr__(name: str) -> Any:
    """Lazy access to the SDK-backed provider classes (PEP 562)."""
    if name == "OpenAIProvider":
        from .openai_provider import OpenAIProvider

        return OpenAIProvider
    if name == "AnthropicProvider":
        from .anthropic_provider import AnthropicProvider

        return AnthropicProvider
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AllProvidersFailed",
    "AnthropicProvider",
    "BreakerPermit",
    "ChatMessage",
    "CircuitBreaker",
    "Completion",
    "ContextLengthError",
    "Cost",
    "DEFAULT_FALLBACK_ON",
    "FallbackChain",
    "FinishReason",
    "ModelPrice",
    "NoProvidersConfigured",
    "OpenAIProvider",
    "PriceTable",
    "Provider",
    "ProviderAuthError",
    "ProviderConnectionError",
    "ProviderEntry",
    "ProviderError",
    "ProviderKind",
    "ProviderNotConfigured",
    "ProviderRegistry",
    "ProviderRequestError",
    "ProviderServerError",
    "ProviderTimeout",
    "ProviderUnavailable",
    "ProvidersConfig",
    "RateLimited",
    "ResilientProvider",
    "RetryPolicy",
    "Role",
    "StreamEnd",
    "StreamEvent",
    "StreamInterrupted",
    "TextDelta",
    "TransientProviderError",
    "UnconfiguredProvider",
    "UnknownProvider",
    "Usage",
    "build_provider",
    "collect",
    "cost_usd",
    "default_price_table",
    "load_providers_config",
    "parse_retry_after",
]
