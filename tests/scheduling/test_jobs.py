"""The job layer against the real App: firing in the thread, restarts, DST, overlap, misfires.

Time is a :class:`ControlledClock`: it moves only when a test advances it, and every
timer due on the way fires at its own instant (runs themselves use real time). Every
test that touches the database runs on SQLite and on PostgreSQL (``db_url``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from adapters.base import Message
from bot.app import App
from bot.scheduling import ScheduleRow, SchedulerService, parse_schedule
from bot.scheduling.testing import ControlledClock
from bot.scheduling.commands import handle_schedule_command, parse_schedule_command
from bot.scheduling.triggers import SpecTrigger
from bot.settings import Settings
from bot.store import ThreadKey
from tests.conftest import REPO, RecordingOutlet

NY = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")
FRIDAY_3PM_NY = datetime(2026, 3, 6, 15, 0, tzinfo=NY)  # the weekend before New York's spring-forward (Sun 8 March)
KEY = ThreadKey("test", "C1", "T1")


@dataclass
class Env:
    """One running Baton plus its scheduler, sharing a database URL and a clock across restarts."""

    url: str
    outlet: RecordingOutlet
    clock: ControlledClock
    settings: Settings
    app: App
    svc: SchedulerService
    kw: dict

    async def restart(self, down_until: datetime | None = None) -> None:
        """Stop app and scheduler, optionally let time pass while down, start both again."""
        await self.svc.aclose()
        await self.app.aclose()
        if down_until is not None:
            await self.clock.advance_to(down_until)
        self.app = await App.start(self.settings, {"test": self.outlet}, migrate=True, scheduler_clock=self.clock, scheduler_options=self.kw)
        assert self.app.scheduler is not None
        self.svc = self.app.scheduler

    async def close(self) -> None:
        await self.svc.aclose()
        await self.app.aclose()


async def open_env(url: str, outlet: RecordingOutlet, start: datetime, *, settings: dict | None = None, **kw) -> Env:  # type: ignore[no-untyped-def]
    kw.setdefault("default_tz", "America/New_York")
    s = Settings(config_dir=REPO / "config", database_url=url, **(settings or {}))
    clock = ControlledClock(start)
    app = await App.start(s, {"test": outlet}, migrate=True, scheduler_clock=clock, scheduler_options=kw)
    assert app.scheduler is not None  # the App's own scheduler, on the controlled clock
    return Env(url, outlet, clock, s, app, app.scheduler, kw)


@pytest.fixture
async def env(db_url: str, outlet: RecordingOutlet) -> AsyncIterator[Env]:
    e = await open_env(db_url, outlet, FRIDAY_3PM_NY)
    yield e
    await e.close()


def msg(text: str, *, author: str = "alice", channel: str = "C1", thread: str = "T1", roles: tuple[str, ...] = ()) -> Message:
    return Message("test", channel, thread, author, text, roles=roles)


async def say(e: Env, text: str, **kw) -> str:  # type: ignore[no-untyped-def]
    """What the lead's wiring does: store the message, then answer a schedule command."""
    m = msg(text, **kw)
    await e.app.sessions.append(m.key, "user", m.author, m.text)
    parsed = parse_schedule_command(text)
    assert parsed is not None, f"not a schedule command: {text!r}"
    before = len(e.outlet.sent)
    assert await handle_schedule_command(e.svc, e.app.bot, m, e.outlet, *parsed)
    assert len(e.outlet.sent) == before + 1
    key, reply = e.outlet.sent[-1]
    assert key == m.key
    return reply


async def assert_consistent(e: Env) -> dict[int, ScheduleRow]:
    """The scheduler holds exactly the active schedules of the table, at the stored next firing."""
    rows = {r.id: r for r in await e.svc.store.list()}
    expected = {i: r.next_fire_at for i, r in rows.items() if r.status == "active"}
    jobs = e.svc.job_ids()
    assert set(jobs) == set(expected), (jobs, expected)
    for i, when in jobs.items():
        assert when == expected[i], (i, when, expected[i])
    return rows


def runs_texts(outlet: RecordingOutlet) -> list[str]:
    return [t for t in outlet.texts if t.startswith("Run #")]


