"""Chat-ops phrases -> ScheduleSpec: kinds, firings, time zones, DST, errors, explain()."""

from __future__ import annotations

import json
import math
import pickle
from dataclasses import FrozenInstanceError
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.scheduling import ScheduleParseError, ScheduleSpec, explain, parse_schedule

UTC = timezone.utc
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
# Wednesday 15 January 2025, 10:07 UTC
NOW = datetime(2025, 1, 15, 10, 7, tzinfo=UTC)


def fires(spec: ScheduleSpec, n: int = 5, after: datetime = NOW) -> list[str]:
    return [t.isoformat() for t in spec.next_fire_times(after, n)]


# -- the chat-ops phrases --------------------------------------------------------------------

def test_every_weekday_at_9am() -> None:
    spec = parse_schedule("every weekday at 9am run standup-report", now=NOW)
    assert (spec.kind, spec.expression, spec.timezone) == ("cron", "0 9 * * 1-5", "UTC")
    assert spec.workflow == "standup-report"
    assert spec.description == "At 09:00 AM, Monday through Friday"  # cron-descriptor's wording
    assert fires(spec, 3) == ["2025-01-16T09:00:00+00:00", "2025-01-17T09:00:00+00:00",
                              "2025-01-20T09:00:00+00:00"]
    assert spec.source == "every weekday at 9am run standup-report"


def test_every_15_minutes_is_an_interval_on_the_quarter_hours() -> None:
    spec = parse_schedule("every 15 minutes run disk-check", now=NOW)
    assert (spec.kind, spec.expression) == ("interval", 900)
    assert spec.start == "2025-01-15T00:00:00+00:00"  # grid counted from local midnight
    assert fires(spec, 3) == ["2025-01-15T10:15:00+00:00", "2025-01-15T10:30:00+00:00",
                              "2025-01-15T10:45:00+00:00"]
    assert spec.min_interval_seconds() == 900
    assert spec.description == "Every 15 minutes"


def test_monday_and_thursday_at_1730() -> None:
    spec = parse_schedule("every monday and thursday at 17:30 run X", now=NOW)
    assert (spec.kind, spec.expression) == ("cron", "30 17 * * 1,4")
    assert fires(spec, 3) == ["2025-01-16T17:30:00+00:00", "2025-01-20T17:30:00+00:00",
                              "2025-01-23T17:30:00+00:00"]


def test_first_of_every_month_at_8() -> None:
    spec = parse_schedule("on the first of every month at 8:00 run X", now=NOW)
    assert (spec.kind, spec.expression) == ("cron", "0 8 1 * *")
    assert fires(spec, 2) == ["2025-02-01T08:00:00+00:00", "2025-03-01T08:00:00+00:00"]


def test_tomorrow_at_5pm_is_a_one_off_date() -> None:
    spec = parse_schedule("tomorrow at 5pm run X", now=NOW)
    assert (spec.kind, spec.expression) == ("date", "2025-01-16T17:00:00+00:00")
    assert fires(spec) == ["2025-01-16T17:00:00+00:00"]
    assert fires(spec, after=datetime(2025, 1, 16, 17, 0, tzinfo=UTC)) == []
    assert spec.min_interval_seconds() == math.inf


def test_in_2_hours() -> None:
    spec = parse_schedule("in 2 hours run X", now=NOW)
    assert (spec.kind, spec.expression) == ("date", "2025-01-15T12:07:00+00:00")


def test_at_9am_on_weekdays_in_berlin() -> None:
    spec = parse_schedule("at 9am on weekdays in Europe/Berlin run X", now=NOW, user_tz="Asia/Tokyo")
    assert (spec.kind, spec.expression, spec.timezone) == ("cron", "0 9 * * 1-5", "Europe/Berlin")
    assert fires(spec, 2) == ["2025-01-16T09:00:00+01:00", "2025-01-17T09:00:00+01:00"]


def test_cron_that_never_fires_is_refused() -> None:
    with pytest.raises(ScheduleParseError, match="never fires"):
        parse_schedule("cron 0 0 30 2 * run X", now=NOW)


