"""Pure helpers: message splitting within Discord's limits, status rendering, ranking, redaction."""

from __future__ import annotations

import logging

from hypothesis import given, settings
from hypothesis import strategies as st

from adapters._discord_text import (
    MAX_CHOICES,
    MESSAGE_LIMIT,
    RedactSecrets,
    choice_label,
    rank_workflows,
    render_status,
    split_message,
    split_plain,
    thread_name,
)
from adapters.base import StatusBoard
from adapters.discord_adapter import strip_mention
from engine.events import RunEvent, StepRecord


def _unfence(chunk: str) -> str:
    assert chunk.startswith("```\n") and chunk.endswith("\n```")
    return chunk[4:-4]


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=7000), st.text(alphabet="`a\n ", max_size=300)))
def test_split_message_respects_the_limit_and_keeps_the_text(text: str) -> None:
    chunks = split_message(text)
    assert chunks and all(1 <= len(c) <= MESSAGE_LIMIT for c in chunks)
    body = text.rstrip().replace("```", "`\u200b``")
    if not body:
        assert chunks == ["(empty reply)"]
    elif "\n" not in text.rstrip() and len(text.rstrip()) <= MESSAGE_LIMIT:
        assert chunks == [text.rstrip()]  # one line is sent as it is (no code block to break out of)
    else:
        joined = "".join(_unfence(c) if i == 0 else "\n" + _unfence(c) for i, c in enumerate(chunks))
        assert joined.replace("\n", "") == body.replace("\n", "")  # only line breaks may be added at cuts


def test_split_message_plain_line_and_code_block() -> None:
    assert split_message("Cancelling run #3.") == ["Cancelling run #3."]
    assert split_message("a\n  b") == ["```\na\n  b\n```"]
    assert split_message("x```y\nz") == ["```\nx`\u200b``y\nz\n```"]  # cannot close the block early
    long = "\n".join(f"line {i:04d} " + "x" * 80 for i in range(100))
    chunks = split_message(long)
    assert len(chunks) > 1 and all(len(c) <= MESSAGE_LIMIT for c in chunks)
    assert [ln for c in chunks for ln in _unfence(c).split("\n")] == long.split("\n")  # cut at line boundaries


def _rec(i: int, status: str = "succeeded", **kw) -> StepRecord:  # type: ignore[no-untyped-def]
    return StepRecord("1", f"s{i}", f"echo step {i} " + "y" * 40, "builtin", status, attempt=1, **kw)  # type: ignore[arg-type]


def test_render_status_stays_within_the_limit_and_keeps_the_latest_steps() -> None:
    board = StatusBoard(7, "a *very* long workflow " * 10)
    for i in range(200):
        board.apply(RunEvent("step_finished", "7", step=_rec(i)))
    board.apply(RunEvent("run_finished", "7", status="failed", error="boom " * 200))
    text = render_status(board)
    assert len(text) <= MESSAGE_LIMIT
    assert text.startswith("✗ **Run #7** · failed · a \\*very\\* long")
    assert "earlier steps" in text and "s199" not in text and "echo step 199" in text  # newest rows kept
    assert "Error: boom" in text


def test_render_status_before_any_step() -> None:
    text = render_status(StatusBoard(3, "disk-check"))
    assert text.startswith("… **Run #3** · queued · disk-check") and "waiting for the first step" in text


def test_rank_workflows() -> None:
    names = ["disk-check", "ops-check", "service-health", "system-report", "disk-cleanup", "backup-disks", "deploy-api"]
    assert rank_workflows("", names) == sorted(names)
    top = rank_workflows("disk", names)
    assert top[:2] == ["disk-check", "disk-cleanup"] and top[2] == "backup-disks"  # prefix, then substring
    assert rank_workflows("deploy-api", names)[0] == "deploy-api"  # exact first
    assert rank_workflows("DISK CHECK", names)[0] == "disk-check"  # case and punctuation ignored
    assert "system-report" not in rank_workflows("disk", names)  # unrelated names are dropped
    many = [f"wf-{i:03d}" for i in range(500)]
    assert len(rank_workflows("wf", many)) == MAX_CHOICES


def test_labels_and_names_fit_discord_limits() -> None:
    assert choice_label("x" * 60, "d" * 80).endswith("…") and len(choice_label("x" * 60, "d" * 80)) == 100
    assert choice_label("disk-check", "") == "disk-check"
    assert thread_name("  echo\n a  ") == "echo a" and len(thread_name("y" * 300)) == 100


def test_strip_mention() -> None:
    assert strip_mention("<@42> run: echo hi", 42) == "run: echo hi"
    assert strip_mention("hey <@!42>, /runs", 42) == "hey  , /runs"
    assert strip_mention("<@43> hi", 42) == "<@43> hi"


def test_redaction_filter(caplog) -> None:  # type: ignore[no-untyped-def]
    f = RedactSecrets()
    f.add("super-secret-bot-token")
    logger = logging.getLogger("baton.discord.test-redact")
    f.attach([logger.name])
    f.attach([logger.name])  # idempotent
    assert logger.filters.count(f) == 1
    with caplog.at_level(logging.DEBUG, logger=logger.name):
        logger.debug("POST %s", "https://discord.com/api/v10/webhooks/123/aW50ZXJhY3Rpb24tdG9rZW4/messages/@original")
        logger.debug("event %s", {"id": "1", "token": "aW50ZXJhY3Rpb24tdG9rZW4"})
        logger.info("Authorization: Bot super-secret-bot-token")
        try:
            raise RuntimeError("failed with super-secret-bot-token")
        except RuntimeError:
            logger.exception("boom")
    assert "aW50ZXJhY3Rpb24tdG9rZW4" not in caplog.text and "super-secret-bot-token" not in caplog.text
    assert "/webhooks/123/[redacted]/messages/@original" in caplog.text and "'token': '[redacted]'" in caplog.text
    logger.removeFilter(f)


def test_split_plain_keeps_markdown_and_reopens_cut_code_blocks() -> None:
    assert split_plain("**bold**\nline") == ["**bold**\nline"]
    assert split_plain("") == ["…"]
    text = "intro\n```py\n" + "\n".join(f"x = {i}" + " " * 60 for i in range(60)) + "\n```\nafter"
    chunks = split_plain(text, 1000)
    assert len(chunks) > 2 and all(len(c) <= 1000 for c in chunks)
    assert all(c.count("```") % 2 == 0 for c in chunks)  # every message renders on its own
    assert chunks[1].startswith("```\n") and chunks[-1].endswith("after")
    assert [len(c) for c in split_plain("a" * 4500)] == [1992, 1992, 516]
