"""Workflow text → :class:`engine.graph.Graph`.

The grammar lives in ``grammar.lark`` (LALR, lark). Connector semantics, as in the
seed document *Advanced Orchestration* (shared/seeds/000_…):

* ``A THEN B``: B runs after A succeeded; a failure of A stops the chain.
* ``A AND B``: A and B run concurrently; the group succeeds when both do.
  ``AND`` binds tighter than ``THEN``.
* ``X THEN IF_SUCCESS Y ELSE Z``: Y when X succeeded, Z when it failed; the flow
  goes on with the outcome of the branch that ran.
* ``X THEN IF_FAILURE Y``: Y only when X failed; a handled failure lets the flow
  continue (with Y's outcome), and when X succeeded the flow continues with X's.
* ``A AND B THEN IF_ANY_FAILED Y`` (or ``A AND B AND IF_ANY_FAILED Y``): every
  member runs to its end, then Y runs if any failed. Same outcome rule as
  IF_FAILURE; the name says that it follows a parallel group.
* Modifiers ``(retry N)`` and ``(timeout 30s)`` follow a step or a group; on a
  group they apply to each step inside that has none of its own.

Each step's text is resolved to an action by a :class:`engine.catalog.Catalog`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from engine.errors import DefinitionError, WorkflowSyntaxError
from engine.expressions import REF
from engine.graph import Condition, Edge, Graph, InputSpec, Join, Node, StepPolicy

if TYPE_CHECKING:
    from engine.catalog import Catalog

_TOKEN_NAMES = {
    "LPAR": "'('",
    "RPAR": "')'",
    "WORD": "a step",
    "STRING": "a quoted string",
    "THEN": "THEN",
    "AND": "AND",
    "IF_SUCCESS": "IF_SUCCESS",
    "IF_FAILURE": "IF_FAILURE",
    "IF_ANY_FAILED": "IF_ANY_FAILED",
    "ELSE": "ELSE",
    "MODIFIER": "a modifier like (retry 3)",
    "$END": "the end of the text",
}


@lru_cache(maxsize=1)
def _parser() -> Lark:
    grammar = (Path(__file__).with_name("grammar.lark")).read_text()
    return Lark(grammar, parser="lalr", lexer="basic", propagate_positions=True, maybe_placeholders=False)


def prepare_parser() -> None:
    """Read ``grammar.lark`` and build the parser now (cached for the process), so that the
    first workflow parsed while serving does no file I/O on the event loop; call at start-up."""
    _parser()


def parse_tree(text: str) -> Tree:
    """Parse workflow text into lark's tree.

    Raises:
        WorkflowSyntaxError: with the line, column and a caret under the token.
    """
    if not text.strip():
        raise WorkflowSyntaxError("the workflow is empty", text, 0)
    try:
        tree = _parser().parse(text)
    except UnexpectedEOF as e:
        raise WorkflowSyntaxError(_expected_msg(e.expected, "the end of the text"), text, len(text)) from None
    except UnexpectedToken as e:
        tok = e.token
        if tok.type == "$END":
            pos = len(text.rstrip())
            got = "the end of the text"
        else:
            pos = tok.start_pos if tok.start_pos is not None else 0
            got = f"'{tok.value}'"
        raise WorkflowSyntaxError(_expected_msg(e.expected, got), text, pos) from None
    except UnexpectedCharacters as e:
        ch = text[e.pos_in_stream] if e.pos_in_stream < len(text) else ""
        reason = "unterminated quote" if ch in "\"'" else f"unexpected character {ch!r}"
        raise WorkflowSyntaxError(reason, text, e.pos_in_stream) from None
    except UnexpectedInput as e:  # pragma: no cover - other lark input errors
        raise WorkflowSyntaxError(str(e).splitlines()[0], text, getattr(e, "pos_in_stream", 0) or 0) from None
    _check_nesting(tree, text)
    return tree


MAX_NESTING = 50
"""Deepest allowed nesting of ``( … )`` groups. The parser (LALR) has no limit of its own, but
the compiler walks groups recursively; this bound keeps it far inside Python's recursion limit
(fault 14.8: 139 levels raised ``RecursionError``)."""


def _check_nesting(tree: Tree, text: str) -> None:
    """Raise a positioned :class:`WorkflowSyntaxError` at the first group nested deeper than
    :data:`MAX_NESTING` (an iterative walk: checking must not recurse either)."""
    stack: list[tuple[Tree, int]] = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        if node.data == "group":
            depth += 1
            if depth > MAX_NESTING:
                pos = node.meta.start_pos if not node.meta.empty else 0
                raise WorkflowSyntaxError(
                    f"groups are nested more than {MAX_NESTING} deep; flatten the workflow or split it into named workflows",
                    text,
                    pos,
                )
        stack.extend((c, depth) for c in node.children if isinstance(c, Tree))


def _expected_msg(expected: set[str] | frozenset[str], got: str) -> str:
    names = sorted({_TOKEN_NAMES.get(x, x) for x in expected if not x.startswith("__")})
    if "a step" in names:
        return f"expected a step, got {got}"
    return f"expected {' or '.join(names)}, got {got}"


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)?$", re.I)
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: str | float | int) -> float:
    """``"30s"``, ``"500ms"``, ``"2m"``, ``"1h"`` or a number → seconds (float).

    Raises:
        ValueError: for anything else.
    """
    if isinstance(value, (int, float)):
        return float(value)
    m = _DURATION.match(value.strip())
    if not m:
        raise ValueError(f"not a duration: {value!r} (use e.g. 30s, 500ms, 2m)")
    return float(m.group(1)) * _UNIT[m.group(2).lower() if m.group(2) else None]


def _modifiers(tokens: list[Token], text: str) -> tuple[int | None, float | None]:
    retries: int | None = None
    timeout: float | None = None
    for tok in tokens:
        inner = tok.value.strip()[1:-1]
        for part in filter(None, (p.strip() for p in inner.split(","))):
            key, _, val = part.partition(" ")
            key, val = key.lower(), val.strip()
            try:
                if key == "retry":
                    if not re.fullmatch(r"\d{1,3}", val) or int(val) > 100:
                        raise ValueError(f"retry takes a whole number from 0 to 100, e.g. (retry 3), not {val!r}")
                    retries = int(val)
                else:
                    timeout = parse_duration(val)
                    if timeout <= 0:
                        raise ValueError("timeout must be positive")
            except ValueError as e:
                raise WorkflowSyntaxError(f"bad modifier '{part}': {e}", text, tok.start_pos or 0) from None
    return retries, timeout


def _unquote(s: str) -> str:
    body = s[1:-1]
    return re.sub(r"\\(.)", r"\1", body)


@dataclass
class _MutNode:
    id: str
    kind: str
    label: str
    args: dict[str, Any]
    edges: list[Edge] = field(default_factory=list)
    join: Join = "all"
    policy: StepPolicy = StepPolicy()
    span: tuple[int, int] | None = None
    when: str | None = None
    cache_ttl_s: float | None = None
    max_iterations: int | None = None
    preferred_providers: tuple[str, ...] = ()


def prefix_refs(value: Any, ids: set[str], prefix: str) -> Any:
    """``value`` with every ``${node…}`` reference to one of ``ids`` renamed ``${prefix.node…}``
    (strings, lists and dicts walked); used when a named workflow is inlined."""
    if isinstance(value, str):
        if "${" not in value:
            return value

        def one(path: str) -> str:
            parts = path.strip().split(".")
            for cut in range(len(parts), 0, -1):
                if ".".join(parts[:cut]) in ids:
                    return f"{prefix}.{path.strip()}"
            return path.strip()

        return REF.sub(lambda m: "${" + "|".join(one(p) for p in m.group(1).split("|")) + "}", value)
    if isinstance(value, list):
        return [prefix_refs(v, ids, prefix) for v in value]
    if isinstance(value, dict):
        return {k: prefix_refs(v, ids, prefix) for k, v in value.items()}
    return value


@dataclass
class _Block:
    entries: list[str]
    exit: str


class GraphBuilder:
    """Builds a graph node by node; shared by the text and YAML front-ends."""

    def __init__(self, catalog: Catalog, source: str = "", prefix: str = "", stack: tuple[str, ...] = ()) -> None:
        self.catalog = catalog
        self.source = source
        self.prefix = prefix
        self.stack = stack
        self.nodes: dict[str, _MutNode] = {}
        self.uses: set[str] = set()
        self.inputs: dict[str, InputSpec] = {}
        self._n = 0

    def new_id(self, stem: str = "s") -> str:
        self._n += 1
        return f"{self.prefix}{stem}{self._n}"

    def gate(self, sources: list[str], join: Join) -> str:
        gid = self.new_id("g")
        self.nodes[gid] = _MutNode(gid, "gate", f"gate({join})", {}, [Edge(s, "always") for s in sources], join)
        return gid

    def connect(self, source: str, targets: list[str], condition: Condition) -> None:
        for t in targets:
            self.nodes[t].edges.append(Edge(source, condition))

    def add_step(
        self,
        text: str,
        *,
        span: tuple[int, int] | None,
        policy: StepPolicy = StepPolicy(),
        node_id: str | None = None,
        label: str | None = None,
    ) -> _Block:
        """Resolve ``text`` through the catalogue and add it (inlining named workflows)."""
        try:
            resolved = self.catalog.resolve(text, position=span[0] if span else None, stack=self.stack)
        except DefinitionError as e:
            if span is None:
                raise
            raise WorkflowSyntaxError(str(e), self.source, span[0]) from None
        nid = node_id or self.new_id()
        if resolved.kind in ("workflow", "shell", "http"):
            self.uses.add(resolved.label if resolved.kind != "workflow" else resolved.args["name"])
        if resolved.kind == "workflow":
            return self.inline(resolved.args["name"], nid, policy, label or text)
        pol = policy
        if pol.idempotent is None:
            pol = replace(pol, idempotent=resolved.idempotent)
        self.nodes[nid] = _MutNode(nid, resolved.kind, label or resolved.label, resolved.args, policy=pol, span=span)
        return _Block([nid], nid)

    def add_action(self, nid: str, kind: str, label: str, args: dict[str, Any], policy: StepPolicy) -> _Block:
        self.nodes[nid] = _MutNode(nid, kind, label, args, policy=policy)
        return _Block([nid], nid)

    def inline(self, name: str, nid: str, policy: StepPolicy, label: str) -> _Block:
        """Copy the named workflow's graph in, ids prefixed with ``nid.``."""
        sub = self.catalog.graph_for(name, stack=self.stack + (name,))
        self.uses.update(sub.uses)
        for spec in sub.inputs:
            self.inputs.setdefault(spec.name, spec)
        ids = {n.id for n in sub.nodes}
        looping = {i for lp in sub.loops() for i in lp.nodes}
        roots: list[str] = []
        for n in sub.nodes:
            new_id = f"{nid}.{n.id}"
            pol = n.policy
            if not n.is_gate:
                if pol.retries == 0 and policy.retries:
                    pol = replace(pol, retries=policy.retries)
                if pol.timeout_s is None and policy.timeout_s is not None:
                    pol = replace(pol, timeout_s=policy.timeout_s)
            edges = [Edge(f"{nid}.{e.source}", e.condition, prefix_refs(e.when, ids, nid), e.back) for e in n.edges]
            if not edges:
                roots.append(new_id)
            shown = n.label if n.is_gate else f"{name} › {n.label}"
            self.nodes[new_id] = _MutNode(
                new_id,
                n.kind,
                shown,
                prefix_refs(dict(n.args), ids, nid),
                edges,
                n.join,
                pol,
                None,
                prefix_refs(n.when, ids, nid),
                n.cache_ttl_s,
                n.max_iterations or (sub.max_iterations if n.id in looping else None),
                n.preferred_providers,
            )
        return _Block(roots, f"{nid}.{sub.exit}")

    def build(self, exit_id: str, name: str | None = None, **options: Any) -> Graph:
        """The immutable graph; ``options`` are :class:`Graph` fields (``max_iterations``…).

        Raises:
            ValueError: a cycle without a back edge mark, an unknown dependency, or an
                unbounded loop.
        """
        nodes = tuple(
            Node(
                n.id, n.kind, n.label, n.args, tuple(n.edges), n.join, n.policy, n.span,  # type: ignore[arg-type]
                n.when, n.cache_ttl_s, n.max_iterations, n.preferred_providers,
            )
            for n in _topo(self.nodes)
        )
        options.setdefault("inputs", tuple(self.inputs.values()))
        graph = Graph(nodes=nodes, exit=exit_id, source=self.source, name=name, uses=tuple(sorted(self.uses)), **options)
        graph.loops()  # an unbounded cycle is refused here
        return graph