def test_literal_cron() -> None:
    spec = parse_schedule("cron 0 9 * * 1-5 run X", now=NOW)
    assert (spec.kind, spec.expression) == ("cron", "0 9 * * 1-5")
    assert spec.description == "At 09:00 AM, Monday through Friday"
    spec = parse_schedule("cron */5 * * * * in America/New_York run X", now=NOW)
    assert (spec.expression, spec.timezone) == ("*/5 * * * *", "America/New_York")
    assert spec.min_interval_seconds() == 300


def test_leading_schedule_word_and_workflow_text_kept_verbatim() -> None:
    msg = "schedule every day at 9am run disk-check AND system-report THEN echo done"
    spec = parse_schedule(msg, now=NOW)
    assert (spec.kind, spec.expression) == ("cron", "0 9 * * *")
    assert spec.workflow == "disk-check AND system-report THEN echo done"
    # the first stand-alone "run" splits; later ones belong to the workflow
    assert parse_schedule("every hour run run-backup THEN run report", now=NOW).workflow == \
        "run-backup THEN run report"


@pytest.mark.parametrize(
    ("phrase", "kind", "expression"),
    [
        ("every other week on mon and fri at 9", "rrule",
         "DTSTART:20250115T100700\nRRULE:FREQ=WEEKLY;INTERVAL=2;BYDAY=MO,FR;BYHOUR=9;BYMINUTE=0;BYSECOND=0"),
        ("last friday of every month at 4pm", "rrule",
         "DTSTART:20250115T100700\nRRULE:FREQ=MONTHLY;BYDAY=-1FR;BYHOUR=16;BYMINUTE=0;BYSECOND=0"),
        ("every weekday every hour from 9am to 5pm", "cron", "0 9-17 * * 1-5"),
        ("mon-fri at 9.30", "cron", "30 9 * * 1-5"),
        ("every half hour", "interval", 1800),
        ("every friday the 13th at 9am", "rrule",
         "DTSTART:20250115T100700\nRRULE:FREQ=MONTHLY;BYMONTHDAY=13;BYDAY=FR;BYHOUR=9;BYMINUTE=0;BYSECOND=0"),
        ("weekly", "cron", "0 0 * * 0"),
        ("monthly at 7:45am", "cron", "45 7 1 * *"),
        ("every December 25th at 8am", "cron", "0 8 25 12 *"),
        ("every day in june at 2pm", "cron", "0 14 * 6 *"),
    ],
)
def test_more_phrases(phrase: str, kind: str, expression: object) -> None:
    spec = parse_schedule(phrase + " run X", now=NOW)
    assert (spec.kind, spec.expression) == (kind, expression)


def test_rrule_block_with_exceptions_round_trips() -> None:
    spec = parse_schedule("every day at 9am except weekends run X", now=NOW)
    assert spec.kind == "rrule"
    assert "EXRULE:FREQ=DAILY;BYDAY=SA,SU;BYHOUR=9;BYMINUTE=0;BYSECOND=0" in spec.expression
    days = {t.strftime("%a") for t in spec.next_fire_times(NOW, 20)}
    assert days == {"Mon", "Tue", "Wed", "Thu", "Fri"}
    again = ScheduleSpec(**spec.to_dict())
    assert again == spec and fires(again, 7) == fires(spec, 7)


def test_count_and_until() -> None:
    twice = parse_schedule("every day at 9am twice run X", now=NOW)
    assert fires(twice, 5) == ["2025-01-16T09:00:00+00:00", "2025-01-17T09:00:00+00:00"]
    until = parse_schedule("every monday until february 10th run X", now=NOW)
    assert fires(until, 10)[-1] == "2025-02-10T00:00:00+00:00"  # "until <day>" includes that day
    assert len(fires(until, 10)) == 4


# -- time zones ------------------------------------------------------------------------------

