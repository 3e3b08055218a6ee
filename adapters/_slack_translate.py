"""Slack payloads → :class:`adapters.base.Message`: filtering, threads, mentions, commands.

Pure functions over the raw payload dicts (typed loosely as TypedDicts for the
fields we read). Shapes follow the Events API (https://docs.slack.dev/apis/events-api/),
the ``message`` event (https://docs.slack.dev/reference/events/message) and slash
commands (https://docs.slack.dev/interactivity/implementing-slash-commands).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, NotRequired, TypedDict

from adapters._slack_render import ACTION_APPROVE, ACTION_REJECT, ACTION_RETRY, ACTION_SHOW_LOG, unescape
from adapters.base import Message
from bot.core import ThreadKey

PLATFORM = "slack"

HANDLED_SUBTYPES = frozenset({"thread_broadcast", "file_share"})
"""``message`` subtypes that are a person speaking; every other subtype (``bot_message``,
``message_changed``, ``message_deleted``, ``channel_join``, …) is ignored."""


class SlackMessageEvent(TypedDict):
    """The fields of an ``app_mention`` / ``message`` event the adapter reads."""

    type: str
    channel: str
    ts: str
    user: NotRequired[str]
    text: NotRequired[str]
    thread_ts: NotRequired[str]
    subtype: NotRequired[str]
    bot_id: NotRequired[str]
    channel_type: NotRequired[str]
    user_profile: NotRequired[dict[str, Any]]


def is_from_a_bot(event: dict[str, Any]) -> bool:
    """Posted by an app or bot (ours or another): ``bot_id``/``bot_profile`` set or subtype ``bot_message``.

    Answering these could loop two bots forever; Slack's guidance is to ignore them.
    """
    return bool(event.get("bot_id") or event.get("bot_profile")) or event.get("subtype") == "bot_message"


def is_person_speaking(event: dict[str, Any]) -> bool:
    """A message a person wrote now: has a user, no bot, no edit/delete/join subtype."""
    sub = event.get("subtype")
    return bool(event.get("user")) and not is_from_a_bot(event) and (sub is None or sub in HANDLED_SUBTYPES)


def is_direct_message(event: dict[str, Any]) -> bool:
    """A 1:1 DM with the bot (``channel_type`` ``im``; DM channel ids start with ``D``)."""
    ct = event.get("channel_type")
    return ct == "im" if ct else str(event.get("channel", "")).startswith("D")


def thread_of(event: dict[str, Any]) -> str:
    """The thread a message belongs to: its ``thread_ts``, or its own ``ts`` (it starts one)."""
    return str(event.get("thread_ts") or event["ts"])


def thread_key(event: dict[str, Any]) -> ThreadKey:
    """The session key ``(slack, channel, thread_ts or ts)``."""
    return ThreadKey(PLATFORM, str(event["channel"]), thread_of(event))


def _mention_re(bot_user_id: str) -> re.Pattern[str]:
    return re.compile(rf"<@{re.escape(bot_user_id)}(?:\|[^>]*)?>")


def mentions(text: str, bot_user_id: str | None) -> bool:
    """Whether ``text`` mentions the bot (``<@U123>`` or ``<@U123|name>``)."""
    return bool(bot_user_id) and bool(_mention_re(bot_user_id).search(text))  # type: ignore[arg-type]


def clean_text(text: str, bot_user_id: str | None) -> str:
    """The text with the bot's mentions removed, whitespace trimmed, Slack escaping undone."""
    if bot_user_id:
        text = _mention_re(bot_user_id).sub(" ", text)
    text = re.sub(r"[ \t]+", " ", text).strip()
    return unescape(text)


def to_message(
    event: dict[str, Any], bot_user_id: str | None, *, event_id: str | None, received_at: datetime | None = None
) -> Message:
    """The :class:`Message` for a person's ``app_mention``/``message`` event.

    A mention with no other text becomes ``/help`` (someone pinged the bot).
    ``author_name`` comes from ``user_profile`` when Slack includes it.
    """
    text = clean_text(event.get("text", ""), bot_user_id) or "/help"
    profile = event.get("user_profile") or {}
    name = profile.get("display_name") or profile.get("real_name") or None
    return Message(
        PLATFORM,
        str(event["channel"]),
        thread_of(event),
        str(event.get("user", "")),
        text,
        received_at=received_at or datetime.now(UTC),
        event_id=event_id,
        author_name=name,
    )


def message_identity(event: dict[str, Any]) -> str:
    """A dedupe id for the message itself: one message can arrive as ``app_mention`` AND ``message``.

    Slack sends both (with different ``event_id``) when a subscribed channel
    message mentions the app; recording ``msg:<channel>:<ts>`` as well as the
    ``event_id`` makes sure it is acted on once.
    """
    return f"msg:{event['channel']}:{event['ts']}"


def command_text(text: str) -> str:
    """Translate ``/baton ARGS`` into the core's command text.

    ``/baton`` or ``/baton help`` → ``/help``; ``/baton run: A AND B`` stays
    ``run: A AND B``; anything else gets a leading slash (``/baton run disk-check``
    → ``/run disk-check``, ``/baton runs all`` → ``/runs all``, ``/baton rerun 3 from
    usage`` → ``/rerun 3 from usage``), so the core parses it like a chat command.
    """
    t = unescape(text).strip()
    if not t:
        return "/help"
    if re.match(r"^run:", t, re.I) or t.startswith("/"):
        return t
    return "/" + t


def _retry(run_id: int, step: str | None) -> str:
    return f"/rerun {run_id} from {step}" if step else f"/rerun {run_id}"


def _show_log(run_id: int, step: str | None) -> str:
    return f"/run show {run_id}"


def _approve(run_id: int, step: str | None) -> str:
    return f"/approve {run_id} {step}" if step else f"/approve {run_id}"


def _reject(run_id: int, step: str | None) -> str:
    return f"/reject {run_id} {step}" if step else f"/reject {run_id}"


BUTTONS: dict[str, Callable[[int, str | None], str]] = {
    ACTION_RETRY: _retry,
    ACTION_SHOW_LOG: _show_log,
    ACTION_APPROVE: _approve,
    ACTION_REJECT: _reject,
}
"""``action_id`` → the command a click means, from the button's run id and step.

A new kind of button is one entry here plus its rendering in
:mod:`adapters._slack_render`; the listeners route every ``baton_*`` action id
to :func:`button_command` unchanged.
"""


def button_command(action_id: str, value: str) -> tuple[str, str] | None:
    """``(thread ts, command text)`` for one of Baton's buttons, or ``None`` for anything else.

    ``value`` is :func:`adapters._slack_render.button_value` JSON; ``baton_retry_step``
    → ``/rerun ID from STEP`` (``/rerun ID`` when no step failed), ``baton_show_log``
    → ``/run show ID``, ``baton_approve`` / ``baton_reject`` → ``/approve ID STEP`` /
    ``/reject ID STEP``; ``baton_choice`` → the reply it carries (``yes``, ``2``, ``no``)
    to a routing question. The click is the clicking user's command (the core checks
    their permission).
    """
    if action_id == "baton_choice":  # a routing question's reply button (adapters._slack_render.choice_buttons)
        try:
            data = json.loads(value)
            return str(data["thread"]), str(data["reply"])
        except (ValueError, KeyError, TypeError):
            return None
    to_command = BUTTONS.get(action_id)
    if to_command is None:
        return None
    try:
        data = json.loads(value)
        run_id, thread = int(data["run"]), str(data["thread"])
    except (ValueError, KeyError, TypeError):
        return None
    step = data.get("step")
    return thread, to_command(run_id, str(step) if step else None)
