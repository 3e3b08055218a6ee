"""Issue 14, fault 8: deep nesting is a positioned error, and nothing in the compiler recurses
without bound (before: 139 nested groups raised RecursionError)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from engine.catalog import Catalog
from engine.definitions import WorkflowDefinition, compile_definition
from engine.errors import WorkflowSyntaxError
from engine.parse import MAX_NESTING, compile_text
from tests.conftest import REPO


@pytest.mark.parametrize("depth", [MAX_NESTING + 1, 139, 5000])
def test_nesting_deeper_than_the_limit_is_a_positioned_error(depth: int) -> None:
    text = "echo a THEN " + "(" * depth + "echo b" + ")" * depth
    with pytest.raises(WorkflowSyntaxError) as ei:
        compile_text(text, Catalog())
    e = ei.value
    assert f"nested more than {MAX_NESTING} deep" in e.reason
    assert (e.line, e.column) == (1, len("echo a THEN ") + MAX_NESTING + 1)  # the first group too deep


def test_nesting_up_to_the_limit_compiles() -> None:
    g = compile_text("(" * MAX_NESTING + "echo a AND echo b" + ")" * MAX_NESTING + " (retry 2)", Catalog())
    assert [n.label for n in g.steps] == ["echo a", "echo b"]


def test_a_long_chain_listed_backwards_does_not_recurse() -> None:
    """The topological sort walks dependencies with an explicit stack (5,000 > the recursion limit)."""
    n = 5000
    nodes = {f"n{i}": {"run": f"echo {i}", **({"depends_on": [f"n{i - 1}"]} if i else {})} for i in reversed(range(n))}
    g = compile_definition(WorkflowDefinition("long", "", {"nodes": nodes}), Catalog())
    assert [s.id for s in g.steps][:3] == ["n0", "n1", "n2"] and len(g.steps) == n


def test_workflow_check_reports_deep_nesting_in_one_message() -> None:
    p = subprocess.run(
        [sys.executable, "-m", "bot.cli", "workflow", "check", "(" * 200 + "echo a" + ")" * 200],
        capture_output=True,
        text=True,
        timeout=60,
        env={"BATON_CONFIG_DIR": str(REPO / "config"), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)},
    )
    assert p.returncode == 1 and "Traceback" not in p.stderr and "RecursionError" not in p.stderr
    assert f"line 1, column {MAX_NESTING + 1}: groups are nested more than" in p.stderr
