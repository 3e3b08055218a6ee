"""Meaning of a parsed phrase: :class:`~._grammar.Draft` -> trigger (kind, expression).

Decisions made here (each with where it comes from):

* **Kind.** A one-off ("tomorrow at 5pm", "in 2 hours") is ``date``. A fixed
  sub-daily step with nothing else ("every 15 minutes") is ``interval`` (elapsed
  seconds, like APScheduler's ``IntervalTrigger``; the grid is aligned to local
  midnight of the day the phrase was parsed, or to the time given: "every hour at
  12:15am" fires at :15). Anything a 5-field Unix cron can say exactly is ``cron``
  (crontab(5)); the rest (every other week, nth weekday, counts, start/end dates,
  exceptions, ...) is an RFC 5545 ``rrule`` block.
* **Defaults** (the shared conventions of the cronx and HumanCron vectors and of
  crontab(5) ``@weekly``/``@monthly``/``@yearly``): a day without a time is 00:00;
  "every week"/"weekly" is Sunday; "every month"/"monthly" is day 1; "every
  year"/"every january" is day 1 of the month (January if none).
* **Clock.** Times without am/pm are on the 24-hour clock (ISO 8601): "at 2:30" is
  02:30, "at 9" is 09:00.
* **Numeric dates** are US month/day[/year] ("8/1/2100" is August 1st), as in the
  recurrent vectors; ISO 8601 ``2025-03-30`` is also accepted.
* **Bounds.** "until <day>" includes that whole day; "until <month>" and "until next
  month" stop when that month begins; "for N weeks" ends N weeks after the start.
* **Semantics of RRULE parts** follow RFC 5545 §3.3.10 (e.g. ``FREQ=MONTHLY;BYDAY=FR``
  is every Friday of the month, which is what "monthly on fri" yields).
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from dateutil import rrule as R
from dateutil.relativedelta import relativedelta

from . import _vocab as V
from ._cron import _cron, _time_groups
from ._grammar import DateRef, Draft, Exclusion, Fact
from ._tz import localize
from .errors import ScheduleParseError

__all__ = ["Built", "RulePlan", "build"]

_FREQ = {"second": R.SECONDLY, "minute": R.MINUTELY, "hour": R.HOURLY, "day": R.DAILY,
         "week": R.WEEKLY, "month": R.MONTHLY, "year": R.YEARLY}
_WD = (R.MO, R.TU, R.WE, R.TH, R.FR, R.SA, R.SU)
MAX_TIMES_PER_DAY = 1440
MAX_EXDATES = 2000


@dataclass(frozen=True)
class RulePlan:
    """What a repeating rule says, in words the describer can render.

    ``unit``/``interval``: the repeat (e.g. ``("week", 2)``); ``weekdays``: ``((nth|None,
    wd), ...)`` with Monday = 0; ``monthdays`` (negative = from the end), ``months``
    (1-12), ``yeardays``, ``weeknos``, ``setpos``; ``times``: ``((h, m, s), ...)`` local;
    ``start``/``until``: naive local datetimes or ``None``; ``count``; ``except_text``:
    already-rendered exception phrases.
    """

    unit: str
    interval: int
    weekdays: tuple = ()
    monthdays: tuple = ()
    months: tuple = ()
    yeardays: tuple = ()
    weeknos: tuple = ()
    setpos: tuple = ()
    times: tuple = ()
    start: datetime | None = None
    until: datetime | None = None
    count: int | None = None
    except_text: tuple = ()
    anchor: time | None = None


@dataclass(frozen=True)
class Built:
    """Result of :func:`build`: ``kind``, ``expression`` (str, or int seconds for
    ``interval``), ``start`` (ISO anchor of an interval grid, else ``None``) and the
    ``plan`` (for descriptions; ``None`` for ``date``) or ``when`` (aware datetime)."""

    kind: str
    expression: Any
    start: str | None = None
    plan: RulePlan | None = None
    when: datetime | None = None


@dataclass
class _Ctx:
    draft: Draft
    tz: ZoneInfo
    now: datetime  # naive local wall time, microsecond 0
    src: str

    def err(self, key: str, message: str, examples: tuple[str, str] | None = None) -> ScheduleParseError:
        f = self.draft.facts[key]
        kw = {"examples": examples} if examples else {}
        return ScheduleParseError(message, position=f.pos, fragment=self.src[f.pos:f.end], text=self.src, **kw)

    def err_at(self, pos: int, end: int, message: str) -> ScheduleParseError:
        return ScheduleParseError(message, position=pos, fragment=self.src[pos:end], text=self.src)


def build(draft: Draft, *, tz: ZoneInfo, now_local: datetime, source: str) -> Built:
    """Turn a draft into a trigger. ``now_local``: naive wall time in ``tz``.

    Raises :class:`ScheduleParseError` (pointing at the fact concerned) when the facts
    contradict each other, name an impossible or past date, or say nothing schedulable.
    """
    ctx = _Ctx(draft, tz, now_local.replace(microsecond=0), source)
    _resolve_day_ordinals(ctx)
    d = draft
    if d.has("period", "sub", "recurring") or (d.has("weekdays") and d.has("setpos")):
        return _build_recurring(ctx)
    for key in ("count", "until", "dtstart", "exclusions"):
        if d.has(key):
            if not d.has("weekdays", "months", "monthdays", "yeardays", "times", "date_rel", "relative"):
                raise ScheduleParseError(
                    "this only bounds a schedule; say what repeats, e.g. 'every day' or 'every monday'",
                    position=d.start, fragment=source[d.start:d.end].strip(), text=source)
            raise ctx.err(key, "a one-off date cannot have an end, a count, a start or exceptions; "
                               "add a repeat such as 'every week'")
    for key in ("setpos", "weeknos", "time_range"):
        if d.has(key):
            raise ctx.err(key, "this needs a repeat such as 'every year' or 'every hour'")
    if not d.has("weekdays", "months", "monthdays", "yeardays", "times", "date_rel", "relative"):
        raise ScheduleParseError("no schedule found; say when, e.g. 'every day at 9am' or 'tomorrow at 5pm'",
                                 position=d.start, fragment=source[d.start:d.end].strip(), text=source)
    return _build_once(ctx)


# -- shared helpers ------------------------------------------------------------------------

def _resolve_day_ordinals(ctx: _Ctx) -> None:
    d = ctx.draft
    if not d.has("day_ordinals"):
        return
    f = d.facts.pop("day_ordinals")
    vals, said_day = f.value
    period = d.get("period")
    unit = period[0] if period else None
    if unit == "week" and (period[2] or said_day):  # "every week on the 4th day"; not "every friday the 13th"
        key, value = "weekdays", []
        for v in vals:
            if not 1 <= v <= 7:
                raise ctx.err_at(f.pos, f.end, f"a week has 7 days; there is no day {v} (day 1 is Sunday)")
            value.append((None, (v + 5) % 7))
        value = tuple(value)
    elif (unit == "year" and not d.has("months")) or (unit is None and said_day and not d.has("months")):
        key, value = "yeardays", vals  # "every year on the 31st", "35th day"
        for v in vals:
            if v == 0 or abs(v) > 366:
                raise ctx.err_at(f.pos, f.end, f"there is no day {v} of a year (1 to 366)")
    else:
        key, value = "monthdays", vals
        for v in vals:
            if v == 0 or abs(v) > 31:
                raise ctx.err_at(f.pos, f.end, f"there is no day {v} of a month (1 to 31)")
    if key in d.facts:
        raise ctx.err_at(f.pos, f.end, f"the {key} were already given as "
                                       f"{ctx.src[d.facts[key].pos:d.facts[key].end]!r}")
    d.facts[key] = Fact(key, value, f.pos, f.end)


def _nth_weekday(y: int, m: int, nth: int, wd: int) -> date | None:
    days = [date(y, m, d) for d in range(1, calendar.monthrange(y, m)[1] + 1) if date(y, m, d).weekday() == wd]
    idx = nth - 1 if nth > 0 else nth
    try:
        return days[idx]
    except IndexError:
        return None


def resolve_ref(ctx: _Ctx, ref: DateRef, base: date, *, after_month: bool = False) -> tuple[date, str]:
    """Resolve a :class:`DateRef` to a date. ``base``: the day relative references count
    from (the start date if one was given, else today). Returns ``(day, granularity)``
    with granularity ``"day"`` or ``"month"``."""
    today = ctx.now.date()

    def bad(msg: str) -> ScheduleParseError:
        return ctx.err_at(ref.pos, ref.end, msg)

    if ref.kind == "days":
        return today + timedelta(days=ref.n), "day"
    if ref.kind == "weekday":
        delta = (ref.wd - today.weekday()) % 7
        if ref.mode == "next" and delta == 0:
            delta = 7
        return today + timedelta(days=delta), "day"
    if ref.kind == "next_unit":
        if ref.unit == "week":
            return today + timedelta(days=7 - today.weekday()), "day"
        if ref.unit == "month":
            return (date(today.year, today.month, 1) + relativedelta(months=1)), "month"
        return date(today.year + 1, 1, 1), "month"
    if ref.kind == "md":
        if ref.year is not None:
            try:
                day = date(ref.year, ref.month, ref.day)
            except ValueError:
                raise bad(f"{ref.year} has no {V.MONTH_NAMES[ref.month - 1]} {ref.day}") from None
        else:
            day = None
            for y in range(base.year, base.year + 9):
                try:
                    cand = date(y, ref.month, ref.day)
                except ValueError:
                    continue
                if cand >= base:
                    day = cand
                    break
            if day is None:
                raise bad("no such date in the coming years")
        if ref.wd is not None and day.weekday() != ref.wd:
            raise bad(f"{day:%B} {day.day}, {day.year} is a {V.WEEKDAY_NAMES[day.weekday()]}, "
                      f"not a {V.WEEKDAY_NAMES[ref.wd]}")
        return day, "day"
    if ref.kind == "month":
        if ref.year is not None:
            return date(ref.year, ref.month, 1), "month"
        y = base.year
        if (ref.month, 0) < (base.month, 1 if after_month else 0) or (after_month and ref.month == base.month):
            y += 1
        return date(y, ref.month, 1), "month"
    if ref.kind == "nthwd":
        years = [ref.year] if ref.year is not None else list(range(base.year, base.year + 3))
        for y in years:
            cand = _nth_weekday(y, ref.month, ref.nth, ref.wd)
            if cand is not None and (ref.year is not None or cand >= base):
                return cand, "day"
        raise bad("that day does not exist")
    raise AssertionError(ref.kind)


def _at(day: date, t: tuple[int, int, int] | None) -> datetime:
    return datetime.combine(day, time(*(t or (0, 0, 0))))


def _single(ctx: _Ctx, key: str) -> Any:
    vals = ctx.draft.get(key)
    if vals is None:
        return None
    if len(vals) != 1:
        raise ctx.err(key, "a one-off date must name a single day and time; "
                           "add 'every' for a repeating schedule",
                      examples=("tomorrow at 5pm run X", "every monday and thursday at 17:30 run X"))
    return vals[0]


# -- one-off -------------------------------------------------------------------------------

def _build_once(ctx: _Ctx) -> Built:
    d, now = ctx.draft, ctx.now
    t = _single(ctx, "times")
    if d.has("relative"):
        u, n = d.get("relative")
        for key in ("date_rel", "weekdays", "months", "monthdays", "yeardays", "year"):
            if d.has(key):
                raise ctx.err(key, "a delay ('in 2 hours') cannot be combined with a date")
        if u in V.SUBDAILY:
            if t is not None:
                raise ctx.err("times", "'in N hours/minutes' already says the time")
            aware = localize(now, ctx.tz) + timedelta(seconds=n * V.UNIT_SECONDS[u])
            aware = aware.astimezone(ctx.tz)
            return _once(ctx, aware)
        day = now.date() + relativedelta(**{u + "s": n})
        local = _at(day, t) if t is not None else datetime.combine(day, now.time())
        return _once(ctx, localize(local, ctx.tz))
    if d.has("date_rel"):
        for key in ("weekdays", "months", "monthdays", "yeardays", "year"):
            if d.has(key):
                raise ctx.err(key, "the date was already given")
        day, gran = resolve_ref(ctx, d.get("date_rel"), now.date())
        if gran == "month":
            raise ctx.err("date_rel", "name a day, not a whole period")
        local = _at(day, t)
        if local <= now:
            raise ctx.err("times" if t is not None else "date_rel", "that time has already passed")
        return _once(ctx, localize(local, ctx.tz))

    wd = _single(ctx, "weekdays")
    month = _single(ctx, "months")
    mday = _single(ctx, "monthdays")
    yday = _single(ctx, "yeardays")
    year = d.get("year")
    hms = t or (0, 0, 0)
    if yday is not None and (month is not None or mday is not None or wd is not None):
        raise ctx.err("yeardays", "a day of the year cannot be combined with a month or weekday")
    if month is not None and mday is None and (wd is None or wd[0] is None):
        raise ctx.err("months", "name a day of the month, e.g. 'march 3rd'")
    if month is not None and mday is not None:
        if year is not None:
            try:
                local = _at(date(year, month, mday), hms)
            except ValueError:
                raise ctx.err("monthdays", f"{year} has no {V.MONTH_NAMES[month - 1]} {mday}") from None
        else:
            local = None
            for y in range(now.year, now.year + 9):
                try:
                    cand = _at(date(y, month, mday), hms)
                except ValueError:
                    continue
                if cand > now:
                    local = cand
                    break
            assert local is not None
        if wd is not None and (wd[0] is not None or local.weekday() != wd[1]):
            raise ctx.err("weekdays", f"{local:%B} {local.day}, {local.year} is a "
                                      f"{V.WEEKDAY_NAMES[local.weekday()]}")
        if local <= now:
            raise ctx.err("year" if year is not None else "monthdays", "that date has already passed")
        return _once(ctx, localize(local, ctx.tz))

    # search with a rule: yearday, nth weekday of a month, day of month, weekday, time only
    kw: dict[str, Any] = {"byhour": hms[0], "byminute": hms[1], "bysecond": hms[2]}
    if yday is not None:
        freq = R.YEARLY
        kw["byyearday"] = yday
    elif month is not None:
        freq = R.YEARLY
        kw["bymonth"] = month
        kw["byweekday"] = _WD[wd[1]](wd[0])
    elif mday is not None:
        freq = R.MONTHLY
        kw["bymonthday"] = mday
        if wd is not None:
            kw["byweekday"] = _WD[wd[1]](wd[0]) if wd[0] else _WD[wd[1]]
    elif wd is not None:
        freq = R.MONTHLY if wd[0] is not None else R.WEEKLY
        kw["byweekday"] = _WD[wd[1]](wd[0]) if wd[0] is not None else _WD[wd[1]]
    else:
        freq = R.DAILY
    start = now
    until = None
    if year is not None:
        start = max(now, datetime(year, 1, 1))
        until = datetime(year, 12, 31, 23, 59, 59)
    found = R.rrule(freq, dtstart=start, until=until, **kw).after(now, inc=False)
    if found is None:
        key = "year" if year is not None else "weekdays" if wd is not None else "times"
        raise ctx.err(key, "that date has already passed or does not exist")
    return _once(ctx, localize(found, ctx.tz))


def _once(ctx: _Ctx, aware: datetime) -> Built:
    return Built("date", aware.isoformat(), when=aware)


# -- repeating -----------------------------------------------------------------------------

def _build_recurring(ctx: _Ctx) -> Built:
    d, now = ctx.draft, ctx.now
    for key in ("relative", "date_rel"):
        if d.has(key):
            raise ctx.err(key, "a repeating schedule cannot also be a single date; "
                               "use 'starting ...' for when it begins")
    if d.has("year"):
        raise ctx.err("year", "a repeating schedule cannot be tied to one year; use 'from ... until ...'")
    if d.has("time_range") and not d.has("sub"):
        raise ctx.err("time_range", "a time range needs a step, e.g. 'every 30 minutes from 9am to 5pm'")

    base = now.date()
    dtstart = None
    if d.has("dtstart"):
        ref = d.get("dtstart")
        day, _ = resolve_ref(ctx, ref, base)
        dtstart = _at(day, ref.time)
        base = day
    until = None
    if d.has("until"):
        u = d.get("until")
        if isinstance(u, tuple):
            _, unit, n = u
            until = (dtstart or now) + relativedelta(**{unit + "s": n})
        else:
            day, gran = resolve_ref(ctx, u, base, after_month=True)
            if gran == "month":
                until = _at(day, None)
            else:
                until = _at(day, u.time) if u.time else datetime.combine(day, time(23, 59, 59))
        if until < (dtstart or now):
            raise ctx.err("until", "the end is before the start")
    count = d.get("count")

    sub = d.get("sub")
    coarse = d.has("period", "weekdays", "months", "monthdays", "yeardays", "weeknos", "setpos", "time_range")
    bounded = count is not None or until is not None or dtstart is not None or bool(d.exclusions)
    if sub is not None and not coarse:
        return _build_subdaily(ctx, sub, dtstart, until, count, bounded)

    times = d.get("times") or ()
    period = d.get("period")
    if sub is not None and period is not None and period[2] and (period[0] != "day" or period[1] != 1):
        raise ctx.err("sub", f"a step of {sub[1]} {sub[0]}(s) contradicts the repeat "
                             f"{ctx.src[d.facts['period'].pos:d.facts['period'].end]!r}; "
                             "name days instead, e.g. 'every hour on weekdays'")
    plan_unit, interval = _period(ctx)
    freq_unit = plan_unit
    if sub is not None:
        su, sn = sub
        if times:
            raise ctx.err("times", "say either the times or the step ('every hour'), not both")
        fits = (su == "minute" and 60 % sn == 0) or (su == "hour" and 24 % sn == 0)
        if d.has("time_range") or fits:
            a, b = d.get("time_range") or ((0, 0, 0), (23, 59, 59))
            times = _expand(ctx, a, b, sn * V.UNIT_SECONDS[su])
        else:
            if interval != 1:
                raise ctx.err("sub", "a step that does not divide the hour or day cannot be combined with "
                                     "'every other ...'; use e.g. 'every 2 hours on weekdays'")
            freq_unit, interval = su, sn  # e.g. FREQ=HOURLY;INTERVAL=5;BYDAY=MO,...: the days filter the grid
    if not times and freq_unit not in V.SUBDAILY:
        times = ((0, 0, 0),)

    weekdays = d.get("weekdays") or ()
    monthdays = d.get("monthdays") or ()
    months = d.get("months") or ()
    yeardays = d.get("yeardays") or ()
    weeknos = d.get("weeknos") or ()
    setpos = d.get("setpos") or ()
    if plan_unit == "week" and not weekdays:
        weekdays = ((None, 6),)  # crontab(5) @weekly: Sunday
    if plan_unit == "month" and not (monthdays or weekdays):
        monthdays = (1,)  # @monthly
    if plan_unit == "year" and not (monthdays or weekdays or yeardays or weeknos):
        monthdays = (1,)
        months = months or (1,)  # @yearly
    if any(n is not None for n, _ in weekdays) and plan_unit not in ("month", "year"):
        raise ctx.err("weekdays", "'first/last <day>' needs 'of the month' or a month name")

    plan = RulePlan(
        unit=freq_unit, interval=interval, weekdays=weekdays, monthdays=monthdays, months=months,
        yeardays=yeardays, weeknos=weeknos, setpos=setpos, times=tuple(sorted(times)),
        start=dtstart, until=until, count=count,
    )
    if count is not None and len(_time_groups(plan.times)) > 1:
        raise ctx.err("count", "a number of times cannot be combined with these times of day "
                               "(they do not form one hours x minutes grid); use 'until ...'")
    start = dtstart or now
    if freq_unit in V.SUBDAILY:
        start = _grid_start(dtstart or now, sub[1] * V.UNIT_SECONDS[sub[0]], None, base if dtstart else now.date())
    rules = _rrules(plan, start)
    cron = None if (bounded or freq_unit in V.SUBDAILY) else _cron(plan)
    if cron is not None:
        return Built("cron", cron, plan=plan)
    ex_lines, ex_text = _exclusions(ctx, plan, rules, start, base)
    plan = replace(plan, except_text=tuple(ex_text))
    return Built("rrule", _serialize(start, rules, ex_lines), plan=plan)


def _period(ctx: _Ctx) -> tuple[str, int]:
    d = ctx.draft
    p = d.get("period")
    weekdays = d.get("weekdays") or ()
    nth = any(n is not None for n, _ in weekdays)
    if p is not None:
        unit, n, explicit = p
    else:
        n, explicit = 1, False
        if nth or d.has("monthdays", "setpos"):
            unit = "year" if d.has("months") else "month"
        elif weekdays:
            unit = "week"
        elif d.has("months", "yeardays", "weeknos"):
            unit = "year"
        else:
            unit = "day"
    if d.has("weeknos") and unit != "year":
        if explicit:
            raise ctx.err("weeknos", "week numbers need a yearly repeat")
        unit = "year"
    if (nth or d.has("monthdays")) and unit == "week" and not explicit and n == 1:
        unit = "year" if d.has("months") else "month"  # "every friday the 13th", "every 2nd tuesday in may"
    if d.has("yeardays") and unit != "year":
        raise ctx.err("yeardays", "a day of the year needs a yearly repeat")
    return unit, n


def _expand(ctx: _Ctx, a: tuple[int, int, int], b: tuple[int, int, int], step: int) -> tuple:
    sa = a[0] * 3600 + a[1] * 60 + a[2]
    sb = b[0] * 3600 + b[1] * 60 + b[2]
    if sb < sa:
        raise ctx.err("time_range", "the range ends before it starts (ranges past midnight are not supported)")
    out = []
    x = sa
    while x <= sb:
        out.append((x // 3600, x // 60 % 60, x % 60))
        x += step
        if len(out) > MAX_TIMES_PER_DAY:
            raise ctx.err("sub", f"more than {MAX_TIMES_PER_DAY} runs a day; use a longer step")
    return tuple(out)


def _grid_start(ref: datetime, step: int, anchor: tuple[int, int, int] | None, day: date) -> datetime:
    """First point of the grid ``anchor-of-day + k*step`` (k may be negative) at or after ``ref``."""
    origin = _at(day, anchor)
    k = -((origin - ref) // timedelta(seconds=step))  # ceil((ref - origin) / step)
    return origin + timedelta(seconds=k * step)


def _build_subdaily(ctx: _Ctx, sub: tuple[str, int], dtstart: datetime | None, until: datetime | None,
                    count: int | None, bounded: bool) -> Built:
    unit, n = sub
    step = n * V.UNIT_SECONDS[unit]
    times = ctx.draft.get("times") or ()
    if len(times) > 1:
        raise ctx.err("times", "a step such as 'every hour' takes one starting time")
    anchor = times[0] if times else None
    now = ctx.now
    if not bounded:
        origin = localize(_at(now.date(), anchor), ctx.tz)
        plan = RulePlan(unit=unit, interval=n, anchor=time(*anchor) if anchor else None)
        return Built("interval", step, start=origin.isoformat(), plan=plan)
    ref = dtstart or now
    start = _grid_start(ref, step, anchor, ref.date())
    plan = RulePlan(unit=unit, interval=n, start=dtstart, until=until, count=count,
                    anchor=time(*anchor) if anchor else None)
    rules = _rrules(plan, start)
    ex_lines, ex_text = _exclusions(ctx, plan, rules, start, ref.date())
    plan = replace(plan, except_text=tuple(ex_text))
    return Built("rrule", _serialize(start, rules, ex_lines), plan=plan)


def _rrules(plan: RulePlan, start: datetime) -> list[tuple[R.rrule, dict[str, Any]]]:
    """dateutil rules for ``plan`` (one per time group), each with the kwargs that built it."""
    kw: dict[str, Any] = {"freq": _FREQ[plan.unit], "dtstart": start, "interval": plan.interval}
    if plan.count is not None:
        kw["count"] = plan.count
    if plan.until is not None:
        kw["until"] = plan.until
    if plan.weekdays:
        kw["byweekday"] = [(_WD[wd](n) if n is not None else _WD[wd]) for n, wd in plan.weekdays]
    for name, key in (("monthdays", "bymonthday"), ("months", "bymonth"), ("yeardays", "byyearday"),
                      ("weeknos", "byweekno"), ("setpos", "bysetpos")):
        val = getattr(plan, name)
        if val:
            kw[key] = list(val)
    if plan.unit in V.SUBDAILY:
        return [(R.rrule(**kw), kw)]
    out = []
    for h, m, s in _time_groups(plan.times):
        k = {**kw, "byhour": list(h), "byminute": list(m), "bysecond": list(s)}
        out.append((R.rrule(**k), k))
    return out


def _rrule_line(r: R.rrule) -> str:
    for line in str(r).splitlines():
        if line.startswith("RRULE:"):
            return line[len("RRULE:"):]
    raise AssertionError(str(r))


def _fmt(dt: datetime) -> str:
    return dt.strftime("%Y%m%dT%H%M%S")


def _serialize(start: datetime, rules: list[tuple[R.rrule, dict[str, Any]]], ex_lines: list[str]) -> str:
    lines = [f"DTSTART:{_fmt(start)}"] + [f"RRULE:{_rrule_line(r)}" for r, _ in rules] + ex_lines
    return "\n".join(lines)


def _exclusions(ctx: _Ctx, plan: RulePlan, rules: list[tuple[R.rrule, dict[str, Any]]], start: datetime, base: date
                ) -> tuple[list[str], list[str]]:
    lines: list[str] = []
    texts: list[str] = []
    exdates: list[datetime] = []
    main = R.rruleset()
    for r, _ in rules:
        main.rrule(r)
    for ex in ctx.draft.exclusions:
        text = ctx.src[ex.pos:(ex.ref.end if ex.ref else ex.rule.end if ex.rule else ex.pos)].strip()
        if ex.kind == "date":
            ref = ex.ref
            day, gran = resolve_ref(ctx, ref, base)
            if ref.time is not None:
                exdates.append(_at(day, ref.time))
            else:
                lo = _at(day, None)
                hi = lo + (relativedelta(months=1) if gran == "month" else timedelta(days=1))
                found = main.between(lo, hi - timedelta(seconds=1), inc=True)
                if len(found) + len(exdates) > MAX_EXDATES:
                    raise ctx.err_at(ex.pos, ref.end, "this exception removes too many runs to list; "
                                                      "use a coarser schedule")
                exdates.extend(found)
            texts.append(_describe_ref(ref, day, gran))
        elif ex.kind == "weekdays":
            if plan.setpos:
                raise ctx.err_at(ex.pos, ex.pos + 1, "exceptions by weekday cannot be combined with instances")
            drop = set(ex.weekdays)
            for _, kw0 in rules:
                kw = dict(kw0)
                kw.pop("count", None)
                if kw.get("byweekday"):
                    keep = [w for w in kw["byweekday"] if (w.weekday if hasattr(w, "weekday") else w) in drop]
                    if not keep:
                        continue
                    kw["byweekday"] = keep
                else:
                    kw["byweekday"] = [_WD[w] for w in sorted(drop)]
                lines.append("EXRULE:" + _rrule_line(R.rrule(**kw)))
            texts.append(" and ".join(V.WEEKDAY_NAMES[w] + "s" for w in ex.weekdays))
        else:
            lines.extend(_exclusion_rule(ctx, ex, plan, start))
            texts.append(text)
    if exdates:
        lines.append("EXDATE:" + ",".join(_fmt(x) for x in sorted(set(exdates))))
    return lines, texts


def _exclusion_rule(ctx: _Ctx, ex: Exclusion, plan: RulePlan, start: datetime) -> list[str]:
    sub = ex.rule
    assert sub is not None
    sctx = _Ctx(sub, ctx.tz, ctx.now, ctx.src)
    _resolve_day_ordinals(sctx)
    if sub.has("sub"):
        raise ctx.err_at(ex.pos, sub.end, "an exception cannot repeat every few minutes or hours")
    unit, n = _period(sctx)
    times = sub.get("times")
    if not times:
        if plan.unit in V.SUBDAILY:
            raise ctx.err_at(ex.pos, sub.end, "say the time of the runs to skip, e.g. 'except daily at 12am'")
        times = plan.times
    weekdays = sub.get("weekdays") or ()
    monthdays = sub.get("monthdays") or ()
    months = sub.get("months") or ()
    if unit == "week" and not weekdays:
        weekdays = ((None, 6),)
    if unit == "month" and not (monthdays or weekdays):
        monthdays = (1,)
    if unit == "year" and not (monthdays or weekdays or sub.has("yeardays")):
        monthdays, months = (1,), months or (1,)
    splan = RulePlan(unit=unit, interval=n, weekdays=weekdays, monthdays=monthdays, months=months,
                     yeardays=sub.get("yeardays") or (), times=tuple(sorted(times)))
    return ["EXRULE:" + _rrule_line(r) for r, _ in _rrules(splan, start)]


def _describe_ref(ref: DateRef, day: date, gran: str) -> str:
    if gran == "month":
        return f"{day:%B %Y}"
    s = f"{day:%a %b} {day.day}, {day.year}"
    if ref.time is not None:
        s += f" at {ref.time[0]:02d}:{ref.time[1]:02d}"
    return s
