"""Schedule firings go through admission like chat requests (issue 15).

Against the real App on SQLite and PostgreSQL (``db_url``), with the scheduler on a
:class:`ControlledClock` (time moves only when a test advances it; no sleeps order anything):
``[permissions]`` are checked again at each firing (refusals told in the thread and
recorded in the audit trail), ``busy_policy`` applies, the run is queued with its
``fired_by`` note, and the scheduler's tasks belong to the App's task owner.
"""

from __future__ import annotations

import logging
from datetime import datetime

import pytest

from bot.scheduling.firing import Queued
from bot.store.audit import AuditStore
from engine.parse import compile_text
from tests.conftest import RecordingOutlet
from tests.scheduling.test_jobs import FRIDAY_3PM_NY, KEY, NY, Env, open_env, runs_texts, say

pytestmark = pytest.mark.timeout(120)

MONDAY_9AM = datetime(2026, 3, 9, 9, 0, tzinfo=NY)


async def _fire_monday(e: Env) -> None:
    await e.clock.advance_to(MONDAY_9AM)
    await e.app.bot.drain()


async def test_a_firing_is_a_queued_run_with_its_note_and_audit_row(db_url: str, outlet: RecordingOutlet) -> None:
    e = await open_env(db_url, outlet, FRIDAY_3PM_NY)
    try:
        await say(e, "schedule every weekday at 9am run echo standup")
        await _fire_monday(e)
        result = await outlet.wait_for("Fired by schedule #1")
        assert result.startswith("Run #1 succeeded")
        (run,) = await e.app.runs.list()
        assert run.requested_by == "schedule #1" and run.status == "succeeded"
        assert await e.app.runs.fired_by(run.id) == "Fired by schedule #1: At 09:00 AM, Monday through Friday"
        audit = await AuditStore(e.app.db).recent(actor="alice")
        assert [(a.action, a.outcome, a.target) for a in audit] == [("run.start", "ok", "run:1")]
    finally:
        await e.close()


async def test_permission_removed_after_scheduling_stops_the_firing(db_url: str, outlet: RecordingOutlet) -> None:
    e = await open_env(db_url, outlet, FRIDAY_3PM_NY, settings={"permissions": {"*": ["alice", "bob"]}})
    try:
        assert (await say(e, "schedule every weekday at 9am run echo standup")).startswith("Scheduled #1")
        # the operator takes alice off the list (config change, then a restart)
        e.settings = e.settings.model_copy(update={"permissions": {"*": ["bob"]}})
        await e.restart()
        await _fire_monday(e)
        notice = await outlet.wait_for("did not run")
        assert notice == (
            "Schedule #1 did not run 'echo standup' at Mon 9 Mar 2026 09:00 EDT: you may not run '*' "
            "(allowed: bob; set [permissions] in config/baton.toml) (checked for alice, who made the schedule)."
        )
        assert [k for k, t in outlet.sent if t == notice] == [KEY]
        assert (await e.app.sessions.history(KEY, 1))[0].text == notice  # in the thread's memory too
        assert await e.app.runs.list() == [] and runs_texts(outlet) == []
        (denied,) = await AuditStore(e.app.db).recent(action="permission.denied")
        assert (denied.actor, denied.outcome, denied.target, denied.thread) == ("alice", "denied", "schedule:1", "T1")
        assert "you may not run '*'" in (denied.detail or "")
        row = await e.svc.store.get(1)
        assert row is not None and row.last_fired_at is not None  # the firing was claimed (once), just not run
    finally:
        await e.close()


async def test_role_based_permission_uses_the_roles_the_author_had(db_url: str, outlet: RecordingOutlet) -> None:
    e = await open_env(db_url, outlet, FRIDAY_3PM_NY, settings={"permissions": {"*": ["role:ops"]}})
    try:
        assert (await say(e, "schedule every weekday at 9am run echo standup", roles=("ops",))).startswith("Scheduled #1")
        assert (await e.svc.store.get(1)).roles == ("ops",)  # type: ignore[union-attr]
        await e.restart()  # read back from the table
        await _fire_monday(e)
        assert (await outlet.wait_for("Fired by schedule #1")).startswith("Run #1 succeeded")
    finally:
        await e.close()


async def test_busy_policy_reject_refuses_a_firing_while_the_thread_is_busy(db_url: str, outlet: RecordingOutlet) -> None:
    e = await open_env(db_url, outlet, FRIDAY_3PM_NY, settings={"workflow": {"busy_policy": "reject"}})
    try:
        await say(e, "schedule every weekday at 9am run echo standup")
        assert e.app.admission is not None
        chat = await e.app.admission.admit(KEY, compile_text("echo earlier", e.app.catalog), requested_by="bob")
        assert chat.run_id == 1  # queued in the thread, not started yet: the thread is busy
        await _fire_monday(e)
        notice = await outlet.wait_for("did not run")
        assert notice == (
            "Schedule #1 did not run 'echo standup' at Mon 9 Mar 2026 09:00 EDT: "
            "Run #1 is still active in this thread; wait for it or /cancel it."
        )
        assert [r.id for r in await e.app.runs.list()] == [1]
        (refused,) = await AuditStore(e.app.db).recent(actor="alice")
        assert (refused.action, refused.outcome, refused.target) == ("run.start", "denied", "schedule:1")
    finally:
        await e.close()


async def test_the_schedulers_tasks_belong_to_the_apps_task_owner(db_url: str, outlet: RecordingOutlet, caplog: pytest.LogCaptureFixture) -> None:
    async def broken(row, scheduled_at):  # type: ignore[no-untyped-def]
        raise RuntimeError("launch exploded")

    e = await open_env(db_url, outlet, FRIDAY_3PM_NY, launch=broken)
    try:
        assert e.svc.tasks is e.app.tasks
        await say(e, "schedule every weekday at 9am run echo standup")
        with caplog.at_level(logging.ERROR, logger="baton"):
            await _fire_monday(e)
        assert e.app.tasks.failures == 1
        (rec,) = [r for r in caplog.records if "schedule-job-1" in r.getMessage()]
        assert rec.exc_info is not None and "launch exploded" in str(rec.exc_info[1])
    finally:
        await e.close()


async def test_app_close_cancels_a_firing_waiting_for_its_previous_run(db_url: str, outlet: RecordingOutlet) -> None:
    """A ``queue`` firing waits (a long-lived task) for the previous run; shutting the App down
    cancels and awaits it through the task owner, leaving no task behind."""
    e = await open_env(db_url, outlet, FRIDAY_3PM_NY)
    await e.clock.advance_to(datetime(2026, 3, 6, 15, 0, 30, tzinfo=NY))
    await say(e, "/schedule overlap=queue every minute run sleep 5 THEN echo done")
    await e.clock.advance_to(datetime(2026, 3, 6, 15, 1, tzinfo=NY))  # run #1 starts (5 s of real time)
    await e.clock.advance_to(datetime(2026, 3, 6, 15, 2, tzinfo=NY))  # this firing waits for it
    waiting = [t for t in e.app.tasks.pending if t.get_name() == "schedule-wait-1"]
    assert len(waiting) == 1 and isinstance(e.svc._runs[1], Queued)
    await e.app.aclose()
    assert waiting[0].cancelled() and e.app.tasks.pending == []