def test_zone_precedence_phrase_then_user_then_default() -> None:
    msg = "every day at 9am run X"
    assert parse_schedule(msg, now=NOW).timezone == "UTC"
    assert parse_schedule(msg, now=NOW, default_tz="Asia/Tokyo").timezone == "Asia/Tokyo"
    assert parse_schedule(msg, now=NOW, default_tz="Asia/Tokyo", user_tz="America/New_York").timezone \
        == "America/New_York"
    named = parse_schedule("every day at 9am in europe/berlin run X", now=NOW, user_tz="America/New_York")
    assert named.timezone == "Europe/Berlin"  # case-insensitive, canonical spelling kept
    assert fires(named, 1) == ["2025-01-16T09:00:00+01:00"]


def test_relative_dates_use_the_schedule_zone() -> None:
    # 23:30 UTC on the 15th is already the 16th in Tokyo: "tomorrow" is the 17th there
    late = datetime(2025, 1, 15, 23, 30, tzinfo=UTC)
    spec = parse_schedule("tomorrow at 9am run X", now=late, user_tz="Asia/Tokyo")
    assert spec.expression == "2025-01-17T09:00:00+09:00"


def test_naive_now_is_wall_time_in_the_zone() -> None:
    spec = parse_schedule("in 1 hour run X", now=datetime(2025, 1, 15, 10, 0), user_tz="Europe/Berlin")
    assert spec.expression == "2025-01-15T11:00:00+01:00"


def test_bad_zone_names() -> None:
    with pytest.raises(ScheduleParseError) as info:
        parse_schedule("every day at 9am in Mars/Olympus run X", now=NOW)
    assert (info.value.position, info.value.fragment) == (20, "Mars/Olympus")
    with pytest.raises(ScheduleParseError) as info:
        parse_schedule("every day at 9am in EST run X", now=NOW)
    assert info.value.fragment == "EST" and "IANA" in info.value.message
    with pytest.raises(ValueError, match="unknown time zone"):
        parse_schedule("every day at 9am run X", now=NOW, user_tz="Not/AZone")


# -- daylight saving -------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("zone", "change_days"),
    [("Europe/Berlin", ("2025-03-30", "2025-10-26")), ("America/New_York", ("2025-03-09", "2025-11-02"))],
)
@pytest.mark.parametrize("phrase", ["every day at 9am", "every day at 09:00 except for june 1st",
                                    "cron 0 9 * * *"])
def test_daily_9am_fires_once_a_day_at_9_local_across_dst(zone: str, change_days: tuple[str, str],
                                                           phrase: str) -> None:
    tz = ZoneInfo(zone)
    for day in change_days:
        change = datetime.fromisoformat(day).date()
        start = datetime.combine(change - timedelta(days=3), datetime.min.time(), tz)
        spec = parse_schedule(phrase + " run X", now=start, default_tz=zone)
        got = spec.next_fire_times(start, 7)
        assert [t.date() for t in got] == [change - timedelta(days=3 - i) for i in range(7)]
        assert {(t.hour, t.minute) for t in got} == {(9, 0)}
        assert all(t.tzinfo == tz for t in got)
        offsets = {t.utcoffset() for t in got}
        assert len(offsets) == 2  # the UTC offset really changed in the window
        # elapsed time (same-tzinfo subtraction would give wall-clock time; go through UTC)
        gaps = {(b.astimezone(UTC) - a.astimezone(UTC)).total_seconds() / 3600 for a, b in zip(got, got[1:])}
        assert gaps == ({23.0, 24.0} if change.month == 3 else {24.0, 25.0})


