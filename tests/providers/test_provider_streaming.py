"""Streaming through the real openai / anthropic SDKs against the fake server."""

from __future__ import annotations

import httpx
import httpx2
import pytest

from bot.providers import (
    AnthropicProvider,
    ChatMessage,
    Completion,
    OpenAIProvider,
    Provider,
    StreamEnd,
    TextDelta,
    Usage,
)
from bot.providers.anthropic_provider import LEADING_USER_PLACEHOLDER
from tests.fakes.llm_server import FakeLLMServer, count_tokens, recall_first_user

from .support import ANTHROPIC_TEST_KEY, OPENAI_TEST_KEY

HISTORY = [
    ChatMessage("user", "My deploy target is staging-eu-2."),
    ChatMessage("assistant", "Noted: staging-eu-2."),
    ChatMessage("user", "Which target did I give you?"),
]


async def test_streams_deltas_then_end_with_usage(llm_server: FakeLLMServer, make_provider) -> None:
    llm_server.reply = "Rolling out build 4512 to staging now."
    provider = make_provider()

    events = [e async for e in provider.stream([ChatMessage("user", "ship it")])]

    deltas = [e for e in events if isinstance(e, TextDelta)]
    assert len(deltas) == 7  # one per word token from the server — really streamed, not one blob
    assert "".join(d.text for d in deltas) == "Rolling out build 4512 to staging now."
    end = events[-1]
    assert isinstance(end, StreamEnd) and sum(isinstance(e, StreamEnd) for e in events) == 1
    req = llm_server.requests[-1]
    assert req.stream is True
    assert end.usage == Usage(input_tokens=count_tokens(req.input_text), output_tokens=7)
    assert end.usage_reported is True
    assert end.finish_reason == "stop"
    assert end.model == provider.model
    assert end.provider == provider.name
    assert isinstance(provider, Provider)


async def test_openai_requests_usage_chunk_and_uses_max_completion_tokens(
    llm_server: FakeLLMServer, make_openai
) -> None:
    provider = make_openai(max_tokens=300)
    await provider.complete([ChatMessage("user", "hi")])
    body = llm_server.requests[-1].body
    assert body["stream_options"] == {"include_usage": True}
    assert body["max_completion_tokens"] == 300 and "max_tokens" not in body
    assert llm_server.requests[-1].presented_api_key == OPENAI_TEST_KEY


async def test_earlier_turns_reach_the_model(llm_server: FakeLLMServer, make_provider) -> None:
    llm_server.reply = recall_first_user()
    reply = await make_provider().complete(HISTORY)
    assert reply.text == "Earlier you said: My deploy target is staging-eu-2."
    assert llm_server.requests[-1].messages == [(m.role, m.content) for m in HISTORY]


async def test_openai_system_prompt_is_first_message(llm_server: FakeLLMServer, make_openai) -> None:
    await make_openai().complete(
        [ChatMessage("system", "Answer in French."), ChatMessage("user", "hello")], system="You are Baton."
    )
    sent = llm_server.requests[-1].body["messages"]
    assert sent[0] == {"role": "system", "content": "You are Baton.\n\nAnswer in French."}
    assert sent[1:] == [{"role": "user", "content": "hello"}]


async def test_anthropic_system_goes_in_system_param_and_turns_alternate(
    llm_server: FakeLLMServer, make_anthropic
) -> None:
    await make_anthropic().complete(
        [
            ChatMessage("assistant", "(bot) previous answer"),
            ChatMessage("system", "Answer in French."),
            ChatMessage("user", "first"),
            ChatMessage("user", "second"),
            ChatMessage("assistant", "   "),
            ChatMessage("user", "third"),
        ],
        system="You are Baton.",
    )
    body = llm_server.requests[-1].body
    assert body["system"] == "You are Baton.\n\nAnswer in French."
    assert body["messages"] == [
        {"role": "user", "content": LEADING_USER_PLACEHOLDER},
        {"role": "assistant", "content": "(bot) previous answer"},
        {"role": "user", "content": "first\n\nsecond\n\nthird"},
    ]
    roles = [m["role"] for m in body["messages"]]
    assert all(a != b for a, b in zip(roles, roles[1:]))
    assert body["max_tokens"] == 1024
    assert llm_server.requests[-1].presented_api_key == ANTHROPIC_TEST_KEY


async def test_max_tokens_truncation_reports_length(llm_server: FakeLLMServer, make_provider) -> None:
    llm_server.reply = "one two three four five six"
    reply = await make_provider().complete([ChatMessage("user", "count")], max_tokens=3)
    assert reply.text == "one two three "
    assert reply.finish_reason == "length"
    assert reply.raw_finish_reason in ("length", "max_tokens")
    assert reply.usage.output_tokens == 3


async def test_model_override_per_call(llm_server: FakeLLMServer, make_provider) -> None:
    reply = await make_provider().complete([ChatMessage("user", "x")], model="override-model-1")
    assert llm_server.requests[-1].model == "override-model-1"
    assert reply.model == "override-model-1"


async def test_complete_equals_collected_stream(llm_server: FakeLLMServer, make_provider) -> None:
    llm_server.reply = "alpha beta gamma"
    reply = await make_provider().complete([ChatMessage("user", "x")])
    assert isinstance(reply, Completion)
    assert reply.text == "alpha beta gamma"
    assert reply.usage.output_tokens == 3


async def test_empty_reply_still_ends_with_stream_end(llm_server: FakeLLMServer, make_provider) -> None:
    llm_server.reply = ""
    events = [e async for e in make_provider().stream([ChatMessage("user", "x")])]
    assert len(events) == 1 and isinstance(events[0], StreamEnd)


