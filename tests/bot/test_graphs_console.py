"""The seed's graph examples with shell/echo steps in a real `baton console` process, and a
SIGKILL in the third iteration of a loop that resumes in that iteration."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path

from tests.console_process import console, start_console, wait_line
from tests.conftest import REPO

EXAMPLES = REPO / "examples" / "workflows"


def _config(tmp: Path) -> Path:
    cfg = tmp / "config"
    (cfg / "workflows").mkdir(parents=True)
    for f in EXAMPLES.glob("*.yaml"):
        shutil.copy(f, cfg / "workflows" / f.name)
    (cfg / "baton.toml").write_text('[shell]\nallow = ["printf", "expr", "sh"]\n')
    return cfg


def test_seed_examples_run_in_the_console(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    p = console(
        tmp_path,
        "/run research-dag query=baton\n/run refine-loop\n/run classify-branch kind=creative\n/run classify-branch kind=poem\n",
        config=cfg,
    )
    assert p.returncode == 0, p.stderr
    out = p.stdout
    assert "Run #1 succeeded" in out and "validated answer built from docs about baton + web pages about baton howto" in out
    assert "Run #2 succeeded" in out and "Result:\nfinal score 9" in out
    assert "s1.critique#4 succeeded refine-loop › critique (iteration 4)" in out
    assert "refine (iteration 4) — skipped — condition (from s1.critique) is false: ${s1.critique.score} < 8 (s1.critique.score = 9)" in out
    assert "Run #3 succeeded" in out and "Result:\nwriting something new" in out
    assert 'echo retrieving facts — skipped — condition (from s1.classify) is false: ${s1.classify.type} == "factual" (s1.classify.type = "creative")' in out
    assert "Not run: 'kind' must be one of factual, opinion, creative, not 'poem'" in out


def test_sigkill_in_the_third_iteration_resumes_in_that_iteration(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    marks, flag = tmp_path / "marks.txt", tmp_path / "slept"
    # critique sleeps the first time it sees a score of 7 (iteration 3); each step notes its run in marks.txt
    (cfg / "workflows" / "slow-loop.yaml").write_text(
        f"""
name: slow-loop
max_iterations: 5
nodes:
  generate: {{run: 'echo {{"score": 3}}'}}
  critique:
    shell: [sh, -c, 'echo "critique $1" >> {marks}; if [ "$1" = 7 ] && [ ! -e {flag} ]; then touch {flag}; sleep 30; fi; printf "{{\\"score\\": %s}}" "$1"', sh, {{param: "${{refine|generate.score}}"}}]
    idempotent: true
  refine:
    shell: [sh, -c, 'echo "refine $1" >> {marks}; expr "$1" + 2', sh, {{param: "${{critique.score}}"}}]
    idempotent: true
edges:
  - {{from: generate, to: critique}}
  - {{from: critique, to: refine, condition: "${{critique.score}} < 8"}}
  - {{from: refine, to: critique}}
"""
    )
    proc = start_console(tmp_path, cfg)
    assert proc.stdin is not None
    proc.stdin.write("/run slow-loop\n")
    proc.stdin.flush()
    wait_line(proc, "critique#3 started")
    deadline = time.monotonic() + 20
    while not flag.exists() and time.monotonic() < deadline:  # polling a condition: the third critique is in its sleep
        time.sleep(0.02)
    assert flag.exists()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert marks.read_text().splitlines() == ["critique 3", "refine 3", "critique 5", "refine 5", "critique 7"]
    again = console(tmp_path, "/run show 1\n", config=cfg)
    assert again.returncode == 0, again.stderr
    assert "Resuming run #1 after a restart (5 steps already done; loop s1.critique → s1.refine → s1.critique: 2 iterations recorded)" in again.stdout
    assert "Run #1 succeeded" in again.stdout
    # iterations 1 and 2 were not repeated; iteration 3 went on where it was interrupted
    assert marks.read_text().splitlines() == [
        "critique 3", "refine 3", "critique 5", "refine 5", "critique 7", "critique 7", "refine 7", "critique 9",
    ]
    assert "s1.critique#3 succeeded" in again.stdout and "s1.critique#4 succeeded" in again.stdout
    assert "[run #1] s1.critique started" not in again.stdout and "s1.critique#2 started" not in again.stdout


def _check(tmp: Path, cfg: Path, target: str) -> subprocess.CompletedProcess[str]:
    import os
    import sys

    env = {**os.environ, "BATON_CONFIG_DIR": str(cfg), "BATON_DATA_DIR": str(tmp / "data")}
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", "workflow", "check", target], capture_output=True, text=True, cwd=tmp, env=env, timeout=60
    )


def test_workflow_check_prints_the_graph_and_rejects_bad_files_with_positions(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    ok = _check(tmp_path, cfg, "refine-loop")
    assert ok.returncode == 0, ok.stderr
    assert "refine shell: refine  <- critique if ${critique.score} < 8" in ok.stdout
    assert "cycle: critique → refine → critique (max_iterations 5, on_max_iterations fail)" in ok.stdout
    params = _check(tmp_path, cfg, str(EXAMPLES / "classify-branch.yaml"))
    assert params.stdout.startswith("inputs: kind (string, default factual, one of factual|opinion|creative)")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nnodes:\n  a: {run: echo a}\n  b: {run: echo b}\n  c: {run: echo c}\nedges:\n  - {from: a, to: b}\n  - {from: b, to: c}\n  - {from: c, to: b}\n")
    p = _check(tmp_path, cfg, str(bad))
    assert p.returncode == 1 and p.stderr.strip() == f"error: {bad}:6:1: cycle b → c → b has no max_iterations (set it on the workflow or a node)"
    bad.write_text("name: bad\nnodes:\n  a: {run: echo a}\n  lost: {run: echo b, depends_on: [lost]}\n")
    p = _check(tmp_path, cfg, str(bad))
    assert p.returncode == 1 and f"error: {bad}:4:3: node 'lost' is unreachable" in p.stderr
