"""Config entries, the registry, and the "what do I set?" errors."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest

from bot.providers import (
    AnthropicProvider,
    ChatMessage,
    FallbackChain,
    NoProvidersConfigured,
    OpenAIProvider,
    ProviderEntry,
    ProviderNotConfigured,
    ProviderRegistry,
    ProvidersConfig,
    UnconfiguredProvider,
    UnknownProvider,
    load_providers_config,
)
from tests.fakes.llm_server import FakeLLMServer

from .support import ANTHROPIC_TEST_KEY, OPENAI_TEST_KEY

HI = [ChatMessage("user", "hi")]

TOML = """
[providers]
default = "primary"

[providers.primary]
kind = "openai"
model = "gpt-4o-mini"
api_key_env = "OPENAI_API_KEY"
timeout_s = 20
max_retries = 1

[providers.cheap]
kind = "anthropic"
model = "claude-haiku-4-5"

[providers.local]
kind = "openai_compatible"
model = "llama3.1:8b"
base_url = "http://localhost:11434/v1/"
"""


def write_config(tmp_path: Path, text: str = TOML) -> Path:
    path = tmp_path / "baton.toml"
    path.write_text(text)
    return path


def test_toml_entries_validate_with_defaults(tmp_path: Path) -> None:
    config = load_providers_config(write_config(tmp_path), env={})
    assert config.names == ("primary", "cheap", "local")
    assert config.default_name == "primary"
    primary = config.entries["primary"]
    assert (primary.timeout_s, primary.max_retries, primary.max_tokens) == (20.0, 1, 1024)
    assert config.entries["cheap"].effective_api_key_env == "ANTHROPIC_API_KEY"
    local = config.entries["local"]
    assert local.base_url == "http://localhost:11434/v1" and local.effective_api_key_env is None
    assert not local.needs_api_key
    assert primary.retry_policy().max_retries == 1


def test_env_overrides_file_and_adds_entries(tmp_path: Path) -> None:
    env = {
        "BATON_PROVIDERS__DEFAULT": "backup",
        "BATON_PROVIDERS__PRIMARY__MODEL": "gpt-4.1-mini",
        "BATON_PROVIDERS__BACKUP__KIND": "anthropic",
        "BATON_PROVIDERS__BACKUP__MODEL": "claude-sonnet-4-5",
        "BATON_PROVIDERS__BACKUP__TIMEOUT_S": "12.5",
        "UNRELATED": "x",
    }
    config = load_providers_config(write_config(tmp_path), env=env)
    assert config.default_name == "backup"
    assert config.entries["primary"].model == "gpt-4.1-mini"
    assert config.entries["primary"].timeout_s == 20  # untouched fields kept from the file
    assert config.entries["backup"].timeout_s == 12.5


def test_default_falls_back_to_primary_then_first() -> None:
    assert ProvidersConfig.model_validate({"b": {"kind": "openai", "model": "m"}, "primary": {"kind": "openai", "model": "m"}}).default_name == "primary"
    assert ProvidersConfig.model_validate({"b": {"kind": "openai", "model": "m"}}).default_name == "b"
    with pytest.raises(pydantic.ValidationError, match="not a configured provider"):
        ProvidersConfig.model_validate({"default": "nope", "b": {"kind": "openai", "model": "m"}})


def test_inline_api_key_rejected_without_echoing_it() -> None:
    secret = "sk-live-DO-NOT-ECHO-1234567890"
    with pytest.raises(pydantic.ValidationError) as info:
        ProviderEntry.model_validate({"kind": "openai", "model": "m", "api_key": secret})
    assert "api_key_env" in str(info.value)
    assert secret not in str(info.value) and secret not in repr(info.value)


def test_key_pasted_into_api_key_env_is_rejected_without_echo() -> None:
    secret = "sk-proj-abc/def+ghi-1234567890"
    with pytest.raises(pydantic.ValidationError) as info:
        ProviderEntry.model_validate({"kind": "openai", "model": "m", "api_key_env": secret})
    assert "NAME of an environment variable" in str(info.value)
    assert secret not in str(info.value)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"kind": "openai_compatible", "model": "m"}, "needs base_url"),
        ({"kind": "openai", "model": "m", "base_url": "localhost:1234"}, "http:// or https://"),
        ({"kind": "gemini", "model": "m"}, "kind"),
        ({"kind": "openai", "model": ""}, "model"),
        ({"kind": "openai", "model": "m", "timeout_s": 0}, "timeout_s"),
        ({"kind": "openai", "model": "m", "max_retries": -1}, "max_retries"),
        ({"kind": "openai", "model": "m", "colour": "blue"}, "colour"),
    ],
)
def test_invalid_entries(data: dict, match: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=match):
        ProviderEntry.model_validate(data)


async def test_missing_key_names_the_variable_to_set(tmp_path: Path) -> None:
    registry = ProviderRegistry.from_toml(write_config(tmp_path), env={})
    provider = registry.get("primary")
    assert isinstance(provider, UnconfiguredProvider)
    with pytest.raises(ProviderNotConfigured) as info:
        await provider.complete(HI)
    assert str(info.value) == (
        "OPENAI_API_KEY is not set (provider 'primary'); set it, or configure a local model instead, e.g. "
        '[providers.local] kind = "openai_compatible" with base_url = "http://localhost:11434/v1"'
    )
    assert info.value.setting == "OPENAI_API_KEY" and info.value.provider == "primary"
    with pytest.raises(ProviderNotConfigured, match="ANTHROPIC_API_KEY is not set \\(provider 'cheap'\\)"):
        async for _ in registry.get("cheap").stream(HI):
            pass
    assert registry.problems() == [
        str(info.value),
        registry.get("cheap").error().message,  # type: ignore[union-attr]
    ]


async def test_key_set_later_is_picked_up(tmp_path: Path, llm_server: FakeLLMServer) -> None:
    env: dict[str, str] = {"BATON_PROVIDERS__PRIMARY__BASE_URL": llm_server.openai_base_url}
    registry = ProviderRegistry.from_toml(write_config(tmp_path), env=env)
    assert isinstance(registry.get("primary"), UnconfiguredProvider)
    env["OPENAI_API_KEY"] = OPENAI_TEST_KEY
    provider = registry.get("primary")
    assert isinstance(provider, OpenAIProvider)
    assert registry.get("primary") is provider  # cached: one breaker per provider
    assert (await provider.complete(HI)).provider == "primary"
    assert llm_server.requests[-1].presented_api_key == OPENAI_TEST_KEY
    await registry.aclose()


def test_no_providers_configured_says_how_to_configure(tmp_path: Path) -> None:
    registry = ProviderRegistry.from_toml(tmp_path / "missing.toml", env={})
    with pytest.raises(NoProvidersConfigured) as info:
        registry.get()
    message = str(info.value)
    assert "config/baton.toml" in message and "[providers.primary]" in message
    assert "BATON_PROVIDERS__PRIMARY__KIND" in message
    assert isinstance(info.value, ProviderNotConfigured)
    with pytest.raises(NoProvidersConfigured):
        registry.get("anything")
    assert registry.problems() == [message]


def test_unknown_provider_lists_configured_names(tmp_path: Path) -> None:
    registry = ProviderRegistry.from_toml(write_config(tmp_path), env={})
    with pytest.raises(UnknownProvider) as info:
        registry.get("fast")
    assert str(info.value) == "no provider named 'fast'; configured providers: 'primary', 'cheap', 'local'"
    assert isinstance(info.value, LookupError)
    assert info.value.configured == ("primary", "cheap", "local")


async def test_registry_builds_each_kind_against_fake_server(llm_server: FakeLLMServer, tmp_path: Path) -> None:
    config = ProvidersConfig.model_validate(
        {
            "primary": {"kind": "openai", "model": "gpt-4o-mini", "base_url": llm_server.openai_base_url},
            "cheap": {"kind": "anthropic", "model": "claude-haiku-4-5", "base_url": llm_server.anthropic_base_url},
            "local": {"kind": "openai_compatible", "model": "llama3.1:8b", "base_url": llm_server.openai_base_url},
        }
    )
    registry = ProviderRegistry(config, env={"OPENAI_API_KEY": OPENAI_TEST_KEY, "ANTHROPIC_API_KEY": ANTHROPIC_TEST_KEY})
    assert isinstance(registry.get(), OpenAIProvider) and registry.get().name == "primary"
    assert isinstance(registry.get("cheap"), AnthropicProvider)
    local = registry.get("local")
    assert isinstance(local, OpenAIProvider) and local.compatible
    for name in registry.names:
        reply = await registry.get(name).complete(HI)
        assert reply.provider == name
    assert [r.api for r in llm_server.requests] == ["openai", "anthropic", "openai"]
    assert llm_server.requests[0].presented_api_key == OPENAI_TEST_KEY
    assert llm_server.requests[1].presented_api_key == ANTHROPIC_TEST_KEY
    chain = registry.chain()
    assert isinstance(chain, FallbackChain)
    assert [p.name for p in chain.providers] == ["primary", "cheap", "local"]
    await registry.aclose()


async def test_chain_skips_unconfigured_provider(llm_server: FakeLLMServer) -> None:
    config = ProvidersConfig.model_validate(
        {
            "primary": {"kind": "anthropic", "model": "claude-sonnet-4-5"},
            "local": {"kind": "openai_compatible", "model": "llama3.1:8b", "base_url": llm_server.openai_base_url},
        }
    )
    registry = ProviderRegistry(config, env={})
    reply = await registry.chain("primary", "local").complete(HI)
    assert reply.provider == "local"
    await registry.aclose()


def test_per_entry_default_flag_and_settings_shape() -> None:
    """bot.settings.Settings.providers is dict[str, dict]: the default is flagged inside an entry."""
    settings_providers = {
        "primary": {"kind": "openai", "model": "gpt-4o-mini"},
        "cheap": {"kind": "anthropic", "model": "claude-haiku-4-5", "default": "true"},
    }
    registry = ProviderRegistry.from_mapping(settings_providers, env={})
    assert registry.default_name == "cheap"
    with pytest.raises(pydantic.ValidationError, match="more than one provider has default = true"):
        ProvidersConfig.model_validate({n: {**e, "default": True} for n, e in settings_providers.items()})


def test_settings_env_shape_matches(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """What pydantic-settings (env_prefix BATON_, delimiter __) builds from the env validates as-is."""
    from pydantic_settings import BaseSettings, SettingsConfigDict

    class Probe(BaseSettings):
        model_config = SettingsConfigDict(env_prefix="BATON_", env_nested_delimiter="__", extra="ignore")
        providers: dict[str, dict[str, object]] = {}

    monkeypatch.setenv("BATON_PROVIDERS__LOCAL__KIND", "openai_compatible")
    monkeypatch.setenv("BATON_PROVIDERS__LOCAL__MODEL", "qwen2.5:7b")
    monkeypatch.setenv("BATON_PROVIDERS__LOCAL__BASE_URL", "http://127.0.0.1:11434/v1")
    config = ProvidersConfig.model_validate(Probe().providers)
    assert config.entries["local"].model == "qwen2.5:7b" and config.default_name == "local"


def test_implicit_providers_from_vendor_keys_is_opt_in(tmp_path: Path) -> None:
    env = {"ANTHROPIC_API_KEY": ANTHROPIC_TEST_KEY}
    assert load_providers_config(tmp_path / "none.toml", env=env).names == ()
    config = load_providers_config(tmp_path / "none.toml", env=env, implicit_from_keys=True)
    assert config.names == ("anthropic",) and config.entries["anthropic"].model == "claude-haiku-4-5"
    # an explicit config is never extended implicitly
    assert load_providers_config(write_config(tmp_path), env=env, implicit_from_keys=True).names == ("primary", "cheap", "local")
