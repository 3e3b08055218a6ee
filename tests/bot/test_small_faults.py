"""Issue 14, fault 19: the small ones, each through the bot or the action that showed it."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import pytest

from adapters.base import Message
from bot.app import App
from bot.runs import result_text
from bot.settings import Settings
from engine.actions import ActionRunner
from engine.catalog import Catalog
from engine.errors import UnknownWorkflowError, WorkflowSyntaxError
from engine.events import StepRecord
from engine.graph import Node
from engine.parse import compile_text
from engine.run import RunResult
from tests.conftest import REPO, RecordingOutlet


@pytest.fixture
async def app(sqlite_url: str, outlet: RecordingOutlet):  # type: ignore[no-untyped-def]
    a = await App.start(Settings(config_dir=REPO / "config", database_url=sqlite_url), {"test": outlet}, migrate=True)
    yield a
    await a.aclose()


async def say(app: App, outlet: RecordingOutlet, text: str) -> str:
    await app.bot.handle(Message("test", "C1", "T1", "alice", text), outlet)
    await app.bot.drain()
    return outlet.texts[-1]


def test_a_rerun_from_duration_counts_only_the_steps_it_ran() -> None:
    g = compile_text("echo a THEN echo b", Catalog())
    old = datetime(2026, 1, 1, tzinfo=UTC)
    now = old + timedelta(hours=5)
    steps = (
        StepRecord("2", "s1", "echo a", "builtin", "succeeded", 1, "a", started_at=old, finished_at=old + timedelta(seconds=1), reused=True),
        StepRecord("2", "s2", "echo b", "builtin", "succeeded", 1, "b", started_at=now, finished_at=now + timedelta(seconds=2)),
    )
    text = result_text(2, RunResult("2", "succeeded", steps), g)
    assert text.startswith("Run #2 succeeded in 2.00s (2 steps)"), text


async def test_disk_check_reports_used_over_used_plus_available_like_df(tmp_path) -> None:  # type: ignore[no-untyped-def]
    st = os.statvfs(tmp_path)
    used = (st.f_blocks - st.f_bfree) * st.f_frsize
    avail = st.f_bavail * st.f_frsize
    expected = 100.0 * used / (used + avail)
    node = Node("s1", "disk", "disk", {"paths": [str(tmp_path)], "threshold_percent": 100.1})
    out = await ActionRunner()(node, {})
    assert out.text.startswith(f"{tmp_path}: {expected:.1f}% used"), (out.text, expected)


async def test_unknown_workflow_keeps_the_users_casing_and_never_suggests_the_same_name(app: App, outlet: RecordingOutlet) -> None:
    text = await say(app, outlet, "run: Disk-Check")
    assert text.startswith("Unknown workflow 'Disk-Check'; did you mean 'disk-check'"), text
    e = UnknownWorkflowError("deploy", ["deploy", "deploy-prod"])
    assert e.suggestions == ("deploy-prod",) and "'deploy'?" not in str(e)


async def test_a_bad_retry_count_is_a_positioned_error_in_our_words(app: App, outlet: RecordingOutlet) -> None:
    with pytest.raises(WorkflowSyntaxError) as ei:
        compile_text("echo a (retry abc)", Catalog())
    assert ei.value.column == 8 and "int()" not in ei.value.reason
    assert ei.value.reason == "bad modifier 'retry abc': retry takes a whole number from 0 to 100, e.g. (retry 3), not 'abc'"
    text = await say(app, outlet, "run: echo a (retry abc)")
    assert "retry takes a whole number" in text and "invalid literal" not in text and "(line 1, column 8)" in text


async def test_reject_of_a_run_that_does_not_exist_says_so(app: App, outlet: RecordingOutlet) -> None:
    assert await say(app, outlet, "/reject 9999") == "No run #9999."
    await say(app, outlet, "run: echo done")
    assert await say(app, outlet, "/reject 1") == "Run #1 has no step waiting for approval."
