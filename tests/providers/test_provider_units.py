"""Pure helpers: Retry-After parsing, retry policy, Anthropic turn shaping, config messages."""

from __future__ import annotations

import email.utils

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.providers import (
    ChatMessage,
    ProviderEntry,
    ProviderServerError,
    RateLimited,
    RetryPolicy,
    parse_retry_after,
)
from bot.providers.anthropic_provider import LEADING_USER_PLACEHOLDER, to_anthropic_messages
from bot.providers.base import split_system
from bot.providers.registry import missing_key_message
from tests.fakes.llm_server import split_tokens


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "3"}, 3.0),
        ({"retry-after": "0.25"}, 0.25),
        ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),
        ({"retry-after-ms": "junk", "retry-after": "2"}, 2.0),
        ({"retry-after": "-1"}, None),
        ({"retry-after": "soon"}, None),
        ({}, None),
    ],
)
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    assert parse_retry_after(headers) == expected


def test_parse_retry_after_http_date() -> None:
    now = 1_700_000_000.0
    header = email.utils.formatdate(now + 42, usegmt=True)
    assert parse_retry_after({"retry-after": header}, now=lambda: now) == pytest.approx(42, abs=1)


def test_retry_policy_delays_and_eligibility() -> None:
    policy = RetryPolicy(max_retries=5, backoff_initial_s=0.5, backoff_max_s=3, max_retry_after_s=10, jitter=False)
    assert [policy.delay_s(n, None) for n in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    limited = RateLimited("x", provider="p", retry_after_s=7)
    assert policy.delay_s(1, limited) == 7
    assert policy.should_retry(limited)
    assert not policy.should_retry(RateLimited("x", provider="p", retry_after_s=11))
    assert policy.should_retry(ProviderServerError("x", provider="p"))
    assert not policy.should_retry(ValueError("x"))
    jittered = RetryPolicy(backoff_initial_s=1.0, backoff_max_s=8)
    assert all(0.75 <= jittered.delay_s(1, None) <= 1.0 for _ in range(50))
    with pytest.raises(ValueError):
        RetryPolicy(max_retries=-1)


roles = st.sampled_from(["system", "user", "assistant"])
texts = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20)
conversations = st.lists(st.builds(ChatMessage, role=roles, content=texts), max_size=12)


@settings(database=None)
@given(conversations)
def test_anthropic_turns_always_alternate_starting_with_user(msgs: list[ChatMessage]) -> None:
    _, turns = split_system(msgs, None)
    if not any(m.content.strip() for m in turns):
        with pytest.raises(ValueError):
            to_anthropic_messages(turns)
        return
    out = to_anthropic_messages(turns)
    assert out[0]["role"] == "user"
    assert all(a["role"] != b["role"] for a, b in zip(out, out[1:]))
    assert all(m["content"].strip() for m in out)
    if out[-1]["role"] == "assistant":
        assert out[-1]["content"] == out[-1]["content"].rstrip()
    # no text is lost: every non-blank turn's content appears, in order
    joined = "\n\n".join(m["content"] for m in out)
    position = 0
    for m in turns:
        if m.content.strip():
            found = joined.find(m.content.rstrip(), position)
            assert found >= 0
            position = found


def test_leading_assistant_gets_placeholder_user_turn() -> None:
    out = to_anthropic_messages([ChatMessage("assistant", "hi"), ChatMessage("user", "yo")])
    assert out[0] == {"role": "user", "content": LEADING_USER_PLACEHOLDER}


@settings(database=None)
@given(st.text(max_size=200))
def test_fake_server_tokens_rejoin_exactly(text: str) -> None:
    assert "".join(split_tokens(text)) == text


def test_missing_key_message_for_keyed_compatible_server() -> None:
    entry = ProviderEntry(kind="openai_compatible", model="m", base_url="http://vllm:8000/v1", api_key_env="VLLM_KEY")
    assert entry.needs_api_key
    assert missing_key_message("gpu", entry) == (
        "VLLM_KEY is not set (provider 'gpu'); set it, or remove api_key_env from [providers.gpu] "
        "if the server at its base_url needs no key"
    )
