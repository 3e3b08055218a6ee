"""The turn handler in-process: commands, ordering, busy policies, cancel, rerun, permissions, bad input."""

from __future__ import annotations

import asyncio

import pytest

from adapters.base import Message
from bot.app import App
from bot.settings import Settings
from bot.store.sqlite_worker import SqliteWorker
from tests.conftest import REPO, RecordingOutlet


def msg(text: str, author: str = "alice", thread: str = "T1", roles: tuple[str, ...] = ()) -> Message:
    return Message("test", "C1", thread, author, text, roles=roles)


@pytest.fixture
async def app(sqlite_url: str, outlet: RecordingOutlet, request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    extra = getattr(request, "param", {})
    settings = Settings(config_dir=REPO / "config", database_url=sqlite_url, **extra)
    a = await App.start(settings, {"test": outlet}, migrate=True)
    yield a
    await a.aclose()


async def say(app: App, outlet: RecordingOutlet, text: str, **kw) -> None:  # type: ignore[no-untyped-def]
    await app.bot.handle(msg(text, **kw), outlet)


async def test_run_reports_steps_and_result_and_is_stored(app: App, outlet: RecordingOutlet) -> None:
    await say(app, outlet, "run: echo hello AND echo world THEN IF_SUCCESS echo all good ELSE echo trouble")
    await app.bot.drain()
    result = await outlet.wait_for("Run #1 succeeded")
    assert "Result:\nall good" in result and "· echo trouble — skipped" in result
    kinds = [e.kind for e in outlet.events]
    assert kinds[0] == "run_started" and kinds[-1] == "run_finished" and kinds.count("step_started") == 3
    hist = await app.sessions.history(msg("x").key)
    assert [m.role for m in hist] == ["user", "assistant"] and hist[1].text == result


async def test_history_survives_a_restart(sqlite_url: str, outlet: RecordingOutlet) -> None:
    settings = Settings(config_dir=REPO / "config", database_url=sqlite_url)
    a = await App.start(settings, {"test": outlet}, migrate=True)
    await say(a, outlet, "remember the blue deploy key")
    await a.bot.drain()
    await a.aclose()
    b = await App.start(settings, {"test": outlet}, migrate=True)
    try:
        await say(b, outlet, "/history 5")
        assert "alice: remember the blue deploy key" in outlet.texts[-1]
    finally:
        await b.aclose()


async def test_parse_error_points_at_the_position(app: App, outlet: RecordingOutlet) -> None:
    await say(app, outlet, "run: echo a THEN THEN echo b")
    await app.bot.drain()
    assert outlet.texts[-1] == "I could not parse that workflow: expected a step, got 'THEN' (line 1, column 13)\necho a THEN THEN echo b\n            ^"


async def test_unknown_workflow_lists_close_names(app: App, outlet: RecordingOutlet) -> None:
    await say(app, outlet, "/run disk-chek")
    await app.bot.drain()
    assert "Unknown workflow 'disk-chek'; did you mean 'disk-check'" in outlet.texts[-1]
    assert await app.runs.list() == []


async def test_unknown_command_suggests(app: App, outlet: RecordingOutlet) -> None:
    await say(app, outlet, "/histroy")
    assert outlet.texts[-1].startswith("Unknown command /histroy; did you mean /history")


async def test_help_and_workflows(app: App, outlet: RecordingOutlet) -> None:
    await say(app, outlet, "/help")
    assert "IF_ANY_FAILED" in outlet.texts[-1]
    await say(app, outlet, "/workflows")
    for name in ("disk-check", "system-report", "service-health", "ops-check"):
        assert name in outlet.texts[-1]


async def test_cancel_stops_running_steps(app: App, outlet: RecordingOutlet) -> None:
    await say(app, outlet, "run: sleep 30 AND sleep 30")
    for _ in range(100):
        if sum(e.kind == "step_started" for e in outlet.events) == 2:
            break
        await asyncio.sleep(0.02)
    await say(app, outlet, "/cancel 1")  # answered at once, not queued behind the run
    await outlet.wait_for("Run #1 cancelled")
    row, steps = await app.runs.get(1)  # type: ignore[misc]
    assert row.status == "cancelled" and {s.status for s in steps} == {"cancelled"}
    await say(app, outlet, "/cancel 1")
    assert "is not running (it is cancelled)" in outlet.texts[-1]


async def test_queue_policy_keeps_thread_order(app: App, outlet: RecordingOutlet) -> None:
    await say(app, outlet, "run: sleep 0.3 THEN echo first")
    await say(app, outlet, "run: echo second")
    await asyncio.sleep(0.1)
    await say(app, outlet, "/runs")  # immediate: the first run is still going
    assert "#1    running" in outlet.texts[-1] or "#1    queued" in outlet.texts[-1]
    await app.bot.drain()
    results = [t for t in outlet.texts if t.startswith("Run #")]
    assert results[0].startswith("Run #1 succeeded") and results[1].startswith("Run #2 succeeded")
    r1, _ = await app.runs.get(1)  # type: ignore[misc]
    r2, _ = await app.runs.get(2)  # type: ignore[misc]
    assert r1.finished_at <= r2.started_at


@pytest.mark.parametrize("app", [{"workflow": {"busy_policy": "reject"}}], indirect=True)
async def test_reject_policy(app: App, outlet: RecordingOutlet) -> None:
    await say(app, outlet, "run: sleep 0.3")
    await asyncio.sleep(0.1)
    await say(app, outlet, "run: echo second")
    await app.bot.drain()
    assert any("Run #1 is still active in this thread" in t for t in outlet.texts)
    assert len(await app.runs.list()) == 1


async def test_rerun_from_step_reuses_earlier_outputs(app: App, outlet: RecordingOutlet) -> None:
    await say(app, outlet, "run: echo one THEN echo two THEN fail three")
    await app.bot.drain()
    assert outlet.texts[-1].startswith("Run #1 failed")
    await say(app, outlet, "/rerun 1 from s2")
    await app.bot.drain()
    row, steps = await app.runs.get(2)  # type: ignore[misc]
    assert row.rerun_of == 1
    by = {s.node_id: s for s in steps}
    assert by["s1"].reused and by["s1"].output == "one"
    assert not by["s2"].reused and by["s2"].status == "succeeded"
    await say(app, outlet, "/rerun 1 from nope")
    await app.bot.drain()
    assert "Run #1 has no step 'nope'" in outlet.texts[-1]


async def test_run_show(app: App, outlet: RecordingOutlet) -> None:
    await say(app, outlet, "run: echo shown")
    await app.bot.drain()
    await say(app, outlet, "/run show 1")
    text = outlet.texts[-1]
    assert text.startswith("Run #1: succeeded — echo shown") and "s1" in text and "shown" in text
    await say(app, outlet, "/run show x1")
    assert "expected a run id" in outlet.texts[-1]


@pytest.mark.parametrize("app", [{"permissions": {"*": ["*"], "disk-check": ["bob", "role:ops"]}}], indirect=True)
async def test_permissions_are_checked_before_running(app: App, outlet: RecordingOutlet) -> None:
    await say(app, outlet, "run: echo hi THEN disk-check")
    await app.bot.drain()
    assert outlet.texts[-1].startswith("Not run: you may not run 'disk-check' (allowed: bob, role:ops")
    assert await app.runs.list() == []
    await say(app, outlet, "run: disk-check", roles=("ops",))
    await app.bot.drain()
    assert outlet.texts[-1].startswith("Run #1 ")


async def test_llm_step_without_provider_names_the_setting(app: App, outlet: RecordingOutlet) -> None:
    await say(app, outlet, "run: write a haiku about disks")
    await app.bot.drain()
    assert "no LLM provider is configured" in outlet.texts[-1] and "OPENAI_API_KEY" in outlet.texts[-1]


async def test_plain_chat_without_provider_says_how_to_configure(app: App, outlet: RecordingOutlet) -> None:
    await say(app, outlet, "what's the weather like")
    await app.bot.drain()
    assert "Chatting needs an LLM provider" in outlet.texts[-1]


async def test_database_failure_is_reported_and_nothing_runs(app: App, outlet: RecordingOutlet, tmp_path) -> None:  # type: ignore[no-untyped-def]
    good = app.db._worker
    app.db._worker = await asyncio.to_thread(SqliteWorker, str(tmp_path / "empty.db"))  # a database without Baton's tables
    try:
        await say(app, outlet, "run: echo should not run")
        await app.bot.drain()
    finally:
        await asyncio.to_thread(app.db._worker.close)
        app.db._worker = good
    assert await app.runs.list() == []
    assert "I could not record your message" in outlet.texts[-1] and "nothing was run" in outlet.texts[-1]


async def test_approval_step_waits_for_an_allowed_person(app: App, outlet: RecordingOutlet) -> None:
    await say(app, outlet, "run: echo plan THEN approve deploy to prod? THEN echo deployed")
    for _ in range(200):
        if any(e.kind == "step_waiting" for e in outlet.events):
            break
        await asyncio.sleep(0.01)
    _, steps = await app.runs.get(1)  # type: ignore[misc]
    assert {s.node_id: s.status for s in steps}["s2"] == "waiting"  # durable: checkpointed as waiting
    await say(app, outlet, "/approve 7")
    assert outlet.texts[-1] == "No run #7."
    await say(app, outlet, "/approve 1")
    assert outlet.texts[-1] == "Approved step s2 of run #1."
    result = await outlet.wait_for("Run #1 ")
    assert result.startswith("Run #1 succeeded") and "approved by alice" in (await app.bot._run_show("1"))


async def test_rejection_fails_the_run(app: App, outlet: RecordingOutlet) -> None:
    await say(app, outlet, "run: approve go? THEN echo never")
    for _ in range(200):
        if app.bot.approvals.pending():  # type: ignore[union-attr]
            break
        await asyncio.sleep(0.01)
    await say(app, outlet, "/reject 1", author="bob")
    result = await outlet.wait_for("Run #1 ")
    assert result.startswith("Run #1 failed") and "rejected by bob" in result


@pytest.mark.parametrize("app", [{"permissions": {"*": ["*"], "approve": ["role:oncall"]}}], indirect=True)
async def test_only_allowed_people_approve(app: App, outlet: RecordingOutlet) -> None:
    await say(app, outlet, "run: approve go?")
    for _ in range(200):
        if app.bot.approvals.pending():  # type: ignore[union-attr]
            break
        await asyncio.sleep(0.01)
    await say(app, outlet, "/approve 1")
    assert outlet.texts[-1].startswith("You may not approve runs (allowed: role:oncall")
    await say(app, outlet, "/approve 1", roles=("oncall",))
    assert (await outlet.wait_for("Run #1 ")).startswith("Run #1 succeeded")
