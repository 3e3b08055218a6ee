"""Slash commands end to end: deferral, thread, status edits, result, permissions, autocomplete.

Every test drives the real discord.py client: events go through its gateway
parsers, responses go over HTTP to the fake API, and the assertions are on the
REST calls it recorded (what Discord would have received).
"""

from __future__ import annotations

import asyncio

import pytest

from bot.store import ThreadKey
from tests.discord.support import ALICE, BOB, CHANNEL_ID, DiscordEnv

CALLBACK = "POST /interactions/{interaction_id}/{token}/callback"
ORIGINAL = "PATCH /webhooks/{application_id}/{token}/messages/{message_id}"
FOLLOWUP = "POST /webhooks/{application_id}/{token}"
START_THREAD = "POST /channels/{channel_id}/messages/{message_id}/threads"
POST_MSG = "POST /channels/{channel_id}/messages"
EDIT_MSG = "PATCH /channels/{channel_id}/messages/{message_id}"
EPHEMERAL = 64


async def run_disk_check(env: DiscordEnv, **kw) -> tuple[dict, str]:  # type: ignore[no-untyped-def]
    """``/run workflow:disk-check`` in #test2; returns the interaction and the thread id."""
    d = env.feed(env.slash("run", {"workflow": "disk-check"}, **kw))
    await env.settle()
    [thread_call] = env.api.find(START_THREAD, channel_id=CHANNEL_ID)
    return d, thread_call.params["message_id"]  # a thread started from a message has the message's id


async def test_run_defers_opens_thread_edits_status_and_posts_result(env: DiscordEnv) -> None:
    d, thread_id = await run_disk_check(env)

    # 1. deferred at once: type 5 (DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE), public
    [cb] = env.callbacks(d["id"])
    assert cb.json == {"type": 5}
    assert env.api.calls.index(cb) < env.api.calls.index(env.api.find(ORIGINAL, token=d["token"])[0])
    # 2. the deferred answer is edited, then a thread is started from it, named after the workflow
    [orig] = env.api.find(ORIGINAL, token=d["token"], message_id="@original")
    assert "disk-check" in orig.json["content"] and f"<@{ALICE['id']}>" in orig.json["content"]
    assert orig.json["allowed_mentions"] == {"parse": []}  # output can never ping anyone
    [thread_call] = env.api.find(START_THREAD)
    assert thread_call.json["name"] == "disk-check"
    assert env.api.messages[thread_id]["webhook_id"]  # the thread hangs off the interaction's answer
    # 3. the status message in the thread, edited in place
    posts = env.api.find(POST_MSG, channel_id=thread_id)
    status_id = env.api.find(EDIT_MSG, channel_id=thread_id)[0].params["message_id"]
    assert posts[0].json["content"].startswith("▶ **Run #1** · running · disk-check")
    final_status = env.api.messages[status_id]["content"]
    assert final_status.split("\n")[0] in ("✓ **Run #1** · succeeded · disk-check", "✗ **Run #1** · failed · disk-check")
    assert "disk-check › disk usage" in final_status
    # 4. the result follows in the thread, after the status message
    result = posts[-1].json["content"]
    assert result.startswith("```\nRun #1 ") and "disk usage" in result
    assert env.api.calls.index(posts[-1]) > env.api.calls.index(env.api.find(EDIT_MSG, channel_id=thread_id)[-1])
    # every REST call carried the bot token (webhooks need none)
    assert all(c.authorized in (True, None) for c in env.api.calls)
    # the session is (discord, channel, thread) and the run was requested by the member
    [run] = await env.app.runs.list()
    assert run.requested_by == ALICE["id"] and run.name == "disk-check"
    assert await env.app.sessions.key_for(run.thread_id) == ThreadKey("discord", CHANNEL_ID, thread_id)
    hist = await env.app.sessions.history(ThreadKey("discord", CHANNEL_ID, thread_id))
    assert [m.text for m in hist][0] == "/run disk-check" and hist[-1].text.startswith("Run #1 ")


