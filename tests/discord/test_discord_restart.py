"""Restarts: unfinished runs resume into their Discord thread; buttons on old messages keep working."""

from __future__ import annotations

from tests.discord.support import CHANNEL_ID, start_env, stop_env
from tests.fakes.discord_api import FakeDiscordAPI

START_THREAD = "POST /channels/{channel_id}/messages/{message_id}/threads"
POST_MSG = "POST /channels/{channel_id}/messages"


async def test_unfinished_run_resumes_in_its_thread_after_restart(api: FakeDiscordAPI, sqlite_url: str) -> None:
    e1 = await start_env(api, sqlite_url)
    try:
        e1.feed(e1.slash("flow", {"text": "echo before THEN sleep 1"}))
        [call] = await api.wait_route(START_THREAD, channel_id=CHANNEL_ID)
        thread_id = call.params["message_id"]
        await api.wait_route(POST_MSG, channel_id=thread_id)  # the status message: the run is under way
    finally:
        await stop_env(e1, settle=False)  # shutdown: the run stays resumable
    e2 = await start_env(api, sqlite_url)  # login → setup_hook → resume_unfinished({"discord"})
    try:
        await e2.settle()
        texts = [c.json["content"] for c in api.find(POST_MSG, channel_id=thread_id)]
        assert any("Resuming run #1 after a restart" in t for t in texts)
        assert "Run #1 succeeded" in texts[-1] and "before" in texts[-1]
        [run] = await e2.app.runs.list()
        assert run.status == "succeeded"
    finally:
        await stop_env(e2)


async def test_retry_button_on_an_old_message_works_after_restart(api: FakeDiscordAPI, sqlite_url: str) -> None:
    e1 = await start_env(api, sqlite_url)
    try:
        e1.feed(e1.slash("flow", {"text": "echo prep THEN fail boom"}))
        await e1.settle()
        [call] = api.find(START_THREAD, channel_id=CHANNEL_ID)
        thread_id = call.params["message_id"]
        result = api.channel_messages(thread_id)[-1]
    finally:
        await stop_env(e1)
    e2 = await start_env(api, sqlite_url)  # a new process: no views in memory, only the dynamic item
    try:
        d = e2.feed(e2.click(result, "baton:retry:1:s2"))
        await e2.settle()
        assert e2.callbacks(d["id"])[0].json["type"] == 5
        runs = sorted(await e2.app.runs.list(), key=lambda r: r.id)
        assert [(r.id, r.rerun_of) for r in runs] == [(1, None), (2, 1)]
        assert "Run #2 failed" in api.find(POST_MSG, channel_id=thread_id)[-1].json["content"]
    finally:
        await stop_env(e2)
