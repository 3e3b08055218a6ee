"""Deterministic time for tests: a fake monotonic clock and a recording async sleep."""

from __future__ import annotations


class FakeClock:
    """Monotonic clock stand-in: ``clock()`` returns ``now`` (seconds); ``advance(s)`` moves it forward."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds``."""
        self.now += seconds


class RecordingSleep:
    """``asyncio.sleep`` stand-in: records each requested delay (seconds) in ``calls`` and returns at once.

    If ``clock`` is given, it is advanced by each delay, so time-based logic still sees time pass.
    """

    def __init__(self, clock: FakeClock | None = None) -> None:
        self.calls: list[float] = []
        self._clock = clock

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        if self._clock is not None:
            self._clock.advance(seconds)
