"""What the schedule grammar records: facts with positions, collected in a :class:`Draft`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["DateRef", "Draft", "Exclusion", "Fact"]


class _Fail(Exception):
    """Soft failure inside a clause; the clause loop backtracks."""


@dataclass(frozen=True)
class DateRef:
    """A day named in the message, resolved later against "now" or a start date.

    ``kind``: ``"days"`` (today/tomorrow, ``n`` days ahead), ``"weekday"`` (``wd``;
    ``mode`` this/next/bare), ``"next_unit"`` (next week/month/year), ``"md"``
    (``month``/``day``/optional ``year``, optional ``wd`` to check), ``"month"``
    (a whole month, optional ``year``), ``"nthwd"`` (``nth`` ``wd`` of ``month``).
    ``time``: optional ``(h, m, s)``; ``pos``/``end``: span in the message.
    """

    kind: str
    pos: int
    end: int
    n: int = 0
    wd: int | None = None
    mode: str = "bare"
    unit: str = ""
    month: int = 0
    day: int = 0
    year: int | None = None
    nth: int = 0
    time: tuple[int, int, int] | None = None


@dataclass(frozen=True)
class Exclusion:
    """One "except ..." item: ``kind`` is ``"date"`` (``ref``), ``"weekdays"`` (``weekdays``)
    or ``"rule"`` (``rule``: a nested :class:`Draft`); ``pos`` is its offset."""

    kind: str
    pos: int
    ref: DateRef | None = None
    weekdays: tuple[int, ...] = ()
    rule: "Draft | None" = None


@dataclass(frozen=True)
class Fact:
    """One thing the message said: ``key`` (slot), ``value``, ``pos``/``end`` (span)."""

    key: str
    value: Any
    pos: int
    end: int


@dataclass
class Draft:
    """Facts collected from one schedule phrase, by slot, each as a :class:`Fact`.

    Slots: ``recurring`` (a plural day list such as "tuesdays"), ``period``
    (``(unit, interval, explicit)``, unit day/week/month/year), ``sub`` (``(unit,
    interval)``, unit second/minute/hour), ``weekdays`` (``((nth|None, wd), ...)``),
    ``day_ordinals`` (``(values, said_day)`` — "the 4th", "31st day": month-, year-
    or week-day decided later), ``monthdays``, ``months``, ``yeardays``, ``weeknos``,
    ``setpos``, ``times`` (``((h, m, s), ...)``), ``time_range``, ``year``,
    ``date_rel`` (:class:`DateRef`), ``relative`` (``(unit, n)``), ``count``,
    ``until`` (:class:`DateRef` or ``("for", unit, n)``), ``dtstart`` (:class:`DateRef`),
    ``zone`` (IANA name), ``exclusions`` (list of :class:`Exclusion`).
    """

    facts: dict[str, Fact] = field(default_factory=dict)
    exclusions: list[Exclusion] = field(default_factory=list)
    start: int = 0
    end: int = 0

    def get(self, key: str, default: Any = None) -> Any:
        f = self.facts.get(key)
        return default if f is None else f.value

    def pos(self, key: str) -> int:
        return self.facts[key].pos

    def has(self, *keys: str) -> bool:
        return any(k in self.facts for k in keys)


_LABELS = {
    "every": "a repeat such as 'every day'",
    "unit": "a unit (minutes, hours, days, weeks, months, years)",
    "weekday": "a day name",
    "month": "a month name",
    "time": "a time such as 9am or 17:30",
    "date": "a date such as 'march 3rd', 'tomorrow' or 2025-03-30",
    "zone": "an IANA time zone such as Europe/Berlin",
}
