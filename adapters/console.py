"""The terminal adapter (rich): local use, scripts and tests.

On a TTY each active run has a live status block, updated in place (one rich
``Live`` region holds the blocks of all active runs). On piped input every step
event is one plain line, so scripts and tests can read it; at the end of the
input the console waits for the runs it started (and any it resumed) to finish,
then exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import signal
import sys
from pathlib import Path
import threading
from typing import IO

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from adapters.base import ICONS, Message, RunView, StatusBoard
from bot.core import Ability, ThreadKey
from bot.tasks import TaskOwner
from bot.texts import step_error
from engine.events import RunEvent, StepRecord

PLATFORM = "console"


def _hms(rec_time) -> str:  # type: ignore[no-untyped-def]
    return rec_time.astimezone().strftime("%H:%M:%S.%f")[:-3] if rec_time else "-"


def event_line(run_id: int, event: RunEvent) -> str | None:
    """The plain line printed for one event (piped mode); ``None`` for events not shown."""
    s: StepRecord | None = event.step
    if event.kind == "step_started" and s:
        return f"[run #{run_id}] {s.node_id} started   {s.label} ({_hms(s.started_at)})"
    if event.kind == "step_waiting" and s:
        question = s.label.split(" ", 1)[1] if " " in s.label else "approve?"
        return f"[run #{run_id}] {s.node_id} waiting   {question} — /approve {run_id} or /reject {run_id}"
    if event.kind == "step_retry" and s:
        return f"[run #{run_id}] {s.node_id} retrying  {s.label}: attempt {s.attempt} failed: {s.error}"
    if event.kind == "step_finished" and s:
        if s.status == "skipped":
            return None
        times = f"{_hms(s.started_at)} → {_hms(s.finished_at)}"
        dur = f", {s.duration_s:.3f}s" if s.duration_s is not None else ""
        err = f": {step_error(s)}" if s.error else ""
        cached = " (cached)" if s.cached else ""
        return f"[run #{run_id}] {s.node_id} {s.status:<9} {s.label}{cached} ({times}{dur}){err}"
    if event.kind == "run_started":
        return None
    return None


class _PlainView:
    def __init__(self, console: Console, run_id: int, title: str) -> None:
        self.console = console
        self.run_id = run_id
        console.print(f"[run #{run_id}] started: {title}", markup=False, highlight=False, soft_wrap=True)

    def on_event(self, event: RunEvent) -> None:
        line = event_line(self.run_id, event)
        if line:
            self.console.print(line, markup=False, highlight=False, soft_wrap=True)

    async def aclose(self) -> None:
        return None


class _LiveRegion:
    """One rich Live region showing the status block of every active run."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.boards: dict[int, StatusBoard] = {}
        self.live: Live | None = None

    def render(self) -> Group:
        return Group(*(_table(b) for b in self.boards.values()))

    def add(self, board: StatusBoard) -> None:
        self.boards[board.run_id] = board
        if self.live is None:
            self.live = Live(self.render(), console=self.console, refresh_per_second=8, transient=True)
            self.live.start()
        self.refresh()

    def refresh(self) -> None:
        if self.live is not None:
            self.live.update(self.render())

    def remove(self, run_id: int) -> None:
        self.boards.pop(run_id, None)
        if not self.boards and self.live is not None:
            self.live.stop()
            self.live = None
        else:
            self.refresh()


def _table(board: StatusBoard) -> Table:
    t = Table(title=f"run #{board.run_id} · {board.status} · {board.title}", title_justify="left", expand=False)
    t.add_column("step")
    t.add_column("status")
    t.add_column("time", justify="right")
    t.add_column("cost", justify="right")
    for r in board.rows():
        dur = f"{r.duration_s:.2f}s" if r.duration_s is not None else ""
        t.add_row(r.label, f"{ICONS.get(r.status, '?')} {r.status}" + (f" ({r.attempt})" if r.attempt > 1 else ""), dur, f"${r.cost_usd:.4f}" if r.cost_usd else "")
    return t


