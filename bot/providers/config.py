"""Provider configuration: the ``[providers]`` table of ``config/baton.toml`` (and ``BATON_PROVIDERS__*``).

File shape::

    [providers.primary]
    default = true                 # optional; else "primary" if present, else the first entry
    kind = "openai"                # "openai" | "anthropic" | "openai_compatible"
    model = "gpt-4o-mini"
    api_key_env = "OPENAI_API_KEY" # the NAME of the env var holding the key (default per kind)
    timeout_s = 60                 # seconds, per connect/read (see OpenAIProvider)
    max_retries = 2

    [providers.local]
    kind = "openai_compatible"
    model = "llama3.1:8b"
    base_url = "http://localhost:11434/v1"   # Ollama; no key needed

The default can also be named at the top, ``[providers] default = "primary"`` — but
``bot.settings.Settings.providers`` is typed ``dict[str, dict]``, which only admits the
per-entry ``default = true`` form; feed it in with
``ProvidersConfig.model_validate(settings.providers)``.

Environment overrides (same names, ``__`` as the separator, case-insensitive):
``BATON_PROVIDERS__CHEAP__DEFAULT=true``, ``BATON_PROVIDERS__CHEAP__KIND=anthropic``,
``BATON_PROVIDERS__CHEAP__MODEL=claude-haiku-4-5``. The nested shape also works
unchanged as a ``providers: ProvidersConfig`` field of a pydantic-settings model
with ``env_prefix="BATON_"`` and ``env_nested_delimiter="__"``.

API keys never live in config: an ``api_key`` field is rejected with advice, and
validation errors never echo input values (``hide_input_in_errors``).
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .resilience import RetryPolicy

ProviderKind: TypeAlias = Literal["openai", "anthropic", "openai_compatible"]

DEFAULT_CONFIG_PATH = Path("config/baton.toml")
ENV_PREFIX = "BATON_PROVIDERS__"
DEFAULT_KEY_ENV: dict[str, str | None] = {
    "openai": "OPENAI_API_KEY",
    "anthropic": "ANTHROPIC_API_KEY",
    "openai_compatible": None,
}

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PROVIDER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class ProviderEntry(BaseModel):
    """One ``[providers.<name>]`` entry (validated; frozen).

    Fields: ``kind``; ``model`` (default model id); ``default`` (this entry is the
    default provider); ``api_key_env`` (env var *name*;
    default ``OPENAI_API_KEY`` / ``ANTHROPIC_API_KEY``, none for
    ``openai_compatible``); ``base_url`` (required for ``openai_compatible``);
    ``timeout_s`` (seconds, > 0); ``max_retries`` (0-10, retries before the first
    token); ``max_tokens`` (default reply cap, tokens); ``breaker_threshold``
    (consecutive failures that open the circuit); ``breaker_cooldown_s`` (seconds
    before a half-open probe); ``max_retry_after_s`` (longest server-requested wait
    honoured before giving up, seconds).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    kind: ProviderKind
    model: str = Field(min_length=1)
    default: bool = False
    api_key_env: str | None = None
    base_url: str | None = None
    timeout_s: float = Field(default=60.0, gt=0, le=3600)
    max_retries: int = Field(default=2, ge=0, le=10)
    max_tokens: int = Field(default=1024, ge=1)
    breaker_threshold: int = Field(default=5, ge=1)
    breaker_cooldown_s: float = Field(default=30.0, ge=0)
    max_retry_after_s: float = Field(default=60.0, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _no_inline_keys(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and any(k in data for k in ("api_key", "key", "token", "secret")):
            raise ValueError(
                "API keys must not be stored in config; put the key in an environment variable and set "
                'api_key_env = "THAT_VARIABLE_NAME"'
            )
        return data

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not _ENV_NAME.match(value):
            raise ValueError(
                "api_key_env must be the NAME of an environment variable (e.g. OPENAI_API_KEY), not the key itself"
            )
        return value

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("base_url must start with http:// or https://")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _compatible_needs_url(self) -> ProviderEntry:
        if self.kind == "openai_compatible" and not self.base_url:
            raise ValueError(
                'kind = "openai_compatible" needs base_url (e.g. "http://localhost:11434/v1" for Ollama)'
            )
        return self

    @property
    def effective_api_key_env(self) -> str | None:
        """The env var holding this entry's key: ``api_key_env`` or the kind's default (``None`` = keyless)."""
        return self.api_key_env or DEFAULT_KEY_ENV[self.kind]

    @property
    def needs_api_key(self) -> bool:
        """Whether a missing key makes the entry unusable (always, except keyless ``openai_compatible``)."""
        return self.effective_api_key_env is not None

    def retry_policy(self) -> RetryPolicy:
        """The :class:`RetryPolicy` for this entry."""
        return RetryPolicy(max_retries=self.max_retries, max_retry_after_s=self.max_retry_after_s)


class ProvidersConfig(BaseModel):
    """All provider entries plus the default name.

    Accepts the TOML ``[providers]`` table as-is (``default`` plus one sub-table per
    provider) or the explicit ``{"default": ..., "entries": {...}}`` form. Provider
    names must match ``[A-Za-z0-9][A-Za-z0-9_.-]*``; ``default`` must name an entry.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    default: str | None = None
    entries: dict[str, ProviderEntry] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _toml_shape(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "entries" not in data:
            rest = dict(data)
            default = rest.pop("default", None)
            return {"default": default, "entries": rest}
        return data

    @model_validator(mode="after")
    def _check_names(self) -> ProvidersConfig:
        for name in self.entries:
            if not _PROVIDER_NAME.match(name):
                raise ValueError(f"invalid provider name {name!r}: use letters, digits, '_', '-' or '.'")
        if self.default is not None and self.default not in self.entries:
            names = ", ".join(sorted(self.entries)) or "(none)"
            raise ValueError(f"providers.default = {self.default!r} is not a configured provider; configured: {names}")
        flagged = [name for name, entry in self.entries.items() if entry.default]
        if len(flagged) > 1:
            raise ValueError(f"more than one provider has default = true: {', '.join(flagged)}")
        if flagged and self.default is not None and flagged[0] != self.default:
            raise ValueError(
                f"providers.default = {self.default!r} disagrees with [providers.{flagged[0]}] default = true"
            )
        return self

    @property
    def names(self) -> tuple[str, ...]:
        """Configured provider names, in file order."""
        return tuple(self.entries)

    @property
    def default_name(self) -> str | None:
        """``default`` if set, else the entry with ``default = true``, else ``"primary"`` if configured,
        else the first entry, else ``None``."""
        if self.default:
            return self.default
        for name, entry in self.entries.items():
            if entry.default:
                return name
        if "primary" in self.entries:
            return "primary"
        return next(iter(self.entries), None)


def providers_from_env(env: Mapping[str, str]) -> dict[str, Any]:
    """The ``[providers]``-shaped dict described by ``BATON_PROVIDERS__*`` variables in ``env``.

    ``BATON_PROVIDERS__DEFAULT=x`` → ``{"default": "x"}``;
    ``BATON_PROVIDERS__NAME__FIELD=v`` → ``{"name": {"field": "v"}}`` (names and fields lower-cased).
    Other shapes are ignored.
    """
    out: dict[str, Any] = {}
    for key, value in env.items():
        if not key.upper().startswith(ENV_PREFIX):
            continue
        parts = key[len(ENV_PREFIX) :].lower().split("__")
        if parts == ["default"]:
            out["default"] = value
        elif len(parts) == 2 and all(parts):
            out.setdefault(parts[0], {})[parts[1]] = value
    return out


IMPLICIT_MODELS: dict[str, str] = {"openai": "gpt-4o-mini", "anthropic": "claude-haiku-4-5"}
"""Models used by :func:`implicit_providers` (cheap, current general-purpose models)."""


def implicit_providers(env: Mapping[str, str]) -> dict[str, Any]:
    """A ``[providers]``-shaped dict for the vendor keys present in ``env``, for when nothing is configured.

    ``OPENAI_API_KEY`` → entry ``openai`` (kind openai, :data:`IMPLICIT_MODELS`);
    ``ANTHROPIC_API_KEY`` → entry ``anthropic``. OpenAI first (default) when both are set.
    Opt-in via ``load_providers_config(implicit_from_keys=True)``.
    """
    out: dict[str, Any] = {}
    for kind, env_name in (("openai", "OPENAI_API_KEY"), ("anthropic", "ANTHROPIC_API_KEY")):
        if env.get(env_name):
            out[kind] = {"kind": kind, "model": IMPLICIT_MODELS[kind]}
    return out


def load_providers_config(
    path: str | os.PathLike[str] | None = DEFAULT_CONFIG_PATH,
    *,
    env: Mapping[str, str] | None = None,
    implicit_from_keys: bool = False,
) -> ProvidersConfig:
    """Read ``[providers]`` from the TOML file at ``path`` (missing file = empty) and overlay ``BATON_PROVIDERS__*``.

    ``env`` defaults to ``os.environ``; env values override file values field by field.
    With ``implicit_from_keys`` and no entries at all, :func:`implicit_providers` fills in
    entries for the vendor keys that are set. Raises ``pydantic.ValidationError`` (without
    input values) for invalid entries and ``tomllib.TOMLDecodeError`` for a malformed file.
    """
    data: dict[str, Any] = {}
    if path is not None and Path(path).is_file():
        with open(path, "rb") as fh:
            raw = tomllib.load(fh).get("providers", {})
        if isinstance(raw, Mapping):
            data = {k: dict(v) if isinstance(v, Mapping) else v for k, v in raw.items()}
    environ = os.environ if env is None else env
    for key, value in providers_from_env(environ).items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    if implicit_from_keys and not any(isinstance(v, Mapping) for v in data.values()):
        data.update(implicit_providers(environ))
    return ProvidersConfig.model_validate(data)