def _topo(nodes: dict[str, _MutNode]) -> list[_MutNode]:
    """Dependencies first; an explicit stack, so a long chain listed backwards cannot exhaust
    Python's recursion limit (fault 14.8)."""
    order: list[_MutNode] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for root in nodes:
        if state.get(root):
            continue
        state[root] = 1
        path: list[tuple[str, int]] = [(root, 0)]  # node, index of the next edge to follow
        while path:
            nid, i = path[-1]
            edges = nodes[nid].edges
            if i == len(edges):
                path.pop()
                state[nid] = 2
                order.append(nodes[nid])
                continue
            path[-1] = (nid, i + 1)
            if edges[i].back:  # a loop edge closes a bounded cycle; it is not a dependency
                continue
            src = edges[i].source
            if src not in nodes:
                raise ValueError(f"node '{nid}' depends on unknown node '{src}'")
            st = state.get(src, 0)
            if st == 1:
                raise ValueError(f"cycle through node '{src}'")
            if st == 0:
                state[src] = 1
                path.append((src, 0))
    return order


class _Compiler:
    def __init__(self, builder: GraphBuilder, text: str) -> None:
        self.b = builder
        self.text = text

    def block(self, tree: Tree) -> _Block:
        return getattr(self, f"_{tree.data}")(tree)

    def _seq(self, tree: Tree) -> _Block:
        first, *clauses = tree.children
        cur = self.block(first)
        for cl in clauses:
            cur = self.clause(cur, cl)
        return cur

    def clause(self, prev: _Block, cl: Tree) -> _Block:
        parts = [c for c in cl.children if isinstance(c, Tree)]
        b = self.b
        if cl.data == "then_plain":
            nxt = self.block(parts[0])
            b.connect(prev.exit, nxt.entries, "success")
            return _Block(prev.entries, nxt.exit)
        if cl.data == "then_if_success":
            yes = self.block(parts[0])
            b.connect(prev.exit, yes.entries, "success")
            if len(parts) == 1:
                return _Block(prev.entries, yes.exit)
            no = self.block(parts[1])
            b.connect(prev.exit, no.entries, "failure")
            return _Block(prev.entries, b.gate([yes.exit, no.exit], "first"))
        # then_if_failure / then_if_any_failed
        handler = self.block(parts[0])
        b.connect(prev.exit, handler.entries, "failure")
        return _Block(prev.entries, b.gate([handler.exit, prev.exit], "first"))

    def _par(self, tree: Tree) -> _Block:
        members = [c for c in tree.children if c.data != "any_failed"]
        any_failed = [c for c in tree.children if c.data == "any_failed"]
        blocks = [self.block(m) for m in members]
        if len(blocks) == 1:
            cur = blocks[0]
        else:
            entries = [e for blk in blocks for e in blk.entries]
            cur = _Block(entries, self.b.gate([blk.exit for blk in blocks], "all"))
        if any_failed:
            atom = [c for c in any_failed[0].children if isinstance(c, Tree)][0]
            handler = self.block(atom)
            self.b.connect(cur.exit, handler.entries, "failure")
            cur = _Block(cur.entries, self.b.gate([handler.exit, cur.exit], "first"))
        return cur

    def _atom(self, tree: Tree) -> _Block:
        return self.block(tree.children[0])

    def _group(self, tree: Tree) -> _Block:
        seq = tree.children[0]
        mods = [t for t in tree.children[1:] if isinstance(t, Token)]
        before = set(self.b.nodes)
        blk = self.block(seq)
        retries, timeout = _modifiers(mods, self.text)
        if retries is not None or timeout is not None:
            for nid in set(self.b.nodes) - before:
                n = self.b.nodes[nid]
                if n.kind == "gate":
                    continue
                pol = n.policy
                if retries is not None and pol.retries == 0:
                    pol = replace(pol, retries=retries)
                if timeout is not None and pol.timeout_s is None:
                    pol = replace(pol, timeout_s=timeout)
                n.policy = pol
        return blk

    def _step(self, tree: Tree) -> _Block:
        words = [t for t in tree.children if t.type in ("WORD", "STRING")]
        mods = [t for t in tree.children if t.type == "MODIFIER"]
        start = words[0].start_pos or 0
        end = words[-1].end_pos or start
        text = " ".join(_unquote(w.value) if w.type == "STRING" else w.value for w in words)
        retries, timeout = _modifiers(mods, self.text)
        policy = StepPolicy(retries=retries or 0, timeout_s=timeout)
        return self.b.add_step(text, span=(start, end), policy=policy, label=self.text[start:end])


def compile_text(text: str, catalog: Catalog, *, name: str | None = None, stack: tuple[str, ...] = ()) -> Graph:
    """Compile workflow text into a graph.

    Args:
        text: the workflow, e.g. ``"disk-check AND system-report THEN echo ok"``.
        catalog: resolves each step's text to an action or a named workflow.
        name: the workflow's name when it comes from a definition.
        stack: names of the workflows being compiled around this one (cycle guard).

    Raises:
        WorkflowSyntaxError: malformed text (with position).
        UnknownWorkflowError: a step names an unknown workflow (with close names).
    """
    tree = parse_tree(text)
    builder = GraphBuilder(catalog, source=text, stack=stack)
    blk = _Compiler(builder, text).block(tree)
    return builder.build(blk.exit, name=name)
