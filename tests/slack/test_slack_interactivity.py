"""Slash command ``/baton`` and the buttons under a failed run's result, over real HTTP."""

from __future__ import annotations

import asyncio
import copy
import json
from typing import Any
from urllib.parse import parse_qsl

from bot.store import ThreadKey
from tests.slack.conftest import Harness, load, mention


def slash(harness: Harness, text: str, *, user: str = "W222") -> dict[str, str]:
    """``commands/slash_command.form.txt`` as ``/baton text`` (response_url on the fake)."""
    fields = dict(parse_qsl(load("commands/slash_command.form.txt"), keep_blank_values=True))
    fields.update({"command": "/baton", "text": text, "user_id": user, "response_url": harness.slack.response_url("cmd")})
    return fields


def click(result_call: Any, action_id: str, *, user: str = "W333") -> dict[str, str]:
    """``interactivity/block_actions.json`` clicking ``action_id`` on the posted result message."""
    body = copy.deepcopy(load("interactivity/block_actions.json"))
    args = result_call.args
    button = next(e for b in args["blocks"] if b["type"] == "actions" for e in b["elements"] if e["action_id"] == action_id)
    ts = result_call.response["ts"]
    body["user"].update({"id": user, "username": "carol", "name": "carol"})
    body["container"] = {"type": "message", "message_ts": ts, "channel_id": args["channel"], "is_ephemeral": False, "thread_ts": args["thread_ts"]}
    body["channel"]["id"] = args["channel"]
    body["message"] = {"type": "message", "ts": ts, "thread_ts": args["thread_ts"], "text": args["text"], "blocks": args["blocks"]}
    body["actions"] = [{**body["actions"][0], "action_id": action_id, "block_id": "baton_run_actions", "value": button["value"], "text": button["text"]}]
    return {"payload": json.dumps(body)}


async def test_slash_command_is_acked_then_answered_in_a_new_thread(harness: Harness) -> None:
    status, text, took = await harness.form(slash(harness, "workflows"))
    assert status == 200 and text == "" and took < 0.5
    await harness.settle()
    anchor, reply = harness.posts(channel="C111")
    assert "thread_ts" not in anchor.args and anchor.args["text"] == "<@W222> ran `/baton workflows`"
    assert reply.args["thread_ts"] == anchor.response["ts"] and reply.args["text"] == "Workflows:"
    assert "disk-check" in json.dumps(reply.args["blocks"])
    hist = await harness.app.sessions.history(ThreadKey("slack", "C111", anchor.response["ts"]))  # type: ignore[union-attr]
    assert hist[0].text == "/workflows" and hist[0].author == "W222"


async def test_slash_command_run_shows_status_and_result_in_its_thread(harness: Harness) -> None:
    await harness.form(slash(harness, "run disk-check"))
    await harness.settle()
    anchor = harness.posts(channel="C111")[0]
    thread = anchor.response["ts"]
    texts = [p.args["text"] for p in harness.posts(thread_ts=thread)]
    assert texts[0] == "Run #1 running: disk-check" and texts[1].startswith("Run #1 succeeded in")
    assert harness.slack.calls_to("chat.update")


async def test_slash_command_where_baton_cannot_post_answers_the_user_privately(harness: Harness) -> None:
    harness.slack.fail("chat.postMessage", "not_in_channel")
    status, _, _ = await harness.form(slash(harness, "help"))
    assert status == 200
    await harness.settle()
    (answer,) = harness.slack.calls_to("response_url")
    assert "not_in_channel" in answer.args["text"] and "/invite" in answer.args["text"]
    assert await harness.app.runs.list() == []  # type: ignore[union-attr]


async def _failed_run(harness: Harness) -> tuple[str, Any]:
    body = mention("run: echo prepared THEN fail boom")
    await harness.event(body)
    await harness.settle()
    thread = body["event"]["ts"]
    (result,) = [p for p in harness.posts(thread_ts=thread) if p.args["text"].startswith("Run #1 failed in")]
    return thread, result


async def test_a_failed_runs_result_has_retry_and_log_buttons(harness: Harness) -> None:
    thread, result = await _failed_run(harness)
    (actions,) = [b for b in result.args["blocks"] if b["type"] == "actions"]
    by_id = {e["action_id"]: e for e in actions["elements"]}
    assert by_id["baton_retry_step"]["text"]["text"] == "Retry failed step"
    assert by_id["baton_show_log"]["text"]["text"] == "Show log"
    assert json.loads(by_id["baton_retry_step"]["value"]) == {"run": 1, "thread": thread, "step": "s2"}


async def test_successful_results_have_no_buttons(harness: Harness) -> None:
    body = mention("run: echo fine")
    await harness.event(body)
    await harness.settle()
    (result,) = [p for p in harness.posts() if p.args["text"].startswith("Run #1 succeeded")]
    assert not [b for b in result.args["blocks"] if b["type"] == "actions"]