@pytest.mark.parametrize(("zone", "spring"), [("Europe/Berlin", "2025-03-30"), ("America/New_York", "2025-03-09")])
@pytest.mark.parametrize("phrase", ["every day at 2:30", "cron 30 2 * * *", "every other day at 02:30"])
def test_0230_on_spring_forward_day_fires_once_at_0330(zone: str, spring: str, phrase: str) -> None:
    """02:30 does not exist that day: RFC 5545 §3.3.5 reads it with the offset from before
    the gap, i.e. 03:30 local — once, not dropped, not twice."""
    tz = ZoneInfo(zone)
    day = datetime.fromisoformat(spring).date()
    start = datetime.combine(day - timedelta(days=2), datetime.min.time(), tz)
    spec = parse_schedule(phrase + " run X", now=start, default_tz=zone)
    got = spec.next_fire_times(start, 4)
    on_day = [t for t in got if t.date() == day]
    assert [(t.hour, t.minute) for t in on_day] == [(3, 30)]
    assert on_day[0].utcoffset() == (on_day[0] + timedelta(days=1)).astimezone(tz).utcoffset()
    assert all((t.hour, t.minute) == (2, 30) for t in got if t.date() != day)
    # asking just after 03:00 local (02:10 by the old offset) still yields that single run
    just_after = datetime.combine(day, datetime.min.time().replace(hour=3, minute=10), tz)
    assert spec.next_fire_times(just_after, 1) == on_day


def test_repeated_hour_on_fall_back_fires_once_first_occurrence() -> None:
    spec = parse_schedule("every day at 1:30 run X", now=datetime(2025, 11, 1, tzinfo=NEW_YORK),
                          default_tz="America/New_York")
    got = [t for t in spec.next_fire_times(datetime(2025, 11, 1, 12, tzinfo=NEW_YORK), 3)]
    nov2 = [t for t in got if t.day == 2]
    assert len(nov2) == 1 and nov2[0].utcoffset() == timedelta(hours=-4)  # EDT, the first 01:30


def test_interval_keeps_elapsed_time_across_dst() -> None:
    start = datetime(2025, 3, 30, 0, 0, tzinfo=BERLIN)
    spec = parse_schedule("every 30 minutes run X", now=start, default_tz="Europe/Berlin")
    got = spec.next_fire_times(start, 8)
    assert {(b.astimezone(UTC) - a.astimezone(UTC)).total_seconds() for a, b in zip(got, got[1:])} == {1800.0}
    assert [t.strftime("%H:%M") for t in got] == ["00:30", "01:00", "01:30", "03:00", "03:30", "04:00",
                                                  "04:30", "05:00"]


def test_one_off_inside_the_gap_is_shifted_not_refused() -> None:
    spec = parse_schedule("tomorrow at 2:30 run X", now=datetime(2025, 3, 29, 12, tzinfo=BERLIN),
                          default_tz="Europe/Berlin")
    assert spec.expression == "2025-03-30T03:30:00+02:00"


# -- errors ----------------------------------------------------------------------------------

def test_blursday_is_refused_at_its_position() -> None:
    msg = "every blursday at 9 run X"
    with pytest.raises(ScheduleParseError) as info:
        parse_schedule(msg, now=NOW)
    err = info.value
    assert isinstance(err, ValueError)
    assert (err.position, err.fragment) == (6, "blursday") and msg[err.position:].startswith("blursday")
    assert len(err.examples) == 2 and all(" run " in e for e in err.examples)
    text = str(err)
    assert "blursday" in text and "\n" + " " * (2 + 6) + "^" * 8 in text


@pytest.mark.parametrize(
    ("message", "position", "fragment"),
    [
        ("every day at 9am please run X", 17, "please"),
        ("every day at 25pm run X", 13, "25pm"),
        ("every day at 24:00 run X", 13, "24:00"),
        ("every month on 0 run X", 15, "0"),
        ("remind me to move car every weekday would work best for me run X", 0, "remind"),
        ("every weekday at 9am", 20, ""),  # no "run <workflow>"
        ("every weekday at 9am run", 24, ""),
        ("run X", 0, "run"),
        ("twice weekly run X", 0, "twice"),
        ("every wednsday run X", 6, "wednsday"),
        ("cron 61 * * * * run X", 5, "61"),
        ("cron 0 9 * * run X", 12, ""),  # a field is missing at the end
        ("cron 0 9 * * * * run X", 15, "*"),  # the sixth field (6-field crons are Quartz, not Unix)
        ("from september to november run X", 0, "from september to november"),
        ("every monday every tuesday run X", 19, "tuesday"),  # contradicts "monday"
        ("thursday, february 18th 2025 run X", 0, "thursday"),  # it is a Tuesday
        ("march 3rd 2020 run X", 0, "march 3rd 2020"),
    ],
)
def test_errors_point_at_the_part_not_understood(message: str, position: int, fragment: str) -> None:
    with pytest.raises(ScheduleParseError) as info:
        parse_schedule(message, now=NOW)
    assert (info.value.position, info.value.fragment) == (position, fragment), info.value.message
    assert message[position:].startswith(fragment)


