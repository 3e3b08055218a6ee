"""What the benchmarks read off processes and PostgreSQL: CPU seconds from Linux ``/proc``, and
the CPU of a database's backends (which needs the bench to run on the database's host).

Imported by the scripts beside it (``python bench/X.py`` puts this folder on ``sys.path``).
"""

from __future__ import annotations

import os
from pathlib import Path
from collections.abc import Awaitable, Callable
from typing import Any


def dsn(url: str) -> str:
    """A libpq/asyncpg DSN from Baton's SQLAlchemy URL (``postgresql+asyncpg://…``)."""
    return url.replace("postgresql+asyncpg://", "postgresql://")


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used so far (Linux ``/proc``); 0 once gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class BackendCPU:
    """CPU seconds used by the PostgreSQL backends of one database.

    Backends come and go with their clients' connections, so :meth:`sample` must be called
    while they live (e.g. in every progress poll); a backend's highest reading counts.
    """

    QUERY = "select pid from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid()"

    def __init__(self) -> None:
        self.seen: dict[int, float] = {}  # backend pid -> CPU seconds

    async def sample(self, fetch: Callable[[str], Awaitable[Any]]) -> None:
        """Read the CPU of every backend of the database ``fetch`` queries (e.g. an asyncpg
        connection's ``fetch``: rows of one column; the querying backend itself is left out)."""
        for (pid,) in await fetch(self.QUERY):
            self.seen[pid] = max(self.seen.get(pid, 0.0), cpu_s(pid))

    def total(self) -> float:
        """CPU seconds of every backend seen so far (subtract an earlier total for a phase)."""
        return sum(self.seen.values())