# -- (a) a weekday schedule made on Friday fires on Monday, across a restart -----------------------


async def test_weekday_9am_scheduled_on_friday_fires_monday_in_its_thread_after_a_restart(env: Env) -> None:
    reply = await say(env, "schedule every weekday at 9am run echo standup")
    assert reply.splitlines()[:3] == [
        "Scheduled #1: At 09:00 AM, Monday through Friday — run echo standup",
        "Time zone: America/New_York",
        # New York springs forward on Sunday 8 March: Monday 09:00 is EDT (13:00 UTC), Friday's was EST
        "Next 3: Mon 9 Mar 2026 09:00 EDT; Tue 10 Mar 2026 09:00 EDT; Wed 11 Mar 2026 09:00 EDT",
    ]
    await assert_consistent(env)

    await env.restart(down_until=datetime(2026, 3, 8, 12, 0, tzinfo=NY))  # Sunday noon, after the change
    assert env.svc.job_ids() == {1: datetime(2026, 3, 9, 13, 0, tzinfo=UTC)}
    await assert_consistent(env)

    await env.clock.advance_to(datetime(2026, 3, 9, 8, 59, 59, tzinfo=NY))
    await env.app.bot.drain()
    assert runs_texts(env.outlet) == [] and await env.app.runs.list() == []

    await env.clock.advance_to(datetime(2026, 3, 9, 9, 0, tzinfo=NY))
    await env.app.bot.drain()
    result = await env.outlet.wait_for("Fired by schedule #1")
    assert result.startswith("Run #1 succeeded") and result.endswith("Result:\nstandup")
    assert "Fired by schedule #1: At 09:00 AM, Monday through Friday" in result
    assert [k for k, t in env.outlet.sent if t == result] == [KEY]  # the thread it was scheduled in
    (run,) = await env.app.runs.list()
    assert run.requested_by == "schedule #1" and run.thread_id == await env.app.sessions.thread_id(KEY)
    assert (await env.app.sessions.history(KEY, 1))[0].text == result  # stored in the thread's memory

    rows = await assert_consistent(env)
    assert rows[1].last_fired_at == datetime(2026, 3, 9, 13, 0, tzinfo=UTC)
    assert rows[1].next_fire_at == datetime(2026, 3, 10, 13, 0, tzinfo=UTC)

    await env.clock.advance_to(datetime(2026, 3, 9, 23, 0, tzinfo=NY))
    await env.app.bot.drain()
    assert len(runs_texts(env.outlet)) == 1  # once on Monday, not again


async def test_one_off_fires_once_and_finishes(env: Env) -> None:
    reply = await say(env, "schedule tomorrow at 5pm run echo once")
    assert "Next: Sat 7 Mar 2026 17:00 EST" in reply
    await env.clock.advance(timedelta(days=3))
    await env.app.bot.drain()
    assert len(runs_texts(env.outlet)) == 1
    rows = await assert_consistent(env)
    assert rows[1].status == "finished" and rows[1].next_fire_at is None
    assert rows[1].last_fired_at == datetime(2026, 3, 7, 22, 0, tzinfo=UTC)
    await env.restart()
    assert env.svc.job_ids() == {}


# -- (b) daylight-saving changes: nothing missed, nothing doubled -------------------------------------

DST_PHRASES = (
    "every day at 2:30 run echo a",  # inside Berlin's and New York's spring gap; repeated in Berlin's autumn
    "every day at 1:30 run echo b",  # repeated in New York's autumn
    "every day at 9am run echo c",
    "cron 30 * * * * run echo d",  # hourly, on the wall clock
    "every 2 hours run echo e",  # elapsed time
)