@pytest.mark.parametrize("message", ["", "   ", None])
def test_empty_messages(message: object) -> None:
    with pytest.raises(ScheduleParseError) as info:
        parse_schedule(message, now=NOW)  # type: ignore[arg-type]
    assert info.value.position == 0


def test_error_survives_pickling() -> None:
    with pytest.raises(ScheduleParseError) as info:
        parse_schedule("every blursday at 9 run X", now=NOW)
    clone = pickle.loads(pickle.dumps(info.value))
    assert (clone.position, clone.fragment, clone.examples, str(clone)) == \
        (info.value.position, info.value.fragment, info.value.examples, str(info.value))


# -- explain ---------------------------------------------------------------------------------

def test_explain_is_json_and_reports_policy_violations_without_refusing() -> None:
    out = explain("every 5 minutes run disk-check", now=NOW, tz="Europe/Berlin", min_interval_seconds=900)
    json.dumps(out, allow_nan=False)
    assert out["trigger"] == {"kind": "interval", "expression": 300, "start": "2025-01-15T00:00:00+01:00"}
    assert out["timezone"] == "Europe/Berlin" and out["workflow"] == "disk-check"
    assert out["next"] == ["2025-01-15T11:10:00+01:00", "2025-01-15T11:15:00+01:00", "2025-01-15T11:20:00+01:00",
                           "2025-01-15T11:25:00+01:00", "2025-01-15T11:30:00+01:00"]
    [v] = out["policy_violations"]
    assert v["rule"] == "min_interval" and v["actual_seconds"] == 300 and v["limit_seconds"] == 900


def test_explain_without_violation_and_for_one_offs() -> None:
    out = explain("every weekday at 9am run standup-report", now=NOW, tz="UTC", min_interval_seconds=3600)
    assert out["trigger"] == {"kind": "cron", "expression": "0 9 * * 1-5"}
    assert out["description"] == "At 09:00 AM, Monday through Friday"
    assert len(out["next"]) == 5 and out["policy_violations"] == []
    once = explain("tomorrow at 5pm run X", now=NOW, tz="UTC", min_interval_seconds=3600)
    json.dumps(once, allow_nan=False)
    assert once["next"] == ["2025-01-16T17:00:00+00:00"] and once["policy_violations"] == []


def test_explain_raises_like_parse() -> None:
    with pytest.raises(ScheduleParseError):
        explain("every blursday run X", now=NOW, tz="UTC")


# -- min interval and the spec value ---------------------------------------------------------

@pytest.mark.parametrize(
    ("phrase", "seconds"),
    [
        ("every weekday at 9am", 86400),
        ("every day at 8am and 8pm", 12 * 3600),
        ("every day at 23:00 and 01:00", 2 * 3600),  # across midnight
        ("every month on 31", 31 * 86400),  # Jul 31 -> Aug 31, Dec 31 -> Jan 31
        ("every other week on mon and fri", 4 * 86400),
        ("every 90 secs", 90),
        ("cron 0 0 29 2 *", 1461 * 86400),  # leap days, 4 years apart within the sampled 28-year cycle
        ("tomorrow at 5pm", math.inf),
    ],
)
def test_min_interval_seconds(phrase: str, seconds: float) -> None:
    assert parse_schedule(phrase + " run X", now=NOW).min_interval_seconds() == seconds


def test_spec_is_frozen_and_validated() -> None:
    spec = parse_schedule("every day at 9am run X", now=NOW)
    with pytest.raises(FrozenInstanceError):
        spec.kind = "date"  # type: ignore[misc]
    with pytest.raises(ValueError):
        ScheduleSpec("cron", "* * *", "UTC", "", "X", "")
    with pytest.raises(ValueError):
        ScheduleSpec("interval", 60, "UTC", "", "X", "")  # no start
    with pytest.raises(ValueError):
        ScheduleSpec("weekly", "x", "UTC", "", "X", "")


