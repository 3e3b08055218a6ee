"""Components: Retry and Show log on a failed run's result, clicked through discord.py's dynamic items."""

from __future__ import annotations

from typing import Any

import pytest

from tests.discord.support import ALICE, BOB, CHANNEL_ID, DiscordEnv

START_THREAD = "POST /channels/{channel_id}/messages/{message_id}/threads"
POST_MSG = "POST /channels/{channel_id}/messages"
ORIGINAL = "PATCH /webhooks/{application_id}/{token}/messages/{message_id}"
FOLLOWUP = "POST /webhooks/{application_id}/{token}"
EPHEMERAL = 64


def buttons(message: dict[str, Any]) -> dict[str, str]:
    """label → custom_id of a stored message's buttons."""
    return {b["label"]: b["custom_id"] for row in message.get("components", []) for b in row["components"]}


async def failed_run(env: DiscordEnv) -> tuple[str, dict[str, Any]]:
    """``/flow echo prep THEN fail boom``: returns the thread id and the stored result message."""
    env.feed(env.slash("flow", {"text": "echo prep THEN fail boom"}))
    await env.settle()
    [call] = env.api.find(START_THREAD, channel_id=CHANNEL_ID)
    thread_id = call.params["message_id"]
    result = env.api.channel_messages(thread_id)[-1]
    assert result["content"].startswith("```\nRun #1 failed")
    return thread_id, result


async def test_failed_result_has_retry_and_show_log(env: DiscordEnv) -> None:
    thread_id, result = await failed_run(env)
    assert buttons(result) == {"Retry from s2": "baton:retry:1:s2", "Show log": "baton:log:1"}
    status = [m for m in env.api.channel_messages(thread_id) if "**Run #1**" in m["content"]]
    assert status and not status[0]["components"]  # the status message has no buttons


async def test_succeeded_result_has_no_buttons(env: DiscordEnv) -> None:
    env.feed(env.slash("flow", {"text": "echo fine"}))
    await env.settle()
    [call] = env.api.find(START_THREAD)
    assert all(not m["components"] for m in env.api.channel_messages(call.params["message_id"]))


async def test_retry_reruns_from_the_failed_step_as_the_clicking_user(env: DiscordEnv) -> None:
    thread_id, result = await failed_run(env)
    d = env.feed(env.click(result, buttons(result)["Retry from s2"], user=ALICE))
    await env.settle()
    assert env.callbacks(d["id"])[0].json == {"type": 5, "data": {"flags": EPHEMERAL}}
    [ack] = env.api.find(ORIGINAL, token=d["token"])
    assert ack.json["content"].startswith("Retrying run #1 from step `s2`")
    runs = sorted(await env.app.runs.list(), key=lambda r: r.id)
    assert [(r.id, r.rerun_of, r.requested_by) for r in runs] == [(1, None, ALICE["id"]), (2, 1, ALICE["id"])]
    got = await env.app.runs.get(2)
    assert got is not None
    steps = {s.node_id: s for s in got[1]}
    assert steps["s1"].reused and steps["s1"].status == "succeeded"  # "from s2": s1's output reused
    assert runs[0].thread_id == runs[1].thread_id  # same session thread
    rerun_result = env.api.channel_messages(thread_id)[-1]
    assert rerun_result["content"].startswith("```\nRun #2 failed") and buttons(rerun_result)["Show log"] == "baton:log:2"


@pytest.mark.parametrize("discord_overrides", [{"permissions": {"*": ["role:admin"]}}], indirect=True)
async def test_retry_by_member_without_role_is_refused_privately(env: DiscordEnv) -> None:
    _, result = await failed_run(env)
    d = env.feed(env.click(result, buttons(result)["Retry from s2"], user=BOB, roles=()))
    await env.settle()
    assert env.callbacks(d["id"])[0].json == {"type": 5, "data": {"flags": EPHEMERAL}}
    [refusal] = env.api.find(ORIGINAL, token=d["token"])
    assert refusal.json["content"].startswith("Not run: you may not run '*'") and "role:admin" in refusal.json["content"]
    assert len(await env.app.runs.list()) == 1


