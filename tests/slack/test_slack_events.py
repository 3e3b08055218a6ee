"""Events API over real HTTP: threads as sessions, live status, ack timing, dedupe, signatures, filtering."""

from __future__ import annotations

import asyncio
import copy
import json

from bot.store import ThreadKey
from tests.slack.conftest import BOT_USER, SIGNING_SECRET, Harness, load, mention, new_ts, sign, thread_reply


def _texts(calls) -> list[str]:  # type: ignore[no-untyped-def]
    return [c.args.get("text", "") for c in calls]


def _shown(calls) -> list[str]:  # type: ignore[no-untyped-def]
    """What each message shows: its blocks' text (first line + code block)."""
    return ["\n".join(b["text"]["text"] for b in c.args.get("blocks", []) if "text" in b) for c in calls]


async def test_mention_runs_the_workflow_with_one_status_message_edited_in_place(harness: Harness) -> None:
    body = mention("run: disk-check AND system-report")
    ts = body["event"]["ts"]
    status, _, _ = await harness.event(body)
    assert status == 200
    await harness.settle()

    posts = harness.posts()
    assert all(p.args.get("thread_ts") == ts for p in posts), "everything goes to the mention's thread"
    status_posts = [p for p in posts if p.args["text"].startswith("Run #1 running")]
    results = [p for p in posts if p.args["text"].startswith("Run #1 succeeded in")]
    assert len(status_posts) == 1 and len(results) == 1 and len(posts) == 2
    status_ts = status_posts[0].response["ts"]

    updates = harness.slack.calls_to("chat.update", lambda c: c.args.get("ts") == status_ts)
    assert updates and all(u.ok for u in updates)
    final = json.dumps(updates[-1].args["blocks"])
    assert updates[-1].args["text"].startswith("Run #1 succeeded")
    for label in ("disk usage", "load average", "memory", "uptime"):
        assert label in final
    assert "step" in final and "status" in final and "time" in final and "cost" in final
    assert status_posts[0].at < updates[0].at < results[0].at

    # the session is the thread; the mention is stripped from what was stored
    hist = await harness.app.sessions.history(ThreadKey("slack", "C111", ts))  # type: ignore[union-attr]
    assert hist[0].text == "run: disk-check AND system-report" and hist[0].author == "W222"
    assert hist[-1].role == "assistant" and hist[-1].text.startswith("Run #1 succeeded")


async def test_status_edits_are_throttled_per_message(sqlite_url, slack_api) -> None:  # type: ignore[no-untyped-def]
    h = await Harness(sqlite_url, slack_api, status_min_interval=0.5).start()
    try:
        await h.event(mention("run: sleep 0.3 THEN sleep 0.3 THEN sleep 0.3 THEN sleep 0.3 THEN echo done"))
        await h.settle()
        updates = slack_api.calls_to("chat.update")
        assert len(updates) >= 2
        gaps = [b.at - a.at for a, b in zip(updates, updates[1:-1])]  # the last one is the final flush
        assert all(g >= 0.45 for g in gaps), gaps
        assert len(updates) <= 1.3 / 0.5 + 2
        assert updates[-1].args["text"].startswith("Run #1 succeeded")
    finally:
        await h.aclose()


async def test_ack_comes_before_the_workflow_finishes(harness: Harness) -> None:
    body = mention("run: sleep 1.5 THEN echo finished")
    status, text, took = await harness.event(body)
    assert status == 200 and text == ""
    assert took < 0.5, f"ack took {took:.3f}s; Slack wants it within 3 s"
    assert not [p for p in harness.posts() if "succeeded" in p.args["text"]], "acked before the result"
    await harness.slack.wait_for("chat.postMessage", where=lambda c: c.args["text"].startswith("Run #1 succeeded"))
    await harness.settle()


async def test_slack_retries_of_one_event_run_the_workflow_once(harness: Harness) -> None:
    body = mention("run: echo once")
    results = await asyncio.gather(harness.event(body), harness.event(body, retry=1), harness.event(body, retry=2))
    assert [r[0] for r in results] == [200, 200, 200]
    await harness.settle()
    assert len(await harness.app.runs.list()) == 1  # type: ignore[union-attr]
    assert len([t for t in _texts(harness.posts()) if t.startswith("Run #1 succeeded")]) == 1
    hist = await harness.app.sessions.history(ThreadKey("slack", "C111", body["event"]["ts"]))  # type: ignore[union-attr]
    assert [m.role for m in hist] == ["user", "assistant"]


