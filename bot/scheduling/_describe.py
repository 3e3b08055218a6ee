"""Plain-English descriptions of triggers.

Cron strings are described by ``cron-descriptor`` (its default en_US wording, e.g.
"At 09:00 AM, Monday through Friday"); other kinds by :func:`describe_plan`,
:func:`describe_interval` and :func:`describe_date` from the parsed facts.
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache

from cron_descriptor import Options, get_description

from . import _vocab as V
from ._build import RulePlan

__all__ = ["describe_cron", "describe_plan", "describe_interval", "describe_date"]

_ORD = {1: "first", 2: "second", 3: "third", 4: "fourth", 5: "fifth", -1: "last", -2: "second to last",
        -3: "third to last"}


@lru_cache(maxsize=512)
def describe_cron(expression: str) -> str:
    """cron-descriptor's description of a 5-field cron (Sunday = 0); cached, because each
    description looks up cron-descriptor's gettext catalogue on disk."""
    opts = Options()
    opts.locale_code = "en_US"
    return get_description(expression, opts)


def _join(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _nth(n: int) -> str:
    if n in _ORD:
        return _ORD[n]
    suffix = "th" if 10 <= abs(n) % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(abs(n) % 10, "th")
    return f"{n}{suffix}" if n > 0 else f"{-n}{suffix} to last"


def _day_of_month(d: int) -> str:
    return "the last day" if d == -1 else f"the {_nth(d)}"


def _hms(t: tuple[int, int, int]) -> str:
    h, m, s = t
    return f"{h:02d}:{m:02d}" + (f":{s:02d}" if s else "")


def _weekdays(days: tuple, *, every: bool = False) -> str:
    plain = sorted(wd for n, wd in days if n is None)
    nth = [(n, wd) for n, wd in days if n is not None]
    parts = []
    if plain == [0, 1, 2, 3, 4]:
        parts.append("weekday (Monday to Friday)" if every else "weekdays (Monday to Friday)")
    elif plain == [5, 6]:
        parts.append("Saturday and Sunday")
    elif plain:
        parts.append(_join([V.WEEKDAY_NAMES[w] for w in plain]))
    if nth:
        parts.append(_join([f"the {_nth(n)} {V.WEEKDAY_NAMES[w]}" for n, w in nth]))
    return _join(parts)


def _unit_phrase(unit: str, n: int) -> str:
    return f"every {unit}" if n == 1 else ("every other " + unit if n == 2 else f"every {n} {unit}s")


def describe_interval(unit: str, n: int, anchor: tuple[int, int, int] | None) -> str:
    """Describe an interval: 'Every 15 minutes', 'Every hour at :15', 'Every 2 hours, aligned to 01:30'."""
    text = _unit_phrase(unit, n).capitalize()
    if anchor and anchor != (0, 0, 0):
        if unit == "hour" and n == 1 and not anchor[2]:
            return f"Every hour at :{anchor[1]:02d}"
        text += f", aligned to {_hms(anchor)}"
    return text


def describe_plan(plan: RulePlan) -> str:
    """Describe a repeating rule, e.g. "Every 2 weeks on Monday and Friday at 09:00"."""
    u, n = plan.unit, plan.interval
    parts: list[str] = []
    if u == "week" and plan.weekdays and n == 1:
        parts.append("every " + _weekdays(plan.weekdays, every=True))
    else:
        parts.append(_unit_phrase(u, n))
        if plan.weekdays and not plan.setpos:
            parts.append("on " + _weekdays(plan.weekdays))
    if plan.setpos:
        parts.append(f"on the {_join([_nth(p) for p in plan.setpos])} of "
                     f"{_join([V.WEEKDAY_NAMES[w] for _, w in plan.weekdays])}")
    if plan.monthdays:
        if plan.months and u == "year":
            parts.append("on " + _join([f"{V.MONTH_NAMES[m - 1]} {'last day' if d == -1 else d}"
                                        for m in plan.months for d in plan.monthdays]))
        else:
            parts.append("on " + _join([_day_of_month(d) for d in plan.monthdays]) + " of the month")
    if plan.months and not (plan.monthdays and u == "year"):
        parts.append("in " + _join([V.MONTH_NAMES[m - 1] for m in plan.months]))
    if plan.yeardays:
        parts.append("on day " + _join([str(d) for d in plan.yeardays]) + " of the year")
    if plan.weeknos:
        parts.append("in week " + _join([str(w) for w in plan.weeknos]))
    if plan.times:
        if len(plan.times) <= 6:
            parts.append("at " + _join([_hms(t) for t in plan.times]))
        else:
            parts[-1] += ","
            parts.append(f"{len(plan.times)} times a day from {_hms(plan.times[0])} to {_hms(plan.times[-1])}")
    elif plan.anchor is not None and u in V.SUBDAILY:
        parts[-1] += f", aligned to {plan.anchor:%H:%M}"
    text = " ".join(parts)
    if plan.start is not None:
        text += f", starting {plan.start:%a %d %b %Y}"
    if plan.until is not None:
        text += f", until {plan.until:%a %d %b %Y %H:%M}"
    if plan.count is not None:
        text += f", {plan.count} time{'s' if plan.count != 1 else ''} in all"
    if plan.except_text:
        text += ", except " + _join(list(plan.except_text))
    return text[:1].upper() + text[1:]


def describe_date(when: datetime, zone: str) -> str:
    """Describe a one-off: 'Once, on Thursday 16 January 2025 at 17:00 (Europe/Berlin)'."""
    return f"Once, on {when:%A} {when.day} {when:%B %Y} at {when:%H:%M} ({zone})"