@pytest.mark.parametrize(
    ("zone", "change_days"),
    [("Europe/Berlin", ((2026, 3, 29), (2026, 10, 25))), ("America/New_York", ((2026, 3, 8), (2026, 11, 1)))],
)
async def test_dst_changes_neither_miss_nor_double_a_firing(db_url: str, outlet: RecordingOutlet, zone: str, change_days) -> None:  # type: ignore[no-untyped-def]
    tz = ZoneInfo(zone)
    fired: list[tuple[int, datetime, datetime]] = []
    clock_box: list[ControlledClock] = []

    async def record(row: ScheduleRow, at: datetime) -> None:
        fired.append((row.id, at, clock_box[0].now()))

    for y, m, d in change_days:
        fired.clear()
        start = datetime(y, m, d, 12, 0, tzinfo=tz) - timedelta(days=2)
        end = datetime(y, m, d, 12, 0, tzinfo=tz) + timedelta(days=2)
        e = await open_env(db_url, outlet, start, default_tz=zone, launch=record)
        clock_box[:] = [e.clock]
        try:
            specs = {}
            for phrase in DST_PHRASES:
                spec = parse_schedule(phrase, now=e.clock.now(), default_tz=zone)
                specs[(await e.svc.add(KEY, "alice", spec)).id] = spec
            await e.clock.advance_to(end)
            for sid, spec in specs.items():
                got = [at for i, at, _ in fired if i == sid]
                # compared in UTC: == between zones is False for a repeated wall time (PEP 495)
                expected = [t.astimezone(UTC) for t in spec.next_fire_times(start, 200) if t <= end]
                assert got == expected, (spec.source, got, expected)  # the parser's firings, in order
                assert len(set(got)) == len(got)
            assert [(i, at, now) for i, at, now in fired if at != now] == []  # each fired at its own instant
            change = datetime(y, m, d, tzinfo=tz).date()
            for sid, spec in specs.items():
                local = [at.astimezone(tz) for i, at, _ in fired if i == sid]
                utc = [t.astimezone(UTC) for t in local]  # (same-zone datetimes subtract as wall times)
                if spec.kind == "cron" and spec.expression != "30 * * * *":  # daily: once per local day
                    days = [t.date() for t in local]
                    assert days == sorted(set(days)) and len(days) == 4
                if spec.expression == "30 * * * *":
                    on_day = [t for t in local if t.date() == change]
                    assert len(on_day) == (23 if m == 3 else 24)  # one wall hour skipped / repeated once
                    assert all(b - a >= timedelta(hours=1) for a, b in zip(utc, utc[1:]))
                if spec.kind == "interval":
                    assert all(b - a == timedelta(hours=2) for a, b in zip(utc, utc[1:]))
            await assert_consistent(e)
            for sid in specs:  # the next window reuses the database
                await e.svc.remove(sid)
            await assert_consistent(e)
        finally:
            await e.close()
        _check_dst_landmarks(zone, (y, m, d), fired, specs)


def _check_dst_landmarks(zone: str, day: tuple[int, int, int], fired, specs) -> None:  # type: ignore[no-untyped-def]
    by_phrase = {s.source: [at.astimezone(UTC) for i, at, _ in fired if i == sid] for sid, s in specs.items()}
    y, m, d = day
    if zone == "Europe/Berlin" and m == 3:
        # 02:30 does not exist on 29 March: fires once, at 03:30 CEST (= 01:30 UTC)
        assert datetime(y, m, d, 1, 30, tzinfo=UTC) in by_phrase["every day at 2:30 run echo a"]
    if zone == "Europe/Berlin" and m == 10:
        # 02:30 happens twice on 25 October: fires once, the first time (02:30 CEST = 00:30 UTC)
        day_fires = [t for t in by_phrase["every day at 2:30 run echo a"] if t.date() == datetime(y, m, d).date()]
        assert day_fires == [datetime(y, m, d, 0, 30, tzinfo=UTC)]
    if zone == "America/New_York" and m == 3:
        assert datetime(y, m, d, 7, 30, tzinfo=UTC) in by_phrase["every day at 2:30 run echo a"]  # 03:30 EDT
        assert datetime(y, m, d + 1, 13, 0, tzinfo=UTC) in by_phrase["every day at 9am run echo c"]  # 09:00 EDT
    if zone == "America/New_York" and m == 11:
        day_fires = [t for t in by_phrase["every day at 1:30 run echo b"] if t.astimezone(NY).date() == datetime(y, m, d).date()]
        assert day_fires == [datetime(y, m, d, 5, 30, tzinfo=UTC)]  # 01:30 EDT, not again at 01:30 EST


# -- (d) overlap policies -------------------------------------------------------------------------------