@pytest.mark.parametrize("discord_overrides", [{"permissions": {"*": ["*"], "disk-check": ["role:admin"]}}], indirect=True)
async def test_member_without_role_gets_ephemeral_refusal_and_nothing_runs(env: DiscordEnv) -> None:
    d = env.feed(env.slash("run", {"workflow": "disk-check"}, user=BOB, roles=()))
    await env.settle()
    [cb] = env.callbacks(d["id"])
    assert cb.json == {"type": 5, "data": {"flags": EPHEMERAL}}  # deferred, only the member sees the answer
    [orig] = env.api.find(ORIGINAL, token=d["token"])
    assert orig.json["content"].startswith("Not run: you may not run 'disk-check'")
    assert "role:admin" in orig.json["content"]
    assert env.api.find(START_THREAD) == [] and env.api.find(POST_MSG) == []
    assert await env.app.runs.list() == []

    # a member with the role (by name, resolved from GUILD_CREATE's roles) may
    d2, _ = await run_disk_check(env)
    assert env.callbacks(d2["id"])[0].json == {"type": 5}
    assert len(await env.app.runs.list()) == 1


async def test_flow_runs_workflow_text_and_parse_errors_are_ephemeral(env: DiscordEnv) -> None:
    d = env.feed(env.slash("flow", {"text": "echo a THEN THEN echo b"}))
    await env.settle()
    assert env.callbacks(d["id"])[0].json["data"]["flags"] == EPHEMERAL
    [orig] = env.api.find(ORIGINAL, token=d["token"])
    assert orig.json["content"] == (
        "```\nI could not parse that workflow: expected a step, got 'THEN' (line 1, column 13)\n"
        "echo a THEN THEN echo b\n            ^\n```"
    )  # one code block keeps the caret under the column
    assert await env.app.runs.list() == []

    d = env.feed(env.slash("flow", {"text": "echo hello AND echo world"}))
    await env.settle()
    [thread_call] = env.api.find(START_THREAD)
    assert thread_call.json["name"] == "echo hello AND echo world"
    result = env.api.find(POST_MSG, channel_id=thread_call.params["message_id"])[-1].json["content"]
    assert "Run #1 succeeded" in result and "hello" in result and "world" in result


async def test_unknown_workflow_suggests_close_names(env: DiscordEnv) -> None:
    d = env.feed(env.slash("run", {"workflow": "disk-chek"}))
    await env.settle()
    assert env.callbacks(d["id"])[0].json["data"]["flags"] == EPHEMERAL
    [orig] = env.api.find(ORIGINAL, token=d["token"])
    assert orig.json["content"].startswith("Unknown workflow 'disk-chek'; did you mean disk-check")
    assert await env.app.runs.list() == []


async def test_autocomplete_returns_ranked_choices(env: DiscordEnv) -> None:
    d = env.feed(env.autocomplete("run", "workflow", "chek"))
    [cb] = await env.api.wait_route(CALLBACK, interaction_id=d["id"])
    assert cb.json["type"] == 8  # APPLICATION_COMMAND_AUTOCOMPLETE_RESULT, answered directly
    values = [c["value"] for c in cb.json["data"]["choices"]]
    assert set(values[:2]) == {"disk-check", "ops-check"}  # fuzzy: "chek" ≈ "…check"
    assert cb.json["data"]["choices"][values.index("disk-check")]["name"].startswith("disk-check — Disk usage")

    d = env.feed(env.autocomplete("run", "workflow", "Disk"))
    [cb] = await env.api.wait_route(CALLBACK, interaction_id=d["id"])
    assert [c["value"] for c in cb.json["data"]["choices"]][0] == "disk-check"  # a prefix beats a fuzzy hit

    d = env.feed(env.autocomplete("run", "workflow", "sys"))
    [cb] = await env.api.wait_route(CALLBACK, interaction_id=d["id"])
    assert [c["value"] for c in cb.json["data"]["choices"]][0] == "system-report"

    d = env.feed(env.autocomplete("run", "workflow", ""))
    [cb] = await env.api.wait_route(CALLBACK, interaction_id=d["id"])
    assert [c["value"] for c in cb.json["data"]["choices"]] == sorted(env.app.catalog.workflows)[:25]  # empty: all, by name
    assert await env.app.runs.list() == []


