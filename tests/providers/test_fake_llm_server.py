"""The fake LLM server speaks both wire formats to the *raw* SDKs (what other suites rely on)."""

from __future__ import annotations

import anthropic
import httpx2
import openai
import pytest

from tests.fakes.llm_server import FakeLLMServer, RecordedRequest, echo_last_user, split_tokens

from .support import ANTHROPIC_TEST_KEY, OPENAI_TEST_KEY


@pytest.fixture
async def sdk_clients(llm_server: FakeLLMServer):
    oc = openai.AsyncOpenAI(api_key=OPENAI_TEST_KEY, base_url=llm_server.openai_base_url, max_retries=0)
    ac = anthropic.AsyncAnthropic(api_key=ANTHROPIC_TEST_KEY, base_url=llm_server.anthropic_base_url, max_retries=0)
    yield oc, ac
    await oc.close()
    await ac.close()


async def test_non_streaming_both_formats(llm_server: FakeLLMServer, sdk_clients) -> None:
    oc, ac = sdk_clients
    llm_server.reply = "plain answer"
    chat = await oc.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "q"}])
    assert chat.choices[0].message.content == "plain answer"
    assert chat.choices[0].finish_reason == "stop"
    assert chat.usage is not None and chat.usage.completion_tokens == 2
    msg = await ac.messages.create(model="claude-x", max_tokens=5, messages=[{"role": "user", "content": "q"}])
    assert msg.content[0].text == "plain answer"  # type: ignore[union-attr]
    assert msg.stop_reason == "end_turn" and msg.usage.output_tokens == 2
    assert [(r.api, r.stream, r.path) for r in llm_server.requests] == [
        ("openai", False, "/v1/chat/completions"),
        ("anthropic", False, "/v1/messages"),
    ]


async def test_openai_stream_chunk_sequence(llm_server: FakeLLMServer, sdk_clients) -> None:
    oc, _ = sdk_clients
    llm_server.reply = "a b"
    stream = await oc.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "q"}], stream=True, stream_options={"include_usage": True}
    )
    chunks = [c async for c in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].delta.content for c in chunks[1:3]] == ["a ", "b"]
    assert chunks[3].choices[0].finish_reason == "stop"
    assert chunks[4].choices == [] and chunks[4].usage is not None and chunks[4].usage.completion_tokens == 2
    assert all(c.usage is None for c in chunks[:4])


async def test_openai_stream_without_include_usage_has_no_usage_chunk(llm_server: FakeLLMServer, sdk_clients) -> None:
    oc, _ = sdk_clients
    stream = await oc.chat.completions.create(model="m", messages=[{"role": "user", "content": "q"}], stream=True)
    chunks = [c async for c in stream]
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks)


async def test_anthropic_stream_event_sequence(llm_server: FakeLLMServer, sdk_clients) -> None:
    _, ac = sdk_clients
    llm_server.reply = "x y z"
    stream = await ac.messages.create(
        model="claude-x", max_tokens=50, messages=[{"role": "user", "content": "q"}], stream=True
    )
    types = [e.type async for e in stream]  # the SDK drops `ping`
    assert types == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]


async def test_reply_function_queue_and_async_replies(llm_server: FakeLLMServer, sdk_clients) -> None:
    oc, _ = sdk_clients

    async def async_reply(req: RecordedRequest) -> str:
        return f"model={req.model}"

    llm_server.reply = echo_last_user()
    llm_server.queue_replies("first canned", async_reply)
    replies = []
    for text in ("one", "two", "three"):
        chat = await oc.chat.completions.create(model="m1", messages=[{"role": "user", "content": text}])
        replies.append(chat.choices[0].message.content)
    assert replies == ["first canned", "model=m1", "You said: three"]
    assert [r.reply_text for r in llm_server.requests] == replies


async def test_require_api_key_answers_vendor_401(llm_server: FakeLLMServer, sdk_clients) -> None:
    oc, ac = sdk_clients
    llm_server.require_api_key("sk-other-key-1234567890")
    with pytest.raises(openai.AuthenticationError) as o_err:
        await oc.chat.completions.create(model="m", messages=[{"role": "user", "content": "q"}])
    assert o_err.value.code == "invalid_api_key"
    with pytest.raises(anthropic.AuthenticationError) as a_err:
        await ac.messages.create(model="m", max_tokens=5, messages=[{"role": "user", "content": "q"}])
    assert a_err.value.type == "authentication_error"


async def test_faults_are_scoped_and_counted(llm_server: FakeLLMServer, sdk_clients) -> None:
    oc, ac = sdk_clients
    fault = llm_server.server_error(times=2, api="anthropic")
    await oc.chat.completions.create(model="m", messages=[{"role": "user", "content": "q"}])  # unaffected
    for _ in range(2):
        with pytest.raises(anthropic.InternalServerError):
            await ac.messages.create(model="m", max_tokens=5, messages=[{"role": "user", "content": "q"}])
    await ac.messages.create(model="m", max_tokens=5, messages=[{"role": "user", "content": "q"}])
    assert fault.hits == 2 and llm_server.pending_faults == []
    assert [r.status for r in llm_server.requests] == [200, 500, 500, 200]


async def test_server_timings_recorded_and_pacing(llm_server: FakeLLMServer) -> None:
    llm_server.reply = "a b c"
    llm_server.chunk_delay_s = 0.05
    async with httpx2.AsyncClient() as client:
        async with client.stream(
            "POST", f"{llm_server.openai_base_url}/chat/completions", json={"model": "m", "stream": True, "messages": []}
        ) as resp:
            body = b"".join([chunk async for chunk in resp.aiter_bytes()])
    assert body.endswith(b"data: [DONE]\n\n")
    rec = llm_server.requests[-1]
    assert rec.outcome == "ok" and rec.first_byte_s is not None and rec.server_time_s is not None
    assert rec.server_time_s >= 0.1  # two inter-token delays
    assert rec.first_byte_s <= rec.server_time_s


def test_split_tokens_roundtrip() -> None:
    text = "  Hello,  world!\nNext line "
    assert "".join(split_tokens(text)) == text
    assert len(split_tokens(text)) == 4