class _LiveView:
    def __init__(self, region: _LiveRegion, run_id: int, title: str) -> None:
        self.region = region
        self.board = StatusBoard(run_id, title)
        region.add(self.board)

    def on_event(self, event: RunEvent) -> None:
        self.board.apply(event)
        self.region.refresh()

    async def aclose(self) -> None:
        self.region.remove(self.board.run_id)


class _PipedReply:
    """Piped output cannot be edited in place: print the final text once."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def update(self, text: str) -> None:
        return None

    async def finish(self, text: str) -> None:
        self.console.print(Text(text), soft_wrap=True)


class _LiveReply:
    """A reply written live on a TTY, then left on screen."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.live = Live(Text("…"), console=console, refresh_per_second=12, transient=True)
        self.live.start()

    def update(self, text: str) -> None:
        self.live.update(Text(text))

    async def finish(self, text: str) -> None:
        self.live.stop()
        self.console.print(Text(text), soft_wrap=True)


class ConsoleOutlet:
    """The console's outlet: replies are printed; status is live (TTY) or line by line."""

    platform = PLATFORM
    abilities = frozenset({Ability.STREAM_REPLY, Ability.FILES})

    def __init__(self, console: Console, *, live: bool, files_dir: Path = Path(".baton") / "pictures") -> None:
        self.console = console
        self.live = live
        self.files_dir = files_dir
        self._region = _LiveRegion(console) if live else None

    async def send(self, key: ThreadKey, text: str) -> None:
        self.console.print(Text(text), soft_wrap=True)

    async def send_file(self, key: ThreadKey, filename: str, data: bytes, comment: str) -> None:
        """Write ``data`` to ``files_dir/filename`` and print ``comment`` with the file's path."""

        def save() -> Path:
            self.files_dir.mkdir(parents=True, exist_ok=True)
            path = (self.files_dir / filename).resolve()
            path.write_bytes(data)
            return path

        path = await asyncio.to_thread(save)
        self.console.print(Text(f"{comment}: {path}"), soft_wrap=True)

    def stream_reply(self, key: ThreadKey) -> _PipedReply | _LiveReply:
        """Chat replies: live on a TTY, printed once when piped."""
        return _LiveReply(self.console) if self.live else _PipedReply(self.console)

    def run_view(self, key: ThreadKey, run_id: int, title: str) -> RunView:
        if self._region is not None:
            return _LiveView(self._region, run_id, title)
        return _PlainView(self.console, run_id, title)