async def test_workflows_and_runs_answer_the_interaction_ephemerally(env: DiscordEnv) -> None:
    d = env.feed(env.slash("workflows"))
    await env.settle()
    assert env.callbacks(d["id"])[0].json == {"type": 5, "data": {"flags": EPHEMERAL}}
    [orig] = env.api.find(ORIGINAL, token=d["token"])
    assert orig.json["content"].startswith("```\nWorkflows:") and "disk-check" in orig.json["content"]

    _, thread_id = await run_disk_check(env)
    thread = env.thread_channel(thread_id)
    d = env.feed(env.slash("runs", channel=thread))  # in the session thread: its runs
    await env.settle()
    [orig] = env.api.find(ORIGINAL, token=d["token"])
    assert "#1" in orig.json["content"] and "disk-check" in orig.json["content"]
    d = env.feed(env.slash("runs"))  # in the channel: every run
    await env.settle()
    [orig] = env.api.find(ORIGINAL, token=d["token"])
    assert "#1" in orig.json["content"]


async def test_run_inside_a_session_thread_stays_in_it(env: DiscordEnv) -> None:
    _, thread_id = await run_disk_check(env)
    d = env.feed(env.slash("flow", {"text": "echo again"}, channel=env.thread_channel(thread_id)))
    await env.settle()
    assert len(env.api.find(START_THREAD)) == 1  # no second thread
    [orig] = env.api.find(ORIGINAL, token=d["token"])
    assert "follow here" in orig.json["content"]
    assert "Run #2 succeeded" in env.api.find(POST_MSG, channel_id=thread_id)[-1].json["content"]
    runs = await env.app.runs.list()
    assert len({r.thread_id for r in runs}) == 1


async def test_schedule_is_forwarded_to_the_bot(env: DiscordEnv) -> None:
    d = env.feed(env.slash("schedule", {"text": "disk-check every day at 07:00"}))
    await env.settle()
    assert env.callbacks(d["id"])[0].json == {"type": 5}
    key = ThreadKey("discord", CHANNEL_ID, CHANNEL_ID)
    hist = await env.app.sessions.history(key)
    assert hist[0].text == "schedule disk-check every day at 07:00" and hist[0].author == ALICE["id"]
    # the core's answer (today: how to configure chat) reaches Discord, as the answer or in the channel
    answered = [c.json["content"] for c in env.api.find(ORIGINAL, token=d["token"])] + [
        c.json["content"] for c in env.api.find(POST_MSG, channel_id=CHANNEL_ID)
    ]
    assert any(hist[-1].text.split("\n")[0] in a for a in answered)


async def test_status_edit_survives_a_rate_limit(env: DiscordEnv) -> None:
    env.api.rate_limit(EDIT_MSG, times=1, retry_after=0.05)
    _, thread_id = await run_disk_check(env)
    edits = env.api.find(EDIT_MSG, channel_id=thread_id)
    assert len(edits) >= 2  # the 429'd edit was retried by discord.py's rate limiter
    status = env.api.messages[edits[-1].params["message_id"]]["content"]
    assert "**Run #1** · succeeded" in status or "**Run #1** · failed" in status


async def test_handlers_finish_within_discord_deadline(env: DiscordEnv) -> None:
    """The deferral reaches Discord well inside the 3 s it allows (typically a few ms; slack for loaded CI)."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    d = env.feed(env.slash("run", {"workflow": "disk-check"}))
    [cb] = await env.api.wait_route(CALLBACK, interaction_id=d["id"])
    assert cb.at - t0 < 2.5
    await env.settle()


async def test_without_thread_permission_the_run_reports_in_the_channel(env: DiscordEnv) -> None:
    env.api.fail(START_THREAD, status=403, code=50013, message="Missing Permissions")
    d = env.feed(env.slash("run", {"workflow": "disk-check"}))
    await env.settle()
    edits = env.api.find(ORIGINAL, token=d["token"])
    assert "could not open a thread (403 Missing Permissions)" in edits[-1].json["content"]
    posts = env.api.find(POST_MSG, channel_id=CHANNEL_ID)
    assert posts[0].json["content"].startswith("▶ **Run #1**") and "Run #1 " in posts[-1].json["content"]
    [run] = await env.app.runs.list()
    assert await env.app.sessions.key_for(run.thread_id) == ThreadKey("discord", CHANNEL_ID, CHANNEL_ID)
