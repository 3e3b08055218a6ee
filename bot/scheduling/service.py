"""The scheduler service: schedules stored in SQL, fired by our timer on the event loop.

Source of truth: the ``schedules`` table (migration 0003; :mod:`bot.scheduling.store`),
written through the async database layer. The timer (:mod:`bot.scheduling.timer`) only
holds an in-memory copy: at :meth:`SchedulerService.start` every active schedule of the
platforms this process serves becomes one timer job. Every command changes the table
first and the timer second, under the schedule's lock, so the two agree after
each command, each firing and each restart.

Triggers: :class:`SpecTrigger` delegates ``get_next_fire_time`` to
:meth:`ScheduleSpec.next_fire_times`, so a job fires exactly when the parser says
(crontab weekday numbering with Sunday = 0, RRULE expansion, and the RFC 5545 §3.3.5
daylight-saving rule).

Per job, on purpose:

* coalesced — however many firings were missed (the process was down, the
  machine slept, the loop stalled), a schedule runs at most once to catch up: ten
  stand-up reports in a row help nobody.
* a grace time = the row's ``misfire_grace_s`` (default
  :data:`DEFAULT_MISFIRE_GRACE_S`, 5 minutes): the latest missed firing still runs
  if it is at most that late; later than that it is *not* run, and the thread is
  told it was missed (a 09:00 report at 15:00 is noise; silence would hide the outage).
* no instance limit in the timer: the overlap policy (below) decides, because a
  firing only *starts* a run; the run outlives the firing.

Catch-up after downtime falls out of the same rules: the timer job is rebuilt with the
stored ``next_fire_at``; if that is in the past, the first wakeup coalesces all
missed firings into the latest one and either fires it (within grace) or reports
it missed.

Overlap policy (per schedule; ``skip`` by default) when a firing is due while the
run started by the schedule's previous firing is still running: ``skip`` (do not
run; the thread is told once per blocking run), ``queue`` (run when it finishes; at
most one firing waits, later ones coalesce into it), ``allow`` (run alongside).

Time: all instants are aware UTC in the database. The service reads time from a
:class:`~bot.scheduling.timer.Clock`; :class:`~bot.scheduling.timer.SystemClock` in
production, :class:`bot.scheduling.testing.ControlledClock` in tests (time moves only
when the test advances it, and every timer due on the way fires at its own instant).

Several processes may share one database: each holds the schedules of the platforms it
serves and wakes at each firing, and the firing is recorded with a compare-and-set on
the scheduled instant (:meth:`ScheduleStore.claim_firings`), so exactly one of them runs
it; the others adopt the stored state (a schedule paused or removed elsewhere stops
firing here). Schedules created in another process are picked up at the next start.

Admission: once the App wires its run queue (:meth:`SchedulerService.use_admission`), a
claimed firing goes through the same :meth:`bot.queue.Admission.admit` path as chat
(:mod:`bot.scheduling.firing`): ``[permissions]`` are checked again for the schedule's
author, ``busy_policy`` applies, and the run is queued like any other (``fired_by``).

Tasks: firings, waiting ``queue`` firings and the batched writer are started through a
:class:`bot.tasks.TaskOwner` (the App's), so failures are logged and ``App.aclose``
cancels and awaits whatever :meth:`SchedulerService.aclose` left.
"""


from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol
from zoneinfo import ZoneInfo

from bot.core import ThreadKey
from bot.store import StoreError
from bot.tasks import TaskOwner
from engine.errors import EngineError

from ._tz import get_zone, zone_key
from .firing import FiringAdmission, RunQueue
from .spec import ScheduleSpec
from .store import DEFAULT_MIN_INTERVAL_S, DEFAULT_MISFIRE_GRACE_S, OVERLAP_POLICIES, ScheduleRow, ScheduleStore, _utc
from .timer import Clock, FiringTimer, SystemClock
from .triggers import SpecTrigger, TriggerKey, _timing_key, _timing_spec, format_when

if TYPE_CHECKING:
    from bot.app import App
    from bot.queue.admission import Admission
    from bot.store.audit import AuditStore
    from bot.runs import RunManager
    from bot.store import Database, SessionStore
    from engine.graph import Graph

log = logging.getLogger("baton.scheduling")

__all__ = ["Launch", "SchedulerService", "Started", "human_seconds"]


class Started(Protocol):
    """What a firing started: a run (its ``id``) and the ``task`` that ends with it."""

    @property
    def id(self) -> int: ...

    @property
    def task(self) -> asyncio.Future[Any]: ...


Launch = Callable[[ScheduleRow, datetime], Awaitable["Started | None"]]
"""A firing's work: ``(schedule, scheduled instant in UTC)`` → what it started (``None``: nothing
that outlives the call). Default (:meth:`SchedulerService.start_run`): compile the workflow and
start a run. The overlap policy applies to whatever a launch returns."""


