"""Payload → Message translation over Slack's own fixtures (pure functions, no I/O)."""

from __future__ import annotations

import json

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from adapters._slack_render import escape
from adapters._slack_translate import (
    button_command,
    clean_text,
    command_text,
    is_direct_message,
    is_from_a_bot,
    is_person_speaking,
    mentions,
    message_identity,
    thread_key,
    to_message,
)
from tests.slack.conftest import load


@pytest.mark.parametrize(
    ("name", "person"),
    [
        ("events/app_mention.json", True),
        ("events/message_channel.json", True),
        ("events/message_thread_reply_channel.json", True),
        ("events/message_thread_reply_im.json", True),
        ("events/message_thread_broadcast.json", True),
        ("events/message_from_other_bot_user.json", False),
        ("events/message_bot_message_subtype.json", False),
        ("events/message_changed.json", False),
        ("events/message_deleted.json", False),
    ],
)
def test_who_is_speaking(name: str, person: bool) -> None:
    assert is_person_speaking(load(name)["event"]) is person


def test_bots_are_recognised_by_bot_id_profile_or_subtype() -> None:
    assert is_from_a_bot(load("events/message_from_other_bot_user.json")["event"])
    assert is_from_a_bot(load("events/message_bot_message_subtype.json")["event"])
    assert not is_from_a_bot(load("events/app_mention.json")["event"])


def test_threads_are_sessions() -> None:
    top = load("events/app_mention.json")["event"]
    reply = load("events/message_thread_reply_channel.json")["event"]
    assert (thread_key(top).channel, thread_key(top).thread) == ("C111", "1595926230.009600")
    assert thread_key(reply).thread == "1726133698.626339" != reply["ts"]
    assert is_direct_message(load("events/message_thread_reply_im.json")["event"])
    assert not is_direct_message(reply)
    assert message_identity(top) == "msg:C111:1595926230.009600"


def test_mention_is_stripped_and_escaping_undone() -> None:
    body = load("events/app_mention.json")
    msg = to_message(body["event"], "W111", event_id=body["event_id"])
    assert (msg.platform, msg.channel, msg.thread, msg.author, msg.text, msg.event_id) == (
        "slack", "C111", "1595926230.009600", "W222", "Hi there!", "Ev111"
    )
    assert clean_text("<@W111|baton>  run: a &amp;&amp; b &lt;x&gt;", "W111") == "run: a && b <x>"
    assert clean_text("<@W999> hello <@W111>", "W111") == "<@W999> hello"
    assert to_message({"channel": "C1", "ts": "1.2", "user": "U", "text": "<@W111>"}, "W111", event_id=None).text == "/help"
    assert mentions("hey <@W111|b>", "W111") and not mentions("hey <@W1112>", "W111") and not mentions("x", None)


@given(st.text(max_size=80), st.sampled_from(["<@W111>", "<@W111|baton>"]))
def test_stripping_removes_every_bot_mention_and_keeps_the_rest(text: str, tag: str) -> None:
    assume("<@W111" not in text)
    cleaned = clean_text(f"{tag} {escape(text)} {tag}", "W111")
    assert not mentions(cleaned, "W111")
    assert cleaned == clean_text(escape(text), None)


@pytest.mark.parametrize(
    ("args", "command"),
    [
        ("", "/help"),
        ("help", "/help"),
        ("workflows", "/workflows"),
        ("run disk-check", "/run disk-check"),
        ("run: disk-check AND system-report", "run: disk-check AND system-report"),
        ("run show 3", "/run show 3"),
        ("rerun 3 from usage", "/rerun 3 from usage"),
        ("runs all", "/runs all"),
        ("cancel 4", "/cancel 4"),
        ("run: echo a &gt; b", "run: echo a > b"),
    ],
)
def test_slash_command_text(args: str, command: str) -> None:
    assert command_text(args) == command


def test_slash_command_fixture_shape() -> None:
    fields = load("commands/slash_command.json")
    assert command_text(fields["text"]) == "/Hi"  # unknown commands are the core's to answer


def test_button_values() -> None:
    v = json.dumps({"run": 4, "thread": "1.2", "step": "s3"})
    assert button_command("baton_retry_step", v) == ("1.2", "/rerun 4 from s3")
    assert button_command("baton_retry_step", json.dumps({"run": 4, "thread": "1.2", "step": None})) == ("1.2", "/rerun 4")
    assert button_command("baton_show_log", v) == ("1.2", "/run show 4")
    assert button_command("a", "click_me_123") is None
    assert button_command("baton_show_log", "click_me_123") is None
