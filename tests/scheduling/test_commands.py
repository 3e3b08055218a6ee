"""Schedule chat commands against the real App, on SQLite and PostgreSQL.

After every command the table and the scheduler must agree (``assert_consistent``),
and after a restart too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from bot.scheduling.commands import HELP_LINES, SCHEDULE_COMMANDS, handle_schedule_command, parse_schedule_command
from tests.conftest import RecordingOutlet
from tests.scheduling.test_jobs import FRIDAY_3PM_NY, KEY, NY, Env, assert_consistent, msg, open_env, runs_texts, say


def fired(e: Env, sid: int) -> int:
    """How many run results of schedule ``sid`` were posted."""
    return sum(f"\nFired by schedule #{sid}: " in t for t in runs_texts(e.outlet))


@pytest.fixture
async def env(db_url: str, outlet: RecordingOutlet) -> AsyncIterator[Env]:
    e = await open_env(db_url, outlet, FRIDAY_3PM_NY, settings={"permissions": {"*": ["*"], "disk-check": ["bob"], "admin": ["root", "role:ops"]}})
    yield e
    await e.close()


def test_which_messages_are_schedule_commands() -> None:
    assert parse_schedule_command("schedule every weekday at 9am run standup-report") == (
        "schedule", "every weekday at 9am run standup-report")
    assert parse_schedule_command("/schedule cron 0 9 * * 1-5 run x") == ("schedule", "cron 0 9 * * 1-5 run x")
    assert parse_schedule_command("Schedule tomorrow at 5pm run x") == ("schedule", "tomorrow at 5pm run x")
    assert parse_schedule_command("/schedules") == ("schedules", "")
    assert parse_schedule_command("/schedules all") == ("schedules", "all")
    assert parse_schedule_command("/unschedule 3") == ("unschedule", "3")
    assert parse_schedule_command("/PAUSE #3") == ("pause", "#3")
    assert parse_schedule_command("/resume 3") == ("resume", "3")
    assert parse_schedule_command("/schedule") == ("schedule", "")
    # not commands: no "schedule" prefix; or chat that merely starts with the word
    assert parse_schedule_command("every weekday at 9am run standup-report") is None
    assert parse_schedule_command("in 2 hours run x") is None
    assert parse_schedule_command("schedule review is at noon, can you summarise?") is None
    assert parse_schedule_command("/scheduler") is None
    assert set(SCHEDULE_COMMANDS) == {"schedule", "schedules", "unschedule", "pause", "resume"}
    assert "/unschedule ID" in HELP_LINES


async def test_confirmation_names_the_schedule_zone_next_three_firings_and_job_id(env: Env) -> None:
    reply = await say(env, "/schedule every weekday at 9am run echo standup")
    assert reply == (
        "Scheduled #1: At 09:00 AM, Monday through Friday — run echo standup\n"
        "Time zone: America/New_York\n"
        "Next 3: Mon 9 Mar 2026 09:00 EDT; Tue 10 Mar 2026 09:00 EDT; Wed 11 Mar 2026 09:00 EDT\n"
        "Job id: 1. If a firing is due while the previous one still runs: skip. /pause 1, /resume 1, /unschedule 1."
    )
    rows = await assert_consistent(env)
    assert rows[1].created_by == "alice" and rows[1].phrase == "every weekday at 9am run echo standup"
    assert rows[1].key == KEY and rows[1].overlap == "skip" and rows[1].misfire_grace_s == 300
    # the reply is stored in the thread, after the command
    hist = await env.app.sessions.history(KEY, 2)
    assert [(m.role, m.text) for m in hist] == [("user", "/schedule every weekday at 9am run echo standup"), ("assistant", reply)]

    reply = await say(env, "schedule every day at 17:30 in Europe/Berlin run echo abend")
    assert "Time zone: Europe/Berlin" in reply and "Next 3: Sat 7 Mar 2026 17:30 CET" in reply


async def test_list_pause_resume_unschedule_keep_table_and_scheduler_in_step(env: Env) -> None:
    await say(env, "schedule every day at 5pm run echo five")
    await say(env, "schedule every monday at 8:00 run echo monday", thread="T2")  # another thread, same channel
    await say(env, "schedule every day at 6pm run echo elsewhere", channel="C2")
    listing = await say(env, "/schedules")
    assert listing.splitlines() == [
        "Schedules in this channel:",
        "  #1    active  At 05:00 PM (America/New_York) — next Fri 6 Mar 2026 17:00 EST — run echo five — by alice",
        "  #2    active  At 08:00 AM, only on Monday (America/New_York) — next Mon 9 Mar 2026 08:00 EDT — run echo monday — by alice",
    ]

    reply = await say(env, "/pause 1")
    assert reply == "Paused schedule #1 (At 05:00 PM — run echo five). /resume 1 starts it again."
    rows = await assert_consistent(env)
    assert rows[1].status == "paused" and rows[1].next_fire_at is None and 1 not in env.svc.job_ids()
    assert (await say(env, "/pause 1")).startswith("Schedule #1 is already paused")
    assert "#1    paused  At 05:00 PM (America/New_York) — run echo five" in await say(env, "/schedules")

    await env.clock.advance_to(datetime(2026, 3, 7, 12, 0, tzinfo=NY))  # Friday 17:00 passes while paused
    await env.app.bot.drain()
    assert fired(env, 1) == 0 and fired(env, 3) == 1  # the other channel's 18:00 one did fire

    await env.restart()  # paused survives a restart
    assert 1 not in env.svc.job_ids()
    await assert_consistent(env)

    reply = await say(env, "/resume #1")
    assert reply == (
        "Resumed schedule #1 (At 05:00 PM — run echo five).\n"
        "Next 3: Sat 7 Mar 2026 17:00 EST; Sun 8 Mar 2026 17:00 EDT; Mon 9 Mar 2026 17:00 EDT"
    )  # from now on: the Friday firing missed while paused is not caught up
    await assert_consistent(env)
    await env.clock.advance_to(datetime(2026, 3, 7, 17, 0, tzinfo=NY))
    await env.app.bot.drain()
    assert fired(env, 1) == 1

    reply = await say(env, "/unschedule 1")
    assert reply == "Removed schedule #1 (At 05:00 PM — run echo five). Runs it started are kept."
    rows = await assert_consistent(env)
    assert 1 not in rows and [r.requested_by for r in await env.app.runs.list()].count("schedule #1") == 1
    await env.clock.advance_to(datetime(2026, 3, 8, 18, 0, tzinfo=NY))
    await env.app.bot.drain()
    assert fired(env, 1) == 1
    assert await say(env, "/unschedule 1") == "No schedule #1 in this channel (/schedules lists them)."

    await env.restart()
    rows = await assert_consistent(env)
    assert sorted(rows) == [2, 3]


async def test_other_channels_and_admins(env: Env) -> None:
    await say(env, "schedule every day at 5pm run echo five")
    assert await say(env, "/pause 1", channel="C2") == "No schedule #1 in this channel (/schedules lists them)."
    assert await say(env, "/unschedule 1", channel="C2") == "No schedule #1 in this channel (/schedules lists them)."
    assert (await say(env, "/schedules", channel="C2")).startswith("No schedules in this channel.")
    assert (await say(env, "/schedules all")).startswith("Only admins may list every channel's schedules")
    everything = await say(env, "/schedules all", channel="C2", author="root")
    assert everything.startswith("All schedules:") and "[test:C1/T1]" in everything
    assert (await say(env, "/schedules all", channel="C3", author="carol", roles=("ops",))).startswith("All schedules:")
    assert (await say(env, "/pause 1", channel="C2", author="root")).startswith("Paused schedule #1")
    assert (await env.svc.get(1)).status == "paused"  # type: ignore[union-attr]
    assert await say(env, "/pause x") == "Usage: /pause ID (the number /schedules shows, e.g. /pause 3)"
    assert await say(env, "/schedules some") == "Usage: /schedules [all]"
    await assert_consistent(env)


async def test_too_frequent_schedules_are_refused_with_the_limit(env: Env) -> None:
    reply = await say(env, "schedule every 30 seconds run echo spam")
    assert reply == (
        "Not scheduled: this schedule (Every 30 seconds) would fire as often as every 30 seconds; "
        "the minimum interval here is 1 minute. Try e.g. \"schedule every 15 minutes run echo spam\"."
    )
    assert await env.svc.store.list() == [] and env.svc.job_ids() == {}


async def test_min_interval_is_configurable(db_url: str, outlet: RecordingOutlet) -> None:
    e = await open_env(db_url, outlet, FRIDAY_3PM_NY, min_interval_s=3600)
    try:
        reply = await say(e, "schedule every 15 minutes run echo x")
        assert "would fire as often as every 15 minutes; the minimum interval here is 1 hour" in reply
        assert (await say(e, "schedule every 2 hours run echo x")).startswith("Scheduled #1")
        await assert_consistent(e)
    finally:
        await e.close()


async def test_unknown_workflow_lists_the_closest_names(env: Env) -> None:
    reply = await say(env, "schedule every weekday at 9am run disk-chek")
    assert reply.startswith("Not scheduled: unknown workflow 'disk-chek'; did you mean 'disk-check'")
    assert "Known workflows: " + ", ".join(sorted(env.app.catalog.names())) in reply
    assert await env.svc.store.list() == [] and env.svc.job_ids() == {}


async def test_workflow_syntax_error_points_at_it(env: Env) -> None:
    reply = await say(env, "schedule every day at 9am run echo a THEN THEN echo b")
    assert reply == (
        "Not scheduled: I could not parse the workflow 'echo a THEN THEN echo b': expected a step, got 'THEN' (column 13)\n"
        "echo a THEN THEN echo b\n"
        "            ^"
    )
    assert await env.svc.store.list() == []


async def test_unparsable_phrase_gets_a_caret_and_two_examples(env: Env) -> None:
    reply = await say(env, "schedule every blursday at 9 run echo x")
    lines = reply.splitlines()
    assert lines[0].startswith("Not scheduled: could not understand 'blursday' at position 6")
    assert lines[1:3] == ["  every blursday at 9 run echo x", "        ^^^^^^^^"]
    assert lines[3].startswith("try e.g. ") and lines[3].count(" run ") == 2
    reply = await say(env, "/schedule every weekday at 9am")  # no "run <workflow>"
    assert reply.startswith("Not scheduled: could not understand position 20: expected 'run <workflow>'")
    reply = await say(env, "/schedule every day at 25pm run echo x")
    assert reply.startswith("Not scheduled: could not understand") and "^" in reply
    assert await env.svc.store.list() == [] and env.svc.job_ids() == {}
    assert (await say(env, "/schedule")).startswith("Schedule what? e.g.")
    assert (await say(env, "/schedule overlap=sometimes every day run echo x")).startswith(
        "Not scheduled: unknown overlap policy 'sometimes'")


async def test_permissions_are_checked_when_scheduling(env: Env) -> None:
    reply = await say(env, "schedule every day at 9am run disk-check")
    assert reply.startswith("Not scheduled: you may not run 'disk-check' (allowed: bob")
    assert (await say(env, "schedule every day at 9am run disk-check", author="bob")).startswith("Scheduled #1")
    await assert_consistent(env)


async def test_a_time_already_past_is_refused(env: Env) -> None:
    reply = await say(env, "schedule on 1 march 2026 at 9am run echo late")
    assert reply.startswith("Not scheduled") and await env.svc.store.list() == []


async def test_other_commands_are_not_handled(env: Env) -> None:
    m = msg("/runs")
    assert await handle_schedule_command(env.svc, env.app.bot, m, env.outlet, "runs", "") is False
    assert env.outlet.sent == []


async def test_state_agrees_after_a_busy_sequence_and_a_restart(env: Env) -> None:
    for phrase in ("every day at 5pm run echo a", "every 15 minutes run echo b", "tomorrow at noon run echo c",
                   "cron 0 9 * * 1-5 run echo d", "on the first of every month at 8:00 run echo e"):
        assert (await say(env, "schedule " + phrase)).startswith("Scheduled #")
    await say(env, "/pause 2")
    await say(env, "/unschedule 4")
    await env.clock.advance(timedelta(hours=30))
    await env.app.bot.drain()
    before = await assert_consistent(env)
    assert before[3].status == "finished" and before[3].last_fired_at == datetime(2026, 3, 7, 17, 0, tzinfo=UTC)
    await env.restart()
    after = await assert_consistent(env)
    assert after == before
    await say(env, "/resume 2")
    await assert_consistent(env)
