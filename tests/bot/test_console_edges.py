"""Issue 14 faults found at the console's edges, each against a real `baton console` process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO


def _env(tmp: Path, config: Path = REPO / "config", **extra: str) -> dict[str, str]:
    env = {**os.environ, "BATON_CONFIG_DIR": str(config), "BATON_DATA_DIR": str(tmp / "data"), **extra}
    env.pop("BATON_DATABASE_URL", None)
    return env


def console_bytes(tmp: Path, stdin: bytes, *, locale: str = "C.UTF-8", timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    env = _env(tmp, LC_ALL=locale, LANG=locale)
    env.pop("PYTHONIOENCODING", None)
    return subprocess.run([sys.executable, "-m", "bot.cli", "console"], input=stdin, capture_output=True, cwd=tmp, env=env, timeout=timeout)


@pytest.mark.parametrize("locale", ["C.UTF-8", "C"])
def test_invalid_utf8_on_stdin_is_stored_and_shown_with_replacement_characters(tmp_path: Path, locale: str) -> None:
    """Fault 10: one invalid byte used to end the console (UnicodeEncodeError in the store)."""
    p = console_bytes(tmp_path, b"hello \xff\xfe junk\nrun: echo still-alive \xc3\nrun: echo after\n", locale=locale)
    assert p.returncode == 0, p.stderr.decode(errors="replace")
    out = p.stdout.decode("utf-8")
    assert "still-alive" in out and "Result:\nafter" in out
    assert "Traceback" not in p.stderr.decode(errors="replace")
    again = console_bytes(tmp_path, b"/history 10\n", locale=locale)
    assert again.returncode == 0
    assert "hello \ufffd\ufffd junk" in again.stdout.decode("utf-8")


def test_piped_commands_are_answered_in_the_threads_order(tmp_path: Path) -> None:
    """Fault 14: in piped mode /why and /run show answered before earlier messages were handled."""
    lines = "can you check the disk space?\n/why\n/run show 1\nwhat's the weather like\n/why\nthe disk team lunch is at noon\n/why\n"
    p = subprocess.run(
        [sys.executable, "-m", "bot.cli", "console"], input=lines, capture_output=True, text=True, cwd=tmp_path, env=_env(tmp_path), timeout=90
    )
    assert p.returncode == 0, p.stderr[-2000:]
    whys = [line for line in p.stdout.splitlines() if line.startswith("For ")]
    assert len(whys) == 3, p.stdout
    assert "can you check the disk space?" in whys[0] and "route disk-check" in whys[0]
    assert "what's the weather like" in whys[1] and "chat" in whys[1]
    assert "the disk team lunch is at noon" in whys[2] and "chat" in whys[2]
    assert "No run #1" not in p.stdout and "Run #1: " in p.stdout


def test_ctrl_c_during_a_run_cancels_it_says_so_and_exits(tmp_path: Path) -> None:
    """Fault 12: Ctrl-C during a run left the console half dead and the run `running`."""
    import signal

    env = _env(tmp_path, PYTHONUNBUFFERED="1")
    p = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "console"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, cwd=tmp_path, env=env,
    )
    try:
        assert p.stdin and p.stdout
        p.stdin.write("run: sleep 60\n")
        p.stdin.flush()  # stdin stays open: the console is not at the end of its input
        seen = []
        for line in p.stdout:  # blocking reads of the child's own output, in order
            seen.append(line)
            if "s1 started" in line:
                break
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 130, (p.returncode, err[-2000:])
    assert "Traceback" not in err
    assert "Interrupted (Ctrl-C): run #1 cancelled" in out, "".join(seen) + out
    after = subprocess.run(
        [sys.executable, "-m", "bot.cli", "console"], input="/runs\n", capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60
    )
    assert "#1    cancelled" in after.stdout, after.stdout
    assert "[run #1]" not in after.stdout  # nothing was left to resume
