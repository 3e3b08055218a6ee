"""Issue 14, fault 13: a killed bot's shell children (own session) are recorded, reaped at the
next start, and the run says what is known about the interrupted step."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from engine.children import _alive
from tests.console_process import console, shell_config, start_console, wait_line


def _config(tmp: Path, marks: Path, pidfile: Path) -> Path:
    return shell_config(tmp, {"slow-effect": f"echo $$ > {pidfile}; sleep 20; echo DONE >> {marks}", "mark-b": f"echo B >> {marks}"})


def test_a_child_left_running_by_a_killed_bot_is_terminated_and_reported(tmp_path: Path) -> None:
    marks, pidfile = tmp_path / "marks.txt", tmp_path / "child.pid"
    cfg = _config(tmp_path, marks, pidfile)
    proc = start_console(tmp_path, cfg)
    assert proc.stdin is not None
    proc.stdin.write("run: slow-effect THEN mark-b\n")
    proc.stdin.flush()
    wait_line(proc, "s1 started")
    deadline = time.monotonic() + 20
    while not (pidfile.exists() and pidfile.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.02)  # polling for the child's own pid file
    child = int(pidfile.read_text())
    records = list((tmp_path / "data" / "children").glob("*.json"))
    assert len(records) == 1, "the child is recorded durably while it runs"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert _alive(child, None), "the child runs in its own session, so it survives the bot"
    try:
        again = console(tmp_path, "", config=cfg)
        assert again.returncode == 0, again.stderr
        note = f"its command (sh -c echo $$ > {pidfile}; sleep 20; echo DONE >> {marks}) was still running as pid {child} at restart and was terminated"
        assert f"Step s1: {note}." in again.stdout, again.stdout
        assert not _alive(child, None), "the orphan was reaped"
        assert "not re-run because it is not marked idempotent" in again.stdout and note in again.stdout.split("Run #1 failed", 1)[1]
        assert not marks.exists(), "neither the orphan's effect nor the next step happened"
        assert not list((tmp_path / "data" / "children").glob("*.json")), "the record is gone once reaped"
    finally:
        if _alive(child, None):
            import os

            os.killpg(child, signal.SIGKILL)
