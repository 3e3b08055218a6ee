"""Fixtures for provider tests: a fake LLM server and fast-retrying providers pointed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from bot.providers import AnthropicProvider, OpenAIProvider
from tests.fakes.llm_server import FakeLLMServer
from tests.fakes.timing import FakeClock, RecordingSleep

from .support import ANTHROPIC_TEST_KEY, FAST_RETRY, OPENAI_TEST_KEY


@pytest.fixture
async def llm_server() -> AsyncIterator[FakeLLMServer]:
    async with FakeLLMServer() as server:
        yield server


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def recording_sleep() -> RecordingSleep:
    return RecordingSleep()


@pytest.fixture
async def make_openai(llm_server: FakeLLMServer) -> AsyncIterator[Callable[..., OpenAIProvider]]:
    """Factory: ``make_openai(**overrides)`` → OpenAIProvider against the fake server (closed after the test)."""
    made: list[OpenAIProvider] = []

    def factory(**overrides: Any) -> OpenAIProvider:
        kwargs: dict[str, Any] = {
            "name": "primary",
            "model": "gpt-4o-mini",
            "api_key": OPENAI_TEST_KEY,
            "base_url": llm_server.openai_base_url,
            "retry": FAST_RETRY,
            "timeout_s": 5.0,
        }
        kwargs.update(overrides)
        provider = OpenAIProvider(**kwargs)
        made.append(provider)
        return provider

    yield factory
    for provider in made:
        await provider.aclose()


@pytest.fixture
async def make_anthropic(llm_server: FakeLLMServer) -> AsyncIterator[Callable[..., AnthropicProvider]]:
    """Factory: ``make_anthropic(**overrides)`` → AnthropicProvider against the fake server."""
    made: list[AnthropicProvider] = []

    def factory(**overrides: Any) -> AnthropicProvider:
        kwargs: dict[str, Any] = {
            "name": "claude",
            "model": "claude-haiku-4-5",
            "api_key": ANTHROPIC_TEST_KEY,
            "base_url": llm_server.anthropic_base_url,
            "retry": FAST_RETRY,
            "timeout_s": 5.0,
        }
        kwargs.update(overrides)
        provider = AnthropicProvider(**kwargs)
        made.append(provider)
        return provider

    yield factory
    for provider in made:
        await provider.aclose()


@pytest.fixture(params=["openai", "anthropic"])
def make_provider(
    request: pytest.FixtureRequest,
    make_openai: Callable[..., OpenAIProvider],
    make_anthropic: Callable[..., AnthropicProvider],
) -> Callable[..., OpenAIProvider | AnthropicProvider]:
    """Parametrised over both SDKs."""
    return make_openai if request.param == "openai" else make_anthropic