async def test_retry_button_reruns_from_the_failed_step_as_the_clicking_user(harness: Harness) -> None:
    thread, result = await _failed_run(harness)
    status, _, took = await harness.form(click(result, "baton_retry_step", user="W333"))
    assert status == 200 and took < 0.5
    await harness.settle()
    runs = await harness.app.runs.list()  # type: ignore[union-attr]
    assert len(runs) == 2
    row, steps = await harness.app.runs.get(2)  # type: ignore[union-attr]
    assert row.rerun_of == 1 and row.requested_by == "W333"
    assert {s.node_id: s.reused for s in steps}["s1"] is True  # the step before the failed one was reused
    texts = [p.args["text"] for p in harness.posts(thread_ts=thread)]
    assert "Run #2 running: echo prepared THEN fail boom" in texts and any(t.startswith("Run #2 failed in") for t in texts)
    # the clicked result lost its buttons, saying who retried
    (edit,) = harness.slack.calls_to("chat.update", lambda c: c.args["ts"] == result.response["ts"])
    assert not [b for b in edit.args["blocks"] if b["type"] == "actions"]
    assert "Retry requested by <@W333>" in json.dumps(edit.args["blocks"])
    hist = await harness.app.sessions.history(ThreadKey("slack", "C111", thread), limit=50)  # type: ignore[union-attr]
    assert any(m.text == "/rerun 1 from s2" and m.author == "W333" for m in hist)


async def test_show_log_button_posts_the_runs_details(harness: Harness) -> None:
    thread, result = await _failed_run(harness)
    await harness.form(click(result, "baton_show_log"))
    await harness.settle()
    shown = [p for p in harness.posts(thread_ts=thread) if p.args["text"].startswith("Run #1: failed")]
    assert len(shown) == 1 and "boom" in json.dumps(shown[0].args["blocks"])
    assert len(await harness.app.runs.list()) == 1  # type: ignore[union-attr]


async def test_a_button_value_we_did_not_write_is_ignored(harness: Harness) -> None:
    body = load("interactivity/block_actions.json")  # action_id "a", value "click_me_123"
    status, _, _ = await harness.form({"payload": json.dumps(body)})
    assert status == 200
    await harness.settle()
    assert not harness.slack.calls_to("chat.postMessage") and await harness.app.runs.list() == []  # type: ignore[union-attr]


def click_stored(harness: Harness, channel: str, ts: str, action_id: str, *, user: str = "W333", name: str = "carol") -> dict[str, str]:
    """``interactivity/block_actions.json`` clicking ``action_id`` on a message as the fake currently stores it."""
    msg = harness.slack.messages[(channel, ts)]
    body = copy.deepcopy(load("interactivity/block_actions.json"))
    button = next(e for b in msg["blocks"] if b["type"] == "actions" for e in b["elements"] if e["action_id"] == action_id)
    body["user"].update({"id": user, "username": name, "name": name})
    body["container"] = {"type": "message", "message_ts": ts, "channel_id": channel, "is_ephemeral": False, "thread_ts": msg.get("thread_ts")}
    body["channel"]["id"] = channel
    body["message"] = {**msg}
    body["actions"] = [{**body["actions"][0], "action_id": action_id, "block_id": "baton_approval", "value": button["value"], "text": button["text"]}]
    return {"payload": json.dumps(body)}


async def _waiting_for_approval(harness: Harness, workflow: str) -> tuple[str, str]:
    body = mention(f"run: {workflow}")
    thread = body["event"]["ts"]
    await harness.event(body)

    def shows_buttons(c: Any) -> bool:
        return "baton_approve" in json.dumps(c.args.get("blocks", []))

    async with asyncio.timeout(10):
        while not any(shows_buttons(c) for c in harness.slack.calls if c.method in ("chat.postMessage", "chat.update")):
            await asyncio.sleep(0.02)
    (status,) = [p for p in harness.posts(thread_ts=thread) if p.args["text"].startswith("Run #1 running")]
    return thread, status.response["ts"]


async def test_a_step_waiting_for_approval_shows_approve_and_reject_buttons(harness: Harness) -> None:
    thread, status_ts = await _waiting_for_approval(harness, "echo plan THEN approve deploy to prod? THEN echo deployed")
    shown = harness.slack.messages[("C111", status_ts)]
    text = json.dumps(shown["blocks"])
    assert "deploy to prod?" in text and "waits for approval" in text
    (actions,) = [b for b in shown["blocks"] if b["type"] == "actions"]
    assert [e["text"]["text"] for e in actions["elements"]] == ["Approve", "Reject"]
    assert json.loads(actions["elements"][0]["value"]) == {"run": 1, "thread": thread, "step": "s2"}

    status, _, _ = await harness.form(click_stored(harness, "C111", status_ts, "baton_approve"))
    assert status == 200
    await harness.settle()
    texts = [p.args["text"] for p in harness.posts(thread_ts=thread)]
    assert "Approved step s2 of run #1." in texts and any(t.startswith("Run #1 succeeded") for t in texts)
    assert "baton_approve" not in json.dumps(harness.slack.messages[("C111", status_ts)]["blocks"])  # decided: buttons gone
    assert "approved by carol" in await harness.app.bot._run_show("1")  # type: ignore[union-attr]
    hist = await harness.app.sessions.history(ThreadKey("slack", "C111", thread), limit=50)  # type: ignore[union-attr]
    assert any(m.text == "/approve 1 s2" and m.author == "W333" for m in hist)