async def test_openai_compatible_without_key_uses_max_tokens(llm_server: FakeLLMServer, make_openai) -> None:
    provider = make_openai(name="local", model="llama3.1:8b", api_key=None, api_key_env=None, compatible=True)
    reply = await provider.complete([ChatMessage("user", "hi")], max_tokens=50)
    body = llm_server.requests[-1].body
    assert body["max_tokens"] == 50 and "max_completion_tokens" not in body
    assert reply.provider == "local" and reply.model == "llama3.1:8b"


async def test_compatible_server_without_usage_reports_usage_missing(make_openai) -> None:
    """Servers that ignore stream_options.include_usage: the reply completes, usage flagged as not reported."""
    async with FakeLLMServer(reply="a b", openai_usage_chunk=False) as server:
        provider = make_openai(base_url=server.openai_base_url, compatible=True)
        reply = await provider.complete([ChatMessage("user", "x")])
    assert reply.text == "a b"
    assert reply.usage_reported is False
    assert reply.usage == Usage(0, 0)


async def test_injected_httpx2_client_is_used_and_left_open(llm_server: FakeLLMServer) -> None:
    seen: list[str] = []

    async def hook(request: httpx2.Request) -> None:
        seen.append(str(request.url))

    async with httpx2.AsyncClient(event_hooks={"request": [hook]}) as client:
        for provider in (
            OpenAIProvider(
                name="o", model="gpt-4o-mini", api_key=OPENAI_TEST_KEY, base_url=llm_server.openai_base_url, http_client=client
            ),
            AnthropicProvider(
                name="a", model="claude-haiku-4-5", api_key=ANTHROPIC_TEST_KEY, base_url=llm_server.anthropic_base_url, http_client=client
            ),
        ):
            reply = await provider.complete([ChatMessage("user", "hi")])
            assert reply.text
            await provider.aclose()
        assert not client.is_closed
    assert seen == [f"{llm_server.openai_base_url}/chat/completions", f"{llm_server.anthropic_base_url}/v1/messages"]


async def test_openai_accepts_legacy_httpx_client(llm_server: FakeLLMServer) -> None:
    async with httpx.AsyncClient() as client:
        provider = OpenAIProvider(
            name="o", model="gpt-4o-mini", api_key=OPENAI_TEST_KEY, base_url=llm_server.openai_base_url, http_client=client
        )
        assert (await provider.complete([ChatMessage("user", "hi")])).text


def test_anthropic_rejects_legacy_httpx_client_with_advice() -> None:
    client = httpx.AsyncClient()
    with pytest.raises(TypeError, match="httpx2.AsyncClient"):
        AnthropicProvider(name="a", model="m", api_key=ANTHROPIC_TEST_KEY, http_client=client)  # type: ignore[arg-type]


async def test_bad_arguments_fail_before_any_request(llm_server: FakeLLMServer, make_provider) -> None:
    provider = make_provider()
    with pytest.raises(ValueError):
        await provider.complete([])
    with pytest.raises(ValueError):
        await provider.complete([ChatMessage("system", "only a system prompt")])
    with pytest.raises(ValueError):
        await provider.complete([ChatMessage("user", "x")], max_tokens=0)
    with pytest.raises(TypeError):
        await provider.complete(["hi"])  # type: ignore[list-item]
    with pytest.raises(ValueError):
        ChatMessage("tool", "x")  # type: ignore[arg-type]
    assert llm_server.requests == []


async def test_concurrent_streams_share_one_provider(llm_server: FakeLLMServer, make_provider) -> None:
    import asyncio

    llm_server.reply = recall_first_user("echo: ")
    llm_server.chunk_delay_s = 0.005
    provider = make_provider()
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(provider.complete([ChatMessage("user", f"job-{i}")])) for i in range(10)]
    assert [t.result().text for t in tasks] == [f"echo: job-{i}" for i in range(10)]
    assert len(llm_server.requests) == 10 and provider.breaker.state == "closed"


async def test_openai_sse_framing_comments_crlf_multiline_data_and_an_unterminated_tail() -> None:
    """SSE as servers really send it (https://html.spec.whatwg.org/multipage/server-sent-events.html):
    keep-alive comments, CRLF line ends, an ``event:`` field, data split over two ``data:`` lines,
    and bytes after ``[DONE]``; an event cut off before its blank line is not dispatched."""
    body = (
        b": keep-alive\r\n\r\n"
        b'data: {"model":"m","choices":[{"index":0,"delta":{"content":"disk "},"finish_reason":null}]}\r\n\r\n'
        b"event: chunk\r\n"
        b'data: {"model":"m","choices":[{"index":0,\r\n'
        b'data: "delta":{"content":"full"},"finish_reason":"stop"}]}\r\n\r\n'
        b'data: {"model":"m","choices":[],"usage":{"prompt_tokens":7,"completion_tokens":2}}\r\n\r\n'
        b"data: [DONE]\r\n\r\n"
        b'data: {"choices":[{"index":0,"delta":{"content":" never shown"}}]}'
    )
    seen: list[httpx2.Request] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    async with httpx2.AsyncClient(transport=httpx2.MockTransport(handler)) as http:
        provider = OpenAIProvider(name="local", model="m", api_key=None, base_url="http://vllm.invalid/v1", compatible=True, http_client=http)
        events = [e async for e in provider.stream([ChatMessage("user", "df?")])]
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "disk full"
    end = events[-1]
    assert isinstance(end, StreamEnd) and end.usage == Usage(7, 2) and end.raw_finish_reason == "stop"
    assert seen[0].url.path == "/v1/chat/completions"
