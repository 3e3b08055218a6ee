"""The job layer: schedules stored in SQL, fired by APScheduler 3.x on the event loop.

Source of truth: the ``schedules`` table (migration 0003), written through the async
database layer. APScheduler only holds an in-memory copy: at :meth:`SchedulerService.start`
every active schedule of the platforms this process serves becomes one job in a
``MemoryJobStore`` (the synchronous SQLAlchemy job store is deliberately not used:
it would block the loop and duplicate the table). Every command changes the table
first and the scheduler second, under the schedule's lock, so the two agree after
each command, each firing and each restart.

Triggers: :class:`SpecTrigger` delegates ``get_next_fire_time`` to
:meth:`ScheduleSpec.next_fire_times`, so a job fires exactly when the parser says
(crontab weekday numbering with Sunday = 0 — APScheduler's own ``CronTrigger`` counts
Monday = 0 —, RRULE expansion, and the RFC 5545 §3.3.5 daylight-saving rule).

Per job, on purpose:

* ``coalesce=True`` — however many firings were missed (the process was down, the
  machine slept, the loop stalled), a schedule runs at most once to catch up: ten
  stand-up reports in a row help nobody.
* ``misfire_grace_time`` = the row's ``misfire_grace_s`` (default
  :data:`DEFAULT_MISFIRE_GRACE_S`, 5 minutes): the latest missed firing still runs
  if it is at most that late; later than that it is *not* run, and the thread is
  told it was missed (a 09:00 report at 15:00 is noise; silence would hide the outage).
* ``max_instances`` is high: the overlap policy is ours (below), not APScheduler's,
  because a firing only *starts* a run; the run outlives the job function.

Catch-up after downtime falls out of the same rules: the job is rebuilt with the
stored ``next_fire_at``; if that is in the past, the first wakeup coalesces all
missed firings into the latest one and either fires it (within grace) or reports
it missed.

Overlap policy (per schedule; ``skip`` by default) when a firing is due while the
run started by the schedule's previous firing is still running: ``skip`` (do not
run; the thread is told once per blocking run), ``queue`` (run when it finishes; at
most one firing waits, later ones coalesce into it), ``allow`` (run alongside).

Time: all instants are aware UTC in the database. The service reads time from a
:class:`Clock`; :class:`SystemClock` in production, :class:`ControlledClock` in tests
(time moves only when the test advances it, and every timer due on the way fires
at its own instant). APScheduler 3.x reads ``datetime.now()`` directly in
``BaseScheduler._process_jobs`` and in its executors, so :class:`ClockedAsyncIOScheduler`
and its executor re-implement those two spots with the clock; everything else
(job store, jobs, events, listeners) is APScheduler's.

Several processes may share one database: each holds the schedules of the platforms it
serves and wakes at each firing, and the firing is recorded with a compare-and-set on
the scheduled instant (:meth:`ScheduleStore.claim_firings`), so exactly one of them runs
it; the others adopt the stored state (a schedule paused or removed elsewhere stops
firing here). Schedules created in another process are picked up at the next start.
"""

from __future__ import annotations

import asyncio
import heapq
import inspect
import itertools
import logging
import math
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from threading import TIMEOUT_MAX
from typing import TYPE_CHECKING, Any, Literal, Protocol
from zoneinfo import ZoneInfo

from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_EXECUTED,
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
    JobExecutionEvent,
    JobSubmissionEvent,
)
from apscheduler.executors.base import BaseExecutor, MaxInstancesReachedError
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.schedulers.base import STATE_RUNNING, BaseScheduler
from apscheduler.triggers.base import BaseTrigger
from sqlalchemy import bindparam, case, delete, or_, select, update

from bot.store import Database, StoreError, ThreadKey
from bot.store.sqlite_worker import transaction
from bot.store.tables import schedules, threads
from engine.errors import EngineError

from ._tz import get_zone, zone_key
from .spec import ScheduleSpec

if TYPE_CHECKING:
    from bot.app import App
    from bot.runs import ActiveRun

log = logging.getLogger("baton.scheduling")

__all__ = [
    "schedules",
    "ScheduleRow",
    "ScheduleStore",
    "SchedulerService",
    "SpecTrigger",
    "ClockedAsyncIOScheduler",
    "Clock",
    "SystemClock",
    "ControlledClock",
    "Overlap",
    "OVERLAP_POLICIES",
    "DEFAULT_MISFIRE_GRACE_S",
    "DEFAULT_MIN_INTERVAL_S",
    "format_when",
    "human_seconds",
]

Overlap = Literal["skip", "queue", "allow"]
OVERLAP_POLICIES: tuple[str, ...] = ("skip", "queue", "allow")
DEFAULT_MISFIRE_GRACE_S = 300
"""Seconds a firing may be late and still run (5 minutes; see the module doc)."""
DEFAULT_MIN_INTERVAL_S = 60.0
"""Default policy: no schedule may fire more often than once a minute."""
_MAX_INSTANCES = 1000  # overlap is decided by the service, not by APScheduler's instance count


def _utc(dt: datetime | str | None) -> datetime | None:
    """Everything stored is UTC; SQLite hands back naive datetimes (or, read raw, their text)."""
    if dt is None:
        return None
    if isinstance(dt, str):
        dt = datetime.fromisoformat(dt)
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def _unfired_at(instant: Any) -> Any:
    """SQL: the row's ``last_fired_at`` is unset or earlier than ``instant`` (a firing at
    ``instant`` is not recorded yet)."""
    last = schedules.c.last_fired_at
    return or_(last.is_(None), last < instant)


def _fired_forward(instant: Any) -> Any:
    """SQL value for ``last_fired_at``: ``instant`` unless the row already holds a later one
    (it never moves backwards; a process with a stale copy must not reopen a claimed firing)."""
    return case((_unfired_at(instant), instant), else_=schedules.c.last_fired_at)