class ConsoleAdapter:
    """Reads lines from ``stdin`` and hands them to the bot as messages of one thread.

    Args:
        thread: the thread name, i.e. the session key's thread (``--thread``).
        stdin, stdout: streams (tests pass their own).
    """

    def __init__(self, thread: str = "default", stdin: IO[str] | None = None, stdout: IO[str] | None = None) -> None:
        self.stdin = stdin or sys.stdin
        out = stdout or sys.stdout
        for stream in (self.stdin, out):  # an invalid UTF-8 byte in or out is U+FFFD, never the end of the console
            reconfigure = getattr(stream, "reconfigure", None)
            if reconfigure is not None and getattr(stream, "encoding", "").lower().replace("-", "") == "utf8":
                reconfigure(errors="replace")
        self.interactive = self.stdin.isatty() and out.isatty()
        self.console = Console(file=out, highlight=False, soft_wrap=True)
        self.outlet = ConsoleOutlet(self.console, live=self.interactive)
        self.key = ThreadKey(PLATFORM, "local", thread)
        self.user = _user()

    def message(self, text: str) -> Message:
        return Message(PLATFORM, self.key.channel, self.key.thread, self.user, text)

    async def run(self, bot) -> bool:  # type: ignore[no-untyped-def]
        """Feed lines to ``bot`` until end of input, then wait for its work to finish.

        Ctrl-C (SIGINT), while reading or while runs are going: the console's active runs are
        cancelled (each ends ``cancelled``, its running steps stopped), what happened is
        printed, and this returns ``True`` (the ``baton`` command exits 130). A second Ctrl-C
        while that is under way interrupts at once (the runs then resume on the next start).
        Lines are read on a daemon thread, so an interrupted read never holds up the exit.

        Returns:
            whether the console was interrupted.
        """
        if self.interactive:
            self.console.print(f"Baton console — thread '{self.key.thread}'. /help lists commands; Ctrl-D or Ctrl-C quits.", style="dim")
        loop = asyncio.get_running_loop()
        lines: asyncio.Queue[str | None] = asyncio.Queue()
        interrupted = asyncio.Event()
        threading.Thread(target=self._read_lines, args=(loop, lines), name="console-stdin", daemon=True).start()
        watching = _on_sigint(loop, interrupted)
        try:
            while not interrupted.is_set():
                line = await _first(lines.get(), interrupted)
                if line is None:  # end of input (or interrupted)
                    break
                text = line.strip()
                if text:
                    await bot.handle(self.message(text), self.outlet)
            if not interrupted.is_set():
                await _first(bot.drain(), interrupted)
            if interrupted.is_set():
                await self._interrupted(bot)
                return True
            return False
        finally:
            if watching:
                with contextlib.suppress(Exception):
                    loop.remove_signal_handler(signal.SIGINT)

    def _read_lines(self, loop: asyncio.AbstractEventLoop, lines: asyncio.Queue[str | None]) -> None:
        """The reader thread: each line (or ``None`` at end of input) goes to ``lines`` on the loop."""
        while True:
            try:
                if self.interactive:
                    line: str | None = self.console.input("[bold]you>[/bold] ")
                else:
                    line = self.stdin.readline()
                    line = None if line == "" else line
            except (EOFError, KeyboardInterrupt, OSError, ValueError):
                line = None
            try:
                loop.call_soon_threadsafe(lines.put_nowait, line)
            except RuntimeError:  # the loop is closed: the console is gone
                return
            if line is None:
                return

    async def _interrupted(self, bot) -> None:  # type: ignore[no-untyped-def]
        """Cancel this console's active runs after Ctrl-C and say what happened."""
        mine = [r for r in bot.manager.active.values() if r.key.platform == PLATFORM]
        if not mine:
            self.console.print("Interrupted (Ctrl-C): no run was active; exiting.", soft_wrap=True)
            return
        ids = ", ".join(f"#{r.id}" for r in mine)
        self.console.print(f"Interrupted (Ctrl-C): cancelling run {ids}…", soft_wrap=True)
        await asyncio.gather(*(bot.manager.cancel(r.id) for r in mine), return_exceptions=True)
        done = []
        for r in mine:
            got = await bot.runs.get(r.id)
            done.append(f"run #{r.id} {got[0].status if got else 'gone'}")
        self.console.print(f"Interrupted (Ctrl-C): {', '.join(done)}. /runs and /run show ID have the details.", soft_wrap=True)


def _on_sigint(loop: asyncio.AbstractEventLoop, interrupted: asyncio.Event) -> bool:
    """Route the first SIGINT to ``interrupted``; a second one is Python's usual KeyboardInterrupt.
    Returns False where signal handlers cannot be set (not the main thread, Windows)."""

    def first() -> None:
        interrupted.set()
        with contextlib.suppress(Exception):
            loop.remove_signal_handler(signal.SIGINT)  # restores default_int_handler

    try:
        loop.add_signal_handler(signal.SIGINT, first)
    except (NotImplementedError, RuntimeError, ValueError):
        return False
    return True


async def _first(aw, interrupted: asyncio.Event):  # type: ignore[no-untyped-def]
    """``await aw``, unless ``interrupted`` is set first (then ``aw`` is cancelled and ``None`` returned)."""
    owner = TaskOwner("console")
    task = owner.start(_awaited(aw), name="console-input")
    stop = owner.start(interrupted.wait(), name="console-interrupt")
    try:
        await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in (task, stop):
            if not t.done():
                t.cancel()
        await asyncio.gather(task, stop, return_exceptions=True)
    return task.result() if task.done() and not task.cancelled() else None  # an error in ``aw`` is raised


async def _awaited(aw):  # type: ignore[no-untyped-def]
    return await aw


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "console-user"
