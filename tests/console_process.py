"""A real ``baton console`` process for end-to-end tests: config folders, environment,
piped runs and line waits, shared by the console, crash and scale-out tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from tests.conftest import REPO


def shell_config(tmp: Path, actions: Mapping[str, str], extra: str = "") -> Path:
    """Write ``tmp/config`` with ``sh`` allowed and one shell action per ``actions`` item
    (name → the ``sh -c`` script), plus ``extra`` TOML; returns the folder."""
    cfg = tmp / "config"
    (cfg / "workflows").mkdir(parents=True)
    body = ['[shell]\nallow = ["sh"]\n']
    for name, script in actions.items():
        body.append(f'[actions.{name}]\nkind = "shell"\nargv = ["sh", "-c", "{script}"]\n')
    (cfg / "baton.toml").write_text("\n".join(body) + extra)
    return cfg


def console_env(tmp: Path, config: Path = REPO / "config", db_url: str | None = None) -> dict[str, str]:
    """The environment of a console process on ``tmp/data`` (SQLite unless ``db_url``)."""
    env = {**os.environ, "BATON_CONFIG_DIR": str(config), "BATON_DATA_DIR": str(tmp / "data"), "PYTHONPATH": str(REPO)}
    env.pop("BATON_DATABASE_URL", None)
    if db_url:
        env["BATON_DATABASE_URL"] = db_url
    return env


def console(
    tmp: Path, stdin: str, config: Path = REPO / "config", timeout: float = 60, db_url: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``baton console`` with ``stdin`` piped in, to its exit (``timeout`` seconds at most)."""
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", "console"], input=stdin, capture_output=True, text=True, cwd=tmp,
        env=console_env(tmp, config, db_url), timeout=timeout,
    )


def start_console(tmp: Path, config: Path, db_url: str | None = None) -> subprocess.Popen[str]:
    """Start ``baton console`` with pipes for stdin, stdout and stderr (the caller ends it)."""
    return subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "console"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, cwd=tmp, env=console_env(tmp, config, db_url),
    )


def wait_line(proc: subprocess.Popen[str], needle: str, timeout: float = 30) -> list[str]:
    """Read ``proc``'s stdout until a line holds ``needle``; returns the lines read.

    Raises:
        AssertionError: not seen within ``timeout`` seconds (or the output ended).
    """
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        seen.append(line)
        if needle in line:
            return seen
    raise AssertionError(f"{needle!r} not seen in {seen}")
