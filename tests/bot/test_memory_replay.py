"""A real conversation (SGD, vendored in tests/fixtures/conversations) replayed through the console bot, then recalled after a restart."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path


from tests.conftest import FIXTURES, REPO

SGD = FIXTURES / "conversations" / "sgd" / "dialogue_sample.json.gz"


def console(tmp: Path, stdin: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BATON_CONFIG_DIR": str(REPO / "config"), "BATON_DATA_DIR": str(tmp / "data"), "BATON_CONSOLE_THREAD": "sgd"}
    env.pop("BATON_DATABASE_URL", None)
    return subprocess.run([sys.executable, "-m", "bot.cli", "console"], input=stdin, capture_output=True, text=True, cwd=tmp, env=env, timeout=120)


def test_replayed_conversation_is_recalled_after_a_restart(tmp_path: Path) -> None:
    dialogs = json.load(gzip.open(SGD, "rt", encoding="utf-8"))
    # a dialog long enough that its first turns are far from the end
    dialog = next(d for d in dialogs if len(d["turns"]) >= 16)
    turns = [t["utterance"] for t in dialog["turns"]]
    # a fact from the first user turns: a slot value the user said (e.g. a city or a time)
    early = next(
        (t["utterance"], t["utterance"][s["start"] : s["exclusive_end"]])
        for t in dialog["turns"][:4]
        if t["speaker"] == "USER"
        for f in t["frames"]
        for s in f["slots"]
    )
    utterance, value = early
    first = console(tmp_path, "\n".join(turns) + "\n")
    assert first.returncode == 0, first.stderr
    second = console(tmp_path, f"/recall {value}\n")
    assert second.returncode == 0, second.stderr
    # the fact was said in the first turns, more than a dozen messages (and a restart) ago
    assert f": {utterance}" in second.stdout, (value, second.stdout)
