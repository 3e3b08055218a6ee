"""The schedule trigger value: :class:`ScheduleSpec`, and when it fires.

A spec is self-contained: ``kind``, ``expression``, ``timezone`` and ``start`` are
enough to compute firings, so the job layer can persist those fields and rebuild it.

Kinds and expressions:

``cron``      5-field crontab(5) string, Sunday = 0, day-of-month/day-of-week ORed as in
              Vixie cron; evaluated with ``croniter`` on local wall time. NB: APScheduler
              3.x ``CronTrigger.from_crontab`` numbers days of the week from Monday = 0,
              so ``1-5`` there means Tuesday-Saturday — convert before handing it over.
``rrule``     RFC 5545 lines: ``DTSTART:<local>``, one or more ``RRULE:``, optional
              ``EXRULE:`` / ``EXDATE:``; times are floating local wall times of
              ``timezone``; evaluated with ``dateutil.rrule.rrulestr``.
``interval``  int seconds; fires at ``start + k * expression`` (k >= 0), elapsed time,
              like APScheduler's ``IntervalTrigger(seconds=..., start_date=start)``.
``date``      ISO 8601 datetime with offset; fires once.

Daylight saving: wall-clock kinds (cron, rrule) are computed on local wall time and
turned into instants by RFC 5545 §3.3.5 (see :mod:`._tz`): a daily 09:00 job fires
at 09:00 local on both change days; a repeated local time fires once (first
occurrence); a skipped local time (02:30 on a spring-forward day) fires once, at the
same offset from before the gap (03:30 local).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from functools import lru_cache
from typing import Iterator, Literal

from croniter import croniter
from croniter import CroniterBadDateError
from dateutil.rrule import rrulestr

from ._tz import get_zone, localize

__all__ = ["ScheduleSpec", "Kind"]

Kind = Literal["cron", "rrule", "interval", "date"]
_KINDS = ("cron", "rrule", "interval", "date")
_UTC = timezone.utc
_SAMPLE_LIMIT = 20_000
_SAMPLE_YEARS = 28  # the Gregorian weekday/leap-year pattern repeats every 28 years (1901-2099)


@dataclass(frozen=True)
class ScheduleSpec:
    """A parsed schedule trigger (frozen; safe to persist field by field).

    Attributes:
        kind: ``"cron" | "rrule" | "interval" | "date"`` (see module doc).
        expression: cron string, RFC 5545 RRULE block, interval in whole seconds (int),
            or ISO 8601 datetime with UTC offset.
        timezone: IANA zone name the schedule runs in (wall times are in this zone).
        description: plain English (cron-descriptor's wording for ``cron``).
        workflow: the workflow text after "run" (e.g. ``"disk-check AND system-report"``).
        source: the chat message as received.
        start: for ``interval``, the ISO 8601 instant the grid counts from; else ``None``.

    Raises ``ValueError`` on construction if the fields are inconsistent.
    """

    kind: Kind
    expression: str | int
    timezone: str
    description: str
    workflow: str
    source: str
    start: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"kind must be one of {_KINDS}, not {self.kind!r}")
        get_zone(self.timezone)
        if self.kind == "interval":
            if not isinstance(self.expression, int) or self.expression <= 0:
                raise ValueError("an interval expression is a positive number of seconds (int)")
            if self.start is None or datetime.fromisoformat(self.start).tzinfo is None:
                raise ValueError("an interval needs an aware ISO 8601 'start'")
        elif not isinstance(self.expression, str):
            raise ValueError(f"a {self.kind} expression is a string")
        elif self.kind == "date":
            if datetime.fromisoformat(self.expression).tzinfo is None:
                raise ValueError("a date expression needs a UTC offset")
        elif self.kind == "cron":
            if len(self.expression.split()) != 5 or not croniter.is_valid(self.expression):
                raise ValueError(f"not a 5-field cron expression: {self.expression!r}")
        else:
            _ruleset(self.expression)

    # -- firing times ---------------------------------------------------------------------
    def next_fire_times(self, after: datetime, n: int) -> list[datetime]:
        """The next ``n`` firings strictly after ``after``, ascending, as aware datetimes
        in the schedule's zone (fewer if the schedule ends).

        ``after``: an aware datetime, or a naive one meaning wall time in ``timezone``.
        """
        if n <= 0:
            return []
        tz = get_zone(self.timezone)
        after_utc = (localize(after, tz) if after.tzinfo is None else after).astimezone(_UTC)
        if self.kind == "date":
            when = datetime.fromisoformat(self.expression)
            return [when.astimezone(tz)] if when.astimezone(_UTC) > after_utc else []
        if self.kind == "interval":
            step = timedelta(seconds=int(self.expression))
            origin = datetime.fromisoformat(self.start).astimezone(_UTC)
            k = max(0, (after_utc - origin) // step + 1)
            return [(origin + (k + i) * step).astimezone(tz) for i in range(n)]
        wall = after_utc.astimezone(tz).replace(tzinfo=None)
        margin = timedelta(0)
        if (after_utc - timedelta(hours=26)).astimezone(tz).utcoffset() != after_utc.astimezone(tz).utcoffset():
            margin = timedelta(hours=26)  # a clock change just before: gap times may map after `after`
        begin = wall - margin - timedelta(seconds=1)
        if self.kind == "cron":
            naive: Iterator[datetime] = _cron_iter(self.expression, begin)
        else:
            naive = _rrule_iter(self.expression, begin)
        return _walk(naive, tz, after_utc, n)

    def min_interval_seconds(self) -> float:
        """Smallest gap between two consecutive firings, in seconds (``math.inf`` if it
        fires at most once).

        For ``cron``/``rrule`` the gap is measured on the local wall clock (nominal: a
        daily job is 86400 s even across a 23-hour DST day), which is what a policy
        such as "no more than once an hour" means. Exact for ``interval`` and ``cron``
        (by field analysis); for ``rrule``, the minimum over the first 20,000 firings or
        28 years, whichever ends first.
        """
        if self.kind == "date":
            return math.inf
        if self.kind == "interval":
            return float(self.expression)
        if self.kind == "cron":
            return _cron_min_gap(self.expression)
        return _rrule_min_gap(self.expression)

    def to_dict(self) -> dict[str, object]:
        """JSON-able fields (what the job layer persists)."""
        return {
            "kind": self.kind, "expression": self.expression, "timezone": self.timezone,
            "description": self.description, "workflow": self.workflow, "source": self.source,
            "start": self.start,
        }


@lru_cache(maxsize=256)
def _ruleset(expression: str):
    try:
        return rrulestr(expression, forceset=True)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not an RFC 5545 rule block: {exc}") from None


NEVER_FIRES_HORIZON = timedelta(days=366 * 28)
"""A rule with no firing within 28 years (one full cycle of the Gregorian calendar's
weekday/date alignment) never fires."""


def rrule_fires_between(expression: str, begin: datetime, end: datetime) -> bool:
    """Whether the rule block fires at a local wall time in ``[begin, end]`` (naive).

    The walk is bounded: every open-ended ``RRULE`` line gets ``UNTIL=end`` (RFC 5545
    §3.3.10) before the block is expanded, so a rule whose exceptions leave nothing
    ("weekends except weekends") answers after ``end`` instead of walking the calendar
    to year 9999."""
    stamp = end.strftime("%Y%m%dT%H%M%S")
    lines = []
    for line in expression.splitlines():
        if line.upper().startswith("RRULE:") and "COUNT=" not in line.upper() and "UNTIL=" not in line.upper():
            line = f"{line};UNTIL={stamp}"
        lines.append(line)
    try:
        bounded = rrulestr("\n".join(lines), forceset=True)
        return any(True for _ in bounded.xafter(begin, count=1, inc=True))
    except ValueError:  # past year 9999: nothing left
        return False


def _rrule_iter(expression: str, begin: datetime) -> Iterator[datetime]:
    """Local wall times of the rule block after ``begin``; ends when none is left
    (dateutil raises ``ValueError`` when its walk passes year 9999)."""
    it = _ruleset(expression).xafter(begin, inc=False)
    while True:
        try:
            yield next(it)
        except (StopIteration, ValueError):
            return


def _cron_iter(expression: str, begin: datetime) -> Iterator[datetime]:
    """Local wall times matching ``expression`` after ``begin``; ends if none is left
    (croniter gives up on impossible dates such as February 30th)."""
    it = croniter(expression, begin)
    while True:
        try:
            yield it.get_next(datetime)
        except CroniterBadDateError:
            return


def _walk(naive: Iterator[datetime], tz, after_utc: datetime, n: int) -> list[datetime]:
    """Map ascending local wall times to instants (RFC 5545 rule), keep the first ``n``
    strictly after ``after_utc``. Times inside a spring-forward gap shift later by the
    gap, so after the n-th hit keep reading for one gap length to restore the order."""
    found: set[datetime] = set()
    gap = timedelta(0)
    stop: datetime | None = None
    for t in naive:
        if stop is not None and t > stop:
            break
        aware = localize(t, tz)
        shift = aware.replace(tzinfo=None) - t
        if shift > gap:
            gap = shift
        inst = aware.astimezone(_UTC)
        if inst > after_utc:
            found.add(inst)
        if stop is None and len(found) >= n:
            if gap == timedelta(0):
                break
            stop = t + gap
    return [x.astimezone(tz) for x in sorted(found)[:n]]


def _cron_min_gap(expression: str) -> float:
    fields, _ = croniter.expand(expression)
    minutes = list(range(60)) if fields[0] == ["*"] else sorted(int(x) for x in fields[0])
    hours = list(range(24)) if fields[1] == ["*"] else sorted(int(x) for x in fields[1])
    times = sorted(h * 60 + m for h in hours for m in minutes)
    best = math.inf
    for a, b in zip(times, times[1:]):
        best = min(best, (b - a) * 60)
    dom, mon, dow = expression.split()[2:]
    day_gap = _min_day_gap(f"0 0 {dom} {mon} {dow}")
    if day_gap is not None:
        best = min(best, (day_gap * 1440 - (times[-1] - times[0])) * 60)
    return float(best)


def _min_day_gap(day_expr: str) -> int | None:
    it = _cron_iter(day_expr, datetime(2001, 1, 1) - timedelta(seconds=1))
    end = datetime(2001 + _SAMPLE_YEARS, 1, 1)
    prev: date | None = None
    best: int | None = None
    for _, cur in zip(range(_SAMPLE_LIMIT), it):
        if cur >= end:
            break
        if prev is not None:
            gap = (cur.date() - prev).days
            best = gap if best is None else min(best, gap)
            if best == 1:
                break
        prev = cur.date()
    return best


def _rrule_min_gap(expression: str) -> float:
    rs = _ruleset(expression)
    best = math.inf
    prev: datetime | None = None
    first: datetime | None = None
    for i, t in enumerate(rs):
        if first is None:
            first = t
        if prev is not None:
            best = min(best, (t - prev).total_seconds())
        prev = t
        if i >= _SAMPLE_LIMIT or t.year - first.year > _SAMPLE_YEARS:
            break
    return best
