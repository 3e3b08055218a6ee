"""Slack rendering: text escaping, Block Kit payloads for replies, run status and run buttons.

Pure functions (no I/O); :mod:`adapters._slack_outlet` sends what they build.

Limits these functions respect (Slack Block Kit reference,
https://docs.slack.dev/reference/block-kit/blocks/section-block): a section's
``text`` holds at most 3000 characters and a message at most 50 blocks; a button
``value`` at most 2000 characters. ``chat.postMessage`` truncates ``text`` beyond
40,000 characters, so long replies are uploaded as a file instead (see
:meth:`adapters._slack_outlet.SlackOutlet.send`).
"""

from __future__ import annotations

import json
import re
from typing import Any

from adapters.base import ICONS, StatusBoard

SECTION_LIMIT = 3000
"""Characters in one section block's text (Block Kit limit)."""

ACTION_RETRY = "baton_retry_step"
"""``action_id`` of the "Retry failed step" button; its value is :func:`button_value`."""
ACTION_SHOW_LOG = "baton_show_log"
"""``action_id`` of the "Show log" button."""
ACTION_APPROVE = "baton_approve"
"""``action_id`` of "Approve" under a step waiting for approval (``/approve ID STEP``)."""
ACTION_REJECT = "baton_reject"
"""``action_id`` of "Reject" under a step waiting for approval (``/reject ID STEP``)."""
ACTIONS_BLOCK_ID = "baton_run_actions"
APPROVAL_BLOCK_PREFIX = "baton_approval_"
MAX_APPROVAL_BLOCKS = 5

_FENCE = "```"
_BROKEN_FENCE = "`\u200b``"


def escape(text: str) -> str:
    """Escape ``&``, ``<`` and ``>`` as Slack requires for message text.

    Slack reads ``<...>`` as links, user mentions and ``<!channel>`` pings, so
    text we did not write (step output, errors, echoed input) must be escaped
    (https://docs.slack.dev/messaging/formatting-message-text#escaping).
    """
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def unescape(text: str) -> str:
    """Undo Slack's escaping of ``&``, ``<``, ``>`` in incoming message text."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _code(text: str) -> str:
    """A mrkdwn code block; a literal fence inside is broken with a zero-width space."""
    return _FENCE + text.replace(_FENCE, _BROKEN_FENCE) + _FENCE


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def first_line(text: str, limit: int = 300) -> str:
    """The first non-empty line of ``text``, cut to ``limit`` characters (notification text)."""
    for line in text.splitlines():
        if line.strip():
            return line.strip()[:limit]
    return text.strip()[:limit] or "(empty)"


def reply_blocks(text: str, *, note: str | None = None) -> list[dict[str, Any]]:
    """Blocks for a plain-text reply: the first line as text, the rest as one code block.

    The core's replies (help, run results, parse errors with a caret) are aligned
    columns, so everything after the first line is shown monospaced. The caller
    keeps ``text`` short enough for one section (see :func:`fits_inline`).
    """
    head, _, rest = text.strip("\n").partition("\n")
    blocks = [_section(escape(head) or " ")]
    if rest.strip():
        blocks.append(_section(_code(escape(rest))))
    if note:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": escape(note)}]})
    return blocks


def fits_inline(text: str, limit: int) -> bool:
    """Whether ``text`` fits one message (each of its two sections within ``limit`` characters once escaped)."""
    head, _, rest = text.strip("\n").partition("\n")
    return len(escape(head)) <= limit and len(_code(escape(rest))) <= limit


def truncate(text: str, limit: int) -> tuple[str, int]:
    """Cut ``text`` at a line boundary so it fits inline; returns ``(kept, characters dropped)``."""
    if fits_inline(text, limit):
        return text, 0
    budget = max(limit - 200, 200)
    kept: list[str] = []
    used = 0
    for line in text.splitlines():
        cost = len(escape(line)) + 1
        if used + cost > budget:
            if not kept:  # one enormous first line: cut inside it
                kept.append(line[: budget // 2])
            break
        kept.append(line)
        used += cost
    out = "\n".join(kept)
    return out, len(text) - len(out)


def _button(action_id: str, text: str, value: str, style: str | None = None) -> dict[str, Any]:
    b: dict[str, Any] = {"type": "button", "action_id": action_id, "text": {"type": "plain_text", "text": text}, "value": value}
    if style:
        b["style"] = style
    return b


def button_value(run_id: int, thread: str, step: str | None = None) -> str:
    """The JSON a run button carries: ``{"run": id, "thread": ts, "step": node id or null}`` (< 2000 chars)."""
    return json.dumps({"run": run_id, "thread": thread, "step": step}, separators=(",", ":"))[:2000]


def run_buttons(run_id: int, thread: str, failed_step: str | None) -> dict[str, Any]:
    """The actions block under a failed run's result: "Retry failed step" and "Show log"."""
    return {
        "type": "actions",
        "block_id": ACTIONS_BLOCK_ID,
        "elements": [
            _button(ACTION_RETRY, "Retry failed step", button_value(run_id, thread, failed_step), "primary"),
            _button(ACTION_SHOW_LOG, "Show log", button_value(run_id, thread)),
        ],
    }


ACTION_CHOICE = "baton_choice"
"""A reply button under a routing question ("Run disk-check? Reply yes, or pick 1) … 2) …")."""


