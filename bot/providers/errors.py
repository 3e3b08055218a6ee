"""Errors raised by the provider layer.

Every error derives from :class:`ProviderError` and names the configured provider
(``.provider``). Messages are written for the operator reading them in a chat
thread or a log, and never contain credentials: SDK exceptions are translated and
raised ``from None`` (their bodies can echo masked keys and their ``request``
carries the ``Authorization`` header), and server-supplied text is passed through
:func:`bot.providers._redact.redact` first.

Hierarchy::

    ProviderError
    ├── ProviderNotConfigured          missing key / base_url; names the setting to set
    │   └── NoProvidersConfigured      no [providers.*] at all
    ├── UnknownProvider (LookupError)  get("name") for a name not configured
    ├── ProviderAuthError              401/403 — says which provider and which key setting
    ├── ContextLengthError             prompt too long — says by how much when known
    ├── ProviderRequestError           other 4xx (bad request, unknown model, quota)
    ├── TransientProviderError         retried (before the first token) by the layer
    │   ├── RateLimited                429 (carries Retry-After)
    │   ├── ProviderServerError        5xx, Anthropic 529 overloaded, in-stream server errors
    │   ├── ProviderTimeout            connect/read timeout
    │   └── ProviderConnectionError    connection refused/reset, stream ended early
    ├── ProviderUnavailable            circuit breaker open
    ├── StreamInterrupted              failed after tokens were streamed; carries partial text
    └── AllProvidersFailed             every provider of a FallbackChain failed
"""

from __future__ import annotations


class ProviderError(Exception):
    """Base class. ``provider``: the configured provider name (``""`` if not applicable)."""

    def __init__(self, message: str, *, provider: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.provider = provider


class ProviderNotConfigured(ProviderError):
    """The provider cannot be called until a setting is supplied.

    ``setting``: what to set — an environment variable name (e.g. ``OPENAI_API_KEY``)
    or a config key (e.g. ``[providers.local] base_url``).
    """

    def __init__(self, message: str, *, provider: str = "", setting: str | None = None) -> None:
        super().__init__(message, provider=provider)
        self.setting = setting


class NoProvidersConfigured(ProviderNotConfigured):
    """No provider entries exist at all (neither ``config/baton.toml [providers.*]`` nor ``BATON_PROVIDERS__*``)."""


class UnknownProvider(ProviderError, LookupError):
    """A provider name was requested that is not configured. ``configured``: the names that are."""

    def __init__(self, name: str, configured: tuple[str, ...]) -> None:
        names = ", ".join(repr(n) for n in configured) or "(none)"
        super().__init__(f"no provider named {name!r}; configured providers: {names}", provider=name)
        self.configured = configured

    def __str__(self) -> str:  # LookupError/KeyError would repr() the message; keep it readable.
        return self.message


class ProviderAuthError(ProviderError):
    """The server rejected the credentials (HTTP 401) or their permissions (HTTP 403).

    ``status_code``: 401 or 403; ``api_key_env``: the setting holding the key, if any.
    """

    def __init__(self, message: str, *, provider: str, status_code: int | None, api_key_env: str | None) -> None:
        super().__init__(message, provider=provider)
        self.status_code = status_code
        self.api_key_env = api_key_env


class ContextLengthError(ProviderError):
    """The prompt (plus requested output) exceeds the model's context window.

    ``limit_tokens`` / ``requested_tokens``: as stated by the server, when it does
    (OpenAI and vLLM: "maximum context length is N tokens ... resulted in M tokens";
    llama.cpp: ``n_ctx`` / ``n_prompt_tokens``; Anthropic: "prompt is too long:
    M tokens > N maximum"); ``None`` otherwise. ``over_by_tokens`` = M - N.
    """

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        model: str | None = None,
        limit_tokens: int | None = None,
        requested_tokens: int | None = None,
    ) -> None:
        super().__init__(message, provider=provider)
        self.model = model
        self.limit_tokens = limit_tokens
        self.requested_tokens = requested_tokens

    @property
    def over_by_tokens(self) -> int | None:
        """How many tokens too many (``requested_tokens - limit_tokens``), or ``None`` if the server didn't say."""
        if self.limit_tokens is None or self.requested_tokens is None:
            return None
        return self.requested_tokens - self.limit_tokens


class ProviderRequestError(ProviderError):
    """A non-retryable rejection (4xx other than auth/context length, e.g. unknown model, quota exhausted).

    ``status_code``: HTTP status (``None`` for in-stream errors); ``error_type`` /
    ``error_code``: the vendor's ``error.type`` / ``error.code`` when present.
    """

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        status_code: int | None = None,
        error_type: str | None = None,
        error_code: str | None = None,
    ) -> None:
        super().__init__(message, provider=provider)
        self.status_code = status_code
        self.error_type = error_type
        self.error_code = error_code


class TransientProviderError(ProviderError):
    """A failure worth retrying. ``retry_after_s``: server-requested wait in seconds (``Retry-After`` /
    ``retry-after-ms``), if any; ``status_code``: HTTP status if any."""

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        retry_after_s: float | None = None,
        status_code: int | None = None,
    ) -> None:
        super().__init__(message, provider=provider)
        self.retry_after_s = retry_after_s
        self.status_code = status_code


class RateLimited(TransientProviderError):
    """HTTP 429 (rate limit). Quota exhaustion (OpenAI ``insufficient_quota``) is a :class:`ProviderRequestError` instead."""


class ProviderServerError(TransientProviderError):
    """HTTP 5xx, Anthropic 529 ``overloaded_error``, or an in-stream server error event."""


class ProviderTimeout(TransientProviderError):
    """No bytes for ``timeout_s`` seconds while connecting or reading."""


class ProviderConnectionError(TransientProviderError):
    """The connection failed, was reset, or the stream ended without its final event."""


class ProviderUnavailable(ProviderError):
    """The provider's circuit breaker is open: calls fail fast without touching the network.

    ``retry_in_s``: seconds until the breaker lets a probe call through.
    """

    def __init__(self, message: str, *, provider: str, retry_in_s: float) -> None:
        super().__init__(message, provider=provider)
        self.retry_in_s = retry_in_s


class StreamInterrupted(ProviderError):
    """The stream failed after some text had already been yielded (never retried: the caller has shown it).

    ``partial_text``: everything streamed before the failure — the caller keeps it and
    marks it as incomplete. ``reason``: short description of the underlying failure;
    ``cause``: the translated :class:`ProviderError` (also set as ``__cause__``).
    """

    def __init__(self, *, provider: str, partial_text: str, cause: ProviderError) -> None:
        reason = cause.message
        super().__init__(
            f"provider {provider!r} stream interrupted after {len(partial_text)} characters: {reason}",
            provider=provider,
        )
        self.partial_text = partial_text
        self.reason = reason
        self.cause = cause


class AllProvidersFailed(ProviderError):
    """Every provider in a fallback chain failed. ``failures``: ``(provider name, error)`` in order tried."""

    def __init__(self, failures: tuple[tuple[str, ProviderError], ...]) -> None:
        detail = "; ".join(f"{name}: {err.message}" for name, err in failures) or "no providers"
        super().__init__(f"all providers failed — {detail}", provider="")
        self.failures = failures