class SchedulerService:
    """Fires stored schedules in the threads they were created in.

    Args:
        db, sessions: the database and the session store (threads, notices).
        manager: starts the runs and knows the outlets (where notices go).
        compile: workflow text → graph (:meth:`bot.compiler.WorkflowCompiler.compile`).
        clock: time source; :class:`SystemClock` by default, :class:`ControlledClock` in
            tests (the service attaches its :meth:`settle` to a clock that has ``attach``).
        default_tz: IANA zone for phrases that name none (used by the commands).
        min_interval_s: policy minimum between two firings, seconds (the commands refuse
            schedules that fire more often); default 60.
        misfire_grace_s: grace given to new schedules, seconds (see module doc); default 300.
        overlap: overlap policy given to new schedules: ``skip`` (default), ``queue``, ``allow``.
        platforms: fire only schedules of these platforms; default: the platforms
            ``manager`` has outlets for at :meth:`start` (a console-only process
            leaves Slack's alone), plus any passed to :meth:`add_platform`.
        launch: what a firing does (:data:`Launch`); default :meth:`start_run`. The overlap
            policy applies to what it returns, whatever the launch.
        tasks: the owner the service starts its tasks through (the App's); default: its own.

    Raises:
        ValueError: an unknown overlap policy or time zone, or a negative limit.
    """

    def __init__(
        self,
        db: Database,
        sessions: SessionStore,
        manager: RunManager,
        compile: Callable[[str], Graph],
        *,
        clock: Clock | None = None,
        default_tz: str = "UTC",
        min_interval_s: float = DEFAULT_MIN_INTERVAL_S,
        misfire_grace_s: int = DEFAULT_MISFIRE_GRACE_S,
        overlap: str = "skip",
        platforms: Iterable[str] | None = None,
        launch: Launch | None = None,
        tasks: TaskOwner | None = None,
    ) -> None:
        if overlap not in OVERLAP_POLICIES:
            raise ValueError(f"overlap must be one of {OVERLAP_POLICIES}, not {overlap!r}")
        if min_interval_s < 0 or misfire_grace_s < 0:
            raise ValueError("min_interval_s and misfire_grace_s must be >= 0")
        key = zone_key(default_tz)
        if key is None:
            raise ValueError(f"unknown time zone {default_tz!r}")
        self.db = db
        self.sessions = sessions
        self.manager = manager
        self._compile = compile
        self.clock: Clock = clock or SystemClock()
        self.default_tz = key
        self.min_interval_s = float(min_interval_s)
        self.misfire_grace_s = int(misfire_grace_s)
        self.overlap = overlap
        self._platforms_arg = set(platforms) if platforms is not None else None
        self.platforms: set[str] = set(self._platforms_arg or ())
        self.store = ScheduleStore(db)
        self._launch_fn: Launch = launch or self.start_run
        self.tasks = tasks or TaskOwner("scheduler", logger=log)
        self.firings: FiringAdmission | None = None
        self._rows: dict[int, ScheduleRow] = {}
        self._triggers: dict[int, SpecTrigger] = {}
        self._shared: dict[TriggerKey, SpecTrigger] = {}  # schedules with the same timing share a trigger
        self._locks: dict[int, asyncio.Lock] = {}
        self._runs: dict[int, Started] = {}
        self._skip_noted: dict[int, int] = {}
        self._waiters: dict[int, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._pending: dict[int, tuple[ScheduleRow, bool]] = {}  # id -> (state to write, a firing to claim?)
        self._pending_futs: list[tuple[int, asyncio.Future[bool]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._started = False
        self.timer = FiringTimer(self.clock, self._fire, self._missed, self._spawn)

    @classmethod
    def for_app(cls, app: App, **options: Any) -> SchedulerService:
        """A service over a running app's database, stores, run manager, compiler, task owner
        and (when wired) admission and run queue."""
        options.setdefault("tasks", app.tasks)
        svc = cls(app.db, app.sessions, app.manager, app.bot.compile, **options)
        if app.admission is not None and app.bot.queue is not None:
            svc.use_admission(app.admission, app.bot.queue, app.bot.audit)
        return svc

    def use_admission(self, admission: Admission, queue: RunQueue, audit: AuditStore | None = None) -> None:
        """Fire through ``admission`` (permissions re-checked, ``busy_policy``, a queued run
        that ``queue`` executes; refusals recorded in ``audit``) instead of starting runs directly."""
        self.firings = FiringAdmission(admission, queue, audit, self._say, self._spawn)

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
            self.platforms |= set(self.manager.outlets)
        rows = await self.store.list(statuses=("active", "paused"))
        loaded = await self._load([r for r in rows if r.key.platform in self.platforms])
        attach = getattr(self.clock, "attach", None)
        if attach is not None:
            attach(self.settle)
        self.timer.start()
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
        self.timer.pause()  # one wakeup after the bulk add, not one per job
        try:
            loaded = await self._load(rows)
        finally:
            self.timer.resume()
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
        self.timer.shutdown()
        tasks = [t for t in self._tasks if not t.done() and t is not self._flusher]
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
            busy = [t for t in self._tasks if not t.done() and not t.get_name().startswith(("schedule-wait-", "schedule-watch-"))]
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
        """Timer jobs as ``{schedule id: next firing in UTC}`` (to compare with the table).

        UTC because ``==`` between aware datetimes of different zones is always False
        for a wall time that occurs twice (PEP 495)."""
        return {i: _utc(t) for i, t in self.timer.jobs().items()}  # type: ignore[misc]

    @staticmethod
    def _zone(spec: ScheduleSpec) -> ZoneInfo:
        return get_zone(spec.timezone)

    # -- commands -------------------------------------------------------------------------

    async def add(self, key: ThreadKey, created_by: str, spec: ScheduleSpec, *, overlap: str | None = None,
                  misfire_grace_s: int | None = None, roles: Sequence[str] = ()) -> ScheduleRow:
        """Store and schedule ``spec`` in thread ``key``; returns the stored row. ``roles``: the
        author's (each firing re-checks ``[permissions]`` for ``created_by`` with them).

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
        thread_id = await self.sessions.thread_id(key)
        sid = await self.store.insert(thread_id=thread_id, created_by=created_by, spec=spec, created_at=now,
                                      next_fire_at=nxt, overlap=overlap, misfire_grace_s=grace, roles=roles)
        row = ScheduleRow(sid, thread_id, ThreadKey(*key), created_by, spec.source, spec.workflow, spec.kind,
                          str(spec.expression), spec.start, spec.timezone, spec.description, "active",
                          _utc(now), None, _utc(nxt), overlap, grace, tuple(roles))  # type: ignore[arg-type]
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
                and platform in self.manager.outlets:
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
        self.timer.add(row.id, trigger, next_run_time, grace_s=row.misfire_grace_s)

    def _remove_job(self, schedule_id: int) -> None:
        self.timer.remove(schedule_id)  # False for a one-off that already fired, or a platform not served here

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Start ``coro`` through the task owner (it logs a failure); kept here too, for :meth:`settle`."""
        task = self.tasks.start(coro, name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _persist(self, row: ScheduleRow, *, claim: bool = False) -> bool:
        """Write ``row``'s state; concurrent writes share a transaction. With ``claim`` (a
        firing) the write is :meth:`ScheduleStore.claim_firings`'s compare-and-set: returns
        False when the firing was not claimed here (nothing was written)."""
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        fut.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved even if the caller is gone
        self._pending[row.id] = (row, claim)
        self._pending_futs.append((row.id, fut))
        if self._flusher is None or self._flusher.done():
            self._flusher = self._spawn(self._flush(), "schedule-flush")
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

    async def _fire(self, schedule_id: int, scheduled_at: datetime | None = None) -> None:
        """A firing from the timer: record it, then start its run (overlap policy applies)."""
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
        await self._launch(row, scheduled_at)

    async def _after(self, prev: Started, schedule_id: int, scheduled_at: datetime) -> None:
        await asyncio.gather(prev.task, return_exceptions=True)
        async with self._lock(schedule_id):
            row = self._rows.get(schedule_id)
            if row is not None and row.status in ("active", "finished"):
                await self._launch(row, scheduled_at)

    async def _launch(self, row: ScheduleRow, scheduled_at: datetime) -> None:
        started = await self._launch_fn(row, scheduled_at)
        if started is not None:
            self._runs[row.id] = started

    async def start_run(self, row: ScheduleRow, scheduled_at: datetime) -> Started | None:
        """The default :data:`Launch`: compile ``row``'s workflow and queue a run in its thread
        through admission (:mod:`bot.scheduling.firing`; without it wired, start one directly).
        ``None`` after telling the thread why nothing runs (the workflow no longer compiles, a
        permission or the busy policy refused it, the database failed)."""
        try:
            graph = self._compile(row.workflow)
        except EngineError as e:
            await self._say(row.key, f"Schedule #{row.id} did not run {row.workflow!r}: {e}")
            return None
        if self.firings is not None:
            try:
                return await self.firings.fire(row, scheduled_at, graph)
            except StoreError as e:
                log.error("schedule #%s: queueing its run failed: %s", row.id, e)
                await self._say(row.key, f"Schedule #{row.id} did not run at {format_when(scheduled_at, row.timezone)}: "
                                         f"the database failed ({e}).")
                return None
        return await self.manager.start(
            row.key, graph, requested_by=f"schedule #{row.id}", fired_by=f"Fired by schedule #{row.id}: {row.description}"
        )

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
        """Store ``text`` in thread ``key``'s memory, then post it; database failures are logged."""
        outlet = self.manager.outlets.get(key.platform)
        try:
            await self.sessions.append(key, "assistant", "baton", text)
            if outlet is not None:
                await outlet.send(key, text)
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