async def _every_minute_with_slow_runs(e: Env, option: str) -> None:
    """A schedule whose run (2 s of real time) is still going when the next firings are due."""
    await e.clock.advance_to(datetime(2026, 3, 6, 15, 0, 30, tzinfo=NY))
    reply = await say(e, f"/schedule {option}every minute run sleep 2 THEN echo done")
    assert reply.startswith("Scheduled #1")
    await e.clock.advance_to(datetime(2026, 3, 6, 15, 1, tzinfo=NY))  # fires run #1
    await e.clock.advance_to(datetime(2026, 3, 6, 15, 2, tzinfo=NY))  # run #1 still sleeping
    await e.clock.advance_to(datetime(2026, 3, 6, 15, 3, tzinfo=NY))  # still sleeping


async def test_overlap_skip_is_the_default(env: Env) -> None:
    await _every_minute_with_slow_runs(env, "")
    await env.app.bot.drain()
    assert len(await env.app.runs.list()) == 1
    skips = [t for t in env.outlet.texts if "skipped its" in t]
    assert skips == [
        "Schedule #1 skipped its Fri 6 Mar 2026 15:02 EST firing: run #1 from its previous firing is still running "
        "(overlap policy: skip)."
    ]  # told once per blocking run, not for the 15:03 firing too
    await env.clock.advance_to(datetime(2026, 3, 6, 15, 4, tzinfo=NY))  # run #1 is done: fires again
    await env.app.bot.drain()
    assert [r.id for r in await env.app.runs.list()] == [2, 1]
    rows = await assert_consistent(env)
    assert rows[1].last_fired_at == datetime(2026, 3, 6, 20, 4, tzinfo=UTC)


async def test_overlap_queue_runs_after_the_previous_one(env: Env) -> None:
    await _every_minute_with_slow_runs(env, "overlap=queue ")
    await env.outlet.wait_for("Run #2 ")
    await env.app.bot.drain()
    r2, r1 = await env.app.runs.list()
    assert (r1.id, r2.id) == (1, 2)  # the 15:02 and 15:03 firings coalesced into one waiting firing
    assert r1.finished_at <= r2.started_at
    assert not [t for t in env.outlet.texts if "skipped" in t]


async def test_overlap_allow_runs_alongside_when_the_busy_policy_allows(db_url: str, outlet: RecordingOutlet) -> None:
    e = await open_env(db_url, outlet, FRIDAY_3PM_NY, settings={"workflow": {"busy_policy": "allow"}})
    try:
        await _every_minute_with_slow_runs(e, "overlap=allow ")
        await e.app.bot.drain()
        runs = sorted(await e.app.runs.list(), key=lambda r: r.id)
        assert len(runs) == 3
        assert runs[1].started_at < runs[0].finished_at
    finally:
        await e.close()


async def test_overlap_allow_still_keeps_the_threads_order_under_busy_policy_queue(env: Env) -> None:
    """Firings are admitted like chat requests: under the default ``busy_policy = "queue"``
    a thread's runs run one after the other, whatever the schedule's overlap policy."""
    await _every_minute_with_slow_runs(env, "overlap=allow ")
    await env.app.bot.drain()
    runs = sorted(await env.app.runs.list(), key=lambda r: r.id)
    assert len(runs) == 3 and {r.status for r in runs} == {"succeeded"}
    assert runs[0].finished_at <= runs[1].started_at and runs[1].finished_at <= runs[2].started_at


# -- (e) missed firings: beyond the grace time told, within it fired once ------------------------------


