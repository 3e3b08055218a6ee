"""The workflow graph: the one intermediate representation both front-ends compile to.

A workflow is a directed acyclic graph of :class:`Node` objects. Every incoming
dependency of a node is an :class:`Edge` with a condition on the *outcome* of the
node it comes from:

* ``success`` – the predecessor succeeded (``A THEN B``, YAML ``depends_on``),
* ``failure`` – the predecessor failed (``IF_FAILURE``, ``ELSE``, YAML ``on_error``),
* ``always``  – the predecessor finished, whatever its outcome (gates use it).

Execution rule (see :mod:`engine.run`): a node is decided once every predecessor is
terminal. Edges from *skipped* predecessors are ignored; the node runs when at least
one edge remains and every remaining edge is satisfied, otherwise it is skipped.

Gates (``kind="gate"``) are zero-cost nodes that give every block of the text
language a single exit, so connectors compose:

* ``join="all"``   – outcome of a parallel group: succeeded when every non-skipped
  predecessor succeeded, failed when any failed, skipped when all were skipped.
* ``join="first"`` – outcome of a branch: the outcome of the first predecessor (in
  edge order) that was not skipped. ``X THEN IF_FAILURE Y`` ends in
  ``first(Y, X)``: Y's outcome when Y ran, else X's.

A failure is *handled* when some ``failure`` or ``always`` edge out of the failed
node (or out of a gate it flows into) led to a node that ran. A run fails when it
has an unhandled failure.

Graph features (issue 17, seed 001 "Graph Orchestration"):

* An edge may carry ``when``, an expression over step outputs and workflow inputs
  (``${critique.score} < 8``, see :mod:`engine.expressions`); the edge holds when
  its outcome condition holds *and* the expression is true. A node may carry its
  own ``when``, checked once its edges hold. A node skipped by a false condition
  is recorded as skipped with the condition and the values it saw.
* Cycles are allowed when bounded: a *back edge* (``back=True``, found by the
  compiler) closes a loop; the nodes of one strongly connected component form a
  :class:`Loop`, run iteration by iteration (``evaluate``, ``evaluate#2``, …)
  at most ``max_iterations`` times (node level, else graph level). Nodes outside
  a loop that depend on it are decided once the loop has finished.
* ``inputs`` declares workflow parameters (:class:`InputSpec`); the values a run
  was started with are stored in ``input_values`` so a resume sees them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Condition = Literal["success", "failure", "always"]
Join = Literal["all", "first"]
StepKind = Literal["builtin", "shell", "http", "disk", "workflow", "llm", "approve", "gate"]


@dataclass(frozen=True, slots=True)
class StepPolicy:
    """How a step is executed.

    Attributes:
        retries: extra attempts after the first failure (``(retry 3)`` = up to 4 attempts).
        timeout_s: seconds one attempt may take; ``None`` uses the run's default.
        continue_on_error: a failure is recorded but its dependents see success
            (YAML ``continue_on_error``; GitHub Actions semantics).
        idempotent: the step may be re-run after a crash interrupted it. Set by the
            action (``echo``/``sleep``/reads are), or in YAML.
    """

    retries: int = 0
    timeout_s: float | None = None
    continue_on_error: bool = False
    idempotent: bool | None = None


OnMax = Literal["fail", "continue"]
InputType = Literal["string", "integer", "number", "boolean"]


@dataclass(frozen=True, slots=True)
class Edge:
    """A dependency of a node: ``source`` must reach ``condition`` for it to hold.

    Attributes:
        when: an expression that must also be true (``${classify.type} == "factual"``).
        back: the edge closes a cycle (it re-enters a loop; see :class:`Loop`).
    """

    source: str
    condition: Condition = "success"
    when: str | None = None
    back: bool = False


@dataclass(frozen=True, slots=True)
class InputSpec:
    """One declared workflow parameter (YAML ``inputs``).

    Attributes:
        name: how steps refer to it (``${inputs.name}``) and how ``/run`` passes it (``name=value``).
        type: ``string``, ``integer``, ``number`` or ``boolean``.
        default: the value when none is given (``None``: no default).
        required: a value must be given (or come from the default).
        allowed: the only values accepted, when not empty.
        description: one line for the parameter list.
        pattern: a regular expression the whole value must match, when set.
    """

    name: str
    type: InputType = "string"
    default: Any = None
    required: bool = False
    allowed: tuple[Any, ...] = ()
    description: str = ""
    pattern: str | None = None

    def describe(self) -> str:
        """``service (string, required, one of api|web)``."""
        bits: list[str] = [self.type]
        if self.required and self.default is None:
            bits.append("required")
        if self.default is not None:
            bits.append(f"default {self.default}")
        if self.allowed:
            bits.append("one of " + "|".join(str(a) for a in self.allowed))
        if self.pattern:
            bits.append(f"matching {self.pattern}")
        return f"{self.name} ({', '.join(bits)})"


@dataclass(frozen=True, slots=True)
class Loop:
    """A bounded cycle: the nodes of one strongly connected component.

    Attributes:
        nodes: its node ids, in graph order.
        back_edges: ``(source, target, edge)`` for each edge that re-enters the loop.
        max_iterations: how often the loop may run (the first pass counts as 1).
        on_max_iterations: ``fail`` (the run fails) or ``continue`` (the flow goes
            on after the loop) when a back edge would fire past the bound.
    """

    nodes: tuple[str, ...]
    back_edges: tuple[tuple[str, str, Edge], ...]
    max_iterations: int
    on_max_iterations: OnMax = "fail"

    @property
    def name(self) -> str:
        return " → ".join((*self.nodes, self.nodes[0]))


@dataclass(frozen=True, slots=True)
class Node:
    """One step (or gate) of a workflow.

    Attributes:
        id: unique within the graph (``s1``, ``s2``… for text; the YAML key otherwise).
        kind: the action family (see :data:`StepKind`).
        label: what users see in the status table (the step's text).
        args: action arguments (JSON-serialisable).
        edges: incoming dependencies, in priority order (matters for ``join="first"``).
        join: gate semantics; ignored for steps.
        policy: retries, timeout, continue-on-error, idempotency.
        span: ``(start, end)`` character offsets of the step in the workflow text.
        when: a condition checked once the node's edges hold; false → skipped.
        cache_ttl_s: reuse a stored result of the same action, arguments and inputs
            for this many seconds (idempotent steps only).
        max_iterations: bound of the loop this node belongs to (overrides the graph's).
        preferred_providers: LLM provider entries tried in order on provider failure.
    """

    id: str
    kind: StepKind
    label: str
    args: dict[str, Any] = field(default_factory=dict)
    edges: tuple[Edge, ...] = ()
    join: Join = "all"
    policy: StepPolicy = StepPolicy()
    span: tuple[int, int] | None = None
    when: str | None = None
    cache_ttl_s: float | None = None
    max_iterations: int | None = None
    preferred_providers: tuple[str, ...] = ()

    @property
    def is_gate(self) -> bool:
        return self.kind == "gate"


@dataclass(frozen=True, slots=True)
class Graph:
    """A compiled workflow: nodes in a topological order, plus the exit node.

    ``exit`` is the node whose outcome is the workflow's result (a gate or a step);
    a named workflow used as a step succeeds when its exit succeeds. ``uses`` names
    every workflow and configured action the graph draws on (permission checks).
    """

    nodes: tuple[Node, ...]
    exit: str
    source: str = ""
    name: str | None = None
    uses: tuple[str, ...] = ()
    inputs: tuple[InputSpec, ...] = ()
    input_values: dict[str, Any] = field(default_factory=dict)
    max_iterations: int | None = None
    on_max_iterations: OnMax = "fail"
    max_parallel_steps: int | None = None
    fail_fast: bool | None = None

    def node(self, node_id: str) -> Node:
        """Return the node called ``node_id``; raises ``KeyError``."""
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise KeyError(node_id)

    @property
    def steps(self) -> tuple[Node, ...]:
        """The nodes that do work (gates left out)."""
        return tuple(n for n in self.nodes if not n.is_gate)

    def loops(self) -> tuple[Loop, ...]:
        """The bounded cycles of the graph (strongly connected components with a back edge).

        Raises:
            ValueError: a cycle with no ``max_iterations`` (node or graph level).
        """
        return _loops(self)

    def to_json(self) -> str:
        """Serialise for storage with the run (so a resume uses the same graph)."""
        return json.dumps(
            {
                "name": self.name,
                "source": self.source,
                "exit": self.exit,
                "uses": list(self.uses),
                "nodes": [asdict(n) for n in self.nodes],
                "inputs": [asdict(i) for i in self.inputs],
                "input_values": self.input_values,
                "max_iterations": self.max_iterations,
                "on_max_iterations": self.on_max_iterations,
                "max_parallel_steps": self.max_parallel_steps,
                "fail_fast": self.fail_fast,
            }
        )

    @classmethod
    def from_json(cls, data: str) -> Graph:
        """Inverse of :meth:`to_json`."""
        raw = json.loads(data)
        nodes = []
        for n in raw["nodes"]:
            nodes.append(
                Node(
                    id=n["id"],
                    kind=n["kind"],
                    label=n["label"],
                    args=n["args"],
                    edges=tuple(Edge(**e) for e in n["edges"]),
                    join=n["join"],
                    policy=StepPolicy(**n["policy"]),
                    span=tuple(n["span"]) if n["span"] else None,
                    when=n.get("when"),
                    cache_ttl_s=n.get("cache_ttl_s"),
                    max_iterations=n.get("max_iterations"),
                    preferred_providers=tuple(n.get("preferred_providers", ())),
                )
            )
        return cls(
            nodes=tuple(nodes),
            exit=raw["exit"],
            source=raw["source"],
            name=raw["name"],
            uses=tuple(raw.get("uses", ())),
            inputs=tuple(InputSpec(**{**i, "allowed": tuple(i.get("allowed", ()))}) for i in raw.get("inputs", ())),
            input_values=dict(raw.get("input_values") or {}),
            max_iterations=raw.get("max_iterations"),
            on_max_iterations=raw.get("on_max_iterations", "fail"),
            max_parallel_steps=raw.get("max_parallel_steps"),
            fail_fast=raw.get("fail_fast"),
        )

    def describe(self) -> str:
        """A readable listing of the graph, one node a line (``baton workflow check``):
        parameters first, then nodes with their edges (conditions shown as ``if …``,
        loop edges as ``loop``), then each cycle with its bound, then the exit."""
        lines = []
        if self.inputs:
            lines.append("inputs: " + ", ".join(i.describe() for i in self.inputs))
        for n in self.nodes:
            deps = ", ".join(
                f"{e.source}"
                + ("" if e.condition == "success" else f" on {e.condition}")
                + (f" if {e.when}" if e.when else "")
                + (" (loop)" if e.back else "")
                for e in n.edges
            )
            pol = []
            if n.policy.retries:
                pol.append(f"retry {n.policy.retries}")
            if n.policy.timeout_s is not None:
                pol.append(f"timeout {n.policy.timeout_s:g}s")
            if n.policy.continue_on_error:
                pol.append("continue on error")
            if n.when:
                pol.append(f"when {n.when}")
            if n.cache_ttl_s:
                pol.append(f"cache {n.cache_ttl_s:g}s")
            if n.preferred_providers:
                pol.append("providers " + " > ".join(n.preferred_providers))
            what = f"gate({n.join})" if n.is_gate else f"{n.kind}: {n.label}"
            line = f"{n.id:<6} {what}"
            if deps:
                line += f"  <- {deps}"
            if pol:
                line += f"  [{', '.join(pol)}]"
            lines.append(line)
        for lp in self.loops():
            lines.append(f"cycle: {lp.name} (max_iterations {lp.max_iterations}, on_max_iterations {lp.on_max_iterations})")
        limits = []
        if self.max_parallel_steps:
            limits.append(f"max_parallel_steps {self.max_parallel_steps}")
        if self.fail_fast is not None:
            limits.append(f"fail_fast {str(self.fail_fast).lower()}")
        if limits:
            lines.append("limits: " + ", ".join(limits))
        lines.append(f"exit: {self.exit}")
        return "\n".join(lines)


def instance_id(node_id: str, iteration: int) -> str:
    """The step-record id of ``node_id`` in loop iteration ``iteration`` (1 → ``node_id``, 2 → ``node_id#2``)."""
    return node_id if iteration <= 1 else f"{node_id}#{iteration}"


def split_instance(instance: str) -> tuple[str, int]:
    """Inverse of :func:`instance_id`: ``evaluate#2`` → ``("evaluate", 2)``; ``evaluate`` → ``("evaluate", 1)``."""
    base, sep, it = instance.rpartition("#")
    if sep and it.isdigit() and base:
        return base, int(it)
    return instance, 1


def _loops(g: Graph) -> tuple[Loop, ...]:
    """Tarjan's strongly connected components over the edges, keeping those with a back edge."""
    succ: dict[str, list[str]] = {n.id: [] for n in g.nodes}
    for n in g.nodes:
        for e in n.edges:
            succ[e.source].append(n.id)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on: set[str] = set()
    stack: list[str] = []
    comps: list[list[str]] = []
    counter = 0
    for root in succ:
        if root in index:
            continue
        work = [(root, iter(succ[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            nxt = next(it, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on.add(nxt)
                    work.append((nxt, iter(succ[nxt])))
                elif nxt in on:
                    low[v] = min(low[v], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                comps.append(comp)
    order = {n.id: i for i, n in enumerate(g.nodes)}
    loops = []
    for comp in comps:
        members = set(comp)
        back = tuple((e.source, n.id, e) for n in g.nodes if n.id in members for e in n.edges if e.back and e.source in members)
        if not back:
            continue
        ids = tuple(sorted(comp, key=order.__getitem__))
        bounds = [g.node(i).max_iterations for i in ids if g.node(i).max_iterations]
        bound = min(bounds) if bounds else g.max_iterations
        if not bound:
            raise ValueError(f"cycle {' → '.join((*ids, ids[0]))} has no max_iterations (set it on the workflow or a node)")
        loops.append(Loop(ids, back, int(bound), g.on_max_iterations))
    return tuple(loops)
