"""Chat-ops scheduling: a chat message -> a schedule trigger, and the job layer that fires it.

* :func:`parse_schedule` — "every weekday at 9am run standup-report" -> :class:`ScheduleSpec`.
* :func:`explain` — JSON-able view: trigger, zone, description, next 5 firings, policy notes.
* :class:`ScheduleSpec` — frozen trigger value (cron / rrule / interval / date) with
  :meth:`~ScheduleSpec.next_fire_times` and :meth:`~ScheduleSpec.min_interval_seconds`.
* :class:`ScheduleParseError` — refusal with ``.position``, ``.fragment``, ``.examples``.
* :class:`SchedulerService` (:mod:`.service`) — the ``schedules`` table (:mod:`.store`) is the
  source of truth; a small timer of our own (:mod:`.timer`) fires it on the event loop at the
  triggers' instants (:mod:`.triggers`); :class:`~.testing.ControlledClock` for tests.
* :func:`handle_schedule_command` / :func:`parse_schedule_command` (:mod:`.commands`) — the
  chat commands; :data:`schedule_app` in :mod:`.cli` — ``baton schedule explain``.

Grammar: :mod:`._grammar`; meaning and defaults: :mod:`._build`; DST rule (RFC 5545
§3.3.5): :mod:`._tz`. Libraries: croniter (cron firings), python-dateutil (RRULE),
cron-descriptor (cron descriptions), zoneinfo/tzdata (zones).
"""

from .errors import ScheduleParseError
from .parse import explain, parse_schedule
from .spec import Kind, ScheduleSpec
from .service import SchedulerService
from .store import ScheduleRow, schedules
from .timer import SystemClock
from .commands import handle_schedule_command, parse_schedule_command

__all__ = [
    "parse_schedule", "explain", "ScheduleSpec", "ScheduleParseError", "Kind",
    "SchedulerService", "ScheduleRow", "SystemClock", "schedules",
    "handle_schedule_command", "parse_schedule_command",
]
