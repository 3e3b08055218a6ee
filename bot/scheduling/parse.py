"""Chat message -> :class:`ScheduleSpec`: :func:`parse_schedule` and :func:`explain`.

Message shape::

    [schedule] <when> run <workflow>
    [schedule] cron <m> <h> <dom> <mon> <dow> [in <Zone>] run <workflow>

``<when>`` follows the grammar in :mod:`._grammar` (e.g. "every weekday at 9am",
"every 15 minutes", "on the first of every month at 8:00", "tomorrow at 5pm",
"in 2 hours", "at 9am on weekdays in Europe/Berlin"); ``<workflow>`` is everything
after the first stand-alone word "run", kept verbatim (e.g. "disk-check AND
system-report THEN echo done").

Strictness: every word of ``<when>`` must be understood; otherwise
:class:`ScheduleParseError` points at the first word that was not, and nothing is
scheduled. So "remind me to move car every weekday would work best for me run X" is
refused at "remind", and "every blursday at 9 run X" at "blursday".

Time zone: the zone named in the phrase ("in Europe/Berlin"), else ``user_tz``,
else ``default_tz``.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from croniter import croniter

from ._build import build
from ._describe import describe_cron, describe_date, describe_interval, describe_plan
from ._grammar import parse_tokens
from ._lexer import tokenize
from ._tz import get_zone, localize, zone_key
from .errors import ScheduleParseError
from .spec import NEVER_FIRES_HORIZON, ScheduleSpec, rrule_fires_between

__all__ = ["parse_schedule", "explain"]

_RUN_RE = re.compile(r"(?<!\S)run(?!\S)", re.IGNORECASE)
_CRON_EXAMPLES = ("cron 0 9 * * 1-5 run standup-report", "cron */15 * * * * run disk-check")
_CRON_FIELDS = ("minute", "hour", "day of month", "month", "day of week")


def parse_schedule(
    message: str,
    *,
    now: datetime,
    default_tz: str = "UTC",
    user_tz: str | None = None,
) -> ScheduleSpec:
    """Parse a chat message into a :class:`ScheduleSpec`.

    Args:
        message: the chat text, e.g. ``"every weekday at 9am run standup-report"``.
        now: the current time; aware, or naive meaning wall time in the resolved zone.
            Relative phrases ("tomorrow", "in 2 hours") and interval grids count from it.
        default_tz: configured default IANA zone.
        user_tz: the user's IANA zone, if known; wins over ``default_tz``.

    Returns:
        the spec; its ``timezone`` is the zone named in the phrase, else ``user_tz``,
        else ``default_tz``.

    Raises:
        ScheduleParseError: the message is empty, has no "run <workflow>", or part of
            the schedule was not understood or is impossible (``.position`` points at it).
        ValueError: ``default_tz``/``user_tz`` is not an IANA zone name (configuration error).
    """
    if not isinstance(message, str) or not message.strip():
        raise ScheduleParseError("the message is empty; say when and what to run",
                                 position=0, fragment="", text=message if isinstance(message, str) else "")
    fallback_zone = user_tz or default_tz
    get_zone(fallback_zone)  # configuration errors surface even for phrases naming a zone

    m = _RUN_RE.search(message)
    if m is None:
        end = len(message.rstrip())
        raise ScheduleParseError("expected 'run <workflow>' after the schedule",
                                 position=end, fragment="", text=message)
    workflow = message[m.end():].strip()
    if not workflow:
        raise ScheduleParseError("expected a workflow after 'run'", position=len(message.rstrip()),
                                 fragment="", text=message)
    sched_start, sched_end = 0, m.start()
    toks = tokenize(message, sched_start, sched_end)
    if toks and toks[0].is_word("schedule"):
        toks = toks[1:]
    if not toks:
        raise ScheduleParseError("say when to run it before 'run', e.g. 'every day at 9am run ...'",
                                 position=m.start(), fragment=message[m.start():m.end()], text=message)
    first = toks[0].start
    if toks[0].is_word("cron"):
        return _parse_cron(message, toks[0].end, sched_end, now=now, fallback_zone=fallback_zone,
                           workflow=workflow)

    draft = parse_tokens(toks, message, first, len(message[:sched_end].rstrip()))
    zone_fact = draft.facts.get("zone")
    zone = fallback_zone
    if zone_fact is not None:
        key = zone_key(zone_fact.value)
        if key is None:
            raise ScheduleParseError(f"unknown time zone {zone_fact.value!r}; use an IANA name such as "
                                     "Europe/Berlin or America/New_York",
                                     position=zone_fact.pos, fragment=message[zone_fact.pos:zone_fact.end],
                                     text=message,
                                     examples=("at 9am on weekdays in Europe/Berlin run X",
                                               "every day at 17:30 in America/New_York run X"))
        zone = key
    tz = get_zone(zone)
    now_local = _wall(now, tz)
    built = build(draft, tz=tz, now_local=now_local, source=message)
    if built.kind == "rrule" and not rrule_fires_between(built.expression, now_local, now_local + NEVER_FIRES_HORIZON):
        # e.g. "weekends except weekends", or an end before the start: refused here rather than
        # stored as a job that never fires (and a walk through the calendar to year 9999)
        ex = draft.facts.get("exclusions") or draft.facts.get("until")
        pos, end = (ex.pos, ex.end) if ex is not None else (first, len(message[:sched_end].rstrip()))
        raise ScheduleParseError("this schedule never fires" + (": its exceptions leave no time" if ex is not None and ex.key == "exclusions" else ""),
                                 position=pos, fragment=message[pos:end], text=message)
    if built.kind == "cron":
        description = describe_cron(built.expression)
    elif built.kind == "interval":
        anchor = built.plan.anchor
        description = describe_interval(built.plan.unit, built.plan.interval,
                                        (anchor.hour, anchor.minute, anchor.second) if anchor else None)
    elif built.kind == "date":
        description = describe_date(built.when, zone)
    else:
        description = describe_plan(built.plan)
    return ScheduleSpec(kind=built.kind, expression=built.expression, timezone=zone, description=description,
                        workflow=workflow, source=message, start=built.start)


def _wall(now: datetime, tz) -> datetime:
    if now.tzinfo is None:
        return now
    return now.astimezone(tz).replace(tzinfo=None)


def _parse_cron(message: str, start: int, end: int, *, now: datetime, fallback_zone: str,
                workflow: str) -> ScheduleSpec:
    """``cron <5 fields> [in <Zone>]`` — fields validated one by one with croniter."""
    fields = [(mm.group(0), mm.start()) for mm in re.finditer(r"\S+", message[start:end])]
    fields = [(f, p + start) for f, p in fields]
    zone = fallback_zone
    if len(fields) >= 2 and fields[-2][0].lower() == "in":
        key = zone_key(fields[-1][0])
        if key is None:
            raise ScheduleParseError(f"unknown time zone {fields[-1][0]!r}", position=fields[-1][1],
                                     fragment=fields[-1][0], text=message, examples=_CRON_EXAMPLES)
        zone = key
        fields = fields[:-2]
    if len(fields) != 5:
        pos, frag = (fields[5][1], fields[5][0]) if len(fields) > 5 else (end if not fields else fields[-1][1], "")
        if len(fields) < 5:
            pos = len(message[:end].rstrip())
        raise ScheduleParseError(
            f"a cron expression has exactly 5 fields (minute hour day-of-month month day-of-week); "
            f"got {len(fields)}", position=pos, fragment=frag, text=message, examples=_CRON_EXAMPLES)
    expr = " ".join(f for f, _ in fields)
    if not croniter.is_valid(expr):
        for i, (f, p) in enumerate(fields):
            probe = ["*"] * 5
            probe[i] = f
            if not croniter.is_valid(" ".join(probe)):
                raise ScheduleParseError(f"{f!r} is not a valid cron {_CRON_FIELDS[i]} field", position=p,
                                         fragment=f, text=message, examples=_CRON_EXAMPLES)
        raise ScheduleParseError("these cron fields never match together", position=fields[0][1],
                                 fragment=message[fields[0][1]:fields[-1][1] + len(fields[-1][0])],
                                 text=message, examples=_CRON_EXAMPLES)
    try:
        description = describe_cron(expr)
    except Exception as exc:  # cron-descriptor rejects a few croniter extensions
        raise ScheduleParseError(f"cannot describe this cron expression ({exc})", position=fields[0][1],
                                 fragment=expr, text=message, examples=_CRON_EXAMPLES) from None
    spec = ScheduleSpec(kind="cron", expression=expr, timezone=zone, description=description,
                        workflow=workflow, source=message)
    tz = get_zone(zone)
    probe_from = localize(_wall(now, tz), tz)
    if not spec.next_fire_times(probe_from, 1):
        raise ScheduleParseError("this cron expression never fires", position=fields[0][1], fragment=expr,
                                 text=message, examples=_CRON_EXAMPLES)
    return spec


def explain(
    message: str,
    *,
    now: datetime,
    tz: str,
    min_interval_seconds: float | None = None,
) -> dict[str, Any]:
    """Parse ``message`` and return a JSON-able explanation (nothing is scheduled).

    Args:
        message: the chat text (see :func:`parse_schedule`).
        now: current time (aware, or naive wall time in the resolved zone).
        tz: the zone to use unless the phrase names one (the user's or configured zone).
        min_interval_seconds: policy minimum gap between firings; a schedule firing more
            often is *reported* in ``policy_violations``, not refused.

    Returns:
        ``{"trigger": {"kind", "expression"[, "start"]}, "timezone", "description",
        "workflow", "next": [up to 5 ISO 8601 firings after now], "policy_violations":
        [{"rule": "min_interval", "limit_seconds", "actual_seconds", "message"}]}``.

    Raises:
        ScheduleParseError: as :func:`parse_schedule`.
    """
    spec = parse_schedule(message, now=now, default_tz=tz)
    trigger: dict[str, Any] = {"kind": spec.kind, "expression": spec.expression}
    if spec.start is not None:
        trigger["start"] = spec.start
    zone = get_zone(spec.timezone)
    after = localize(now, zone) if now.tzinfo is None else now
    violations: list[dict[str, Any]] = []
    if min_interval_seconds is not None:
        gap = spec.min_interval_seconds()
        if gap < min_interval_seconds:
            violations.append({
                "rule": "min_interval",
                "limit_seconds": min_interval_seconds,
                "actual_seconds": gap,
                "message": f"fires as often as every {_human_seconds(gap)}; the policy minimum is "
                           f"{_human_seconds(min_interval_seconds)}",
            })
    return {
        "trigger": trigger,
        "timezone": spec.timezone,
        "description": spec.description,
        "workflow": spec.workflow,
        "next": [t.isoformat() for t in spec.next_fire_times(after, 5)],
        "policy_violations": violations,
    }


def _human_seconds(s: float) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if s >= size and s % size == 0:
            n = int(s // size)
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return f"{s:g} seconds"
