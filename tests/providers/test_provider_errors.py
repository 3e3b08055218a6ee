"""Error translation: each vendor's real error shape → a ProviderError that says what to do."""

from __future__ import annotations

import pytest

from bot.providers import (
    ChatMessage,
    ContextLengthError,
    ProviderAuthError,
    ProviderRequestError,
    RateLimited,
)
from bot.providers._translate import parse_context_numbers
from tests.fakes.llm_server import FakeLLMServer

HI = [ChatMessage("user", "summarise the incident channel")]


async def test_auth_error_names_provider_and_key_setting(llm_server: FakeLLMServer, make_provider) -> None:
    llm_server.require_api_key("sk-the-right-key-000000")
    provider = make_provider(name="primary")
    with pytest.raises(ProviderAuthError) as info:
        await provider.complete(HI)
    err = info.value
    assert err.provider == "primary" and err.status_code == 401
    env = "OPENAI_API_KEY" if provider.kind == "openai" else "ANTHROPIC_API_KEY"
    assert err.api_key_env == env
    assert str(err) == f"authentication failed for provider 'primary' (HTTP 401): the API key from {env} was rejected"
    assert len(llm_server.requests) == 1  # not retried


async def test_auth_error_for_keyless_compatible_server_says_to_configure_a_key(
    llm_server: FakeLLMServer, make_openai
) -> None:
    llm_server.auth_error()
    provider = make_openai(name="local", api_key=None, api_key_env=None, compatible=True)
    with pytest.raises(ProviderAuthError, match=r"provider 'local'.*requires an API key; set api_key_env in \[providers.local\]"):
        await provider.complete(HI)


async def test_permission_denied_403(llm_server: FakeLLMServer, make_provider) -> None:
    llm_server.fail(403)
    with pytest.raises(ProviderAuthError, match="permission denied for provider") as info:
        await make_provider().complete(HI)
    assert info.value.status_code == 403


@pytest.mark.parametrize(("limit", "requested"), [(128_000, 130_532), (200_000, 208_310)])
async def test_context_length_error_says_by_how_much(
    llm_server: FakeLLMServer, make_provider, limit: int, requested: int
) -> None:
    llm_server.context_length_error(limit_tokens=limit, requested_tokens=requested)
    provider = make_provider()
    with pytest.raises(ContextLengthError) as info:
        await provider.complete(HI)
    err = info.value
    assert (err.limit_tokens, err.requested_tokens, err.over_by_tokens) == (limit, requested, requested - limit)
    assert f"over by {requested - limit} tokens" in str(err)
    assert err.provider == provider.name and provider.model in str(err)
    assert len(llm_server.requests) == 1


async def test_context_length_without_numbers_still_classified(llm_server: FakeLLMServer, make_openai) -> None:
    llm_server.fail(400, message="Input exceeds the model's context window.")
    with pytest.raises(ContextLengthError, match="did not say by how much") as info:
        await make_openai().complete(HI)
    assert info.value.over_by_tokens is None


@pytest.mark.parametrize(
    ("message", "body", "expected"),
    [
        (
            "This model's maximum context length is 8192 tokens. However, you requested 8200 tokens "
            "(7000 in the messages, 1200 in the completion). Please reduce the length of the messages or completion.",
            None,
            (8192, 8200),
        ),
        (
            "'max_tokens' or 'max_completion_tokens' is too large: 1000. This model's maximum context length is "
            "4096 tokens and your request has 3500 input tokens (1000 > 4096 - 3500).",
            None,
            (4096, 4500),
        ),
        ("input length and `max_tokens` exceed context limit: 198000 + 8192 > 200000, decrease input", None, (200000, 206192)),
        (
            "the request exceeds the available context size, try increasing it",
            {"code": 400, "type": "exceed_context_size_error", "n_prompt_tokens": 5000, "n_ctx": 4096},
            (4096, 5000),
        ),
    ],
)
def test_context_numbers_from_vendor_wordings(message: str, body: object, expected: tuple[int, int]) -> None:
    """OpenAI (older wording), vLLM, Anthropic (prompt+max_tokens) and llama.cpp."""
    assert parse_context_numbers(message, body) == expected


async def test_insufficient_quota_429_is_not_retried(llm_server: FakeLLMServer, make_openai) -> None:
    """OpenAI answers 429 with code insufficient_quota when billing is exhausted; waiting won't help."""
    llm_server.fail(
        429,
        error_type="insufficient_quota",
        error_code="insufficient_quota",
        message="You exceeded your current quota, please check your plan and billing details.",
    )
    with pytest.raises(ProviderRequestError, match="quota exhausted") as info:
        await make_openai().complete(HI)
    assert info.value.error_code == "insufficient_quota"
    assert len(llm_server.requests) == 1


async def test_rate_limit_exhausted_is_reported_with_retry_after(
    llm_server: FakeLLMServer, make_provider, recording_sleep
) -> None:
    llm_server.rate_limit(retry_after=2, times=10)
    with pytest.raises(RateLimited) as info:
        await make_provider(sleep=recording_sleep).complete(HI)
    assert info.value.retry_after_s == 2.0 and info.value.status_code == 429
    assert recording_sleep.calls == [2.0, 2.0]


async def test_unknown_model_404_is_a_request_error(llm_server: FakeLLMServer, make_provider) -> None:
    llm_server.fail(404)
    with pytest.raises(ProviderRequestError, match="HTTP 404") as info:
        await make_provider().complete(HI)
    assert info.value.status_code == 404
    assert len(llm_server.requests) == 1