# -- properties ------------------------------------------------------------------------------

ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"]


@settings(max_examples=60, deadline=None)
@given(
    zone=st.sampled_from(ZONES),
    hour=st.integers(0, 23),
    minute=st.integers(0, 59),
    start=st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2030, 12, 31)),
)
def test_daily_time_fires_once_per_local_day(zone: str, hour: int, minute: int, start: datetime) -> None:
    tz = ZoneInfo(zone)
    now = start.replace(tzinfo=tz)
    spec = parse_schedule(f"every day at {hour}:{minute:02d} run X", now=now, default_tz=zone)
    got = spec.next_fire_times(now, 10)
    assert len(got) == 10
    assert all(t > now for t in got)
    assert all(a.astimezone(UTC) < b.astimezone(UTC) for a, b in zip(got, got[1:]))
    days = [t.date() for t in got]
    assert days == [days[0] + timedelta(days=i) for i in range(10)]  # one per local day
    for t in got:  # the wall time, or later by the length of a spring-forward gap
        shift = (t.hour * 60 + t.minute) - (hour * 60 + minute)
        assert shift == 0 or 0 < shift <= 60


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 59), unit=st.sampled_from(["minutes", "hours", "seconds"]), zone=st.sampled_from(ZONES))
def test_every_n_units_is_an_exact_interval(n: int, unit: str, zone: str) -> None:
    spec = parse_schedule(f"every {n} {unit} run X", now=NOW, default_tz=zone)
    step = n * {"seconds": 1, "minutes": 60, "hours": 3600}[unit]
    assert (spec.kind, spec.expression, spec.min_interval_seconds()) == ("interval", step, step)
    got = spec.next_fire_times(NOW, 4)
    assert got[0] > NOW and got[0] - NOW <= timedelta(seconds=step)
    assert {(b.astimezone(UTC) - a.astimezone(UTC)).total_seconds() for a, b in zip(got, got[1:])} == {step}


_WORDS = ("every each other at on in of the and , - from to until starting for up next this tomorrow today "
          "except twice times 3x 2 15 31 0 99 1st 2nd 4th last day week month year 9am 5pm 17:30 2:30 "
          "noon midnight 8/1/2100 1/5 2025-03-30 Europe/Berlin UTC between instance once a an half hour "
          "minutes weekdays weekend monday fridays march may daily weekly monthly hourly").split()


@settings(max_examples=300, deadline=None)
@given(words=st.lists(st.sampled_from(_WORDS), min_size=1, max_size=7), zone=st.sampled_from(ZONES))
def test_any_word_salad_is_parsed_or_refused_with_a_position(words: list[str], zone: str) -> None:
    """No other exception escapes, errors point inside the message, and an accepted
    phrase yields firings in the future."""
    msg = " ".join(words) + " run X"
    try:
        spec = parse_schedule(msg, now=NOW, default_tz=zone)
    except ScheduleParseError as exc:
        assert 0 <= exc.position <= len(msg)
        assert msg[exc.position:].startswith(exc.fragment)
        return
    assert all(t > NOW for t in spec.next_fire_times(NOW, 3))
    assert spec.min_interval_seconds() > 0


@pytest.mark.parametrize(
    ("phrase", "points_at"),
    [("every weekend except weekends run X", "weekends"), ("UTC UTC weekend except weekend run X", "weekend")],
)
def test_a_schedule_whose_exceptions_leave_nothing_is_refused_at_the_exception(phrase: str, points_at: str) -> None:
    """Found by the word-salad property: it used to parse, then walk the calendar to year 9999."""
    with pytest.raises(ScheduleParseError, match="never fires: its exceptions leave no time") as err:
        parse_schedule(phrase, now=NOW, default_tz="UTC")
    assert err.value.fragment == points_at and phrase[err.value.position :].startswith(points_at)
    assert phrase.index(" except ") < err.value.position
