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


@dataclass(frozen=True, slots=True)
class Edge:
    """A dependency of a node: ``source`` must reach ``condition`` for it to hold."""

    source: str
    condition: Condition = "success"


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
    """

    id: str
    kind: StepKind
    label: str
    args: dict[str, Any] = field(default_factory=dict)
    edges: tuple[Edge, ...] = ()
    join: Join = "all"
    policy: StepPolicy = StepPolicy()
    span: tuple[int, int] | None = None

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

    def to_json(self) -> str:
        """Serialise for storage with the run (so a resume uses the same graph)."""
        return json.dumps(
            {
                "name": self.name,
                "source": self.source,
                "exit": self.exit,
                "uses": list(self.uses),
                "nodes": [asdict(n) for n in self.nodes],
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
                )
            )
        return cls(
            nodes=tuple(nodes), exit=raw["exit"], source=raw["source"], name=raw["name"], uses=tuple(raw.get("uses", ()))
        )

    def describe(self) -> str:
        """A readable listing of the graph, one node a line (``baton workflow check``)."""
        lines = []
        for n in self.nodes:
            deps = ", ".join(
                f"{e.source}" + ("" if e.condition == "success" else f" on {e.condition}") for e in n.edges
            )
            pol = []
            if n.policy.retries:
                pol.append(f"retry {n.policy.retries}")
            if n.policy.timeout_s is not None:
                pol.append(f"timeout {n.policy.timeout_s:g}s")
            if n.policy.continue_on_error:
                pol.append("continue on error")
            what = f"gate({n.join})" if n.is_gate else f"{n.kind}: {n.label}"
            line = f"{n.id:<6} {what}"
            if deps:
                line += f"  <- {deps}"
            if pol:
                line += f"  [{', '.join(pol)}]"
            lines.append(line)
        lines.append(f"exit: {self.exit}")
        return "\n".join(lines)
