"""Fault 9 (issue 14): every configuration error at start is one clear line naming the file,
the key and the fix, with exit code 2 — never a traceback. Each case is a real `baton` process
started on a copied config folder with one mistake in it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO


def _config(tmp: Path) -> Path:
    cfg = tmp / "config"
    shutil.copytree(REPO / "config", cfg)
    return cfg


def _baton(tmp: Path, cfg: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    e = {**os.environ, "BATON_CONFIG_DIR": str(cfg), "BATON_DATA_DIR": str(tmp / "data"), **(env or {})}
    e.pop("BATON_DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", *(args or ("console",))], input="", capture_output=True, text=True, cwd=tmp, env=e, timeout=90
    )


def _append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


def _replace(path: Path, old: str, new: str) -> None:
    s = path.read_text()
    assert old in s
    path.write_text(s.replace(old, new, 1))


CASES = {
    "unknown-toml-key": (lambda c: _append(c / "baton.toml", "\n[workflow.extra]\nbusy_polcy = 1\n"), "baton.toml", "workflow"),
    "unknown-top-key": (lambda c: _replace(c / "baton.toml", 'log_level = "WARNING"', 'log_level = "WARNING"\nlog_levle = "INFO"'), "baton.toml", "log_levle"),
    "bad-nested-key": (lambda c: _replace(c / "baton.toml", "fail_fast = true", "fail_fast = true\nfail_fsat = true"), "baton.toml", "fail_fsat"),
    "bad-strategy": (lambda c: _replace(c / "baton.toml", 'strategy = "sliding_window"', 'strategy = "hierarchal"'), "baton.toml", "strategy"),
    "reserve-over-budget": (lambda c: _replace(c / "baton.toml", "reserve_tokens = 2000", "reserve_tokens = 9000"), "baton.toml", "reserve_tokens"),
    "routes-wrong-key": (lambda c: _replace(c / "routes.yaml", "    keywords: [disk,", "    keywrods: [disk,"), "routes.yaml", "keywrods"),
    "routes-wrong-target": (lambda c: _replace(c / "routes.yaml", "    target: disk-check", "    target: disk-chek"), "routes.yaml", "disk-chek"),
    "workflow-bad-dependency": (
        lambda c: (c / "workflows" / "broken.yaml").write_text("name: broken\nnodes:\n  a:\n    run: echo a\n    depends_on: [nope]\n"),
        "broken.yaml",
        "nope",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_configuration_mistake_is_one_line_and_exit_2(tmp_path: Path, case: str) -> None:
    mistake, file, key = CASES[case]
    cfg = _config(tmp_path)
    mistake(cfg)
    p = _baton(tmp_path, cfg)
    assert p.returncode == 2, (p.returncode, p.stderr[-3000:])
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, p.stderr[-3000:]
    assert "Traceback" not in p.stderr
    assert file in lines[0] and key in lines[0], lines[0]
    assert "fix:" in lines[0], lines[0]


def test_discord_that_cannot_be_reached_is_one_line(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    p = _baton(
        tmp_path, cfg, "run", "--adapter", "discord", env={"BATON_DISCORD_TOKEN": "not-a-real-token", "BATON_DISCORD_PROXY": "http://proxyuser:proxy-secret@127.0.0.1:9"}
    )
    assert p.returncode == 2, p.stderr[-3000:]
    # discord.py itself warns that voice support is not installed; ours is the one error line
    lines = [line for line in p.stderr.splitlines() if line.strip() and "voice will NOT be supported" not in line]
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr[-3000:]
    assert lines[0].startswith("baton: cannot reach Discord") and "BATON_DISCORD_PROXY" in lines[0] and "127.0.0.1:9" in lines[0]
    assert "not-a-real-token" not in p.stderr and "proxy-secret" not in p.stderr


def test_the_shipped_config_still_starts(tmp_path: Path) -> None:
    p = _baton(tmp_path, _config(tmp_path))
    assert p.returncode == 0, p.stderr[-3000:]