async def test_reject_button_fails_the_run(harness: Harness) -> None:
    thread, status_ts = await _waiting_for_approval(harness, "approve go? THEN echo never")
    await harness.form(click_stored(harness, "C111", status_ts, "baton_reject", user="W444", name="bob"))
    await harness.settle()
    (result,) = [p for p in harness.posts(thread_ts=thread) if p.args["text"].startswith("Run #1 failed")]
    assert "rejected by bob" in json.dumps(result.args["blocks"])


async def test_a_routing_question_has_reply_buttons_and_a_click_answers_it(harness: Harness) -> None:
    body = mention("restart the api service")  # a route to a changing workflow: the bot asks first
    await harness.event(body)
    await harness.settle()
    thread = body["event"]["ts"]
    (question,) = [p for p in harness.posts(thread_ts=thread) if p.args["text"].startswith("Run restart-service")]
    (actions,) = [b for b in question.args["blocks"] if b["type"] == "actions"]
    assert [(e["action_id"], e["text"]["text"], json.loads(e["value"])) for e in actions["elements"]] == [
        ("baton_choice", "Run restart-service", {"thread": thread, "reply": "yes"}),
        ("baton_choice", "No", {"thread": thread, "reply": "no"}),
    ]
    assert await harness.app.runs.list() == []  # type: ignore[union-attr]
    status, _, took = await harness.form(click(question, "baton_choice", user="W333"))
    assert status == 200 and took < 0.5
    await harness.settle()
    (run,) = await harness.app.runs.list()  # type: ignore[union-attr]
    assert run.requested_by == "W333" and run.status == "succeeded"
    texts = [p.args["text"] for p in harness.posts(thread_ts=thread)]
    assert any(t.startswith("Run #1 succeeded") for t in texts)
    (edit,) = harness.slack.calls_to("chat.update", lambda c: c.args["ts"] == question.response["ts"])
    assert not [b for b in edit.args["blocks"] if b["type"] == "actions"] and "by <@W333>" in json.dumps(edit.args["blocks"])


async def test_approve_and_reject_buttons_leave_the_same_audit_row_as_the_commands(harness: Harness) -> None:
    """A signed block_actions click is audited like ``/approve`` typed in the thread: who, where, what, outcome."""
    thread, status_ts = await _waiting_for_approval(harness, "echo plan THEN approve deploy to prod? THEN echo deployed")
    status, _, _ = await harness.form(click_stored(harness, "C111", status_ts, "baton_approve", user="W333", name="carol"))
    assert status == 200
    await harness.settle()
    audit = harness.app.bot.audit  # type: ignore[union-attr]
    [row] = await audit.recent(actor="W333", action="run.approve")
    assert (row.platform, row.channel, row.thread, row.target, row.outcome) == ("slack", "C111", thread, "run:1", "ok")
    assert row.detail and row.detail.startswith("Approved step s2 of run #1")

    thread2, status2 = await _waiting_for_approval_again(harness, "approve go? THEN echo never", 2)
    await harness.form(click_stored(harness, "C111", status2, "baton_reject", user="W444", name="bob"))
    await harness.settle()
    [row] = await audit.recent(actor="W444", action="run.reject")
    assert (row.platform, row.channel, row.thread, row.target, row.outcome) == ("slack", "C111", thread2, "run:2", "ok")


async def _waiting_for_approval_again(harness: Harness, workflow: str, run_id: int) -> tuple[str, str]:
    """Like :func:`_waiting_for_approval` for run ``run_id`` in a new thread."""
    body = mention(f"run: {workflow}")
    thread = body["event"]["ts"]
    await harness.event(body)

    def status_with_buttons() -> str | None:
        for p in harness.posts(thread_ts=thread):
            ts = p.response["ts"]
            if p.args["text"].startswith(f"Run #{run_id} running") and "baton_approve" in json.dumps(harness.slack.messages[("C111", ts)].get("blocks", [])):
                return ts
        return None

    async with asyncio.timeout(10):
        while (ts := status_with_buttons()) is None:
            await asyncio.sleep(0.02)
    return thread, ts