async def test_retries_after_a_restart_are_still_dropped(harness: Harness) -> None:
    body = mention("run: echo once")
    assert (await harness.event(body))[0] == 200
    await harness.settle()
    await harness.restart()  # a new App (and bolt app) on the same SQLite file
    for n in (1, 2):
        assert (await harness.event(body, retry=n))[0] == 200
    await harness.settle()
    assert len(await harness.app.runs.list()) == 1  # type: ignore[union-attr]
    assert len([t for t in _texts(harness.posts()) if "succeeded in" in t]) == 1


async def test_a_retry_whose_first_delivery_was_never_recorded_is_processed(harness: Harness) -> None:
    body = mention("run: echo late")
    assert (await harness.event(body, retry=1))[0] == 200
    await harness.settle()
    assert [r.status for r in await harness.app.runs.list()] == ["succeeded"]  # type: ignore[union-attr]


async def test_forged_signature_is_refused_and_nothing_happens(harness: Harness) -> None:
    body = json.dumps(mention("run: echo forged"))
    bad = sign(body, secret="not-the-secret")
    status, _, _ = await harness.post(body, "application/json", headers=bad, signed=False)
    assert status == 401
    status, _, _ = await harness.post(body, "application/json", signed=False)  # no signature at all
    assert status == 401
    await harness.settle()
    assert harness.slack.calls == []
    assert await harness.app.runs.list() == []  # type: ignore[union-attr]
    assert await harness.app.sessions.count(ThreadKey("slack", "C111", json.loads(body)["event"]["ts"])) == 0  # type: ignore[union-attr]


async def test_stale_timestamp_is_refused(harness: Harness) -> None:
    import time

    body = json.dumps(mention("run: echo replayed"))
    old = sign(body, timestamp=int(time.time()) - 6 * 60)  # correctly signed, but older than 5 minutes
    status, _, _ = await harness.post(body, "application/json", headers=old, signed=False)
    assert status == 401
    await harness.settle()
    assert harness.slack.calls == [] and await harness.app.runs.list() == []  # type: ignore[union-attr]


def test_the_test_signer_matches_slacks_published_example() -> None:
    v = load("http/signature_verification_vector.json")
    got = sign(v["body"], secret=v["signing_secret"], timestamp=int(v["headers"]["X-Slack-Request-Timestamp"]))
    assert got["X-Slack-Signature"] == v["expected_signature"]
    assert SIGNING_SECRET not in v["body"]


async def _known_thread(harness: Harness) -> str:
    body = mention("/help")
    await harness.event(body)
    await harness.settle()
    return body["event"]["ts"]


async def test_bot_messages_are_ignored_even_in_a_known_thread(harness: Harness) -> None:
    thread = await _known_thread(harness)
    before = len(harness.slack.calls)
    for name in ("events/message_from_other_bot_user.json", "events/message_bot_message_subtype.json"):
        body = copy.deepcopy(load(name))
        body["event"].update({"thread_ts": thread, "channel": "C111", "text": "run: echo loop"})
        assert (await harness.event(body))[0] == 200
    own = thread_reply("run: echo me", thread)
    own["event"].update({"user": BOT_USER, "bot_id": "B111"})  # our own reply echoed back by Slack
    assert (await harness.event(own))[0] == 200
    await harness.settle()
    assert len(harness.slack.calls) == before
    assert await harness.app.runs.list() == []  # type: ignore[union-attr]


async def test_edits_and_deletions_are_ignored(harness: Harness) -> None:
    thread = await _known_thread(harness)
    before = len(harness.slack.calls)
    for name in ("events/message_changed.json", "events/message_deleted.json"):
        body = copy.deepcopy(load(name))
        body["event"]["thread_ts"] = thread
        body["event_id"] = f"Ev-{name}"
        assert (await harness.event(body))[0] == 200
    await harness.settle()
    assert len(harness.slack.calls) == before
    assert await harness.app.sessions.count(ThreadKey("slack", "C111", thread)) == 2  # type: ignore[union-attr]


