"""Chat in Slack: an LLM reply streamed into one threaded message, edited in place."""

from __future__ import annotations

from bot.store.sessions import ThreadKey
from tests.fakes.llm_server import FakeLLMServer
from tests.slack.conftest import Harness, mention

async def test_chat_reply_streams_into_one_message_edited_in_place(sqlite_url, slack_api) -> None:  # type: ignore[no-untyped-def]
    words = " ".join(f"word{i}" for i in range(40))
    async with FakeLLMServer(words, chunk_delay_s=0.02) as llm:
        providers = {"local": {"kind": "openai_compatible", "model": "llama3.1:8b", "base_url": llm.openai_base_url}}
        h = await Harness(sqlite_url, slack_api, baton={"providers": providers}, status_min_interval=0.2).start()
        try:
            body = mention("tell me forty words")
            ts = body["event"]["ts"]
            status, _, elapsed = await h.event(body)
            assert status == 200
            await h.settle()
            posts = h.posts(thread_ts=ts)
            assert len(posts) == 1, [p.args["text"] for p in posts]  # one message, not a flood
            reply_ts = posts[0].response["ts"]
            updates = slack_api.calls_to("chat.update", lambda c: c.args.get("ts") == reply_ts)
            assert len(updates) >= 2  # it grew in place while tokens arrived
            assert words in updates[-1].args["blocks"][0]["text"]["text"]
            hist = await h.app.sessions.history(ThreadKey("slack", "C111", ts))  # type: ignore[union-attr]
            assert hist[-1].role == "assistant" and hist[-1].text == words
        finally:
            await h.aclose()