def choice_buttons(thread: str, choices: list[tuple[str, str]]) -> dict[str, Any]:
    """The actions block under a routing question: one button per ``(label, reply)``
    (at most 5); a click answers as if the clicker typed ``reply`` in the thread."""
    return {
        "type": "actions",
        "block_id": ACTIONS_BLOCK_ID,
        "elements": [
            _button(ACTION_CHOICE, label[:75], json.dumps({"thread": thread, "reply": reply[:200]}, separators=(",", ":")),
                    "primary" if i == 0 else None)
            for i, (label, reply) in enumerate(choices[:5])
        ],
    }


def without_actions(blocks: list[dict[str, Any]], note: str) -> list[dict[str, Any]]:
    """``blocks`` with the run buttons replaced by a context line ``note`` (after a click)."""
    kept = [b for b in blocks if b.get("block_id") != ACTIONS_BLOCK_ID]
    return [*kept, {"type": "context", "elements": [{"type": "mrkdwn", "text": note}]}]


# -- live status ---------------------------------------------------------------

_LABEL_WIDTH = 28


def _cell(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def status_table(board: StatusBoard, *, max_chars: int = SECTION_LIMIT - 100) -> str:
    """The step table as monospaced text: step, status, time (seconds), cost (USD)."""
    rows = board.rows()
    width = min(max([len(r.label) for r in rows] + [4]), _LABEL_WIDTH)
    lines = [f"{'step':<{width}}  {'status':<14}  {'time':>8}  {'cost':>8}"]
    for i, r in enumerate(rows):
        status = f"{ICONS.get(r.status, '?')} {r.status}"
        if r.attempt > 1:
            status += f" ({r.attempt})"
        dur = f"{r.duration_s:.2f}s" if r.duration_s is not None else ("…" if r.status == "running" else "")
        cost = f"${r.cost_usd:.4f}" if r.cost_usd else ""
        line = f"{_cell(r.label, width):<{width}}  {_cell(status, 14):<14}  {dur:>8}  {cost:>8}"
        if sum(len(x) + 1 for x in lines) + len(line) > max_chars:
            lines.append(f"… and {len(rows) - i} more steps")
            break
        lines.append(line.rstrip())
    return "\n".join(lines)


def approval_blocks(board: StatusBoard, thread: str) -> list[dict[str, Any]]:
    """For each step waiting for approval: its question and "Approve" / "Reject" buttons.

    A click is the clicking user's ``/approve ID STEP`` / ``/reject ID STEP`` (the
    core checks ``[permissions] approve``). The buttons go away with the next edit
    once the step is decided.
    """
    blocks: list[dict[str, Any]] = []
    for r in [r for r in board.rows() if r.status == "waiting"][:MAX_APPROVAL_BLOCKS]:
        question = r.label.split(" ", 1)[1] if r.label.startswith("approve ") else r.label
        ask = f"{ICONS.get('waiting', '⏸')} *{escape(question)}* — step `{escape(r.node_id)}` waits for approval"
        blocks.append(_section(_cell(ask, SECTION_LIMIT)))
        value = button_value(board.run_id, thread, r.node_id)
        blocks.append(
            {
                "type": "actions",
                "block_id": f"{APPROVAL_BLOCK_PREFIX}{r.node_id}"[:255],
                "elements": [_button(ACTION_APPROVE, "Approve", value, "primary"), _button(ACTION_REJECT, "Reject", value, "danger")],
            }
        )
    return blocks


def status_payload(board: StatusBoard, thread: str | None = None) -> dict[str, Any]:
    """``text`` + ``blocks`` of a run's status message (posted once, then edited with ``chat.update``).

    Layout: a title line (run id, status, workflow), the step table (step, status,
    time, cost), a context line with progress and totals, and, given the run's
    ``thread``, Approve/Reject buttons for steps waiting for approval.
    """
    rows = board.rows()
    icon = ICONS.get(board.status, "▶" if board.status == "running" else "…")
    title = _cell(board.title, 200)
    head = f"*Run #{board.run_id}* · {icon} {board.status} · `{escape(title).replace('`', 'ˋ')}`"
    done = sum(1 for r in rows if r.status in ("succeeded", "failed", "skipped", "cancelled"))
    cost = sum(r.cost_usd for r in rows)
    ends = [r.finished_at for r in rows if r.finished_at]
    starts = [r.started_at for r in rows if r.started_at]
    took = (max(ends) - min(starts)).total_seconds() if ends and starts else None
    ctx = [f"{done} of {len(rows)} steps done" if rows else "starting…"]
    if took is not None:
        ctx.append(f"{took:.2f}s")
    if cost:
        ctx.append(f"${cost:.4f}")
    blocks: list[dict[str, Any]] = [_section(head)]
    if rows:
        blocks.append(_section(_code(escape(status_table(board)))))
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": " · ".join(ctx)}]})
    if board.error:
        blocks.append(_section(_cell(f"Error: {escape(board.error)}", SECTION_LIMIT)))
    if thread is not None:
        blocks += approval_blocks(board, thread)
    return {"text": escape(f"Run #{board.run_id} {board.status}: {title}"), "blocks": blocks}


_RESULT_HEAD = re.compile(r"^Run #(\d+) (\w+) in ")


def result_run(text: str) -> tuple[int, str] | None:
    """``(run id, status)`` when ``text`` is a run's result (``bot.texts.result_text``), else ``None``."""
    m = _RESULT_HEAD.match(text)
    return (int(m.group(1)), m.group(2)) if m else None
