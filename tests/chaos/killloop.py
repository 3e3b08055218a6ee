"""A SIGKILL loop over real ``baton console`` processes (one thread, runs started one at a time).

Each cycle starts the console, waits until it has finished resuming what the previous cycle
left, sends one new ``run:`` of a fan-out workflow whose steps append a tag to a file, and
SIGKILLs the process a random time after that run started. A last start with no input resumes
everything and exits. :meth:`KillLoop.check` then reads the database and the effects file.

Extending it: subclass and override :meth:`KillLoop.workflow` (what each run does) or
:meth:`KillLoop.kill_delay` (where the kill lands); the invariants stay the same.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

STEPS = ("a", "b", "c", "d", "e")
TERMINAL = ("succeeded", "failed", "cancelled")


@dataclass
class Report:
    """What a loop did and found."""

    kills: int = 0
    resume_kills: int = 0  # of ``kills``: those that hit a process while it resumed a run
    runs: int = 0
    terminal: int = 0
    duplicates: int = 0
    lost: int = 0
    problems: list[str] = field(default_factory=list)


class _Lines:
    """The console's stdout, read on a thread so waiting for a line has a deadline."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()
        with self._cond:
            self.lines.append("")  # EOF marker
            self._cond.notify_all()

    def wait_for(self, pred, timeout: float) -> str | None:  # type: ignore[no-untyped-def]
        """The first line (seen so far or later) for which ``pred`` holds; ``None`` at EOF/timeout."""
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                while seen < len(self.lines):
                    line = self.lines[seen]
                    seen += 1
                    if line == "":
                        return None
                    if pred(line):
                        return line
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)


