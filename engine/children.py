"""Shell steps' child processes: recorded durably while they run, reaped after a crash.

A shell step's command runs in its own session (``start_new_session``), so it is the leader
of its own process group and does *not* die with the bot: after a SIGKILL of the bot it keeps
running, orphaned, and may finish its effect while the run says "interrupted" (fault 14.13).

So each child gets a small record file (``<dir>/<owner pid>-<child pid>.json``, written and
fsynced right after the spawn, removed once the child has been waited for) naming the run,
the step, the argv, the child's pid/process group and the owning bot process. Pids mean
something only on their host, so the records live in the data folder on that host, not in
the (possibly shared) database.

On start-up :meth:`ChildRegistry.reap_orphans` reads the records whose owner process is gone:
a child still running is terminated with its whole process group (SIGTERM, then SIGKILL after
``grace_s``); one that already exited is reported as such. Each becomes an :class:`Orphan`
whose :attr:`Orphan.note` is told in the run's thread and kept in the interrupted step's record.

Process identity uses Linux's ``/proc/<pid>/stat`` start time, so a pid reused by an
unrelated process is never signalled; without ``/proc`` only existence is checked.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("baton.children")


def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (``/proc/<pid>/stat`` field 22),
    ``None`` when it does not exist, is a zombie, or ``/proc`` is unavailable."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) is in parentheses and may hold spaces: split after the last ')'
    fields = raw[raw.rfind(")") + 2 :].split()
    if fields[0] in ("Z", "X"):  # zombie / dead: the process has exited
        return None
    return int(fields[19])


def _alive(pid: int, start: int | None) -> bool:
    """Whether process ``pid`` exists and (when known) is the one that started at ``start``."""
    if Path("/proc/self/stat").exists():
        now = _start_time(pid)
        return now is not None and (start is None or now == start)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True, slots=True)
class Orphan:
    """A child of a previous bot process found at start-up.

    Attributes:
        run_id, node_id: the run and step that started it.
        pid: the child's pid (also its process group id).
        argv: what it ran.
        terminated: True when it was still running and was terminated now; False when it
            had already exited (its result was lost with the process that waited for it).
    """

    run_id: str
    node_id: str
    pid: int
    argv: tuple[str, ...]
    terminated: bool

    @property
    def note(self) -> str:
        """What is known about the step, in the words told in the thread."""
        cmd = " ".join(self.argv)
        if self.terminated:
            return f"its command ({cmd}) was still running as pid {self.pid} at restart and was terminated"
        return f"its command ({cmd}, pid {self.pid}) had exited before the restart; its result is unknown"


class ChildRegistry:
    """Durable records of running shell children, and the start-up reaper.

    Args:
        folder: where the record files live (created on first use), e.g. ``.baton/children``.
        grace_s: seconds between SIGTERM and SIGKILL when reaping (seconds).
    """

    def __init__(self, folder: Path, *, grace_s: float = 2.0) -> None:
        self.folder = Path(folder)
        self.grace_s = grace_s
        self._owner = os.getpid()
        self._owner_start = _start_time(self._owner)

    def path_for(self, pid: int) -> Path:
        """Where the record of child ``pid`` of this process is written (:meth:`record`)."""
        return self.folder / f"{self._owner}-{pid}.json"

    def record(self, pid: int, run_id: str | None, node_id: str, argv: Sequence[str]) -> Path:
        """Write (and fsync) the record of child ``pid``; returns its path (:meth:`path_for`) for :meth:`forget`.

        Blocking file I/O (an fsync): call it in a worker thread (``asyncio.to_thread``), right
        after the spawn.

        Raises:
            OSError: the folder is not writable (the caller decides; the step should not run blind).
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.path_for(pid)
        data = {
            "run_id": run_id,
            "node_id": node_id,
            "pid": pid,
            "pgid": pid,  # start_new_session: the child leads its own group
            "start": _start_time(pid),
            "argv": list(argv),
            "owner": self._owner,
            "owner_start": self._owner_start,
            "at": time.time(),
        }
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return path

    @staticmethod
    def forget(path: Path) -> None:
        """Remove a record once its child has been waited for (one unlink; blocking file I/O)."""
        try:
            path.unlink()
        except FileNotFoundError:
            pass

    async def reap_orphans(self) -> list[Orphan]:
        """Find children of bot processes that are gone; terminate those still running.

        Records of live owners (another bot process on this host, or this one) are left alone.
        Unreadable records are removed with a warning. Never blocks the event loop for longer
        than reading a few small files.
        """
        if not self.folder.is_dir():
            return []
        found: list[Orphan] = []
        for path in sorted(self.folder.glob("*.json")):
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                owner, owner_start, pid = int(data["owner"]), data.get("owner_start"), int(data["pid"])
            except (OSError, ValueError, KeyError, TypeError) as e:
                log.warning("ignoring an unreadable child record %s: %s", path, e)
                self.forget(path)
                continue
            if owner == self._owner or _alive(owner, owner_start):
                continue
            running = _alive(pid, data.get("start"))
            if running:
                await self._terminate(int(data.get("pgid", pid)), pid, data.get("start"))
            orphan = Orphan(str(data.get("run_id")), str(data.get("node_id")), pid, tuple(data.get("argv") or ()), running)
            log.warning("run %s step %s: %s", orphan.run_id, orphan.node_id, orphan.note)
            found.append(orphan)
            self.forget(path)
        for tmp in self.folder.glob("*.tmp"):  # a record half-written by a process that died
            self.forget(tmp)
        return found

    async def _terminate(self, pgid: int, pid: int, start: int | None) -> None:
        """SIGTERM to the group, up to ``grace_s`` for the leader to exit, then SIGKILL to whatever
        is left of the group (members that ignored SIGTERM included)."""
        try:
            os.killpg(pgid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            return
        deadline = time.monotonic() + self.grace_s
        while time.monotonic() < deadline and _alive(pid, start):
            await asyncio.sleep(0.02)
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


__all__ = ["ChildRegistry", "Orphan"]