async def test_missed_beyond_grace_is_reported_not_run(env: Env) -> None:
    await env.clock.advance_to(datetime(2026, 3, 9, 8, 0, tzinfo=NY))
    await say(env, "schedule every day at 9am run echo daily")
    await env.restart(down_until=datetime(2026, 3, 9, 9, 10, tzinfo=NY))  # 10 minutes late > 5 minutes grace
    await env.app.bot.drain()
    notice = await env.outlet.wait_for("missed")
    assert notice == (
        "Schedule #1 (At 09:00 AM) missed its Mon 9 Mar 2026 09:00 EDT firing: the bot was not running or was too busy. "
        "The latest was 10 minutes late, beyond the 5 minutes grace time, so 'echo daily' was not run. "
        "Next firing: Tue 10 Mar 2026 09:00 EDT."
    )
    assert [k for k, t in env.outlet.sent if t == notice] == [KEY]
    assert await env.app.runs.list() == []
    rows = await assert_consistent(env)
    assert rows[1].next_fire_at == datetime(2026, 3, 10, 13, 0, tzinfo=UTC) and rows[1].last_fired_at is None
    await env.restart()  # the notice is not repeated after another restart
    assert sum("missed" in t for t in env.outlet.texts) == 1

    await env.restart(down_until=datetime(2026, 3, 13, 12, 0, tzinfo=NY))  # down Tue..Fri 09:00
    notice = await env.outlet.wait_for("missed 4 firings")
    assert "from Tue 10 Mar 2026 09:00 EDT to Fri 13 Mar 2026 09:00 EDT" in notice
    assert await env.app.runs.list() == []
    await assert_consistent(env)


async def test_missed_within_grace_fires_once(env: Env) -> None:
    await env.clock.advance_to(datetime(2026, 3, 9, 8, 0, tzinfo=NY))
    await say(env, "schedule every day at 9am run echo daily")
    await env.restart(down_until=datetime(2026, 3, 9, 9, 3, tzinfo=NY))  # 3 minutes late, within grace
    await env.app.bot.drain()
    await env.outlet.wait_for("Fired by schedule #1")
    assert len(await env.app.runs.list()) == 1 and not any("missed" in t for t in env.outlet.texts)
    rows = await assert_consistent(env)
    assert rows[1].last_fired_at == datetime(2026, 3, 9, 13, 0, tzinfo=UTC)


async def test_several_missed_within_grace_coalesce_into_one_firing(env: Env) -> None:
    await env.clock.advance_to(datetime(2026, 3, 6, 15, 0, 30, tzinfo=NY))
    await say(env, "schedule every minute run echo tick")
    await env.restart(down_until=datetime(2026, 3, 6, 15, 4, 30, tzinfo=NY))  # 15:01..15:04 missed
    await env.app.bot.drain()
    assert len(await env.app.runs.list()) == 1
    rows = await assert_consistent(env)
    assert rows[1].last_fired_at == datetime(2026, 3, 6, 20, 4, tzinfo=UTC)  # the latest one ran
    assert rows[1].next_fire_at == datetime(2026, 3, 6, 20, 5, tzinfo=UTC)


async def test_stall_while_running_counts_as_a_misfire(env: Env) -> None:
    """The same rules hold without a restart: a firing seen too late is reported, not run."""
    await say(env, "schedule every day at 5pm run echo evening")
    # time jumps 2 hours in one go (a suspended laptop): the timer fires late
    await env.clock.jump_to(datetime(2026, 3, 6, 19, 0, tzinfo=NY))
    await env.outlet.wait_for("missed its Fri 6 Mar 2026 17:00 EST firing")
    assert await env.app.runs.list() == []
    await assert_consistent(env)


# -- the pieces -----------------------------------------------------------------------------------------


def test_spec_trigger_matches_the_parser_and_finds_the_latest_missed_firing() -> None:
    now = datetime(2026, 3, 6, 15, 0, tzinfo=NY)
    spec = parse_schedule("every weekday at 9am run x", now=now, default_tz="America/New_York")
    trig = SpecTrigger(spec)
    assert trig.get_next_fire_time(None, now) == spec.next_fire_times(now, 1)[0]
    first = trig.get_next_fire_time(None, now)
    assert trig.get_next_fire_time(first, now) == spec.next_fire_times(first, 1)[0]
    much_later = datetime(2027, 3, 6, 15, 0, tzinfo=NY)  # a year of weekdays missed
    latest = trig.latest_fire_time(first, much_later)
    assert latest == datetime(2027, 3, 5, 9, 0, tzinfo=NY)  # Friday 5 March 2027
    weekdays = sum((first.date() + timedelta(days=i)).weekday() < 5 for i in range((latest.date() - first.date()).days + 1))
    assert trig.count_between(first, latest) == weekdays == 260
    minutely = SpecTrigger(parse_schedule("every minute run x", now=now))
    f = minutely.get_next_fire_time(None, now)
    assert minutely.latest_fire_time(f, f + timedelta(days=30, seconds=59)) == f + timedelta(days=30)


