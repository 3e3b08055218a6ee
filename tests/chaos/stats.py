"""The chaos suite's counts (kills, runs, terminal, duplicates, lost, injected faults, requests,
fuzz cases), per backend; ``conftest.py`` prints them at the end of the session."""

from __future__ import annotations

from collections import Counter

COUNTS: dict[str, Counter[str]] = {}


def count(backend: str, **inc: int) -> None:
    """Add to the counts of ``backend`` (e.g. ``count("sqlite", kills=1)``)."""
    COUNTS.setdefault(backend, Counter()).update(inc)
