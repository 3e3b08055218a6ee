"""Workflow pictures: one drawing model from the graph IR, emitted as DOT, Mermaid, SVG or PNG.

:func:`picture` turns a :class:`~engine.graph.Graph` (optionally with each step's
latest :class:`~engine.events.StepRecord`) into a :class:`Picture`: boxes by step
kind, join gates as small shapes, edges labelled by their condition, inlined named
workflows as clusters, cycles with their bound and the workflow's parameters in the
title. Emitters:

* :func:`to_dot` – Graphviz DOT text (built with the ``graphviz`` package; no binary needed),
* :func:`to_mermaid` – Mermaid ``flowchart`` text,
* :func:`render` – SVG or PNG bytes through Graphviz's ``dot`` program
  (:class:`LayoutUnavailable` says how to install it when it is missing).

Adding an edge kind is one entry in :data:`EDGE_STYLES`; a condition that is not a
known kind (an expression such as ``${critique.score} < 8``) is drawn as a
condition edge labelled with its text. Status colours come with an icon and a word
so a picture never relies on colour alone.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.events import StepRecord
from engine.graph import Graph, Node

# How an edge is drawn, by its condition (``Edge.condition``). Keys not listed here
# are condition expressions and use the "condition" style with their own text.
EDGE_STYLES: dict[str, dict[str, str]] = {
    "success": {"label": "on success", "color": "#2e7d32", "style": "solid", "mermaid": "-->"},
    "failure": {"label": "on failure", "color": "#c62828", "style": "dashed", "mermaid": "-.->"},
    "always": {"label": "always", "color": "#616161", "style": "dotted", "mermaid": "-.->"},
    "condition": {"label": "", "color": "#1565c0", "style": "solid", "mermaid": "-->"},
    "loop": {"label": "repeat", "color": "#6a1b9a", "style": "bold", "mermaid": "==>"},
}

# Node shape and fill by step kind (Graphviz shape names; Mermaid bracket pairs).
KIND_STYLES: dict[str, dict[str, str]] = {
    "builtin": {"shape": "box", "fill": "#eceff1", "mermaid": "[{}]"},
    "shell": {"shape": "box", "fill": "#fff8e1", "mermaid": "[/{}/]"},
    "http": {"shape": "box", "fill": "#e3f2fd", "mermaid": "[{}]"},
    "disk": {"shape": "box", "fill": "#f3e5f5", "mermaid": "[{}]"},
    "llm": {"shape": "box", "fill": "#e8f5e9", "mermaid": "({})"},
    "workflow": {"shape": "component", "fill": "#ede7f6", "mermaid": "[[{}]]"},
    "approve": {"shape": "hexagon", "fill": "#fff3e0", "mermaid": "{{{{{}}}}}"},
    "gate": {"shape": "diamond", "fill": "#ffffff", "mermaid": "{{{}}}"},
}
_DEFAULT_KIND = {"shape": "box", "fill": "#ffffff", "mermaid": "[{}]"}

# Status: fill colour, icon and word (icon + text, not colour alone).
STATUS_STYLES: dict[str, tuple[str, str]] = {
    "pending": ("#f5f5f5", "…"),
    "running": ("#bbdefb", "▶"),
    "waiting": ("#ffe0b2", "⏸"),
    "succeeded": ("#c8e6c9", "✓"),
    "failed": ("#ffcdd2", "✗"),
    "skipped": ("#eeeeee", "·"),
    "cancelled": ("#d7ccc8", "⊘"),
}


class LayoutUnavailable(RuntimeError):
    """SVG/PNG needs Graphviz's ``dot`` program, which is not installed.

    The message says how to install it; ``.dot`` and ``.mmd`` output always work.
    """


@dataclass(frozen=True, slots=True)
class PicNode:
    """One box of the picture.

    Attributes:
        id: the graph node id (also the SVG element id, prefixed ``step-``).
        kind: the step kind (``gate`` for joins).
        title: the text shown (the step's own label, without its workflow path).
        detail: a second line (retry/timeout policy, join rule).
        cluster: id prefix of the inlined workflow it belongs to, or ``""``.
        status: the step's status in a run, or ``None`` for a plain workflow picture.
        attempt: the step's attempt number in a run (0 when unknown).
        iteration: the loop iteration of the step's latest record (0/1 outside loops).
    """

    id: str
    kind: str
    title: str
    detail: str = ""
    cluster: str = ""
    status: str | None = None
    attempt: int = 0
    iteration: int = 0


@dataclass(frozen=True, slots=True)
class PicEdge:
    """One arrow: ``source`` → ``target`` with ``style`` (a key of :data:`EDGE_STYLES`) and its label."""

    source: str
    target: str
    style: str
    label: str
    structural: bool = False  # into a join gate: drawn plain, unlabelled


@dataclass(frozen=True, slots=True)
class Picture:
    """A workflow drawn: nodes, edges, clusters (prefix → workflow name), title and parameters."""

    title: str
    nodes: tuple[PicNode, ...]
    edges: tuple[PicEdge, ...]
    clusters: dict[str, str] = field(default_factory=dict)
    params: tuple[str, ...] = ()


def _policy_text(n: Node) -> str:
    bits = []
    if n.is_gate:
        return "all must finish" if n.join == "all" else "first that ran"
    if n.policy.retries:
        bits.append(f"retry {n.policy.retries}")
    if n.policy.timeout_s is not None:
        bits.append(f"timeout {n.policy.timeout_s:g}s")
    if n.policy.continue_on_error:
        bits.append("continue on error")
    bound = _bound(n)
    if bound:
        bits.append(f"at most {bound} iterations")
    when = getattr(n, "when", None)
    if when:
        bits.append(f"when {when}")
    return ", ".join(bits)


def _bound(obj: Any) -> int | None:
    """The iteration bound of a cycle, on an edge, node or its policy (``max_iterations``)."""
    for holder in (obj, getattr(obj, "policy", None)):
        v = getattr(holder, "max_iterations", None) if holder is not None else None
        if v:
            return int(v)
    return None


def _params(graph: Graph) -> tuple[str, ...]:
    """The workflow's parameters, when the IR carries them (``inputs``: specs with ``describe()``, or a mapping)."""
    raw = getattr(graph, "inputs", None) or ()
    out = []
    if isinstance(raw, Mapping):
        raw = [type("P", (), {"name": k, **(v if isinstance(v, Mapping) else {})}) for k, v in raw.items()]
    for p in raw:
        if callable(getattr(p, "describe", None)):
            out.append(str(p.describe()))
            continue
        name, typ, default = getattr(p, "name", p), getattr(p, "type", None), getattr(p, "default", None)
        out.append(str(name) + (f": {typ}" if typ else "") + (f" = {default!r}" if default is not None else ""))
    return tuple(out)


def _loop_bounds(graph: Graph) -> dict[tuple[str, str], int]:
    """``(source, target)`` of each back edge → its loop's ``max_iterations`` (from ``Graph.loops()``, when the IR has it)."""
    loops = getattr(graph, "loops", None)
    try:
        found = loops() if callable(loops) else (loops or ())
    except ValueError:  # an unbounded cycle: drawn without a bound (workflow check reports it)
        return {}
    out: dict[tuple[str, str], int] = {}
    for lp in found:
        for be in getattr(lp, "back_edges", ()):
            out[(be[0], be[1])] = int(getattr(lp, "max_iterations", 0) or 0)
    return out


_GENERATED_ID = re.compile(r"^[sg]\d+$")  # ids the text compiler makes up (s1, g2)
_ITERATION = re.compile(r"^(.*)#(\d+)$")


def latest_records(steps: Mapping[str, StepRecord]) -> dict[str, tuple[StepRecord, int]]:
    """Node id → its latest record and iteration number (loop iterations are recorded as ``node#2``, ``node#3``…)."""
    out: dict[str, tuple[StepRecord, int]] = {}
    for key, rec in steps.items():
        m = _ITERATION.match(key)
        node, it = (m.group(1), int(m.group(2))) if m else (key, 1)
        if node not in out or it > out[node][1]:
            out[node] = (rec, it)
    return out


def picture(graph: Graph, steps: Mapping[str, StepRecord] | None = None, *, title: str | None = None) -> Picture:
    """Build the drawing model of ``graph``.

    Args:
        graph: the compiled workflow.
        steps: node id → the step's latest record in a run; colours each step by status
            (steps without a record are ``pending``). ``None`` draws the plain workflow.
        title: shown above the graph; default the workflow's name or text.

    Returns:
        A :class:`Picture`; nodes keep the graph's topological order.
    """
    ids = {n.id for n in graph.nodes}
    order = {n.id: i for i, n in enumerate(graph.nodes)}
    bounds = _loop_bounds(graph)
    latest = latest_records(steps) if steps is not None else {}
    prefixes: dict[str, str] = {}
    nodes: list[PicNode] = []
    for n in graph.nodes:
        parts = n.id.split(".")
        path = [p.strip() for p in n.label.split("›")]
        if not n.is_gate:
            # an inlined step's id is "<step>.<node>…" and its label "<workflow> › … › <label>"
            for depth in range(1, len(parts)):
                if depth - 1 < len(path) - 1:
                    prefixes.setdefault(".".join(parts[:depth]), path[depth - 1])
        cluster = ".".join(parts[:-1])
        status = None
        attempt = iteration = 0
        if steps is not None and not n.is_gate:
            rec, iteration = latest.get(n.id, (None, 0))
            status = rec.status if rec else "pending"
            attempt = rec.attempt if rec else 0
        shown = ("AND" if n.join == "all" else "first") if n.is_gate else path[-1]
        if not n.is_gate and not _GENERATED_ID.match(parts[-1]) and parts[-1].lower() not in shown.lower():
            shown = f"{parts[-1]}: {shown}"  # a named node (YAML) whose label does not say its name
        nodes.append(PicNode(n.id, n.kind, shown, _policy_text(n), cluster, status, attempt, iteration))
    # a cluster holding every node is the workflow itself: make it the title instead
    clusters = {p: name for p, name in prefixes.items() if p}
    every = [c for c in clusters if all(pn.id.startswith(c + ".") for pn in nodes)]
    default_title = graph.name or graph.source
    for c in every:
        default_title = graph.name or clusters[c]
        del clusters[c]
    nodes = [
        PicNode(pn.id, pn.kind, pn.title, pn.detail, _known_cluster(pn.cluster, clusters), pn.status, pn.attempt, pn.iteration)
        for pn in nodes
    ]
    edges: list[PicEdge] = []
    for n in graph.nodes:
        for e in n.edges:
            if e.source not in ids:
                continue
            cond = str(e.condition)
            when = getattr(e, "when", None) or getattr(e, "expression", None)  # a condition beside the outcome
            back = order[e.source] >= order[n.id] or bool(getattr(e, "back", False))
            if back:
                bound = bounds.get((e.source, n.id)) or _bound(e) or _bound(n) or _bound(graph)
                label = f"repeat (at most {bound}×)" if bound else "repeat"
                if when or cond not in ("success", "always"):
                    label = f"{'if ' + str(when) if when else _cond_label(cond)}; {label}"
                edges.append(PicEdge(e.source, n.id, "loop", label))
                continue
            style = cond if cond in EDGE_STYLES else "condition"
            label = _cond_label(cond)
            if when:
                style, label = "condition", f"if {when}"
            structural = n.is_gate and cond == "always" and not when
            edges.append(PicEdge(e.source, n.id, style, "" if structural else label, structural))
    return Picture(title or default_title, tuple(nodes), tuple(edges), clusters, _params(graph))


def _known_cluster(prefix: str, clusters: Mapping[str, str]) -> str:
    while prefix and prefix not in clusters:
        prefix = prefix.rpartition(".")[0]
    return prefix


def _cond_label(cond: str) -> str:
    return EDGE_STYLES[cond]["label"] if cond in EDGE_STYLES else f"if {cond}"


def _node_label(pn: PicNode) -> str:
    lines = [pn.title if len(pn.title) <= 48 else pn.title[:47] + "…"]
    if pn.kind != "gate":
        lines.append(f"({pn.kind}{', ' + pn.detail if pn.detail else ''})")
    if pn.status is not None:
        icon = STATUS_STYLES.get(pn.status, ("", "?"))[1]
        word = pn.status + (f", iteration {pn.iteration}" if pn.iteration > 1 else "") + (f", attempt {pn.attempt}" if pn.attempt > 1 else "")
        lines.append(f"{icon} {word}")
    return "\n".join(lines)


def to_dot(pic: Picture) -> str:
    """The picture as Graphviz DOT text (left to right; SVG element ids ``step-<node id>``)."""
    import graphviz

    title = pic.title if len(pic.title) <= 90 else pic.title[:89] + "…"
    if pic.params:
        title += "\nparameters: " + ", ".join(pic.params)
    g = graphviz.Digraph("workflow", graph_attr={"rankdir": "LR", "label": title, "labelloc": "t", "fontname": "Helvetica", "fontsize": "14"})
    g.attr("node", fontname="Helvetica", fontsize="11", style="filled,rounded")
    g.attr("edge", fontname="Helvetica", fontsize="9")
    members: dict[str, list[PicNode]] = {}
    for pn in pic.nodes:
        members.setdefault(pn.cluster, []).append(pn)

    def add_node(target: Any, pn: PicNode) -> None:
        ks = KIND_STYLES.get(pn.kind, _DEFAULT_KIND)
        fill = STATUS_STYLES[pn.status][0] if pn.status in STATUS_STYLES else ks["fill"]
        attrs = {"shape": ks["shape"], "fillcolor": fill, "id": f"step-{pn.id}", "class": f"step kind-{pn.kind}"}
        if pn.status:
            attrs["class"] += f" status-{pn.status}"
        if pn.kind == "gate":
            attrs.update(style="filled", fontsize="9", width="0.3", height="0.3")
        target.node(pn.id, _node_label(pn), tooltip=f"{pn.id}: {pn.kind}", **attrs)

    def add_cluster(parent: Any, prefix: str) -> None:
        with parent.subgraph(name=f"cluster_{prefix}") as sub:
            sub.attr(label=f"workflow {pic.clusters[prefix]}", style="rounded,dashed", color="#9e9e9e", fontsize="11")
            for pn in members.get(prefix, ()):
                add_node(sub, pn)
            for child in _children(prefix, pic.clusters):
                add_cluster(sub, child)

    for pn in members.get("", ()):
        add_node(g, pn)
    for top in _children("", pic.clusters):
        add_cluster(g, top)
    for e in pic.edges:
        st = EDGE_STYLES[e.style]
        attrs = {"color": st["color"], "style": st["style"]}
        if e.structural:
            attrs = {"color": "#9e9e9e", "arrowsize": "0.6"}
        if e.label:
            attrs["label"] = e.label
            attrs["fontcolor"] = st["color"]
        if e.style == "loop":
            attrs["constraint"] = "false"
        g.edge(e.source, e.target, **attrs)
    return g.source


def _children(prefix: str, clusters: Mapping[str, str]) -> list[str]:
    """Clusters directly inside ``prefix`` (``""`` = top level)."""
    out = []
    for c in clusters:
        parent = _known_cluster(c.rpartition(".")[0], clusters)
        if parent == prefix:
            out.append(c)
    return sorted(out)


_MERMAID_ID = re.compile(r"[^A-Za-z0-9_]")


def _mid(node_id: str) -> str:
    return "n_" + _MERMAID_ID.sub("_", node_id)


def _mtext(text: str) -> str:
    return '"' + text.replace('"', "#quot;").replace("\n", "<br/>") + '"'


def to_mermaid(pic: Picture) -> str:
    """The picture as a Mermaid ``flowchart LR`` (clusters as subgraphs, status as classes)."""
    lines = ["---", f"title: {pic.title}" + (f" (parameters: {', '.join(pic.params)})" if pic.params else ""), "---", "flowchart LR"]
    members: dict[str, list[PicNode]] = {}
    for pn in pic.nodes:
        members.setdefault(pn.cluster, []).append(pn)

    def node_line(pn: PicNode, indent: str) -> str:
        shape = KIND_STYLES.get(pn.kind, _DEFAULT_KIND)["mermaid"]
        line = f"{indent}{_mid(pn.id)}{shape.format(_mtext(_node_label(pn)))}"
        if pn.status:
            line += f":::{pn.status}"
        return line

    def emit(prefix: str, indent: str) -> None:
        for pn in members.get(prefix, ()):
            lines.append(node_line(pn, indent))
        for child in _children(prefix, pic.clusters):
            lines.append(f"{indent}subgraph {_mid('c.' + child)}[{_mtext('workflow ' + pic.clusters[child])}]")
            emit(child, indent + "  ")
            lines.append(f"{indent}end")

    emit("", "  ")
    for e in pic.edges:
        arrow = EDGE_STYLES[e.style]["mermaid"]
        label = f"|{_mtext(e.label)}|" if e.label else ""
        lines.append(f"  {_mid(e.source)} {arrow}{label} {_mid(e.target)}")
    for status, (fill, _) in STATUS_STYLES.items():
        lines.append(f"  classDef {status} fill:{fill}")
    return "\n".join(lines) + "\n"


INSTALL_HINT = (
    "SVG and PNG need Graphviz's 'dot' program: install it with "
    "'apt-get install graphviz' (Debian/Ubuntu), 'brew install graphviz' (macOS) or 'dnf install graphviz'; "
    ".dot and .mmd output work without it"
)


def layout_available() -> bool:
    """True when Graphviz's ``dot`` program is on ``PATH`` (SVG/PNG can be made)."""
    return shutil.which("dot") is not None


def render(pic: Picture, fmt: str) -> bytes:
    """Lay out and render ``pic`` as ``svg`` or ``png`` bytes (blocking: run it in a thread from async code).

    Raises:
        LayoutUnavailable: Graphviz's ``dot`` is not installed (the message says how to install it).
        ValueError: ``fmt`` is not ``svg`` or ``png``.
    """
    if fmt not in ("svg", "png"):
        raise ValueError(f"cannot render '{fmt}'; use svg or png (or to_dot/to_mermaid for text)")
    if not layout_available():
        raise LayoutUnavailable(INSTALL_HINT)
    import graphviz

    try:
        return graphviz.pipe("dot", fmt, to_dot(pic).encode(), quiet=True)
    except graphviz.ExecutableNotFound as e:  # raced with an uninstall
        raise LayoutUnavailable(INSTALL_HINT) from e


FORMATS = ("svg", "png", "dot", "mmd")


def write(pic: Picture, fmt: str) -> bytes:
    """The bytes of ``pic`` in ``fmt`` (one of :data:`FORMATS`); see :func:`render` for errors."""
    if fmt == "dot":
        return to_dot(pic).encode()
    if fmt == "mmd":
        return to_mermaid(pic).encode()
    return render(pic, fmt)


__all__ = [
    "EDGE_STYLES",
    "FORMATS",
    "INSTALL_HINT",
    "KIND_STYLES",
    "STATUS_STYLES",
    "LayoutUnavailable",
    "PicEdge",
    "PicNode",
    "Picture",
    "latest_records",
    "layout_available",
    "picture",
    "render",
    "to_dot",
    "to_mermaid",
    "write",
]
