"""YAML workflow definitions: the shipped ones, and invalid ones rejected with the file and node."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bot.app import build_catalog
from bot.settings import Settings
from engine.catalog import Catalog
from engine.definitions import compile_definition, load_definitions
from engine.errors import DefinitionError
from tests.conftest import REPO


def test_shipped_workflows_compile() -> None:
    cat = build_catalog(Settings(config_dir=REPO / "config"))
    assert {"disk-check", "system-report", "service-health", "ops-check"} <= set(cat.workflows)
    ops = cat.graph_for("ops-check")
    kinds = {n.kind for n in ops.steps}
    assert {"disk", "shell", "http", "builtin"} <= kinds
    health = next(n for n in ops.steps if n.kind == "http")
    fallback = next(n for n in ops.steps if n.id.endswith("health.fallback"))
    assert [(e.source, e.condition) for e in fallback.edges] == [(health.id, "failure")]
    assert health.policy.retries == 2


def write(tmp: Path, name: str, text: str) -> Path:
    d = tmp / "wf"
    d.mkdir(exist_ok=True)
    (d / name).write_text(text)
    return d


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("name: a\nnodes: {x: {shell: 'rm -rf /'}}\n", "shell takes a list of strings"),
        ("name: a\nnodes: {x: {shell: ['rm', '-rf', '/']}}\n", "not on the shell allow-list"),
        ("name: a\nnodes: {x: {run: echo a, depends_on: [y]}}\n", "depends on unknown node 'y'"),
        ("name: a\nnodes: {x: {run: echo a, bogus: 1}}\n", "unknown keys ['bogus']"),
        ("name: a\nnodes: {x: {run: echo a, depends_on: [y]}, y: {run: echo b, depends_on: [x]}}\n", "cycle"),
        ("name: a\nnodes: {x: {run: echo a, depends_on: {y: sometimes}}, y: {run: echo b}}\n", "condition must be"),
        ("name: a\nflow: 'echo a THEN'\nnodes: {}\n", "exactly one of"),
        ("name: a\nnodes: {x: {run: a, retries: many}}\n", "invalid literal"),
    ],
)
def test_invalid_definitions(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(DefinitionError, match=re.escape(needle)):
        defs = load_definitions(write(tmp_path, "a.yaml", text))
        compile_definition(defs["a"], Catalog(workflows=defs, shell_allow=("df",)), stack=("a",))


def test_a_workflow_using_itself_is_rejected(tmp_path: Path) -> None:
    defs = load_definitions(write(tmp_path, "a.yaml", "name: loop\nflow: 'echo a THEN loop'\n"))
    with pytest.raises(DefinitionError, match="uses itself"):
        Catalog(workflows=defs).graph_for("loop", stack=("loop",))


def test_duplicate_names_and_bad_yaml(tmp_path: Path) -> None:
    d = write(tmp_path, "a.yaml", "name: same\nflow: echo a\n")
    write(tmp_path, "b.yaml", "name: same\nflow: echo b\n")
    with pytest.raises(DefinitionError, match="also defined"):
        load_definitions(d)
    d2 = tmp_path / "bad"
    d2.mkdir()
    (d2 / "x.yaml").write_text("name: [unclosed\n")
    with pytest.raises(DefinitionError, match="invalid YAML"):
        load_definitions(d2)
