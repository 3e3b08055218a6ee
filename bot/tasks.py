"""One owner for long-lived background tasks.

:class:`TaskOwner` starts tasks, keeps a reference to each until it ends (the event
loop keeps only weak references, so an unreferenced task can vanish mid-flight),
logs every failure with its traceback (a failed background task is never dropped
silently), and on :meth:`TaskOwner.aclose` cancels them all and awaits them.

Unlike :class:`asyncio.TaskGroup`, one task's failure does not cancel its siblings:
the bot's background work (retention sweeps, schedule loading, an adapter's event
handlers) is independent, and one failed sweep must not stop the others.
``asyncio.CancelledError`` is never swallowed: a cancelled task is simply done.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

log = logging.getLogger("baton.tasks")

__all__ = ["TaskOwner"]


class TaskOwner:
    """Starts, keeps, reports and stops background tasks (see the module doc).

    Args:
        name: who owns them (for log lines), e.g. ``"app"`` or ``"discord"``.
        logger: where failures go (default ``baton.tasks``).
    """

    def __init__(self, name: str = "app", *, logger: logging.Logger | None = None) -> None:
        self.name = name
        self._log = logger or log
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False
        self.failures = 0

    def start(self, coro: Coroutine[Any, Any, T], name: str) -> asyncio.Task[T]:
        """Run ``coro`` as a task owned here; returns it.

        Raises:
            RuntimeError: the owner is closed (the coroutine is closed, not leaked).
        """
        if self._closed:
            coro.close()
            raise RuntimeError(f"{self.name}: cannot start {name!r}, the task owner is closed")
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self.adopt(task)
        return task

    def adopt(self, task: asyncio.Task[Any]) -> None:
        """Own a task started elsewhere (e.g. one a library runs a handler in)."""
        if task not in self._tasks:
            self._tasks.add(task)
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self.failures += 1
            self._log.error("%s: background task %s failed", self.name, task.get_name(), exc_info=exc)

    @property
    def pending(self) -> list[asyncio.Task[Any]]:
        """The tasks not yet done (except the current one)."""
        current = asyncio.current_task()
        return [t for t in self._tasks if t is not current and not t.done()]

    async def settle(self) -> None:
        """Wait until every owned task (also those started meanwhile) has finished."""
        await asyncio.sleep(0)
        while pending := self.pending:
            await asyncio.gather(*pending, return_exceptions=True)

    async def cancel_all(self) -> None:
        """Cancel every owned task (except the current one) and wait for them to end."""
        tasks = self.pending
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def aclose(self) -> None:
        """Cancel every owned task and wait for them to end; no new task starts afterwards."""
        self._closed = True
        await self.cancel_all()