async def test_controlled_clock_fires_timers_in_order_at_their_own_instants() -> None:
    clock = ControlledClock(datetime(2026, 1, 1, tzinfo=UTC))
    seen: list[tuple[str, datetime]] = []
    clock.call_later(20, lambda: seen.append(("b", clock.now())))
    clock.call_later(10, lambda: seen.append(("a", clock.now())))
    clock.call_later(30, lambda: seen.append(("c", clock.now()))).cancel()
    await clock.advance(25)
    assert seen == [("a", datetime(2026, 1, 1, 0, 0, 10, tzinfo=UTC)), ("b", datetime(2026, 1, 1, 0, 0, 20, tzinfo=UTC))]
    assert clock.now() == datetime(2026, 1, 1, 0, 0, 25, tzinfo=UTC)
    with pytest.raises(ValueError):
        await clock.advance_to(datetime(2025, 1, 1, tzinfo=UTC))


async def test_platforms_not_served_are_left_alone(db_url: str, outlet: RecordingOutlet) -> None:
    e = await open_env(db_url, outlet, FRIDAY_3PM_NY)
    try:
        spec = parse_schedule("every day at 5pm run echo x", now=e.clock.now())
        await e.svc.add(ThreadKey("slack", "C9", "t"), "bob", spec)
        await e.restart()
        assert e.svc.job_ids() == {}  # only "test" has an outlet in this process
        assert [r.key.platform for r in await e.svc.list(everywhere=True)] == ["slack"]
        slack = RecordingOutlet("slack")
        e.app.manager.outlets["slack"] = slack  # an adapter registering its outlet after start
        assert await e.svc.add_platform("slack") == 1
        await assert_consistent(e)
        await e.clock.advance_to(datetime(2026, 3, 7, 17, 0, tzinfo=UTC))  # 5pm UTC (the phrase named no zone)
        await e.app.bot.drain()
        assert "Fired by schedule #1" in await slack.wait_for("Run #1")
    finally:
        await e.close()


# -- (e) several processes on one database: each firing runs once ---------------------------------------


async def test_two_bots_on_one_database_run_each_firing_once(db_url: str) -> None:
    """Two Batons share a database (scaled out behind a load balancer): both wake at 9:00,
    one claims the firing and runs it, the other stands down; a pause made in one stops
    the other's firings too."""
    a_out, b_out = RecordingOutlet(), RecordingOutlet()
    a = await open_env(db_url, a_out, FRIDAY_3PM_NY)
    try:
        await say(a, "schedule every weekday at 9am run echo standup")
        b = await open_env(db_url, b_out, FRIDAY_3PM_NY)  # starts after the schedule exists: loads it
        try:
            assert b.svc.job_ids() == a.svc.job_ids() == {1: datetime(2026, 3, 9, 13, 0, tzinfo=UTC)}
            monday_9am = datetime(2026, 3, 9, 9, 0, tzinfo=NY)
            await asyncio.gather(a.clock.advance_to(monday_9am), b.clock.advance_to(monday_9am))
            await a.app.bot.drain()
            await b.app.bot.drain()
            runs = await a.app.runs.list()
            assert len(runs) == 1 and runs[0].requested_by == "schedule #1"
            assert len(runs_texts(a_out)) + len(runs_texts(b_out)) == 1
            assert (await a.svc.store.get(1)).last_fired_at == datetime(2026, 3, 9, 13, 0, tzinfo=UTC)  # type: ignore[union-attr]

            await say(a, "/pause 1")  # in one process; the other still holds the job in memory
            tuesday_9am = datetime(2026, 3, 10, 9, 0, tzinfo=NY)
            await asyncio.gather(a.clock.advance_to(tuesday_9am), b.clock.advance_to(tuesday_9am))
            await a.app.bot.drain()
            await b.app.bot.drain()
            assert len(await a.app.runs.list()) == 1  # no run on Tuesday: paused
            assert b.svc.job_ids() == {}  # the other process adopted the pause
        finally:
            await b.close()
    finally:
        await a.close()
