"""Testing helpers for the scheduler: a clock that moves only when a test says so.

Production code never imports this module; tests pass a :class:`ControlledClock`
to :class:`~bot.scheduling.service.SchedulerService` (``App.start(scheduler_clock=...)``).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from .timer import TimerHandle

__all__ = ["ControlledClock"]


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
