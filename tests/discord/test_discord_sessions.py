"""Threads as sessions: MESSAGE_CREATE in a session thread continues it; mentions; bots ignored."""

from __future__ import annotations

import asyncio

import pytest

from bot.store import ThreadKey
from tests.discord.support import ALICE, BOT_ID, CHANNEL_ID, GUILD_ID, DiscordEnv

START_THREAD = "POST /channels/{channel_id}/messages/{message_id}/threads"
POST_MSG = "POST /channels/{channel_id}/messages"
EDIT_MSG = "PATCH /channels/{channel_id}/messages/{message_id}"


async def open_session(env: DiscordEnv) -> tuple[str, ThreadKey]:
    """``/run workflow:disk-check``, then the THREAD_CREATE Discord would send; returns the thread id and key."""
    env.feed(env.slash("run", {"workflow": "disk-check"}))
    await env.settle()
    [call] = env.api.find(START_THREAD, channel_id=CHANNEL_ID)
    thread_id = call.params["message_id"]
    return thread_id, ThreadKey("discord", CHANNEL_ID, thread_id)


@pytest.mark.parametrize("discord_overrides", [{"chat_in_channels": True}], indirect=True)
async def test_message_in_session_thread_continues_it(env: DiscordEnv) -> None:
    thread_id, key = await open_session(env)
    env.feed(env.thread_create(thread_id))  # the thread is now in discord.py's cache, owned by the bot
    before = len(env.api.find(POST_MSG, channel_id=thread_id))

    env.feed(env.message("run: echo second", thread_id))
    await env.settle()
    posts = env.api.find(POST_MSG, channel_id=thread_id)[before:]
    assert any("Run #2 succeeded" in p.json["content"] and "second" in p.json["content"] for p in posts)
    runs = await env.app.runs.list()
    assert {r.thread_id for r in runs} == {await env.app.sessions.thread_id(key)}  # same session

    env.feed(env.message("/history 10", thread_id))
    await env.settle()
    history = env.api.find(POST_MSG, channel_id=thread_id)[-1].json["content"]
    assert f"{ALICE['id']}: /run disk-check" in history and f"{ALICE['id']}: run: echo second" in history


@pytest.mark.parametrize("discord_overrides", [{"chat_in_channels": True}], indirect=True)
async def test_thread_known_without_thread_create_still_continues(env: DiscordEnv) -> None:
    """Before THREAD_CREATE arrives the channel is only a PartialMessageable; the adapter knows the thread."""
    thread_id, key = await open_session(env)
    env.feed(env.message("/runs", thread_id))
    await env.settle()
    assert "#1" in env.api.find(POST_MSG, channel_id=thread_id)[-1].json["content"]
    assert (await env.app.sessions.history(key))[-2].text == "/runs"


async def test_without_message_content_intent_only_mentions_continue(env: DiscordEnv) -> None:
    assert env.client.intents.message_content is False
    thread_id, key = await open_session(env)
    env.feed(env.thread_create(thread_id))
    count = await env.app.sessions.count(key)
    calls = len(env.api.calls)

    env.feed(env.message("/runs", thread_id))  # no mention: not for us (Discord would blank its content)
    await env.settle()
    assert len(env.api.calls) == calls and await env.app.sessions.count(key) == count

    env.feed(env.message("/runs", thread_id, mention_bot=True))
    await env.settle()
    assert (await env.app.sessions.history(key))[-2].text == "/runs"  # stored without the mention
    assert "#1" in env.api.find(POST_MSG, channel_id=thread_id)[-1].json["content"]


@pytest.mark.parametrize("discord_overrides", [{"chat_in_channels": True}], indirect=True)
async def test_bot_and_own_messages_are_ignored(env: DiscordEnv) -> None:
    thread_id, key = await open_session(env)
    env.feed(env.thread_create(thread_id))
    count = await env.app.sessions.count(key)
    calls = len(env.api.calls)
    other_bot = {"id": "183312554389405697", "username": "test", "discriminator": "7529", "avatar": None, "bot": True}
    me = {"id": BOT_ID, "username": "Baton", "discriminator": "0", "avatar": None, "bot": True}
    env.feed(env.message("run: echo loop", thread_id, author=other_bot, mention_bot=True))
    env.feed(env.message("run: echo loop", thread_id, author=me))
    await env.settle()
    assert len(env.api.calls) == calls
    assert await env.app.sessions.count(key) == count and len(await env.app.runs.list()) == 1