@dataclass(frozen=True, slots=True)
class ScheduleRow:
    """A schedule as stored, with its thread's key.

    Attributes:
        id: the schedule id (also the APScheduler job id, as a string).
        key: the thread the schedule was created in; its runs and notices go there.
        created_by: the platform user id of the author.
        phrase: the schedule phrase as typed (``"every weekday at 9am run standup"``).
        workflow, kind, expression, start, timezone, description: the
            :class:`ScheduleSpec` fields (see :meth:`spec`).
        status: ``active`` | ``paused`` | ``finished``.
        created_at, last_fired_at, next_fire_at: aware UTC instants (or ``None``).
        overlap: ``skip`` | ``queue`` | ``allow``.
        misfire_grace_s: how late (seconds) a firing may be and still run.
    """

    id: int
    thread_id: int
    key: ThreadKey
    created_by: str
    phrase: str
    workflow: str
    kind: str
    expression: str
    start: str | None
    timezone: str
    description: str
    status: str
    created_at: datetime
    last_fired_at: datetime | None
    next_fire_at: datetime | None
    overlap: str
    misfire_grace_s: int

    def spec(self) -> ScheduleSpec:
        """Rebuild the :class:`ScheduleSpec` (raises ``ValueError`` if the stored fields are inconsistent)."""
        expr: str | int = int(self.expression) if self.kind == "interval" else self.expression
        return ScheduleSpec(
            kind=self.kind,  # type: ignore[arg-type]
            expression=expr,
            timezone=self.timezone,
            description=self.description,
            workflow=self.workflow,
            source=self.phrase,
            start=self.start,
        )


# -- clocks -------------------------------------------------------------------------------


class TimerHandle(Protocol):
    """What :meth:`Clock.call_later` returns."""

    def cancel(self) -> None: ...


class Clock(Protocol):
    """The scheduler's time source.

    ``now()`` is an aware datetime (UTC); ``call_later(delay_s, callback)`` calls the
    synchronous ``callback`` on the event loop once ``delay_s`` seconds of *this
    clock's* time have passed, and returns a handle with ``cancel()``.
    """

    def now(self) -> datetime: ...

    def call_later(self, delay: float, callback: Callable[[], Any]) -> TimerHandle: ...


class SystemClock:
    """Wall-clock time (``datetime.now(UTC)``); timers on the running loop's monotonic clock."""

    def now(self) -> datetime:
        """The current UTC time."""
        return datetime.now(UTC)

    def call_later(self, delay: float, callback: Callable[[], Any]) -> TimerHandle:
        """``loop.call_later`` on the running loop (must be called on the loop's thread)."""
        return asyncio.get_running_loop().call_later(max(0.0, delay), callback)