async def test_thread_replies_without_a_mention_continue_a_known_thread_only(harness: Harness) -> None:
    start = mention("run: echo first")
    thread = start["event"]["ts"]
    await harness.event(start)
    await harness.settle()

    await harness.event(thread_reply("/history 5", thread))
    await harness.settle()
    replies = _shown(harness.posts(thread_ts=thread))
    assert any("W222: run: echo first" in t for t in replies)

    stranger = new_ts()
    before = len(harness.slack.calls)
    await harness.event(thread_reply("/help", stranger))  # a thread Baton is not part of
    plain = copy.deepcopy(load("events/message_channel_no_blocks.json"))  # top-level chatter
    plain["event"].update({"user": "W222", "text": "/help"})
    await harness.event(plain)
    await harness.settle()
    assert len(harness.slack.calls) == before
    assert await harness.app.sessions.count(ThreadKey("slack", "C111", stranger)) == 0  # type: ignore[union-attr]


async def test_a_known_thread_survives_a_restart(harness: Harness) -> None:
    thread = await _known_thread(harness)
    await harness.restart()
    await harness.event(thread_reply("/workflows", thread))
    await harness.settle()
    assert any("disk-check" in t for t in _shown(harness.posts(thread_ts=thread)))


async def test_one_message_arriving_as_mention_and_as_message_is_handled_once(harness: Harness) -> None:
    thread = await _known_thread(harness)
    m = mention("/workflows", thread_ts=thread)
    msg = thread_reply(m["event"]["text"], thread)
    msg["event"]["ts"] = m["event"]["ts"]
    await asyncio.gather(harness.event(m), harness.event(msg))
    await harness.settle()
    assert len([t for t in _texts(harness.posts(thread_ts=thread)) if t.startswith("Workflows:")]) == 1


async def test_thread_replies_are_handled_in_arrival_order(harness: Harness) -> None:
    thread = await _known_thread(harness)
    for i in range(5):
        status, _, _ = await harness.event(thread_reply(f"note {i}", thread))
        assert status == 200
    await harness.settle()
    hist = await harness.app.sessions.history(ThreadKey("slack", "C111", thread), limit=50)  # type: ignore[union-attr]
    assert [m.text for m in hist if m.role == "user" and m.text.startswith("note")] == [f"note {i}" for i in range(5)]


async def test_direct_messages_start_a_thread_session(harness: Harness) -> None:
    body = copy.deepcopy(load("events/message_channel_no_blocks.json"))
    body["event"].update({"channel": "D111", "channel_type": "im", "user": "W222", "text": "/workflows"})
    await harness.event(body)
    await harness.settle()
    (reply,) = harness.posts(channel="D111")
    assert reply.args["thread_ts"] == body["event"]["ts"] and reply.args["text"] == "Workflows:"


async def test_assistant_thread_message_sets_a_status_and_is_answered_in_its_thread(harness: Harness) -> None:
    body = load("events/message_thread_reply_im.json")
    await harness.event(body)
    await harness.settle()
    (status,) = harness.slack.calls_to("assistant.threads.setStatus")
    assert status.args["channel_id"] == "D111" and status.args["thread_ts"] == "1726133698.626339"
    (reply,) = harness.posts(channel="D111")
    assert reply.args["thread_ts"] == "1726133698.626339" and reply.at > status.at
    assert "LLM provider" in json.dumps(reply.args["blocks"])


async def test_assistant_pane_offers_suggested_prompts(harness: Harness) -> None:
    body = {
        "token": "verification_token",
        "team_id": "T111",
        "api_app_id": "A111",
        "type": "event_callback",
        "event_id": "EvASSIST1",
        "event_time": 1726133698,
        "event": {
            "type": "assistant_thread_started",
            "assistant_thread": {"user_id": "W222", "context": {}, "channel_id": "D111", "thread_ts": "1726133698.626339"},
            "event_ts": "1726133698.665188",
        },
    }
    assert (await harness.event(body))[0] == 200
    await harness.settle()
    (call,) = harness.slack.calls_to("assistant.threads.setSuggestedPrompts")
    assert "/workflows" in json.dumps(call.args["prompts"])


async def test_url_verification_and_unhandled_events_are_acked(harness: Harness) -> None:
    status, text, _ = await harness.event(load("events/url_verification.json"))
    assert status == 200 and "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P" in text
    for name in ("events/reaction_added.json", "events/member_joined_channel.json", "events/app_uninstalled.json"):
        assert (await harness.event(load(name)))[0] == 200, name  # a 404 would make Slack redeliver
    await harness.settle()
    assert not harness.slack.calls_to("chat.postMessage")
