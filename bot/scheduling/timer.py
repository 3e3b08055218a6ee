"""The scheduler's timer: one wakeup on the event loop for the earliest due firing.

A small timer of our own, built on the triggers' next-firing times (it replaces
APScheduler 3.x, whose clock could only be injected by copying its private
``_process_jobs`` loop). What it does, per schedule ("job"):

* holds the next firing instant; one :meth:`Clock.call_later` wakeup is armed for
  the earliest of them (a heap ordered by instant, then schedule id);
* at a wakeup, every job due at the clock's ``now`` is handled in that order: its
  missed firings are **coalesced** into the latest one
  (:meth:`SpecTrigger.latest_fire_time`), which is handed to ``fire`` when it is at
  most the job's ``grace_s`` late, else to ``missed``; then the job moves to the
  trigger's next firing after that one (or is dropped when none is left);
* each hand-over runs in its own task, started through ``spawn`` (the owner keeps,
  awaits and cancels them); ``asyncio.CancelledError`` is never swallowed.

Changes (:meth:`add`, :meth:`remove`, :meth:`resume`) re-arm the wakeup on the next
loop iteration, so a bulk load costs one wakeup, not one per job.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from .triggers import SpecTrigger

log = logging.getLogger("baton.scheduling")

__all__ = ["Clock", "FiringTimer", "SystemClock", "TimerHandle"]


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


@dataclass(slots=True)
class _Job:
    trigger: SpecTrigger
    next_run_time: datetime
    grace_s: float
    version: int


Handover = Callable[[int, datetime], Awaitable[None]]
"""``(schedule id, scheduled instant)`` → the firing's work (``fire``) or notice (``missed``)."""


class FiringTimer:
    """Fires jobs at their triggers' instants (see the module doc).

    Args:
        clock: the time source (its ``call_later`` arms the wakeup).
        fire: called (in a task) with a firing at most ``grace_s`` late.
        missed: called (in a task) with a firing later than that.
        spawn: starts a coroutine as a task its owner keeps (``spawn(coro, name)``).
    """

    def __init__(
        self,
        clock: Clock,
        fire: Handover,
        missed: Handover,
        spawn: Callable[[Coroutine[Any, Any, None], str], asyncio.Task[Any]],
    ) -> None:
        self.clock = clock
        self._fire = fire
        self._missed = missed
        self._spawn = spawn
        self._jobs: dict[int, _Job] = {}
        self._heap: list[tuple[float, str, int, int]] = []  # (instant, id as text, id, version)
        self._versions = 0
        self._handle: Any = None
        self._poked = False
        self.running = False
        self.paused = False

    # -- jobs ----------------------------------------------------------------------------

    def add(self, job_id: int, trigger: SpecTrigger, next_run_time: datetime, *, grace_s: float) -> None:
        """Fire ``job_id`` at ``next_run_time``, then as ``trigger`` says (replaces an existing job)."""
        self._versions += 1
        job = _Job(trigger, next_run_time.astimezone(UTC), float(grace_s), self._versions)
        self._jobs[job_id] = job
        heapq.heappush(self._heap, (job.next_run_time.timestamp(), str(job_id), job_id, job.version))
        self._poke()

    def remove(self, job_id: int) -> bool:
        """Stop firing ``job_id``; False when it was not here."""
        return self._jobs.pop(job_id, None) is not None  # its heap entry is dropped lazily

    def jobs(self) -> dict[int, datetime]:
        """``{job id: next firing (UTC)}``."""
        return {i: j.next_run_time for i, j in self._jobs.items()}

    # -- life cycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Begin firing (the first wakeup runs on the next loop iteration)."""
        self.running = True
        self._poke()

    def pause(self) -> None:
        """Hold wakeups (e.g. during a bulk :meth:`add`); :meth:`resume` re-arms."""
        self.paused = True

    def resume(self) -> None:
        """Undo :meth:`pause`."""
        self.paused = False
        self._poke()

    def shutdown(self) -> None:
        """Stop firing; tasks already spawned belong to the owner."""
        self.running = False
        self._disarm()

    # -- the wakeup ------------------------------------------------------------------------

    def _poke(self) -> None:
        if self.running and not self.paused and not self._poked:
            self._poked = True
            asyncio.get_running_loop().call_soon(self._wakeup)

    def _disarm(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _wakeup(self) -> None:
        self._poked = False
        self._disarm()
        if not self.running or self.paused:
            return
        now = self.clock.now()
        stamp = now.timestamp()
        heap = self._heap
        while heap and heap[0][0] <= stamp:
            _, _, job_id, version = heapq.heappop(heap)
            job = self._jobs.get(job_id)
            if job is None or job.version != version:
                continue  # removed or replaced since
            try:
                run_time = job.trigger.latest_fire_time(job.next_run_time, now)
                nxt = job.trigger.get_next_fire_time(run_time, now)
            except Exception:
                log.exception("schedule #%s: computing its firings failed; it is dropped", job_id)
                self._jobs.pop(job_id, None)
                continue
            self._spawn(self._hand_over(job_id, run_time, job.grace_s), f"schedule-job-{job_id}")
            if nxt is None:
                self._jobs.pop(job_id, None)
            else:
                job.next_run_time = nxt.astimezone(UTC)
                heapq.heappush(heap, (job.next_run_time.timestamp(), str(job_id), job_id, version))
        while heap and ((j := self._jobs.get(heap[0][2])) is None or j.version != heap[0][3]):
            heapq.heappop(heap)  # keep the head live, so the wakeup is for a real firing
        if heap:
            wait = max(0.0, heap[0][0] - self.clock.now().timestamp())
            self._handle = self.clock.call_later(wait, self._wakeup)

    async def _hand_over(self, job_id: int, run_time: datetime, grace_s: float) -> None:
        late = (self.clock.now() - run_time).total_seconds()
        if late > grace_s:
            log.warning("schedule #%s: firing at %s missed by %.1fs", job_id, run_time, late)
            await self._missed(job_id, run_time)
        else:
            await self._fire(job_id, run_time)
