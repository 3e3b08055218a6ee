"""The console bot as a user runs it: a real `baton console` process fed through a pipe."""

from __future__ import annotations

import re
import signal
import time
from datetime import datetime
from pathlib import Path

from tests.console_process import console, shell_config, start_console, wait_line

LINE = re.compile(r"^\[run #(\d+)\] (\S+) succeeded +(.+?) \((\d\d:\d\d:\d\d\.\d{3}) → (\d\d:\d\d:\d\d\.\d{3})")


def t(s: str) -> datetime:
    return datetime.strptime(s, "%H:%M:%S.%f")


def test_parallel_workflow_from_piped_input(tmp_path: Path) -> None:
    p = console(tmp_path, "run: disk-check AND system-report THEN IF_SUCCESS echo all good ELSE echo trouble\n")
    assert p.returncode == 0, p.stderr
    spans = {m.group(3): (t(m.group(4)), t(m.group(5))) for m in map(LINE.match, p.stdout.splitlines()) if m}
    disk = spans["disk-check › disk usage"]
    report = [v for k, v in spans.items() if k.startswith("system-report ›")]
    assert len(report) == 3
    # the parallel branches overlap in time: each starts before the other finishes
    assert disk[0] <= max(e for _, e in report) and min(s for s, _ in report) <= disk[1]
    assert "Run #1 succeeded" in p.stdout and "Result:\nall good" in p.stdout
    assert "echo trouble — skipped" in p.stdout


def test_history_and_runs_survive_a_restart(tmp_path: Path) -> None:
    first = console(tmp_path, "the canary is in eu-west-1\nrun: echo stored run\n")
    assert first.returncode == 0, first.stderr
    second = console(tmp_path, "/history 10\n/runs\n")
    assert second.returncode == 0, second.stderr
    assert ": the canary is in eu-west-1" in second.stdout
    assert re.search(r"#1 +succeeded .* echo stored run", second.stdout)


def test_bad_input_gets_a_clear_answer(tmp_path: Path) -> None:
    p = console(tmp_path, "run: disk-check AND\nrun: sytem-report\n")
    assert p.returncode == 0
    assert "expected a step, got the end of the text (line 1, column 15)" in p.stdout
    assert "Unknown workflow 'sytem-report'; did you mean 'system-report'" in p.stdout


def _config_with_marks(tmp: Path, marks: Path) -> Path:
    return shell_config(
        tmp, {"mark-a": f"echo A >> {marks}", "mark-b": f"echo B >> {marks}", "slow-mark": f"echo S >> {marks}; sleep 30"}
    )


def test_sigkill_mid_run_resumes_without_repeating_completed_steps(tmp_path: Path) -> None:
    marks = tmp_path / "marks.txt"
    cfg = _config_with_marks(tmp_path, marks)
    proc = start_console(tmp_path, cfg)
    assert proc.stdin is not None
    proc.stdin.write("run: mark-a THEN sleep 3 THEN mark-b\n")
    proc.stdin.flush()
    wait_line(proc, "s2 started")  # mark-a is done and checkpointed; the sleep is running
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert marks.read_text() == "A\n"
    again = console(tmp_path, "", config=cfg)  # empty input: resume, wait for the run, exit
    assert again.returncode == 0, again.stderr
    assert "Resuming run #1 after a restart (1 of 3 steps already done)" in again.stdout
    assert "Run #1 succeeded" in again.stdout
    assert marks.read_text() == "A\nB\n"  # A once, B once


def test_sigkill_during_a_non_idempotent_step_does_not_repeat_it(tmp_path: Path) -> None:
    marks = tmp_path / "marks.txt"
    cfg = _config_with_marks(tmp_path, marks)
    proc = start_console(tmp_path, cfg)
    assert proc.stdin is not None
    proc.stdin.write("run: slow-mark THEN mark-b\n")
    proc.stdin.flush()
    wait_line(proc, "s1 started")
    for _ in range(100):
        if marks.exists() and marks.read_text():
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    again = console(tmp_path, "", config=cfg)
    assert again.returncode == 0, again.stderr
    assert "not re-run because it is not marked idempotent" in again.stdout
    assert "/rerun 1 from s1" in again.stdout
    assert marks.read_text() == "S\n"  # neither repeated nor followed by mark-b


def test_a_waiting_approval_survives_a_restart(tmp_path: Path) -> None:
    marks = tmp_path / "marks.txt"
    cfg = _config_with_marks(tmp_path, marks)
    proc = start_console(tmp_path, cfg)
    assert proc.stdin is not None
    proc.stdin.write("run: mark-a THEN approve ship it? THEN mark-b\n")
    proc.stdin.flush()
    wait_line(proc, "s2 waiting")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    again = start_console(tmp_path, cfg)
    assert again.stdin is not None
    wait_line(again, "s2 waiting   ship it? — /approve 1 or /reject 1")  # resumed, asking again
    again.stdin.write("/approve 1\n")
    again.stdin.close()
    assert again.stdout is not None
    out = again.stdout.read()
    assert again.wait(timeout=60) == 0
    assert "Approved step s2 of run #1." in out and "Run #1 succeeded" in out
    assert marks.read_text() == "A\nB\n"