async def test_show_log_answers_only_the_clicking_user(env: DiscordEnv) -> None:
    thread_id, result = await failed_run(env)
    def public() -> list[dict[str, Any]]:
        return [m for m in env.api.channel_messages(thread_id) if not m["flags"] & EPHEMERAL]

    before = len(public())
    d = env.feed(env.click(result, buttons(result)["Show log"]))
    await env.settle()
    assert env.callbacks(d["id"])[0].json == {"type": 5, "data": {"flags": EPHEMERAL}}
    [log] = env.api.find(ORIGINAL, token=d["token"])
    assert "Run #1: failed — echo prep THEN fail boom" in log.json["content"] and "error: boom" in log.json["content"]
    assert len(public()) == before  # nothing public: the answer is the ephemeral deferred message
    original = env.api.original_message(d["token"])
    assert original is not None and original["flags"] & EPHEMERAL
    assert len(await env.app.runs.list()) == 1


async def test_unknown_button_action_is_answered(env: DiscordEnv) -> None:
    _, result = await failed_run(env)
    result = dict(result, components=[{"type": 1, "components": [{"type": 2, "style": 1, "label": "Deploy", "custom_id": "baton:deploy:1:s2"}]}])
    d = env.feed(env.click(result, "baton:deploy:1:s2"))  # e.g. a button from a newer version
    await env.settle()
    [answer] = env.api.find(ORIGINAL, token=d["token"])
    assert "'deploy' button is not supported" in answer.json["content"]
    assert len(await env.app.runs.list()) == 1


async def test_retry_step_is_found_in_the_store_when_the_run_was_not_watched(env: DiscordEnv) -> None:
    """A result posted without a live board (e.g. a run resumed after a restart) still gets the right step."""
    await failed_run(env)
    view = await env.outlet._result_buttons(1)
    assert view is not None
    assert [item.custom_id for item in view.children] == ["baton:retry:1:s2", "baton:log:1"]  # type: ignore[attr-defined]


async def wait_for_approval_buttons(env: DiscordEnv, thread_id: str) -> dict[str, Any]:
    """Wait until the status message in the thread shows Approve/Reject; returns the stored message."""
    def has_buttons(c: Any) -> bool:
        return c.params.get("channel_id") == thread_id and "baton:approve" in str((c.json or {}).get("components"))

    await env.api.wait_for(has_buttons)
    [status] = [m for m in env.api.channel_messages(thread_id) if "baton:approve" in str(m["components"])]
    return status


async def start_approval_run(env: DiscordEnv) -> tuple[str, dict[str, Any]]:
    env.feed(env.slash("flow", {"text": "echo build THEN approve ship it?"}))
    [call] = await env.api.wait_route(START_THREAD, channel_id=CHANNEL_ID)
    thread_id = call.params["message_id"]
    return thread_id, await wait_for_approval_buttons(env, thread_id)


async def test_approve_button_lets_a_waiting_run_go_on(env: DiscordEnv) -> None:
    thread_id, status = await start_approval_run(env)
    assert buttons(status) == {"Approve": "baton:approve:1:s2", "Reject": "baton:reject:1:s2"}
    assert "⏸ approve ship it? — waiting" in status["content"]
    d = env.feed(env.click(status, "baton:approve:1:s2", user=ALICE))
    await env.settle()
    assert env.callbacks(d["id"])[0].json == {"type": 5}  # public: the thread sees who approved
    [answer] = env.api.find(ORIGINAL, token=d["token"])
    assert answer.json["content"] == "Approved step s2 of run #1."
    [run] = await env.app.runs.list()
    assert run.status == "succeeded"
    final = env.api.messages[status["id"]]
    assert final["components"] == [] and "**Run #1** · succeeded" in final["content"]  # buttons gone
    assert "approved by Alice" in env.api.channel_messages(thread_id)[-1]["content"]


