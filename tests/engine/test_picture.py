"""Workflow pictures: the drawing model, DOT/Mermaid text, SVG through Graphviz, and the CLI."""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.app import build_catalog
from bot.settings import Settings
from engine.events import StepRecord
from engine.graph import Edge, Graph, Node
from engine.parse import compile_text
from engine.picture import LayoutUnavailable, layout_available, picture, render, to_dot, to_mermaid
from tests.conftest import REPO

NO_DOT = "SVG/PNG need Graphviz's dot (apt-get install graphviz; .ci/run installs it)"


def _catalog():  # type: ignore[no-untyped-def]
    os.environ.setdefault("BATON_CONFIG_DIR", str(REPO / "config"))
    return build_catalog(Settings())


def baton(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    e = {**os.environ, "BATON_CONFIG_DIR": str(REPO / "config"), "PYTHONPATH": str(REPO), **env}
    return subprocess.run([sys.executable, "-m", "bot.cli", *args], capture_output=True, text=True, env=e, cwd=cwd, timeout=60)


_EDGE_FIELDS = {f.name for f in fields(Edge)}
_NODE_FIELDS = {f.name for f in fields(Node)}


@dataclass(frozen=True)
class _BoundedEdge(Edge):
    """A back edge carrying its cycle bound, for an IR without ``Edge.back`` (older graphs)."""

    max_iterations: int = 0


@dataclass(frozen=True)
class _WhenEdge(Edge):
    """An edge with a condition expression, for an IR without ``Edge.when``."""

    when: str = ""


def _when_edge(source: str, expr: str) -> Edge:
    return Edge(source, "success", when=expr) if "when" in _EDGE_FIELDS else _WhenEdge(source, "success", expr)  # type: ignore[call-arg]


def _loop_graph() -> Graph:
    """generate → critique → (if score < 8) refine → critique, at most 5 times."""
    if "back" in _EDGE_FIELDS:  # the IR's bounded cycles: a back edge, the bound on the node
        back = Edge("refine", "success", back=True)  # type: ignore[call-arg]
        critique = Node("critique", "llm", "score it", edges=(Edge("generate"), back), max_iterations=5)  # type: ignore[call-arg]
    else:
        critique = Node("critique", "llm", "score it", edges=(Edge("generate"), _BoundedEdge("refine", "success", 5)))
    return Graph(
        nodes=(Node("generate", "llm", "write a haiku"), critique, Node("refine", "llm", "improve it", edges=(_when_edge("critique", "${critique.score} < 8"),))),
        exit="critique",
        name="haiku-loop",
    )


def test_ops_check_picture_has_every_step_clusters_and_labelled_edges() -> None:
    g = compile_text("ops-check", _catalog(), name="ops-check")
    pic = picture(g)
    assert {n.id for n in pic.nodes} == {n.id for n in g.nodes}
    assert pic.title == "ops-check"
    # inlined workflows are clusters named after them; the whole-graph cluster became the title
    assert set(pic.clusters.values()) == {"disk-check", "system-report", "service-health"}
    labels = {(e.source, e.target): e.label for e in pic.edges}
    assert labels[("s1.disk.usage", "s1.disk-alert")] == "on failure"
    assert labels[("s1.disk.usage", "s1.health.http")] == "on success"
    assert labels[("s1.health.http", "s1.health.fallback")] == "on failure"
    dot = to_dot(pic)
    assert 'id="step-s1.health.http"' in dot and "cluster_s1.report" in dot and "retry 2" in dot
    mmd = to_mermaid(pic)
    assert mmd.startswith("---\ntitle: ops-check\n---\nflowchart LR\n")
    assert '-.->|"on failure"| n_s1_disk_alert' in mmd and 'subgraph n_c_s1_report["workflow system-report"]' in mmd


def test_condition_and_bounded_cycle_are_labelled() -> None:
    pic = picture(_loop_graph())
    by = {(e.source, e.target): e for e in pic.edges}
    assert by[("critique", "refine")].style == "condition"
    assert by[("critique", "refine")].label == "if ${critique.score} < 8"
    assert by[("refine", "critique")].style == "loop"
    assert by[("refine", "critique")].label == "repeat (at most 5×)"
    dot = to_dot(pic)
    assert 'refine -> critique [label="repeat (at most 5×)"' in dot
    assert 'critique -> refine [label="if ${critique.score} < 8"' in dot
    assert '==>|"repeat (at most 5×)"|' in to_mermaid(pic)


def test_run_picture_marks_status_with_icon_and_word() -> None:
    g = compile_text("echo a THEN fail boom THEN echo c", _catalog())
    now = datetime.now(UTC)
    steps = {
        "s1": StepRecord("1", "s1", "echo a", "builtin", "succeeded", 1, "a", None, now, now),
        "s2": StepRecord("1", "s2", "fail boom", "builtin", "failed", 2, "", "boom", now, now),
    }
    pic = picture(g, steps)
    status = {n.id: n.status for n in pic.nodes}
    assert status == {"s1": "succeeded", "s2": "failed", "s3": "pending"}
    dot = to_dot(pic)
    assert "✓ succeeded" in dot and "✗ failed, attempt 2" in dot and "… pending" in dot
    assert "status-failed" in dot and "#ffcdd2" in dot  # colour, but never colour alone


@pytest.mark.skipif(not layout_available(), reason=NO_DOT)
def test_svg_names_every_node() -> None:
    g = compile_text("ops-check", _catalog(), name="ops-check")
    svg = html.unescape(render(picture(g), "svg").decode())  # Graphviz writes "-" as &#45;
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    for n in g.steps:
        assert f'id="step-{n.id}"' in svg
    for text in ("disk usage", "load average", "memory", "uptime", "GET health endpoint", "list listening sockets instead"):
        assert text in svg
    svg2 = html.unescape(render(picture(_loop_graph()), "svg").decode())
    for text in ("write a haiku", "score it", "improve it", "repeat (at most 5×)", "critique.score} < 8"):
        assert text in svg2


def test_render_without_dot_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(LayoutUnavailable, match="apt-get install graphviz"):
        render(picture(_loop_graph()), "png")


@pytest.mark.skipif(not layout_available(), reason=NO_DOT)
def test_cli_visualize_ops_check_svg(tmp_path: Path) -> None:
    p = baton("workflow", "visualize", "ops-check", "--output", "ops.svg", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    svg = html.unescape((tmp_path / "ops.svg").read_text())
    g = compile_text("ops-check", _catalog(), name="ops-check")
    assert all(f'id="step-{n.id}"' in svg for n in g.steps)
    p = baton("workflow", "visualize", "echo a AND echo b THEN IF_SUCCESS echo ok ELSE echo bad", "-o", "t.png", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "t.png").read_bytes().startswith(b"\x89PNG")


def test_cli_visualize_text_formats_without_graphviz(tmp_path: Path) -> None:
    env = {"PATH": os.path.dirname(sys.executable)}
    p = baton("workflow", "visualize", "ops-check", "--output", "ops.mmd", cwd=tmp_path, **env)
    assert p.returncode == 0, p.stderr
    assert "flowchart LR" in (tmp_path / "ops.mmd").read_text()
    p = baton("workflow", "visualize", "ops-check", "--output", "ops.dot", cwd=tmp_path, **env)
    assert p.returncode == 0 and "digraph workflow" in (tmp_path / "ops.dot").read_text()
    p = baton("workflow", "visualize", "ops-check", "--output", "ops.svg", cwd=tmp_path, **env)
    assert p.returncode == 2 and "apt-get install graphviz" in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "ops.svg").exists()


def test_cli_visualize_errors(tmp_path: Path) -> None:
    p = baton("workflow", "visualize", "echo a THEN\nAND b", "--output", "x.dot", cwd=tmp_path)
    assert p.returncode == 1 and "line 2, column 1" in p.stderr
    p = baton("workflow", "visualize", "ops-check", "--output", "x.gif", cwd=tmp_path)
    assert p.returncode == 2 and re.search(r"unknown format '\.gif'", p.stderr)


def test_loop_iterations_show_the_latest_record() -> None:
    from dataclasses import replace as _replace

    from bot.dashboard._data import ordered_steps

    g = _loop_graph()
    now = datetime.now(UTC)
    rec = StepRecord("1", "critique", "score it", "llm", "succeeded", 1, "", None, now, now)
    steps = {"generate": _replace(rec, node_id="generate"), "critique": rec, "refine": _replace(rec, node_id="refine"),
             "critique#2": _replace(rec, node_id="critique#2", status="running")}
    by = {n.id: n for n in picture(g, steps).nodes}
    assert (by["critique"].status, by["critique"].iteration) == ("running", 2)
    assert "▶ running, iteration 2" in to_dot(picture(g, steps))
    assert [s.node_id for s in ordered_steps(g, list(reversed(steps.values())))] == ["generate", "critique", "critique#2", "refine"]
