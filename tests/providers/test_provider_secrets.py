"""API keys never appear in reprs, logs, error messages or exception chains."""

from __future__ import annotations

import logging
import traceback

import pytest

from bot.providers import (
    ChatMessage,
    ProviderAuthError,
    ProviderEntry,
    ProviderError,
    ProviderRegistry,
    ProviderServerError,
    ProvidersConfig,
    StreamInterrupted,
)
from bot.providers._redact import redact, safe_url
from tests.fakes.llm_server import FakeLLMServer

OPENAI_SECRET = "sk-proj-SECRETopenai0123456789abcdef"
ANTHROPIC_SECRET = "sk-ant-api03-SECRETanthropic0123456789"
SECRETS = (OPENAI_SECRET, ANTHROPIC_SECRET)
FRAGMENTS = ("SECRETopenai", "SECRETanthropic")


def full_text(exc: BaseException) -> str:
    """Everything a log with exc_info would show: str, repr and the formatted chain."""
    return "\n".join([str(exc), repr(exc), "".join(traceback.format_exception(exc))])


def chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and every exception reachable through ``__cause__`` / ``__context__``."""
    seen: list[BaseException] = []
    todo = [exc]
    while todo:
        current = todo.pop()
        if current is None or any(current is s for s in seen):
            continue
        seen.append(current)
        todo += [current.__cause__, current.__context__]  # type: ignore[list-item]
    return seen


def assert_clean(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text
    for fragment in FRAGMENTS:
        assert fragment not in text
    assert "*" * 12 not in text  # OpenAI's masked echo of the key ("sk-pr************cdef")


async def test_keys_never_in_repr_logs_or_errors(llm_server: FakeLLMServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # everything: ours, openai, anthropic, httpx2, aiohttp
    config = ProvidersConfig.model_validate(
        {
            "primary": {"kind": "openai", "model": "gpt-4o-mini", "base_url": llm_server.openai_base_url, "max_retries": 1},
            "cheap": {"kind": "anthropic", "model": "claude-haiku-4-5", "base_url": llm_server.anthropic_base_url, "max_retries": 1},
        }
    )
    env = {"OPENAI_API_KEY": OPENAI_SECRET, "ANTHROPIC_API_KEY": ANTHROPIC_SECRET}
    registry = ProviderRegistry(config, env=env)
    texts = [repr(registry), repr(config), str(config.model_dump())]
    errors: list[BaseException] = []
    for name in registry.names:
        provider = registry.get(name)
        texts += [repr(provider), str(provider), repr(vars(provider).get("breaker"))]
        # a normal reply, a retried 429, an auth failure (OpenAI echoes a masked key), a cut stream
        await provider.complete([ChatMessage("user", "hello")])
        llm_server.rate_limit(retry_after=0)
        await provider.complete([ChatMessage("user", "hello")])
        llm_server.auth_error()
        with pytest.raises(ProviderAuthError) as auth:
            await provider.complete([ChatMessage("user", "hello")])
        errors.append(auth.value)
        llm_server.server_error(times=2)  # max_retries=1: both attempts fail, error re-raised via tenacity
        with pytest.raises(ProviderServerError) as server_err:
            await provider.complete([ChatMessage("user", "hello")])
        errors.append(server_err.value)
        llm_server.cut_stream(after_chunks=2)
        with pytest.raises(StreamInterrupted) as cut:
            await provider.complete([ChatMessage("user", "hello")])
        errors.append(cut.value)
    await registry.aclose()

    assert any(r.status == 401 for r in llm_server.requests)
    openai_401 = next(r for r in llm_server.requests if r.status == 401 and r.api == "openai")
    assert openai_401.presented_api_key == OPENAI_SECRET  # the key really was sent...
    for exc in errors:
        assert isinstance(exc, ProviderError)
        texts.append(full_text(exc))
        # No SDK/httpx exception (which carries the request's Authorization header) is reachable.
        for linked in chain(exc):
            assert type(linked).__module__.split(".")[0] not in ("openai", "anthropic", "httpx", "httpx2", "httpcore2")
    texts.append(caplog.text)
    texts += [str(r.__dict__) for r in caplog.records]
    for text in texts:  # ...but never shows up anywhere a human or a log aggregator could see it
        assert_clean(text)
    assert "rate limited" in caplog.text  # the retry was logged, without the key


def test_entry_holds_only_the_variable_name() -> None:
    entry = ProviderEntry(kind="openai", model="gpt-4o", api_key_env="BATON_OPENAI_KEY")
    assert "BATON_OPENAI_KEY" in repr(entry)
    assert not any(field in entry.model_dump() for field in ("api_key", "key", "secret"))


def test_redact_helpers() -> None:
    text = f"Incorrect API key provided: sk-pr************cdef. Bearer {OPENAI_SECRET} and {ANTHROPIC_SECRET}"
    out = redact(text, SECRETS)
    assert_clean(out)
    assert "sk-pr***" not in out and "[redacted]" in out
    assert safe_url("https://user:hunter2@proxy.example:8443/v1?key=abc") == "https://proxy.example:8443/v1"
