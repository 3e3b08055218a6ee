"""YAML workflow definitions (``config/workflows/*.yaml``) → the same graph as text.

A file holds one workflow::

    name: ops-check
    description: Disk and system report in parallel, then the service health check.
    nodes:
      disk:    {run: disk-check}
      report:  {run: system-report}
      health:
        run: service-health
        depends_on: [disk, report]          # both succeeded (disk AND report THEN health)
        retries: 1
        timeout: 20s
        on_error: {run: "echo health check failed; see the listeners above"}   # fallback
      notify:
        run: echo disk check failed
        depends_on: {disk: failure}         # IF_FAILURE
        continue_on_error: true

or, instead of ``nodes``, ``flow: "<workflow text>"``.

A node does one of: ``run: <step text>`` (resolved like a text step: a built-in,
an action, another workflow, or an LLM prompt), ``shell: [argv...]``,
``http: {url, method, expect_status, timeout}``, ``disk: {paths, threshold_percent}``.
``depends_on`` is a list (each must succeed) or a mapping ``node: success|failure|always``.
``on_error`` is a fallback step run when the node fails (after its retries); the
node's dependents then see the fallback's outcome. The workflow's result is its
single sink node, or all sinks joined.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from engine.errors import DefinitionError
from engine.graph import Edge, Graph, StepPolicy
from engine.parse import GraphBuilder, _Block, compile_text, parse_duration

if TYPE_CHECKING:
    from engine.catalog import Catalog

_ACTION_KEYS = ("run", "shell", "http", "disk")
_NODE_KEYS = {*_ACTION_KEYS, "depends_on", "retries", "timeout", "on_error", "continue_on_error", "idempotent", "label"}


@dataclass(frozen=True)
class WorkflowDefinition:
    """One workflow loaded from YAML.

    Attributes:
        name: how chat and other workflows refer to it (``disk-check``).
        description: one line for ``/workflows``.
        spec: the raw mapping (``nodes`` or ``flow``).
        path: the file it came from, for error messages.
    """

    name: str
    description: str
    spec: dict[str, Any] = field(repr=False)
    path: str = ""


def load_definitions(folder: Path) -> dict[str, WorkflowDefinition]:
    """Load every ``*.yaml``/``*.yml`` in ``folder`` (sorted), keyed by name.

    Raises:
        DefinitionError: unreadable YAML, a missing name, a duplicate name, or a
            file with neither ``nodes`` nor ``flow``.
    """
    found: dict[str, WorkflowDefinition] = {}
    if not folder.is_dir():
        return found
    for path in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
        try:
            raw = yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            raise DefinitionError(f"{path}: invalid YAML: {e}") from None
        if not isinstance(raw, dict):
            raise DefinitionError(f"{path}: expected a mapping at the top level")
        name = str(raw.get("name") or path.stem)
        if name in found:
            raise DefinitionError(f"{path}: workflow '{name}' is also defined in {found[name].path}")
        if ("nodes" in raw) == ("flow" in raw):
            raise DefinitionError(f"{path}: a workflow has exactly one of 'nodes' or 'flow'")
        found[name] = WorkflowDefinition(name, str(raw.get("description", "")), raw, str(path))
    return found


def _policy(where: str, spec: dict[str, Any]) -> StepPolicy:
    try:
        timeout = parse_duration(spec["timeout"]) if spec.get("timeout") is not None else None
        retries = int(spec.get("retries", 0))
    except (TypeError, ValueError) as e:
        raise DefinitionError(f"{where}: {e}") from None
    idem = spec.get("idempotent")
    return StepPolicy(
        retries=retries,
        timeout_s=timeout,
        continue_on_error=bool(spec.get("continue_on_error", False)),
        idempotent=None if idem is None else bool(idem),
    )


def _add_node(b: GraphBuilder, defn: WorkflowDefinition, nid: str, spec: Any) -> _Block:
    where = f"{defn.path or defn.name}: node '{nid}'"
    if isinstance(spec, str):
        spec = {"run": spec}
    if not isinstance(spec, dict):
        raise DefinitionError(f"{where}: expected a mapping")
    unknown = set(spec) - _NODE_KEYS
    if unknown:
        raise DefinitionError(f"{where}: unknown keys {sorted(unknown)}; allowed: {sorted(_NODE_KEYS)}")
    actions = [k for k in _ACTION_KEYS if k in spec]
    if len(actions) != 1:
        raise DefinitionError(f"{where}: needs exactly one of {list(_ACTION_KEYS)}")
    kind = actions[0]
    policy = _policy(where, spec)
    label = str(spec.get("label") or nid)
    if kind == "run":
        return b.add_step(str(spec["run"]), span=None, policy=policy, node_id=nid, label=str(spec.get("label") or spec["run"]))
    args = b.catalog.action_args(kind, spec[kind], where)
    if policy.idempotent is None:
        policy = StepPolicy(policy.retries, policy.timeout_s, policy.continue_on_error, kind in ("http", "disk"))
    return b.add_action(nid, kind, label, args, policy)


def compile_definition(defn: WorkflowDefinition, catalog: Catalog, *, stack: tuple[str, ...] = ()) -> Graph:
    """Compile a YAML definition to a :class:`Graph`.

    Raises:
        DefinitionError: an invalid node, an unknown dependency or a cycle.
        WorkflowSyntaxError / UnknownWorkflowError: from ``run:`` or ``flow:`` text.
    """
    spec = defn.spec
    if "flow" in spec:
        return compile_text(str(spec["flow"]), catalog, name=defn.name, stack=stack)
    nodes = spec["nodes"]
    if not isinstance(nodes, dict) or not nodes:
        raise DefinitionError(f"{defn.path}: 'nodes' must be a non-empty mapping")
    b = GraphBuilder(catalog, source=f"workflow {defn.name}", stack=stack)
    blocks: dict[str, _Block] = {}
    for nid, nspec in nodes.items():
        blocks[str(nid)] = _add_node(b, defn, str(nid), nspec)
    # Fallbacks: node N with on_error F → F runs on N's failure; dependents see first(F, N).
    exits: dict[str, str] = {}
    for nid, nspec in nodes.items():
        blk = blocks[str(nid)]
        exits[str(nid)] = blk.exit
        if isinstance(nspec, dict) and nspec.get("on_error") is not None:
            fb = _add_node(b, defn, f"{nid}.fallback", nspec["on_error"])
            b.connect(blk.exit, fb.entries, "failure")
            exits[str(nid)] = b.gate([fb.exit, blk.exit], "first")
    used: set[str] = set()
    for nid, nspec in nodes.items():
        deps = nspec.get("depends_on") if isinstance(nspec, dict) else None
        if deps is None:
            continue
        if isinstance(deps, str):
            deps = [deps]
        pairs = list(deps.items()) if isinstance(deps, dict) else [(d, "success") for d in deps]
        for dep, cond in pairs:
            dep = str(dep)
            if dep not in exits:
                raise DefinitionError(f"{defn.path}: node '{nid}' depends on unknown node '{dep}'")
            if cond not in ("success", "failure", "always"):
                raise DefinitionError(f"{defn.path}: node '{nid}': condition must be success, failure or always")
            # a failure dependency watches the node itself, not its fallback gate
            src = blocks[dep].exit if cond == "failure" else exits[dep]
            b.connect(src, blocks[str(nid)].entries, cond)  # type: ignore[arg-type]
            used.add(dep)
    sinks = [exits[n] for n in map(str, nodes) if n not in used]
    exit_id = sinks[0] if len(sinks) == 1 else b.gate(sinks, "all")
    try:
        return b.build(exit_id, name=defn.name)
    except ValueError as e:
        raise DefinitionError(f"{defn.path}: {e}") from None


__all__ = ["Edge", "WorkflowDefinition", "compile_definition", "load_definitions"]
