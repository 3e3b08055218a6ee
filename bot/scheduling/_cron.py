"""A repeating rule as a 5-field crontab(5) expression, when cron can say it exactly."""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import _vocab as V

if TYPE_CHECKING:
    from ._build import RulePlan

__all__ = ["_cron", "_time_groups"]


def _time_groups(times: tuple) -> list[tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    """Split times of day into cross products hours x minutes x seconds (RRULE/cron fields)."""
    by_ms: dict[tuple[int, int], set[int]] = {}
    for h, m, s in times:
        by_ms.setdefault((m, s), set()).add(h)
    by_hours: dict[tuple[int, ...], list[tuple[int, int]]] = {}
    for (m, s), hours in by_ms.items():
        by_hours.setdefault(tuple(sorted(hours)), []).append((m, s))
    groups = []
    for hours, ms in sorted(by_hours.items()):
        by_s: dict[int, list[int]] = {}
        for m, s in ms:
            by_s.setdefault(s, []).append(m)
        for s, minutes in sorted(by_s.items()):
            groups.append((hours, tuple(sorted(minutes)), (s,)))
    return groups


def _cron_list(values: tuple[int, ...] | list[int], full: range) -> str:
    vals = sorted(set(values))
    if vals == list(full):
        return "*"
    if len(vals) > 2 and vals[0] == full.start:
        step = vals[1] - vals[0]
        if step > 1 and vals == list(range(full.start, full.stop, step)):
            return f"*/{step}"
    parts: list[str] = []
    i = 0
    while i < len(vals):
        j = i
        while j + 1 < len(vals) and vals[j + 1] == vals[j] + 1:
            j += 1
        if j - i >= 2:
            parts.append(f"{vals[i]}-{vals[j]}")
            i = j + 1
        else:
            parts.append(str(vals[i]))
            i += 1
    return ",".join(parts)


def _cron(plan: RulePlan) -> str | None:
    """5-field crontab(5) string for ``plan`` if cron can say it exactly, else ``None``."""
    if plan.interval != 1 or plan.yeardays or plan.weeknos or plan.setpos or plan.unit in V.SUBDAILY:
        return None
    if any(n is not None for n, _ in plan.weekdays) or any(d < 1 for d in plan.monthdays):
        return None
    groups = _time_groups(plan.times)
    if len(groups) != 1 or groups[0][2] != (0,):
        return None
    hours, minutes, _ = groups[0]
    if plan.weekdays and plan.monthdays:
        return None  # cron ORs the two day fields
    if plan.unit == "month" and plan.weekdays:
        return None
    if plan.unit == "year" and plan.weekdays:
        return None
    dom = _cron_list(plan.monthdays, range(1, 32)) if plan.monthdays else "*"
    mon = _cron_list(plan.months, range(1, 13)) if plan.months else "*"
    if plan.weekdays:
        cron_days = sorted((wd + 1) % 7 for _, wd in plan.weekdays)
        dow = "*" if len(cron_days) == 7 else _cron_list(cron_days, range(0, 7))
    else:
        dow = "*"
    return f"{_cron_list(minutes, range(0, 60))} {_cron_list(hours, range(0, 24))} {dom} {mon} {dow}"
