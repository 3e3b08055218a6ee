"""Issue 14, fault 11: SqliteWorker.close never hangs, whatever its checkpoint thread is doing.

The hang needed one ordering: the checkpoint thread's timed wait on ``_stopping`` has just
timed out when ``close()`` sets ``_stopping`` and ``_dirty``; the thread's following
``_dirty.clear()`` then wiped the wake-up and it waited on ``_dirty`` forever. The test forces
exactly that ordering (no sleeps): the timed wait itself runs ``close()`` on another thread,
waits until ``close()`` has signalled, and only then reports the time-out.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from bot.store.sqlite_worker import SqliteWorker


async def test_close_signalled_between_the_timed_out_wait_and_the_clear_does_not_hang(tmp_path: Path) -> None:
    worker = await asyncio.to_thread(SqliteWorker, str(tmp_path / "w.db"))  # opening blocks: not on the loop
    signalled = threading.Event()
    closer: list[threading.Thread] = []

    class SignallingEvent(threading.Event):
        def set(self) -> None:
            super().set()
            if closer and threading.current_thread() is closer[0]:  # close()'s wake-up, not a write's
                signalled.set()

    class TimedOutWhileClosing(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            if timeout is None or closer:
                return super().wait(timeout)
            t = threading.Thread(target=worker.close, name="test-closer", daemon=True)
            closer.append(t)
            t.start()
            assert signalled.wait(10), "close() never signalled the checkpoint thread"
            return False  # "the interval timed out" — after close() signalled

    # same objects (the threads already hold them), new behaviour for this one ordering
    worker._dirty.__class__ = SignallingEvent
    worker._stopping.__class__ = TimedOutWhileClosing
    await worker.call(lambda c: c.execute("CREATE TABLE t (x)"), "a write that wakes the checkpoint thread")
    while not closer or closer[0].ident is None:  # the checkpoint thread starts the closer from its timed wait
        await asyncio.sleep(0.005)
    await asyncio.to_thread(closer[0].join, 10)  # joining blocks: not on the loop
    assert not closer[0].is_alive(), "SqliteWorker.close hung: the checkpoint thread missed the stop"
    assert not worker._checkpointer.is_alive()