class _Timer:
    __slots__ = ("when", "callback", "cancelled")

    def __init__(self, when: datetime, callback: Callable[[], Any]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class ControlledClock:
    """A clock that moves only when told to (for tests).

    Timers registered with :meth:`call_later` fire during :meth:`advance` /
    :meth:`advance_to`, in time order, each with :meth:`now` set to its own due
    instant; after each one every *settle* hook (see :meth:`attach`) is awaited, so
    the scheduler finishes that firing before time moves on.

    Args:
        start: the initial time (aware; kept in UTC).

    Raises:
        ValueError: ``start`` is naive, or an advance would move time backwards.
    """

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("ControlledClock needs an aware start time")
        self._now = start.astimezone(UTC)
        self._timers: list[tuple[datetime, int, _Timer]] = []
        self._seq = itertools.count()
        self._settlers: list[Callable[[], Awaitable[None]]] = []

    def now(self) -> datetime:
        """The controlled current time (UTC)."""
        return self._now

    def call_later(self, delay: float, callback: Callable[[], Any]) -> TimerHandle:
        """Register ``callback`` to run when the clock reaches now + ``delay`` seconds."""
        timer = _Timer(self._now + timedelta(seconds=max(0.0, delay)), callback)
        heapq.heappush(self._timers, (timer.when, next(self._seq), timer))
        return timer

    def attach(self, settle: Callable[[], Awaitable[None]]) -> None:
        """Await ``settle()`` after every timer callback and after each advance."""
        self._settlers.append(settle)

    def detach(self, settle: Callable[[], Awaitable[None]]) -> None:
        """Undo :meth:`attach` (no error if it was not attached)."""
        if settle in self._settlers:
            self._settlers.remove(settle)

    async def advance(self, delta: timedelta | float) -> None:
        """Move time forward by ``delta`` (a timedelta or seconds), firing due timers."""
        step = delta if isinstance(delta, timedelta) else timedelta(seconds=delta)
        await self.advance_to(self._now + step)

    async def advance_to(self, when: datetime) -> None:
        """Move time forward to ``when`` (aware), firing every timer due on the way, in order."""
        target = when.astimezone(UTC)
        if target < self._now:
            raise ValueError(f"cannot move a clock back from {self._now} to {target}")
        await self._settle()
        while self._timers:
            due, _, timer = self._timers[0]
            if due > target:
                break
            heapq.heappop(self._timers)
            if timer.cancelled:
                continue
            self._now = max(self._now, due)
            timer.callback()
            await self._settle()
        self._now = target
        await self._settle()

    async def jump_to(self, when: datetime) -> None:
        """Move time to ``when`` at once, then fire the timers that came due, *late*
        (all see ``now() == when``): a suspended machine or a blocked event loop."""
        target = when.astimezone(UTC)
        if target < self._now:
            raise ValueError(f"cannot move a clock back from {self._now} to {target}")
        self._now = target
        await self.advance_to(target)

    async def _settle(self) -> None:
        for settle in list(self._settlers):
            await settle()


def format_when(dt: datetime, zone: str | None = None) -> str:
    """``"Mon 9 Mar 2026 09:00 EDT"`` — an instant as wall time in ``zone`` (IANA name;
    default: the datetime's own zone). Seconds are shown only when not zero."""
    if zone is not None:
        dt = dt.astimezone(get_zone(zone))
    clock = f"{dt:%H:%M:%S}" if dt.second else f"{dt:%H:%M}"
    return f"{dt:%a} {dt.day} {dt:%b %Y} {clock} {dt.tzname()}"


# -- APScheduler pieces ---------------------------------------------------------------------


class SpecTrigger(BaseTrigger):
    """An APScheduler 3.x trigger that fires exactly at :meth:`ScheduleSpec.next_fire_times`.

    ``get_next_fire_time(previous, now)``: the first firing strictly after
    ``previous`` (may lie before ``now``: that is how APScheduler sees misfires), or,
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


class _ClockedExecutor(BaseExecutor):
    """Runs coroutine jobs as tasks on the loop, checking misfires against the clock.

    Differs from APScheduler's ``AsyncIOExecutor``/``run_coroutine_job`` in three ways:
    lateness is measured with the injected clock; ``asyncio.CancelledError`` propagates
    (``run_coroutine_job`` catches ``BaseException``); the job function receives the
    scheduled instant as keyword ``scheduled_at``. Every task is kept in ``tasks``.
    """

    def __init__(self, clock: Clock, tasks: set[asyncio.Task[Any]]) -> None:
        super().__init__()
        self._clock = clock
        self._tasks = tasks

    def shutdown(self, wait: bool = True) -> None:
        for t in list(self._tasks):
            if t.get_name().startswith("schedule-job-") and not t.done():
                t.cancel()

    def _do_submit_job(self, job, run_times: list[datetime]) -> None:  # type: ignore[no-untyped-def]
        task = asyncio.get_running_loop().create_task(self._run(job, run_times), name=f"schedule-job-{job.id}")
        self._tasks.add(task)

        def done(t: asyncio.Task[list[Any]]) -> None:
            self._tasks.discard(t)
            if t.cancelled():
                self._run_job_success(job.id, [])  # releases the instance count, no events
            elif t.exception() is not None:
                self._run_job_error(job.id, t.exception(), t.exception().__traceback__)  # type: ignore[union-attr]
            else:
                self._run_job_success(job.id, t.result())

        task.add_done_callback(done)

    async def _run(self, job, run_times: list[datetime]) -> list[Any]:  # type: ignore[no-untyped-def]
        events: list[Any] = []
        for run_time in run_times:
            late = (self._clock.now() - run_time).total_seconds()
            if job.misfire_grace_time is not None and late > job.misfire_grace_time:
                log.warning("schedule job %s: firing at %s missed by %.1fs", job.id, run_time, late)
                events.append(JobExecutionEvent(EVENT_JOB_MISSED, job.id, job._jobstore_alias, run_time))
                continue
            try:
                retval = await job.func(*job.args, scheduled_at=run_time, **job.kwargs)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("schedule job %s failed", job.id)
                events.append(JobExecutionEvent(EVENT_JOB_ERROR, job.id, job._jobstore_alias, run_time, exception=exc))
            else:
                events.append(JobExecutionEvent(EVENT_JOB_EXECUTED, job.id, job._jobstore_alias, run_time, retval=retval))
        return events


class ClockedAsyncIOScheduler(AsyncIOScheduler):
    """APScheduler 3.x ``AsyncIOScheduler`` whose notion of time is a :class:`Clock`.

    Overrides (everything else is APScheduler's): ``_start_timer`` (the wakeup timer
    comes from the clock), ``_process_jobs`` (APScheduler 3.11's loop with ``now``
    from the clock, and coalescing through :meth:`SpecTrigger.latest_fire_time`
    instead of enumerating every missed firing), and ``shutdown`` (synchronous: the
    service always calls it on the loop's thread).

    Args:
        clock: the time source.
        **options: APScheduler options (``jobstores``, ``executors``, ``job_defaults``, ``timezone``).
    """

    def __init__(self, clock: Clock, **options: Any) -> None:
        self._clock = clock
        super().__init__(**options)

    def shutdown(self, wait: bool = False) -> None:
        """Stop now (no deferral through ``call_soon_threadsafe``)."""
        BaseScheduler.shutdown(self, wait)
        self._stop_timer()

    def _start_timer(self, wait_seconds: float | None) -> None:
        self._stop_timer()
        if wait_seconds is not None:
            self._timeout = self._clock.call_later(wait_seconds, self.wakeup)

    def _run_times(self, job, now: datetime) -> list[datetime]:  # type: ignore[no-untyped-def]
        if job.coalesce and isinstance(job.trigger, SpecTrigger):
            return [job.trigger.latest_fire_time(job.next_run_time, now)]
        run_times = job._get_run_times(now)
        return run_times[-1:] if run_times and job.coalesce else run_times

    def _process_jobs(self) -> float | None:
        if self.state != STATE_RUNNING:
            return None
        now = self._clock.now()
        next_wakeup_time: datetime | None = None
        events: list[Any] = []
        with self._jobstores_lock:
            for alias, store in self._jobstores.items():
                try:
                    due_jobs = store.get_due_jobs(now)
                except Exception as e:
                    self._logger.warning("Error getting due jobs from job store %r: %s", alias, e)
                    retry = now + timedelta(seconds=self.jobstore_retry_interval)
                    if next_wakeup_time is None or retry < next_wakeup_time:
                        next_wakeup_time = retry
                    continue
                for job in due_jobs:
                    try:
                        executor = self._lookup_executor(job.executor)
                    except KeyError:
                        self._logger.error("Executor lookup (%r) failed for job %r -- removing it", job.executor, job)
                        self.remove_job(job.id, alias)
                        continue
                    try:
                        run_times = self._run_times(job, now)
                    except Exception:
                        self._logger.exception("Computing the run times of job %r failed -- removing it", job)
                        self.remove_job(job.id, alias)
                        continue
                    if not run_times:
                        continue
                    try:
                        executor.submit_job(job, run_times)
                    except MaxInstancesReachedError:
                        self._logger.warning("Execution of job %r skipped: maximum number of running instances reached", job)
                        events.append(JobSubmissionEvent(EVENT_JOB_MAX_INSTANCES, job.id, alias, run_times))
                    except Exception:
                        self._logger.exception("Error submitting job %r to executor %r", job, job.executor)
                    nxt = job.trigger.get_next_fire_time(run_times[-1], now)
                    if nxt:
                        job._modify(next_run_time=nxt)
                        store.update_job(job)
                    else:
                        self.remove_job(job.id, alias)
                store_next = store.get_next_run_time()
                if store_next and (next_wakeup_time is None or store_next < next_wakeup_time):
                    next_wakeup_time = store_next
        for event in events:
            self._dispatch_event(event)
        if next_wakeup_time is None:
            return None
        wait = next_wakeup_time.timestamp() - self._clock.now().timestamp()
        return min(max(wait, 0.0), TIMEOUT_MAX)


# -- the table ------------------------------------------------------------------------------


_ROW_COLS = [c for c in schedules.c]


def _row(r: Any) -> ScheduleRow:
    return ScheduleRow(
        id=int(r["id"]),
        thread_id=int(r["thread_id"]),
        key=ThreadKey(r["platform"], r["channel"], r["thread"]),
        created_by=r["created_by"],
        phrase=r["phrase"],
        workflow=r["workflow"],
        kind=r["kind"],
        expression=r["expression"],
        start=r["start"],
        timezone=r["timezone"],
        description=r["description"],
        status=r["status"],
        created_at=_utc(r["created_at"]),  # type: ignore[arg-type]
        last_fired_at=_utc(r["last_fired_at"]),
        next_fire_at=_utc(r["next_fire_at"]),
        overlap=r["overlap"],
        misfire_grace_s=int(r["misfire_grace_s"]),
    )


class ScheduleStore:
    """The ``schedules`` table through SQLAlchemy Core (SQLite and PostgreSQL alike).

    Every method is one transaction; database failures raise :class:`StoreError`.
    """

    def __init__(self, db: Database) -> None:
        self.db = db

    def _select(self):  # type: ignore[no-untyped-def]
        return select(*_ROW_COLS, threads.c.platform, threads.c.channel, threads.c.thread).join(
            threads, threads.c.id == schedules.c.thread_id
        )

    async def insert(self, *, thread_id: int, created_by: str, spec: ScheduleSpec, created_at: datetime,
                     next_fire_at: datetime | None, overlap: str, misfire_grace_s: int) -> int:
        """Store a new active schedule; returns its id."""
        async with self.db.begin("storing a schedule") as conn:
            res = await conn.execute(
                schedules.insert().values(
                    thread_id=thread_id, created_by=created_by, phrase=spec.source, workflow=spec.workflow,
                    kind=spec.kind, expression=str(spec.expression), start=spec.start, timezone=spec.timezone,
                    description=spec.description, status="active", created_at=_utc(created_at), last_fired_at=None,
                    next_fire_at=_utc(next_fire_at), overlap=overlap, misfire_grace_s=int(misfire_grace_s),
                )
            )
            return int(res.inserted_primary_key[0])

    async def insert_many(self, rows: Iterable[dict[str, Any]]) -> None:
        """Bulk insert raw column dicts (benchmarks, imports); one transaction."""
        batch = list(rows)
        if not batch:
            return
        async with self.db.begin("storing schedules") as conn:
            await conn.execute(schedules.insert(), batch)

    async def get(self, schedule_id: int) -> ScheduleRow | None:
        """One schedule, or ``None``."""
        async with self.db.begin(f"reading schedule {schedule_id}") as conn:
            r = (await conn.execute(self._select().where(schedules.c.id == schedule_id))).mappings().first()
        return None if r is None else _row(r)

    async def list(self, *, platform: str | None = None, channel: str | None = None,
                   statuses: Iterable[str] | None = None) -> list[ScheduleRow]:
        """Schedules (optionally of one platform/channel and with given statuses), by id."""
        if self.db.dialect == "sqlite":
            return await self._sqlite_list(platform, channel, statuses)
        q = self._select().order_by(schedules.c.id)
        if platform is not None:
            q = q.where(threads.c.platform == platform)
        if channel is not None:
            q = q.where(threads.c.channel == channel)
        if statuses is not None:
            q = q.where(schedules.c.status.in_(tuple(statuses)))
        async with self.db.begin("listing schedules") as conn:
            rows = (await conn.execute(q)).mappings().all()
        return [_row(r) for r in rows]

    async def _sqlite_list(self, platform: str | None, channel: str | None,
                           statuses: Iterable[str] | None) -> list[ScheduleRow]:
        """The same query as raw SQL on the database's SQLite worker thread: reading
        10,000 rows through SQLAlchemy's async adapter costs about a second."""
        cols = ", ".join(f"s.{c.name}" for c in _ROW_COLS)
        sql = f"SELECT {cols}, t.platform, t.channel, t.thread FROM schedules s JOIN threads t ON t.id = s.thread_id"
        where, params = [], []
        if platform is not None:
            where.append("t.platform = ?")
            params.append(platform)
        if channel is not None:
            where.append("t.channel = ?")
            params.append(channel)
        if statuses is not None:
            st = tuple(statuses)
            where.append(f"s.status IN ({', '.join('?' * len(st))})")
            params.extend(st)
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY s.id"
        rows = await self.db.worker.call(lambda c: c.execute(sql, params).fetchall(), "listing schedules")
        names = [c.name for c in _ROW_COLS] + ["platform", "channel", "thread"]
        return [_row(dict(zip(names, r))) for r in rows]

    async def set_state(self, schedule_id: int, *, status: str, next_fire_at: datetime | None,
                        last_fired_at: datetime | None) -> bool:
        """Write one schedule's status and times (``last_fired_at`` only forward); False when there is no such row."""
        fired = _utc(last_fired_at)
        async with self.db.begin(f"updating schedule {schedule_id}") as conn:
            res = await conn.execute(
                update(schedules).where(schedules.c.id == schedule_id).values(
                    status=status,
                    next_fire_at=_utc(next_fire_at),
                    last_fired_at=schedules.c.last_fired_at if fired is None else _fired_forward(fired),
                )
            )
        return bool(res.rowcount)

    async def set_states(self, rows: Iterable[ScheduleRow]) -> None:
        """Write the status and times of many schedules in one transaction (group commit);
        ``last_fired_at`` only ever moves forward."""
        params = [
            {"b_id": r.id, "b_status": r.status, "b_next": _utc(r.next_fire_at), "b_last": _utc(r.last_fired_at)}
            for r in rows
        ]
        if not params:
            return
        stmt = update(schedules).where(schedules.c.id == bindparam("b_id")).values(
            status=bindparam("b_status"), next_fire_at=bindparam("b_next"), last_fired_at=_fired_forward(bindparam("b_last"))
        )
        async with self.db.begin("recording schedule firings") as conn:
            await conn.execute(stmt, params)

    async def claim_firings(self, rows: Iterable[ScheduleRow]) -> set[int]:
        """Record firings (``last_fired_at`` = the scheduled instant), each only if it is still
        unclaimed: a compare-and-set ``UPDATE … WHERE status = 'active' AND (last_fired_at IS NULL
        OR last_fired_at < :instant)``, all in one transaction. Returns the ids claimed here.

        Several processes sharing a database (PostgreSQL behind a load balancer, or two bots on
        one SQLite file) each hold the schedules in memory and wake at the same instant; only
        the first to record a firing runs it. A schedule paused, removed or finished by another
        process is not claimed either."""
        claimed: set[int] = set()
        rows = list(rows)
        if not rows:
            return claimed
        if self.db.dialect == "sqlite":  # one hop to the worker thread, not one per statement
            ts = schedules.c.last_fired_at.type.bind_processor(self.db.engine.dialect) or (lambda v: v)
            params = [(r.status, ts(_utc(r.next_fire_at)), ts(_utc(r.last_fired_at)), r.id, ts(_utc(r.last_fired_at))) for r in rows]

            def body(c: Any) -> set[int]:
                return {
                    p[3]
                    for p in params
                    if c.execute(
                        "UPDATE schedules SET status=?, next_fire_at=?, last_fired_at=? "
                        "WHERE id=? AND status='active' AND (last_fired_at IS NULL OR last_fired_at < ?)",
                        p,
                    ).rowcount
                }

            return await self.db.worker.call(lambda c: transaction(c, body), "recording schedule firings")
        async with self.db.begin("recording schedule firings") as conn:
            for r in rows:
                instant = _utc(r.last_fired_at)
                res = await conn.execute(
                    update(schedules)
                    .where(schedules.c.id == r.id, schedules.c.status == "active", _unfired_at(instant))
                    .values(status=r.status, next_fire_at=_utc(r.next_fire_at), last_fired_at=instant)
                )
                if res.rowcount:
                    claimed.add(r.id)
        return claimed

    async def delete(self, schedule_id: int) -> bool:
        """Delete a schedule; False when there was none."""
        async with self.db.begin(f"deleting schedule {schedule_id}") as conn:
            res = await conn.execute(delete(schedules).where(schedules.c.id == schedule_id))
        return bool(res.rowcount)


# -- the service ----------------------------------------------------------------------------


class _FireJob:
    """The APScheduler job function: ``await job(schedule_id, scheduled_at=...)`` → the
    service's firing. A callable object with a fixed ``__signature__`` (the protocol
    :func:`inspect.signature` honours) because APScheduler checks every job's arguments
    against its function's signature, and computing a bound method's signature anew
    for each of 10,000 jobs is most of the start-up time."""

    __slots__ = ("fire",)
    __signature__ = inspect.Signature([
        inspect.Parameter("schedule_id", inspect.Parameter.POSITIONAL_OR_KEYWORD),
        inspect.Parameter("scheduled_at", inspect.Parameter.KEYWORD_ONLY, default=None),
    ])

    def __init__(self, fire: Callable[..., Awaitable[None]]) -> None:
        self.fire = fire

    async def __call__(self, schedule_id: int, *, scheduled_at: datetime | None = None) -> None:
        await self.fire(schedule_id, scheduled_at=scheduled_at)


Action = Callable[[ScheduleRow, datetime], Awaitable[None]]
"""A firing's work: ``(schedule, scheduled instant in UTC)``. Default: compile and start a run."""


class SchedulerService:
    """Fires stored schedules in the threads they were created in.

    Args:
        app: the running :class:`bot.app.App` (uses ``db``, ``sessions``, ``bot``, ``manager``).
        clock: time source; :class:`SystemClock` by default, :class:`ControlledClock` in
            tests (the service attaches its :meth:`settle` to a clock that has ``attach``).
        default_tz: IANA zone for phrases that name none (used by the commands).
        min_interval_s: policy minimum between two firings, seconds (the commands refuse
            schedules that fire more often); default 60.
        misfire_grace_s: grace given to new schedules, seconds (see module doc); default 300.
        overlap: overlap policy given to new schedules: ``skip`` (default), ``queue``, ``allow``.
        platforms: fire only schedules of these platforms; default: the platforms
            ``app.manager`` has outlets for at :meth:`start` (a console-only process
            leaves Slack's alone), plus any passed to :meth:`add_platform`.
        action: replaces "compile the workflow and start a run" (benchmarks); the overlap
            policy only applies to runs, so it is not applied to a custom action.

    Raises:
        ValueError: an unknown overlap policy or time zone, or a negative limit.
    """

    def __init__(
        self,
        app: App,
        *,
        clock: Clock | None = None,
        default_tz: str = "UTC",
        min_interval_s: float = DEFAULT_MIN_INTERVAL_S,
        misfire_grace_s: int = DEFAULT_MISFIRE_GRACE_S,
        overlap: str = "skip",
        platforms: Iterable[str] | None = None,
        action: Action | None = None,
    ) -> None:
        if overlap not in OVERLAP_POLICIES:
            raise ValueError(f"overlap must be one of {OVERLAP_POLICIES}, not {overlap!r}")
        if min_interval_s < 0 or misfire_grace_s < 0:
            raise ValueError("min_interval_s and misfire_grace_s must be >= 0")
        key = zone_key(default_tz)
        if key is None:
            raise ValueError(f"unknown time zone {default_tz!r}")
        self.app = app
        self.clock: Clock = clock or SystemClock()
        self.default_tz = key
        self.min_interval_s = float(min_interval_s)
        self.misfire_grace_s = int(misfire_grace_s)
        self.overlap = overlap
        self._platforms_arg = set(platforms) if platforms is not None else None
        self.platforms: set[str] = set(self._platforms_arg or ())
        self.store = ScheduleStore(app.db)
        self._action = action
        self._rows: dict[int, ScheduleRow] = {}
        self._triggers: dict[int, SpecTrigger] = {}
        self._shared: dict[TriggerKey, SpecTrigger] = {}  # schedules with the same timing share a trigger
        self._locks: dict[int, asyncio.Lock] = {}
        self._runs: dict[int, ActiveRun] = {}
        self._skip_noted: dict[int, int] = {}
        self._waiters: dict[int, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._pending: dict[int, tuple[ScheduleRow, bool]] = {}  # id -> (state to write, a firing to claim?)
        self._pending_futs: list[tuple[int, asyncio.Future[bool]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._started = False
        self._job = _FireJob(self._fire)
        self.scheduler = ClockedAsyncIOScheduler(
            self.clock,
            executors={"default": _ClockedExecutor(self.clock, self._tasks)},
            job_defaults={"coalesce": True, "misfire_grace_time": self.misfire_grace_s, "max_instances": _MAX_INSTANCES},
            timezone=UTC,
        )
        self.scheduler.add_listener(self._on_event, EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES)

    # -- life cycle ---------------------------------------------------------------------

    async def start(self) -> int:
        """Load the active schedules of the served platforms into the scheduler and start it.

        Served platforms: the ``platforms`` argument, else those ``app.manager`` has an
        outlet for *now* (adapters that register their outlet later call
        :meth:`add_platform`). A schedule whose stored ``next_fire_at`` has passed is
        caught up on the first wakeup (coalesced; fired if within its grace time, else
        reported missed). Returns (once those catch-up firings have been recorded and
        their runs started) how many jobs were loaded.

        Raises:
            StoreError: the table could not be read (is migration 0003 applied?).
            RuntimeError: already started.
        """
        if self._started:
            raise RuntimeError("the scheduler service is already started")
        if self._platforms_arg is None:
            self.platforms |= set(self.app.manager.outlets)
        rows = await self.store.list(statuses=("active", "paused"))
        loaded = await self._load([r for r in rows if r.key.platform in self.platforms])
        attach = getattr(self.clock, "attach", None)
        if attach is not None:
            attach(self.settle)
        self.scheduler.start()
        self._started = True
        await self.settle()  # catch-up firings and missed notices are under way before start returns
        log.info("scheduler started with %d jobs", loaded)
        return loaded

    async def add_platform(self, platform: str) -> int:
        """Start firing the schedules of ``platform`` too (an adapter registered its outlet
        after :meth:`start`); returns how many jobs were added (0 if already served)."""
        if platform in self.platforms:
            return 0
        self.platforms.add(platform)
        if not self._started:
            return 0
        rows = await self.store.list(platform=platform, statuses=("active", "paused"))
        self.scheduler.pause()  # one wakeup after the bulk add, not one per job
        try:
            loaded = await self._load(rows)
        finally:
            self.scheduler.resume()
        await self.settle()
        return loaded

    async def _load(self, rows: list[ScheduleRow]) -> int:
        now = self.clock.now()
        fixes: list[ScheduleRow] = []
        loaded = 0
        for row in rows:
            if row.status != "active":
                self._rows[row.id] = row
                continue
            trigger = self._trigger_for(row.kind, row.expression, row.timezone, row.start)
            try:
                nxt = row.next_fire_at or trigger.get_next_fire_time(None, now)
            except ValueError as e:
                log.error("schedule #%s cannot be rebuilt (%s); it is not loaded", row.id, e)
                continue
            if nxt != row.next_fire_at:
                row = replace(row, next_fire_at=_utc(nxt), status="active" if nxt else "finished")
                fixes.append(row)
            self._rows[row.id] = row
            if nxt is not None:
                self._triggers[row.id] = trigger
                self._add_job(row, trigger, nxt)
                loaded += 1
        if fixes:
            await self.store.set_states(fixes)
        return loaded

    async def aclose(self) -> None:
        """Stop the scheduler and the service's tasks; pending writes are finished.

        Runs already started are the :class:`RunManager`'s (``App.aclose`` stops them).
        """
        detach = getattr(self.clock, "detach", None)
        if detach is not None:
            detach(self.settle)
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        tasks = [t for t in self._tasks if not t.done()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)
        self._started = False

    async def settle(self) -> None:
        """Wait until everything due at the clock's current time is processed: pending
        wakeups, firing tasks, missed-firing notices and their database writes. Runs the
        firings started are not waited for (``app.bot.drain()`` does that)."""
        quiet = 0
        while quiet < 2:
            for _ in range(3):
                await asyncio.sleep(0)
            busy = [t for t in self._tasks if not t.done() and not t.get_name().startswith("schedule-wait-")]
            if self._flusher is not None and not self._flusher.done():
                busy.append(self._flusher)
            if busy:
                quiet = 0
                await asyncio.wait(busy)
            else:
                quiet += 1

    # -- queries ------------------------------------------------------------------------

    async def get(self, schedule_id: int) -> ScheduleRow | None:
        """A schedule from the table (any status), or ``None``."""
        return await self.store.get(schedule_id)

    async def list(self, key: ThreadKey | None = None, *, everywhere: bool = False) -> list[ScheduleRow]:
        """Active and paused schedules of ``key``'s channel (all threads in it), or of
        every channel and platform when ``everywhere``."""
        if everywhere or key is None:
            return await self.store.list(statuses=("active", "paused"))
        return await self.store.list(platform=key.platform, channel=key.channel, statuses=("active", "paused"))

    def upcoming(self, row: ScheduleRow, n: int = 3) -> list[datetime]:
        """The next ``n`` firings of ``row`` from its ``next_fire_at`` on (none if not active)."""
        if row.status != "active" or row.next_fire_at is None:
            return []
        spec = row.spec()
        first = row.next_fire_at.astimezone(self._zone(spec))
        return [first] + spec.next_fire_times(row.next_fire_at, n - 1) if n > 0 else []

    def job_ids(self) -> dict[int, datetime | None]:
        """Scheduler jobs as ``{schedule id: next_run_time in UTC}`` (to compare with the table).

        UTC because ``==`` between aware datetimes of different zones is always False
        for a wall time that occurs twice (PEP 495)."""
        return {int(j.id): _utc(j.next_run_time) for j in self.scheduler.get_jobs()}

    @staticmethod
    def _zone(spec: ScheduleSpec) -> ZoneInfo:
        return get_zone(spec.timezone)

    # -- commands -------------------------------------------------------------------------

    async def add(self, key: ThreadKey, created_by: str, spec: ScheduleSpec, *, overlap: str | None = None,
                  misfire_grace_s: int | None = None) -> ScheduleRow:
        """Store and schedule ``spec`` in thread ``key``; returns the stored row.

        Policy checks (minimum interval, workflow, permissions) are the caller's
        (:func:`bot.scheduling.commands.handle_schedule_command`).

        Raises:
            ValueError: the schedule has no firing after now, or a bad overlap policy.
            StoreError: the database failed (nothing was scheduled).
        """
        overlap = overlap or self.overlap
        if overlap not in OVERLAP_POLICIES:
            raise ValueError(f"overlap must be one of {', '.join(OVERLAP_POLICIES)}, not {overlap!r}")
        grace = self.misfire_grace_s if misfire_grace_s is None else int(misfire_grace_s)
        now = self.clock.now()
        trigger = self._trigger_for(spec.kind, spec.expression, spec.timezone, spec.start, spec)
        nxt = trigger.get_next_fire_time(None, now)
        if nxt is None:
            raise ValueError("this schedule never fires after now")
        await self._serve_if_outlet(key.platform)
        thread_id = await self.app.sessions.thread_id(key)
        sid = await self.store.insert(thread_id=thread_id, created_by=created_by, spec=spec, created_at=now,
                                      next_fire_at=nxt, overlap=overlap, misfire_grace_s=grace)
        row = ScheduleRow(sid, thread_id, ThreadKey(*key), created_by, spec.source, spec.workflow, spec.kind,
                          str(spec.expression), spec.start, spec.timezone, spec.description, "active",
                          _utc(now), None, _utc(nxt), overlap, grace)  # type: ignore[arg-type]
        async with self._lock(sid):
            self._rows[sid] = row
            if key.platform in self.platforms:
                self._triggers[sid] = trigger
                self._add_job(row, trigger, nxt)
        return row

    async def pause(self, schedule_id: int) -> tuple[ScheduleRow, bool]:
        """Pause a schedule: no firing until :meth:`resume`. Returns ``(row, changed)``.

        Raises:
            LookupError: no such schedule (or it has finished).
            StoreError: the database failed (nothing changed).
        """
        async with self._lock(schedule_id):
            row = await self._current(schedule_id)
            if row.status == "paused":
                return row, False
            new = replace(row, status="paused", next_fire_at=None)
            await self._write(new)
            self._remove_job(schedule_id)
            return new, True

    async def resume(self, schedule_id: int) -> tuple[ScheduleRow, bool]:
        """Resume a paused schedule from now on (firings due while paused are not caught
        up). Returns ``(row, changed)``; a schedule with no firing left becomes ``finished``.

        Raises:
            LookupError: no such schedule (or it has finished).
            StoreError: the database failed (nothing changed).
        """
        row = await self._current(schedule_id)
        await self._serve_if_outlet(row.key.platform)
        async with self._lock(schedule_id):
            row = await self._current(schedule_id)
            if row.status == "active":
                return row, False
            trigger = self._trigger_for(row.kind, row.expression, row.timezone, row.start)
            nxt = trigger.get_next_fire_time(None, self.clock.now())
            new = replace(row, status="active" if nxt else "finished", next_fire_at=nxt)
            await self._write(new)
            if nxt is not None and row.key.platform in self.platforms:
                self._triggers[schedule_id] = trigger
                self._add_job(new, trigger, nxt)
            return new, True

    async def remove(self, schedule_id: int) -> ScheduleRow:
        """Delete a schedule (runs it started are kept). Returns the row as it was.

        Raises:
            LookupError: no such schedule.
            StoreError: the database failed (nothing changed).
        """
        async with self._lock(schedule_id):
            row = self._rows.get(schedule_id) or await self.store.get(schedule_id)
            if row is None:
                raise LookupError(f"no schedule #{schedule_id}")
            if not await self.store.delete(schedule_id):
                raise LookupError(f"no schedule #{schedule_id}")
            self._remove_job(schedule_id)
            self._rows.pop(schedule_id, None)
            self._triggers.pop(schedule_id, None)
            waiter = self._waiters.pop(schedule_id, None)
            if waiter is not None:
                waiter.cancel()
            return row

    async def _serve_if_outlet(self, platform: str) -> None:
        """A command arrived from a platform whose outlet was registered after start:
        serve it (unless ``platforms`` was fixed by the caller)."""
        if self._started and self._platforms_arg is None and platform not in self.platforms \
                and platform in self.app.manager.outlets:
            await self.add_platform(platform)

    async def _current(self, schedule_id: int) -> ScheduleRow:
        row = self._rows.get(schedule_id) or await self.store.get(schedule_id)
        if row is None or row.status == "finished":
            raise LookupError(f"no schedule #{schedule_id}" if row is None else f"schedule #{schedule_id} has finished")
        return row

    async def _write(self, row: ScheduleRow) -> None:
        if not await self.store.set_state(row.id, status=row.status, next_fire_at=row.next_fire_at,
                                          last_fired_at=row.last_fired_at):
            raise LookupError(f"no schedule #{row.id}")
        self._rows[row.id] = row

    # -- scheduler plumbing -----------------------------------------------------------------

    def _trigger_for(self, kind: str, expression: str | int, timezone: str, start: str | None,
                     spec: ScheduleSpec | None = None) -> SpecTrigger:
        key = _timing_key(kind, expression, timezone, start)
        trigger = self._shared.get(key)
        if trigger is None:
            trigger = self._shared[key] = SpecTrigger(spec if spec is not None else (lambda: _timing_spec(key)))
        return trigger

    def _lock(self, schedule_id: int) -> asyncio.Lock:
        lock = self._locks.get(schedule_id)
        if lock is None:
            lock = self._locks[schedule_id] = asyncio.Lock()
        return lock

    def _add_job(self, row: ScheduleRow, trigger: SpecTrigger, next_run_time: datetime) -> None:
        self.scheduler.add_job(
            self._job,
            trigger=trigger,
            args=(row.id,),
            id=str(row.id),
            name=f"schedule #{row.id}",
            next_run_time=next_run_time,
            misfire_grace_time=row.misfire_grace_s,
            coalesce=True,
            max_instances=_MAX_INSTANCES,
            replace_existing=True,
        )

    def _remove_job(self, schedule_id: int) -> None:
        try:
            self.scheduler.remove_job(str(schedule_id))
        except JobLookupError:
            pass  # a one-off that already fired, or a platform not served here

    def _spawn(self, coro: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._reap)
        return task

    def _reap(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s failed", task.get_name(), exc_info=task.exception())

    def _on_event(self, event: Any) -> None:
        if event.code == EVENT_JOB_MISSED:
            self._spawn(self._missed(int(event.job_id), event.scheduled_run_time), f"schedule-missed-{event.job_id}")
        elif event.code == EVENT_JOB_MAX_INSTANCES:
            log.warning("schedule #%s: firing skipped, too many firings in progress", event.job_id)

    async def _persist(self, row: ScheduleRow, *, claim: bool = False) -> bool:
        """Write ``row``'s state; concurrent writes share a transaction. With ``claim`` (a
        firing) the write is :meth:`ScheduleStore.claim_firings`'s compare-and-set: returns
        False when the firing was not claimed here (nothing was written)."""
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        fut.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved even if the caller is gone
        self._pending[row.id] = (row, claim)
        self._pending_futs.append((row.id, fut))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="schedule-flush")
        return await asyncio.shield(fut)

    async def _flush(self) -> None:
        while self._pending:
            await asyncio.sleep(0)  # let firings due at the same instant join this batch
            batch, futs = self._pending, self._pending_futs
            self._pending, self._pending_futs = {}, []
            try:
                await self.store.set_states(r for r, claim in batch.values() if not claim)
                claimed = await self.store.claim_firings(r for r, claim in batch.values() if claim)
            except asyncio.CancelledError:
                for _, f in futs:
                    f.cancel()
                raise
            except Exception as e:
                for _, f in futs:
                    if not f.done():
                        f.set_exception(e)
            else:
                for rid, f in futs:
                    if not f.done():
                        f.set_result(rid in claimed or not batch[rid][1])

    async def _fire(self, schedule_id: int, *, scheduled_at: datetime | None = None) -> None:
        """The job function: record the firing, then start its run (overlap policy applies)."""
        async with self._lock(schedule_id):
            row = self._rows.get(schedule_id)
            if row is None or row.status != "active" or scheduled_at is None:
                return
            scheduled_at = scheduled_at.astimezone(UTC)
            trigger = self._triggers[schedule_id]
            nxt = trigger.get_next_fire_time(scheduled_at, self.clock.now())
            new = replace(row, last_fired_at=_utc(scheduled_at), next_fire_at=_utc(nxt),
                          status="active" if nxt else "finished")
            try:
                claimed = await self._persist(new, claim=True)
            except StoreError as e:
                log.error("schedule #%s: recording the firing failed: %s", schedule_id, e)
                await self._say(row.key, f"Schedule #{schedule_id} did not run at {format_when(scheduled_at, row.timezone)}: "
                                         f"the database failed ({e}).")
                return
            if not claimed:  # another process fired this instant, or paused/removed the schedule there
                await self._taken(schedule_id, scheduled_at)
                return
            self._rows[schedule_id] = new
            await self._dispatch(new, scheduled_at)

    async def _taken(self, schedule_id: int, scheduled_at: datetime) -> None:
        """A firing claimed elsewhere: not run here; this process adopts the stored state."""
        log.info("schedule #%s: the %s firing was taken by another process (or the schedule changed there)",
                 schedule_id, scheduled_at.isoformat())
        try:
            stored = await self.store.get(schedule_id)
        except StoreError as e:
            log.error("schedule #%s: reading it back failed: %s", schedule_id, e)
            return
        if stored is None:
            self._rows.pop(schedule_id, None)
        else:
            self._rows[schedule_id] = stored
        if stored is None or stored.status != "active":
            self._remove_job(schedule_id)

    async def _dispatch(self, row: ScheduleRow, scheduled_at: datetime) -> None:
        if self._action is not None:
            await self._action(row, scheduled_at)
            return
        prev = self._runs.get(row.id)
        busy = prev is not None and not prev.task.done()
        if busy and row.overlap == "skip":
            assert prev is not None
            log.info("schedule #%s: skipped %s, run #%s still running", row.id, scheduled_at, prev.id)
            if self._skip_noted.get(row.id) != prev.id:
                self._skip_noted[row.id] = prev.id
                await self._say(row.key, f"Schedule #{row.id} skipped its {format_when(scheduled_at, row.timezone)} firing: "
                                         f"run #{prev.id} from its previous firing is still running (overlap policy: skip).")
            return
        if busy and row.overlap == "queue":
            assert prev is not None
            waiter = self._waiters.get(row.id)
            if waiter is not None and not waiter.done():
                log.info("schedule #%s: firing at %s coalesced into the one already waiting", row.id, scheduled_at)
                return
            self._waiters[row.id] = self._spawn(self._after(prev, row.id, scheduled_at), f"schedule-wait-{row.id}")
            return
        await self._launch(row)

    async def _after(self, prev: ActiveRun, schedule_id: int, scheduled_at: datetime) -> None:
        await asyncio.gather(prev.task, return_exceptions=True)
        async with self._lock(schedule_id):
            row = self._rows.get(schedule_id)
            if row is not None and row.status in ("active", "finished"):
                await self._launch(row)

    async def _launch(self, row: ScheduleRow) -> None:
        try:
            graph = self.app.bot.compile(row.workflow)
        except EngineError as e:
            await self._say(row.key, f"Schedule #{row.id} did not run {row.workflow!r}: {e}")
            return
        active = await self.app.manager.start(
            row.key, graph, requested_by=f"schedule #{row.id}", fired_by=f"Fired by schedule #{row.id}: {row.description}"
        )
        self._runs[row.id] = active

    async def _missed(self, schedule_id: int, scheduled_at: datetime) -> None:
        """A firing later than its grace time: not run; the thread is told, the table advanced."""
        async with self._lock(schedule_id):
            row = self._rows.get(schedule_id)
            if row is None or row.status != "active":
                return
            trigger = self._triggers[schedule_id]
            now = self.clock.now()
            since = row.next_fire_at or scheduled_at
            n = trigger.count_between(since, scheduled_at)
            nxt = trigger.get_next_fire_time(scheduled_at, now)
            new = replace(row, next_fire_at=_utc(nxt), status="active" if nxt else "finished")
            await self._persist(new)
            self._rows[schedule_id] = new
            tz = row.timezone
            if n > 1:
                what = f"missed {n if n < 1000 else 'over 1000'} firings, from {format_when(since, tz)} to {format_when(scheduled_at, tz)}"
            else:
                what = f"missed its {format_when(scheduled_at, tz)} firing"
            late = _human(max(0.0, (now - scheduled_at).total_seconds()))
            text = (f"Schedule #{row.id} ({row.description}) {what}: the bot was not running or was too busy. "
                    f"The latest was {late} late, beyond the {_human(row.misfire_grace_s)} grace time, so "
                    f"{row.workflow!r} was not run. "
                    + (f"Next firing: {format_when(nxt, tz)}." if nxt else "It has no firing left."))
            await self._say(row.key, text)

    async def _say(self, key: ThreadKey, text: str) -> None:
        """Post ``text`` in thread ``key`` (stored through ``bot.reply``); failures are logged."""
        outlet = self.app.manager.outlets.get(key.platform)
        try:
            if outlet is not None:
                await self.app.bot.reply(key, outlet, text)
            else:
                await self.app.sessions.append(key, "assistant", "baton", text)
        except StoreError as e:
            log.error("posting a schedule notice failed: %s", e)


def _human(seconds: float) -> str:
    """``90`` → ``"1 minute 30 seconds"``-style duration (largest two units)."""
    s = int(round(seconds))
    if s < 60:
        return f"{s} second{'s' if s != 1 else ''}"
    parts = []
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        if s >= size:
            n, s = divmod(s, size)
            parts.append(f"{n} {unit}{'s' if n != 1 else ''}")
    return " ".join(parts[:2])


def human_seconds(seconds: float) -> str:
    """A duration in words (``60`` → ``"1 minute"``, ``30`` → ``"30 seconds"``; ``inf`` → ``"never"``)."""
    if math.isinf(seconds):
        return "never"
    return _human(seconds)
