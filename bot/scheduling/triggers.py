"""Triggers: when a schedule fires, straight from the parser's next-firing times.

:class:`SpecTrigger` answers "the next firing after an instant" with
:meth:`ScheduleSpec.next_fire_times`, so a schedule fires exactly when the parser
says (crontab weekday numbering with Sunday = 0, RRULE expansion, and the RFC 5545
§3.3.5 daylight-saving rule), and finds the latest missed firing of an outage
without enumerating every one (coalesced catch-up).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from ._tz import get_zone
from .spec import ScheduleSpec

__all__ = ["SpecTrigger", "TriggerKey", "format_when"]


def format_when(dt: datetime, zone: str | None = None) -> str:
    """``"Mon 9 Mar 2026 09:00 EDT"`` — an instant as wall time in ``zone`` (IANA name;
    default: the datetime's own zone). Seconds are shown only when not zero."""
    if zone is not None:
        dt = dt.astimezone(get_zone(zone))
    clock = f"{dt:%H:%M:%S}" if dt.second else f"{dt:%H:%M}"
    return f"{dt:%a} {dt.day} {dt:%b %Y} {clock} {dt.tzname()}"


class SpecTrigger:
    """When a schedule fires: exactly at :meth:`ScheduleSpec.next_fire_times`.

    ``get_next_fire_time(previous, now)``: the first firing strictly after
    ``previous`` (may lie before ``now``: that is how the timer sees misfires), or,
    for a new job (``previous is None``), the first firing strictly after ``now``;
    ``None`` when the schedule has no firing left.
    """

    __slots__ = ("_spec", "_factory", "_memo")

    def __init__(self, spec: ScheduleSpec | Callable[[], ScheduleSpec]) -> None:
        """``spec``: the spec, or a function building it on first use (loading 10,000
        stored schedules must not re-validate 10,000 cron and RRULE expressions)."""
        if isinstance(spec, ScheduleSpec):
            self._spec: ScheduleSpec | None = spec
            self._factory: Callable[[], ScheduleSpec] | None = None
        else:
            self._spec, self._factory = None, spec
        self._memo: tuple[float, datetime | None] | None = None

    @property
    def spec(self) -> ScheduleSpec:
        """The schedule's :class:`ScheduleSpec` (built now if it was deferred; ``ValueError`` if invalid)."""
        if self._spec is None:
            assert self._factory is not None
            self._spec, self._factory = self._factory(), None
        return self._spec

    def get_next_fire_time(self, previous_fire_time: datetime | None, now: datetime) -> datetime | None:
        # A firing asks for the same answer twice (the scheduler loop, then the job
        # function); remember the last one, keyed by instant (PEP 495: never == across zones).
        if previous_fire_time is not None:
            stamp = previous_fire_time.timestamp()
            if self._memo is not None and self._memo[0] == stamp:
                return self._memo[1]
        after = previous_fire_time if previous_fire_time is not None else now
        found = self.spec.next_fire_times(after, 1)
        nxt = found[0] if found else None
        if previous_fire_time is not None:
            self._memo = (stamp, nxt)
        return nxt

    def latest_fire_time(self, first: datetime, now: datetime) -> datetime:
        """The latest firing in ``[first, now]``, where ``first`` is a firing ``<= now``.

        What a coalesced catch-up fires. Cost does not grow with the length of the
        outage: windows ending at ``now`` grow eightfold until one holds a firing.
        """
        spec = self.spec
        if spec.kind == "date":
            return first
        nxt = self.get_next_fire_time(first, now)
        if nxt is None or nxt > now:  # the usual case: on time, or one firing missed
            return first
        if spec.kind == "interval":
            step = timedelta(seconds=int(spec.expression))
            origin = datetime.fromisoformat(spec.start).astimezone(UTC)  # type: ignore[arg-type]
            k = (now.astimezone(UTC) - origin) // step
            return max(first, (origin + k * step).astimezone(first.tzinfo))
        window = timedelta(hours=1)
        while True:
            lo = now - window
            if lo <= nxt:
                return _last_fire(spec, nxt, now, default=nxt)  # type: ignore[return-value]
            found = _last_fire(spec, lo, now, default=None)
            if found is not None:
                return found
            window *= 8

    def count_between(self, first: datetime, last: datetime, cap: int = 1000) -> int:
        """How many firings lie in ``[first, last]`` (``first`` is a firing); at most ``cap``."""
        n, cursor = 1, first
        while n < cap:
            batch = self.spec.next_fire_times(cursor, min(256, cap - n))
            for t in batch:
                if t > last:
                    return n
                n += 1
            if not batch:
                return n
            cursor = batch[-1]
        return n

    def __str__(self) -> str:
        if self._spec is None:
            return "schedule[not built yet]"
        return f"schedule[{self._spec.kind} {self._spec.expression!s} {self._spec.timezone}]"

    def __repr__(self) -> str:
        return f"<SpecTrigger {self}>"


TriggerKey = tuple[str, str, str, "str | None"]


def _timing_key(kind: str, expression: str | int, timezone: str, start: str | None) -> TriggerKey:
    return (kind, str(expression), timezone, start)


def _timing_spec(key: TriggerKey) -> ScheduleSpec:
    """A spec with only the fields that decide firings (what a shared trigger needs)."""
    kind, expression, timezone, start = key
    expr: str | int = int(expression) if kind == "interval" else expression
    return ScheduleSpec(kind=kind, expression=expr, timezone=timezone, description="", workflow="", source="",  # type: ignore[arg-type]
                        start=start)


def _last_fire(spec: ScheduleSpec, after: datetime, now: datetime, *, default: datetime | None) -> datetime | None:
    """The last firing strictly after ``after`` and at or before ``now`` (else ``default``)."""
    last, cursor, size = default, after, 8
    while True:
        batch = spec.next_fire_times(cursor, size)
        for t in batch:
            if t > now:
                return last
            last = t
        if len(batch) < size:
            return last
        cursor, size = batch[-1], min(size * 2, 256)