async def test_mention_in_channel_opens_a_thread_from_the_message(env: DiscordEnv) -> None:
    d = env.feed(env.message("run: echo from a mention", CHANNEL_ID, mention_bot=True))
    await env.settle()
    [call] = env.api.find(START_THREAD, channel_id=CHANNEL_ID, message_id=d["id"])
    assert call.json["name"] == "echo from a mention"
    thread_id = call.params["message_id"]
    result = env.api.find(POST_MSG, channel_id=thread_id)[-1].json["content"]
    assert "Run #1 succeeded" in result and "from a mention" in result
    [run] = await env.app.runs.list()
    assert await env.app.sessions.key_for(run.thread_id) == ThreadKey("discord", CHANNEL_ID, thread_id)


async def test_mention_with_read_only_command_answers_in_place(env: DiscordEnv) -> None:
    env.feed(env.message("/workflows", CHANNEL_ID, mention_bot=True))
    await env.settle()
    assert env.api.find(START_THREAD) == []
    assert "disk-check" in env.api.find(POST_MSG, channel_id=CHANNEL_ID)[-1].json["content"]


async def test_redelivered_message_is_handled_once(env: DiscordEnv) -> None:
    frame = env.message("/help", CHANNEL_ID, mention_bot=True)
    env.feed(frame)
    await env.settle()
    env.feed(frame)  # a gateway replay of the same MESSAGE_CREATE
    await env.settle()
    assert len(env.api.find(POST_MSG, channel_id=CHANNEL_ID)) == 1


async def test_direct_message_is_its_own_session(env: DiscordEnv) -> None:
    dm = "900000000000000001"
    frame = env.message("run: echo in a dm", dm)
    del frame["d"]["guild_id"], frame["d"]["member"]  # a DM: no guild, no member
    env.feed(frame)
    await env.settle()
    assert env.api.find(START_THREAD) == []
    assert "Run #1 succeeded" in env.api.find(POST_MSG, channel_id=dm)[-1].json["content"]
    [run] = await env.app.runs.list()
    assert await env.app.sessions.key_for(run.thread_id) == ThreadKey("discord", dm, dm)


async def test_mention_of_the_bots_managed_role_counts_as_a_mention(env: DiscordEnv) -> None:
    role_id = "777000000000000001"
    role = {"id": role_id, "name": "Baton", "permissions": "0", "position": 1, "color": 0, "hoist": False, "managed": True,
            "mentionable": False, "flags": 0, "tags": {"bot_id": BOT_ID}}
    env.feed({"op": 0, "t": "GUILD_ROLE_CREATE", "s": None, "d": {"guild_id": GUILD_ID, "role": role}})
    frame = env.message("/workflows", CHANNEL_ID)
    frame["d"]["content"] = f"<@&{role_id}> /workflows"
    frame["d"]["mention_roles"] = [role_id]
    env.feed(frame)
    await env.settle()
    key = ThreadKey("discord", CHANNEL_ID, CHANNEL_ID)
    assert (await env.app.sessions.history(key))[0].text == "/workflows"
    assert "disk-check" in env.api.find(POST_MSG, channel_id=CHANNEL_ID)[-1].json["content"]


async def test_chat_reply_streams_into_one_edited_message(env: DiscordEnv) -> None:
    """The optional ``stream_reply`` of the outlet: markdown (no code fences), edited in place, split at 2000."""
    _, key = await open_session(env)
    thread_id = key.thread
    before = len(env.api.find(POST_MSG, channel_id=thread_id))
    stream = env.outlet.stream_reply(key)
    text = ""
    for i in range(30):
        text += f"line {i} with **markdown**\n"
        stream.update(text)
        await asyncio.sleep(0.01)
    final = text + "\n".join("x" * 99 for _ in range(30))  # longer than one message
    await stream.finish(final)
    posts = env.api.find(POST_MSG, channel_id=thread_id)[before:]
    assert len(posts) == 2  # the streamed message, then the rest of a long reply
    first = env.api.messages[env.api.find(EDIT_MSG, channel_id=thread_id)[-1].params["message_id"]]
    assert first["content"].startswith("line 0 with **markdown**") and "```" not in first["content"]
    assert 1 <= len(env.api.find(EDIT_MSG, channel_id=thread_id, message_id=first["id"])) < 30  # throttled
    assert (first["content"] + "\n" + posts[1].json["content"]).replace("\n", "") == final.rstrip().replace("\n", "")
