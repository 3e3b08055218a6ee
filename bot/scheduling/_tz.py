"""Time-zone helpers: zone lookup and the DST rule for local wall times.

Local wall times are turned into instants by the rule of RFC 5545 §3.3.5 (the
iCalendar DATE-TIME "FORM #3"), which is also what PEP 495 ``fold=0`` gives:

* a time that occurs twice (the hour repeated when clocks go back) means the
  **first** occurrence — a job at 01:30 on that day fires once;
* a time that does not occur (skipped when clocks go forward) is read with the UTC
  offset from **before** the gap — a job at 02:30 on the spring-forward day fires
  once, at 03:30 local time (02:30 + the 1-hour gap). It is neither dropped nor run
  twice.
"""

from __future__ import annotations

from datetime import datetime, timezone
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

__all__ = ["localize", "get_zone", "zone_key"]


@lru_cache(maxsize=1)
def _zone_names() -> dict[str, str]:
    names = {n.lower(): n for n in available_timezones()}
    names.setdefault("utc", "UTC")
    return names


def zone_key(name: str) -> str | None:
    """Canonical IANA key for ``name`` (case-insensitive), or ``None`` if unknown."""
    if not name:
        return None
    return _zone_names().get(name.strip().lower())


def get_zone(name: str) -> ZoneInfo:
    """:class:`ZoneInfo` for an IANA name (case-insensitive). Raises ``ValueError`` if unknown."""
    key = zone_key(name)
    if key is None:
        raise ValueError(f"unknown time zone {name!r}; use an IANA name such as 'Europe/Berlin'")
    try:
        return ZoneInfo(key)
    except ZoneInfoNotFoundError:  # pragma: no cover - listed but not loadable
        raise ValueError(f"unknown time zone {name!r}") from None


def localize(naive: datetime, tz: ZoneInfo) -> datetime:
    """Attach ``tz`` to the local wall time ``naive`` by the RFC 5545 §3.3.5 rule (see module doc).

    Returns an aware datetime in ``tz`` whose wall time is ``naive`` — or, inside a
    spring-forward gap, ``naive`` shifted forward by the length of the gap.
    """
    aware = naive.replace(tzinfo=tz, fold=0)
    back = aware.astimezone(timezone.utc).astimezone(tz)
    if back.replace(tzinfo=None) != naive:  # nonexistent wall time: keep the instant fold=0 names
        return back
    return aware
