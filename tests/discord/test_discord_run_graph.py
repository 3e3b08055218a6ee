"""``/run show N graph`` in Discord: the run's picture is attached in the session thread."""

from __future__ import annotations

import pytest

from engine.picture import layout_available
from tests.discord.support import DiscordEnv
from tests.discord.test_discord_sessions import POST_MSG, open_session

pytestmark = pytest.mark.skipif(not layout_available(), reason="run pictures need Graphviz's dot (apt-get install graphviz; .ci/run installs it)")


@pytest.mark.parametrize("discord_overrides", [{"chat_in_channels": True}], indirect=True)
async def test_picture_is_attached_in_the_thread(env: DiscordEnv) -> None:
    thread_id, _ = await open_session(env)
    env.feed(env.thread_create(thread_id))
    await env.settle()
    env.feed(env.message("/run show 1 graph", thread_id))
    await env.settle()
    posts = [p for p in env.api.find(POST_MSG, channel_id=thread_id) if p.json and p.json.get("content") == "Run #1 graph"]
    assert len(posts) == 1, [p.json for p in env.api.find(POST_MSG, channel_id=thread_id)]
    assert [a["filename"] for a in posts[0].json["attachments"]] == ["baton-run-1.png"]