@pytest.mark.parametrize("discord_overrides", [{"permissions": {"*": ["*"], "approve": ["role:admin"]}}], indirect=True)
async def test_reject_needs_the_approver_role(env: DiscordEnv) -> None:
    thread_id, status = await start_approval_run(env)
    d = env.feed(env.click(status, "baton:reject:1:s2", user=BOB, roles=()))
    await env.settle_handlers()
    assert env.callbacks(d["id"])[0].json == {"type": 5, "data": {"flags": EPHEMERAL}}
    [refusal] = env.api.find(ORIGINAL, token=d["token"])
    assert refusal.json["content"].startswith("You may not reject runs (allowed: role:admin")
    [run] = await env.app.runs.list()
    assert run.status == "running"  # still waiting

    d = env.feed(env.click(status, "baton:reject:1:s2", user=ALICE))
    await env.settle()
    assert env.api.find(ORIGINAL, token=d["token"])[0].json["content"] == "Rejected step s2 of run #1."
    [run] = await env.app.runs.list()
    assert run.status == "failed"
    result = env.api.channel_messages(thread_id)[-1]
    assert "rejected by Alice" in result["content"] and "Retry from s2" in buttons(result)


async def test_a_routing_question_has_reply_buttons_and_a_click_answers_it(env: DiscordEnv) -> None:
    d = env.feed(env.message("restart the api service", CHANNEL_ID, mention_bot=True))  # a changing workflow: asks first
    await env.settle()
    [call] = env.api.find(START_THREAD, channel_id=CHANNEL_ID, message_id=d["id"])
    thread_id = call.params["message_id"]
    question = env.api.channel_messages(thread_id)[-1]
    assert question["content"].startswith("Run restart-service service=api? Reply yes or no.")
    assert buttons(question) == {"Run restart-service": "baton:choice:0:yes", "No": "baton:choice:0:no"}
    assert await env.app.runs.list() == []
    click = env.feed(env.click(question, buttons(question)["Run restart-service"], user=BOB))
    await env.settle()
    assert env.callbacks(click["id"])[0].json == {"type": 5, "data": {"flags": EPHEMERAL}}
    [run] = await env.app.runs.list()
    assert run.requested_by == BOB["id"] and run.status == "succeeded"
    assert env.api.channel_messages(thread_id)[-1]["content"].startswith("```\nRun #1 succeeded")


@pytest.mark.parametrize("discord_overrides", [{"permissions": {"*": ["*"], "approve": ["role:admin"]}}], indirect=True)
async def test_approval_button_clicks_are_audited_like_the_commands(env: DiscordEnv) -> None:
    """Who clicked, where (platform, channel, thread), what and the outcome: the rows ``/approve``/``/reject`` leave."""
    thread_id, status = await start_approval_run(env)
    env.feed(env.click(status, "baton:reject:1:s2", user=BOB, roles=()))  # not an approver: refused, and audited
    await env.settle_handlers()
    env.feed(env.click(status, "baton:approve:1:s2", user=ALICE))
    await env.settle()
    audit = env.app.bot.audit
    assert audit is not None
    [denied] = await audit.recent(actor=BOB["id"])
    assert (denied.platform, denied.channel, denied.thread) == ("discord", CHANNEL_ID, thread_id)
    assert (denied.action, denied.outcome, denied.target) == ("permission.denied", "denied", "run:1")
    assert denied.detail and "reject" in denied.detail
    [approved] = await audit.recent(actor=ALICE["id"], action="run.approve")
    assert (approved.platform, approved.channel, approved.thread, approved.target, approved.outcome) == ("discord", CHANNEL_ID, thread_id, "run:1", "ok")
    assert approved.detail == "Approved step s2 of run #1."
