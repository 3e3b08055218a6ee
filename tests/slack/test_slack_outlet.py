"""What Baton posts: long output as a file, 429 handling, escaping, Block Kit limits."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from adapters._slack_render import SECTION_LIMIT, escape, fits_inline, status_payload, truncate, unescape
from adapters.base import StatusBoard
from bot.store import ThreadKey
from engine.events import RunEvent, StepRecord
from tests.slack.conftest import Harness, mention


def _sections(call) -> list[str]:  # type: ignore[no-untyped-def]
    return [b["text"]["text"] for b in call.args.get("blocks", []) if "text" in b]


async def test_long_output_is_uploaded_as_a_file_with_a_short_summary(harness: Harness) -> None:
    words = " ".join(f"word{i}" for i in range(600))  # ~5000 characters of output
    body = mention(f'run: echo "{words}"')
    thread = body["event"]["ts"]
    await harness.event(body)
    await harness.settle()

    (complete,) = harness.slack.calls_to("files.completeUploadExternal")
    assert complete.args["channel_id"] == "C111" and complete.args["thread_ts"] == thread
    (upload,) = harness.slack.calls_to("upload")
    full = (await harness.app.sessions.history(ThreadKey("slack", "C111", thread)))[-1].text  # type: ignore[union-attr]
    assert harness.slack.uploads[upload.args["file_id"]].decode() == full and len(full) > SECTION_LIMIT

    results = [p for p in harness.posts(thread_ts=thread) if p.args["text"].startswith("Run #1 succeeded")]
    assert len(results) == 1, "one summary message, not a flood"
    shown = _sections(results[0])
    assert all(len(t) <= SECTION_LIMIT for t in shown)
    assert "more characters in the attached baton-run-1.txt" in json.dumps(results[0].args["blocks"])


async def test_when_the_upload_fails_the_reply_is_truncated_with_a_note(harness: Harness) -> None:
    harness.slack.fail("files.getUploadURLExternal", "missing_scope")
    words = " ".join(f"word{i}" for i in range(600))
    body = mention(f'run: echo "{words}"')
    await harness.event(body)
    await harness.settle()
    (result,) = [p for p in harness.posts(thread_ts=body["event"]["ts"]) if p.args["text"].startswith("Run #1 succeeded")]
    assert "Truncated:" in json.dumps(result.args["blocks"]) and "more characters not shown" in json.dumps(result.args["blocks"])
    assert all(len(t) <= SECTION_LIMIT for t in _sections(result))


async def test_rate_limited_calls_wait_for_retry_after_then_succeed(harness: Harness) -> None:
    harness.slack.rate_limit("chat.postMessage", times=1, retry_after=1)
    body = mention("/workflows")
    status, _, took = await harness.event(body)
    assert status == 200 and took < 0.5  # the ack does not wait for Slack's rate limit
    await harness.settle()
    limited, ok = harness.slack.calls_to("chat.postMessage")
    assert limited.status == 429 and ok.ok and ok.args["text"] == "Workflows:"
    assert ok.at - limited.at >= 1.0  # Retry-After: 1 (seconds) was honoured


async def test_status_edits_survive_a_rate_limit(harness: Harness) -> None:
    harness.slack.rate_limit("chat.update", times=1, retry_after=1)
    body = mention("run: echo a THEN echo b")
    await harness.event(body)
    await harness.settle()
    updates = harness.slack.calls_to("chat.update")
    assert updates[0].status == 429 and updates[-1].ok and updates[-1].args["text"].startswith("Run #1 succeeded")


async def test_text_from_steps_cannot_ping_the_channel(harness: Harness) -> None:
    body = mention('run: echo "&lt;!channel&gt; deploy done &lt;@U999&gt; &amp; more"')  # as Slack escapes it
    await harness.event(body)
    await harness.settle()
    posted = json.dumps([c.args for c in harness.slack.calls if c.method in ("chat.postMessage", "chat.update")])
    assert "<!channel>" not in posted and "<@U999>" not in posted
    assert "&lt;!channel&gt; deploy done &lt;@U999&gt; &amp; more" in posted
    hist = await harness.app.sessions.history(ThreadKey("slack", "C111", body["event"]["ts"]))  # type: ignore[union-attr]
    assert hist[0].text == 'run: echo "<!channel> deploy done <@U999> & more"'  # stored unescaped


def test_escape_round_trip() -> None:
    s = "a < b && c > d <@U1> <!here>"
    assert unescape(escape(s)) == s and "<" not in escape(s)


def test_truncate_keeps_whole_lines_within_a_section() -> None:
    text = "Run #1 succeeded in 1.00s (1 steps)\n" + "\n".join(f"line {i} " + "x" * 50 for i in range(200))
    assert not fits_inline(text, 2900)
    kept, dropped = truncate(text, 2900)
    assert fits_inline(kept, 2900) and dropped == len(text) - len(kept) and kept.endswith("x")
    assert text.startswith(kept)


def test_status_payload_is_a_step_table_within_block_kit_limits() -> None:
    board = StatusBoard(7, "a very long workflow " * 30)
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    steps = []
    for i in range(120):
        st = "succeeded" if i % 3 else "failed"
        steps.append(
            StepRecord("7", f"s{i}", f"step number {i} with a rather long label", "shell", st, attempt=1 + (i % 2),
                       started_at=t0, finished_at=t0 + timedelta(seconds=i / 10), cost_usd=0.001 * i)
        )
    board.apply(RunEvent("run_finished", "7", status="failed", error="s0 failed <@U1>", steps=tuple(steps)))
    payload = status_payload(board)
    assert payload["text"].startswith("Run #7 failed")
    texts = [b["text"]["text"] for b in payload["blocks"] if "text" in b]
    assert all(len(t) <= SECTION_LIMIT for t in texts) and len(payload["blocks"]) <= 50
    table = texts[1]
    assert table.startswith("```step") and "status" in table and "time" in table and "cost" in table
    assert "more steps" in table and "✗ failed" in table and "(2)" in table and "$0.0010" in table
    assert "<@U1>" not in json.dumps(payload) and "&lt;@U1&gt;" in json.dumps(payload)