class KillLoop:
    """Args:
    tmp: a folder for config, data and the effects file.
    env: extra environment (e.g. ``BATON_DATABASE_URL`` for PostgreSQL).
    kills: how many SIGKILLs (one new run each).
    seed: the random seed (printed in failures so a run can be replayed).
    """

    def __init__(self, tmp: Path, *, env: dict[str, str] | None = None, kills: int = 20, seed: int | None = None) -> None:
        self.tmp = tmp
        self.kills = kills
        self.seed = seed if seed is not None else random.randrange(1 << 30)
        self.rng = random.Random(self.seed)
        self.effects = tmp / "effects.txt"
        self.config = tmp / "config"
        self.env = {
            **os.environ,
            "BATON_CONFIG_DIR": str(self.config),
            "BATON_DATA_DIR": str(tmp / "data"),
            "BATON_ROUTING__ENCODER": "none",
            **(env or {}),
        }
        if "BATON_DATABASE_URL" not in (env or {}):
            self.env.pop("BATON_DATABASE_URL", None)
        self._write_config()

    # -- what runs -------------------------------------------------------------

    def workflow(self, i: int) -> str:
        """Run ``i``: one step, a three-way fan-out (one slow member), a pause, one step."""
        return f"mark-{i}-a THEN (mark-{i}-b AND mark-{i}-c AND mark-{i}-d) THEN sleep 0.2 THEN mark-{i}-e"

    def kill_delay(self) -> float:
        """Seconds after the new run started (spread over its whole length, resumes included)."""
        return self.rng.uniform(0.0, 1.0)

    def kill_resume(self) -> float | None:
        """Sometimes kill a process again while it resumes the last cycle's run: seconds after
        "Resuming run" to kill at, or ``None`` to let the resume finish (then a new run starts)."""
        return self.rng.uniform(0.0, 0.8) if self.rng.random() < 0.25 else None

    def _write_config(self) -> None:
        (self.config / "workflows").mkdir(parents=True, exist_ok=True)
        lines = ['[shell]\nallow = ["sh"]\n']
        for i in range(self.kills):
            for s in STEPS:
                slow = "; sleep 0.4" if s == "b" else ""  # a member still running when its siblings end
                lines.append(f'[actions.mark-{i}-{s}]\nkind = "shell"\nargv = ["sh", "-c", "echo {i}-{s} >> {self.effects}{slow}"]\n')
        (self.config / "baton.toml").write_text("\n".join(lines))

    # -- the loop ----------------------------------------------------------------

    def _start(self) -> tuple[subprocess.Popen[str], _Lines]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bot.cli", "console"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=self.tmp,
            env=self.env,
        )
        return proc, _Lines(proc)

    def run(self, report: Report, *, startup_timeout: float = 90) -> None:
        """Do the cycles and the final recovery start."""
        i = 0
        while i < self.kills:
            proc, out = self._start()
            try:
                assert proc.stdin is not None
                # resumes are announced before input is read: once /runs is answered, they are known
                proc.stdin.write("/runs\n")
                proc.stdin.flush()
                if out.wait_for(lambda ln: ln.startswith(("Runs", "No runs", "#", "  #")), startup_timeout) is None:
                    report.problems.append(f"cycle {i}: the console never answered /runs")
                resuming = any(ln.startswith("Resuming run #") for ln in list(out.lines))
                if resuming and (at := self.kill_resume()) is not None:
                    time.sleep(at)  # a kill point inside a resumed run (no new run this time)
                    report.resume_kills += 1
                    continue  # the finally kills; run i is started by the next process
                # let the resumes of the last cycle finish first: runs start one at a time here
                # (requests queued behind a run across a kill are the durable queue's tests)
                self._wait_resumed(out, startup_timeout)
                proc.stdin.write(f"run: {self.workflow(i)}\n")
                proc.stdin.flush()
                started = out.wait_for(lambda ln: " started: " in ln and f"mark-{i}-a" in ln, startup_timeout)
                if started is None:
                    report.problems.append(f"cycle {i}: run {i} never started")
                time.sleep(self.kill_delay())  # the random kill point (wall-clock is the point here)
                i += 1
            finally:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                report.kills += 1
        proc = subprocess.run(
            [sys.executable, "-m", "bot.cli", "console"], input="", capture_output=True, text=True, cwd=self.tmp, env=self.env, timeout=300
        )
        if proc.returncode != 0:
            report.problems.append(f"final start exited {proc.returncode}: {proc.stderr[-2000:]}")

    @staticmethod
    def _wait_resumed(out: _Lines, timeout: float) -> None:
        resumed = [ln.split("#", 1)[1].split(" ", 1)[0] for ln in list(out.lines) if ln.startswith("Resuming run #")]
        for rid in resumed:
            out.wait_for(lambda ln, rid=rid: ln.startswith(f"Run #{rid} "), timeout)

    # -- the invariants ----------------------------------------------------------------

    def check(self, report: Report, runs: list[tuple[int, str, str]], steps: list[tuple[int, str, str]], messages: list[tuple[str, str]]) -> None:
        """``runs``: (id, source, status); ``steps``: (run id, label, status); ``messages``: (role, text)
        in order. Fills ``report``: runs terminal, effects repeated, stored requests without a reply."""
        effects = Counter(self.effects.read_text().split()) if self.effects.exists() else Counter()
        report.runs = len(runs)
        report.terminal = sum(1 for _, _, st in runs if st in TERMINAL)
        for rid, src, st in runs:
            if st not in TERMINAL:
                report.problems.append(f"run #{rid} is {st} after the final restart")
        for tag, n in effects.items():
            if n > 1:
                report.duplicates += n - 1
                report.problems.append(f"effect {tag} happened {n} times")
        for rid, label, st in steps:
            if label.startswith("mark-") and st == "succeeded":
                tag = label[len("mark-") :]
                if effects[tag] != 1:
                    report.problems.append(f"run #{rid} step {label} succeeded but its effect happened {effects[tag]} times")
        by_tag = {src.split()[0]: (rid, st) for rid, src, st in runs}
        replies = [t for role, t in messages if role == "assistant"]
        for role, text in messages:
            if role != "user" or not text.startswith("run: "):
                continue
            first = text[len("run: ") :].split()[0]
            if first not in by_tag:
                report.lost += 1
                report.problems.append(f"stored request {text!r} started no run")
                continue
            rid, _ = by_tag[first]
            if not any(r.startswith(f"Run #{rid} ") for r in replies):
                report.lost += 1
                report.problems.append(f"run #{rid} ({first}) has no stored result reply")
