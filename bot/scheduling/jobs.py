"""Compatibility names for the scheduler's parts (split by concern; import from these modules):

* :mod:`bot.scheduling.store` — the ``schedules`` table, :class:`ScheduleRow`, :class:`ScheduleStore`;
* :mod:`bot.scheduling.triggers` — :class:`SpecTrigger` (firings from the parser), :func:`format_when`;
* :mod:`bot.scheduling.timer` — :class:`Clock`, :class:`SystemClock`, the :class:`FiringTimer`;
* :mod:`bot.scheduling.service` — :class:`SchedulerService`;
* :mod:`bot.scheduling.testing` — :class:`ControlledClock` (tests only).
"""

from __future__ import annotations

from .service import Launch, SchedulerService, Started, human_seconds
from .store import DEFAULT_MIN_INTERVAL_S, DEFAULT_MISFIRE_GRACE_S, OVERLAP_POLICIES, Overlap, ScheduleRow, ScheduleStore, schedules
from .timer import Clock, FiringTimer, SystemClock
from .triggers import SpecTrigger, format_when

__all__ = [
    "schedules",
    "ScheduleRow",
    "ScheduleStore",
    "SchedulerService",
    "SpecTrigger",
    "FiringTimer",
    "Clock",
    "SystemClock",
    "Launch",
    "Started",
    "Overlap",
    "OVERLAP_POLICIES",
    "DEFAULT_MISFIRE_GRACE_S",
    "DEFAULT_MIN_INTERVAL_S",
    "format_when",
    "human_seconds",
]
