"""Full garbage collections in quiet moments, not in the middle of a burst of requests.

CPython's cyclic collector starts a full (generation 2) collection by itself whenever
enough objects survived the younger collections. After start-up's :func:`gc.freeze` such a
collection walks what was made since (queued runs, their tasks, caches, first-use imports):
8-100 ms with the event loop stopped, measured under ``bench/api.py`` (issue #18), and every
request in flight waits for it. :class:`QuietCollector` switches the automatic full
collections off (generation 2's threshold raised, :func:`gc.set_threshold`) and runs them
itself:

* when one is due, ``min_interval`` seconds after the last, and admissions are quiet: no
  request has been under way for ``quiet`` seconds (:meth:`bot.queue.admission.Priority.quiet_for`,
  the gate that also holds back run starts during a burst);
* at the latest ``max_interval`` seconds after the last one, whatever the load, so the
  memory cyclic garbage holds stays bounded.

Generations 0 and 1 are still collected automatically (0.05-1 ms each). Thresholds are
process-wide: the first installed collector sets them, the last one uninstalled puts the
previous ones back.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from typing import Protocol

log = logging.getLogger("baton.gc")

NO_AUTOMATIC_FULL = 1_000_000_000
"""Generation 2's threshold while installed: full collections are never started by CPython."""

_installed = 0
_saved: tuple[int, ...] | None = None


class _Gate(Protocol):
    def quiet_for(self, now: float | None = None) -> float: ...


class QuietCollector:
    """Runs full collections when admissions are quiet (see the module docs).

    Args:
        gate: tells how long no request has been under way (``quiet_for``, seconds of
            ``time.monotonic``); the App passes its admission's ``Priority``.
        min_interval: seconds between full collections while quiet moments come.
        max_interval: seconds after which one runs whatever the load (bounded memory).
        quiet: seconds without a request under way that make a quiet moment.
        tick: seconds between checks (the loop's only cost while nothing is due).
    """

    def __init__(
        self, gate: _Gate, *, min_interval: float = 10.0, max_interval: float = 60.0, quiet: float = 0.05, tick: float = 0.25
    ) -> None:
        self.gate = gate
        self.min_interval = min_interval
        self.max_interval = max_interval
        self.quiet = quiet
        self.tick = tick
        self.last = time.monotonic()
        self.collections = 0
        """Full collections run so far (quiet or forced)."""
        self.forced = 0
        """Of those, how many ran at ``max_interval`` without a quiet moment."""
        self._on = False

    def install(self) -> None:
        """Switch CPython's automatic full collections off (until the last :meth:`uninstall`)."""
        global _installed, _saved
        if self._on:
            return
        self._on = True
        if _installed == 0:
            _saved = gc.get_threshold()
            t0, t1, _ = _saved
            gc.set_threshold(t0, t1, NO_AUTOMATIC_FULL)
        _installed += 1

    def uninstall(self) -> None:
        """Undo :meth:`install` (the thresholds come back with the last installed collector)."""
        global _installed, _saved
        if not self._on:
            return
        self._on = False
        _installed -= 1
        if _installed == 0 and _saved is not None:
            gc.set_threshold(*_saved)
            _saved = None

    def collect_if_due(self, now: float | None = None) -> bool:
        """Run a full collection if one is due now (quiet moment, or ``max_interval`` passed);
        returns whether it ran. ``now``: ``time.monotonic()`` (tests pass their own)."""
        given = now is not None
        now = now if now is not None else time.monotonic()
        since = now - self.last
        if since < self.min_interval:
            return False
        forced = since >= self.max_interval
        if not forced and self.gate.quiet_for(now) < self.quiet:
            return False
        t0 = time.perf_counter()
        found = gc.collect()
        self.last = now if given else time.monotonic()
        self.collections += 1
        self.forced += forced
        log.debug("full collection (%s): %d objects freed in %.1f ms", "forced" if forced else "quiet", found, (time.perf_counter() - t0) * 1000)
        return True

    async def run(self) -> None:
        """Check every ``tick`` seconds until cancelled (start it with the App's TaskOwner)."""
        while True:
            await asyncio.sleep(self.tick)
            self.collect_if_due()


__all__ = ["NO_AUTOMATIC_FULL", "QuietCollector"]
