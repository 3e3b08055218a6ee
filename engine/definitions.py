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

Graph features (issue 17; seed 001 "Graph Orchestration", seed 000 "Advanced Configuration")::

    name: refine-answer
    inputs:
      topic: {type: string, required: true}
      style: {type: string, default: short, allowed: [short, long]}
    max_iterations: 5                 # bounds every cycle (a node may set its own)
    on_max_iterations: fail           # or: continue
    max_parallel_steps: 2             # overrides [workflow] max_parallel_steps
    fail_fast: false
    nodes:
      generate: {run: "Write a ${inputs.style} paragraph about ${inputs.topic}"}
      critique:
        run: "Score this draft from 0 to 10: ${refine|generate}"
        schema: {type: object, required: [score], properties: {score: {type: number}}}
      refine: {run: "Improve this draft: ${refine|generate}", preferred_providers: [cheap, primary]}
      publish: {run: "echo ${refine|generate}", when: "${critique.score} >= 8", cache: {ttl: 1h}}
    edges:
      - {from: generate, to: critique}
      - {from: critique, to: refine, condition: "${critique.score} < 8"}
      - {from: refine, to: critique}          # the loop back
      - {from: critique, to: publish}

``nodes`` may also be the seed's list form, ``[{id: generate, run: …}, …]``.
``edges`` entries are ``from``, ``to``, optional ``condition`` (an expression, see
:mod:`engine.expressions`) and ``on`` (``success`` by default, ``failure``, ``always``);
they combine with ``depends_on``. An edge that closes a cycle is a loop edge; a cycle
needs ``max_iterations``. A shell argument takes a value only where the configuration
marks it as a parameter: ``shell: [deploy, --service, {param: "${inputs.service}"}]``
(one argv element, never a command line). ``schema`` asks an LLM step for JSON
valid against it (checked, retried once with the error). ``cache: {ttl: 1h}``
reuses a result (idempotent steps only).

Every error names the file, the line and the column (from the YAML parser's marks),
including unknown keys, unknown references, unbounded cycles and unreachable nodes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from engine.errors import DefinitionError
from engine.expressions import REF, condition, references
from engine.graph import Edge, Graph, InputSpec, StepPolicy
from engine.parse import GraphBuilder, _Block, compile_text, parse_duration

if TYPE_CHECKING:
    from engine.catalog import Catalog

_ACTION_KEYS = ("run", "shell", "http", "disk")
_NODE_KEYS = {
    *_ACTION_KEYS,
    "depends_on",
    "retries",
    "timeout",
    "on_error",
    "continue_on_error",
    "idempotent",
    "label",
    "when",
    "condition",
    "cache",
    "max_iterations",
    "preferred_providers",
    "schema",
}
_TOP_KEYS = {
    "name",
    "description",
    "nodes",
    "flow",
    "edges",
    "inputs",
    "max_iterations",
    "on_max_iterations",
    "max_parallel_steps",
    "fail_fast",
    "effect",  # read-only | changes: for routing (bot/routing asks before a workflow that changes things)
    "read_only",
}
_EDGE_KEYS = {"from", "to", "condition", "on"}
_INPUT_KEYS = {"type", "default", "required", "allowed", "choices", "enum", "pattern", "description"}  # choices/enum: as allowed
_TYPES = {"string": "string", "str": "string", "integer": "integer", "int": "integer", "number": "number", "float": "number", "boolean": "boolean", "bool": "boolean"}

Path_ = tuple[Any, ...]


@dataclass(frozen=True)
class WorkflowDefinition:
    """One workflow loaded from YAML.

    Attributes:
        name: how chat and other workflows refer to it (``disk-check``).
        description: one line for ``/workflows``.
        spec: the raw mapping (``nodes`` or ``flow``).
        path: the file it came from, for error messages.
        marks: YAML path (keys and list indexes) → 1-based ``(line, column)`` of that
            key (or list item) in the file; empty for definitions built in code.
    """

    name: str
    description: str
    spec: dict[str, Any] = field(repr=False)
    path: str = ""
    marks: dict[Path_, tuple[int, int]] = field(default_factory=dict, repr=False, compare=False)

    def where(self, *path: Any) -> str:
        """``file:line:column`` of the deepest known part of ``path`` (or the file alone)."""
        loc = self.path or self.name
        for cut in range(len(path), -1, -1):
            got = self.marks.get(tuple(path[:cut]))
            if got is not None:
                return f"{loc}:{got[0]}:{got[1]}"
        return loc


def _marks(node: yaml.Node, path: Path_, out: dict[Path_, tuple[int, int]]) -> None:
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            key = k.value if isinstance(k, yaml.ScalarNode) else None
            p = (*path, key)
            out[p] = (k.start_mark.line + 1, k.start_mark.column + 1)
            out[(*p, "=")] = (v.start_mark.line + 1, v.start_mark.column + 1)
            _marks(v, p, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            p = (*path, i)
            out[p] = (v.start_mark.line + 1, v.start_mark.column + 1)
            _marks(v, p, out)


def parse_definition(text: str, path: str = "") -> WorkflowDefinition:
    """One workflow from YAML text, with positions for error messages.

    Raises:
        DefinitionError: invalid YAML (with its position), not a mapping, an unknown
            top-level key, or not exactly one of ``nodes``/``flow``.
    """
    try:
        raw = yaml.safe_load(text)
        tree = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        pos = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        raise DefinitionError(f"{path}{pos}: invalid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise DefinitionError(f"{path}: expected a mapping at the top level")
    marks: dict[Path_, tuple[int, int]] = {}
    if tree is not None:
        _marks(tree, (), marks)
    name = str(raw.get("name") or Path(path).stem)
    if isinstance(raw.get("nodes"), list):
        raw = {**raw, "nodes": _listed_nodes(raw["nodes"], marks, path)}
    defn = WorkflowDefinition(name, str(raw.get("description", "")), raw, path, marks)
    unknown = sorted(set(map(str, raw)) - _TOP_KEYS)
    if unknown:
        raise DefinitionError(f"{defn.where(unknown[0])}: unknown key '{unknown[0]}'; allowed: {', '.join(sorted(_TOP_KEYS))}")
    if ("nodes" in raw) == ("flow" in raw):
        raise DefinitionError(f"{path}: a workflow has exactly one of 'nodes' or 'flow'")
    if "flow" in raw and "edges" in raw:
        raise DefinitionError(f"{defn.where('edges')}: 'edges' goes with 'nodes', not with 'flow'")
    return defn


def _listed_nodes(items: list[Any], marks: dict[Path_, tuple[int, int]], path: str) -> dict[str, Any]:
    """The seed's list form (``nodes: [{id: generate, run: …}, …]``) as the mapping form;
    the marks of ``("nodes", i, …)`` are copied to ``("nodes", id, …)``."""
    out: dict[str, Any] = {}
    for i, item in enumerate(items):
        pos = marks.get(("nodes", i))
        where = f"{path}:{pos[0]}:{pos[1]}" if pos else path
        if not isinstance(item, dict) or not isinstance(item.get("id", item.get("name")), str):
            raise DefinitionError(f"{where}: a node in a list needs an id (nodes: [{{id: NAME, run: …}}])")
        key = "id" if "id" in item else "name"
        nid = item[key]
        if nid in out:
            raise DefinitionError(f"{where}: node id '{nid}' is used twice")
        out[nid] = {k: v for k, v in item.items() if k != key}
        for p, m in list(marks.items()):
            if p[:2] == ("nodes", i):
                marks[("nodes", nid, *p[2:])] = m
        marks[("nodes", nid)] = marks.get(("nodes", i, key), pos or (0, 0))
    return out


def load_definitions(folder: Path) -> dict[str, WorkflowDefinition]:
    """Load every ``*.yaml``/``*.yml`` in ``folder`` (sorted), keyed by name.

    Raises:
        DefinitionError: unreadable YAML, a missing name, a duplicate name, an unknown
            top-level key, or a file with neither ``nodes`` nor ``flow``.
    """
    found: dict[str, WorkflowDefinition] = {}
    if not folder.is_dir():
        return found
    for path in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
        defn = parse_definition(path.read_text(), str(path))
        if defn.name in found:
            raise DefinitionError(f"{path}: workflow '{defn.name}' is also defined in {found[defn.name].path}")
        found[defn.name] = defn
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


def _shell_params(defn: WorkflowDefinition, nid: str, value: Any) -> tuple[Any, list[list[Any]]]:
    """Split ``{param: "${…}"}`` argv elements out of a shell spec: (plain spec, [[index, template]…])."""
    argv_path: tuple[Any, ...] = ("nodes", nid, "shell")
    argv = value
    if isinstance(value, dict):
        argv, argv_path = value.get("argv"), (*argv_path, "argv")
    if not isinstance(argv, list):
        return value, []
    plain: list[Any] = []
    params: list[list[Any]] = []
    for i, a in enumerate(argv):
        if isinstance(a, dict) and set(a) == {"param"} and isinstance(a["param"], str):
            if i == 0:
                raise DefinitionError(f"{defn.where(*argv_path, i)}: node '{nid}': the program (argv[0]) cannot be a parameter")
            params.append([i, a["param"]])
            plain.append(a["param"])
        elif isinstance(a, str) and REF.search(a):
            raise DefinitionError(
                f"{defn.where(*argv_path, i)}: node '{nid}': shell argument {a!r} has a ${{…}} reference; "
                f"mark it as a parameter instead: {{param: {a!r}}} (one argv element, never a command line)"
            )
        else:
            plain.append(a)
    if isinstance(value, dict):
        return {**value, "argv": plain}, params
    return plain, params


def _add_node(b: GraphBuilder, defn: WorkflowDefinition, nid: str, spec: Any, path: tuple[Any, ...] | None = None) -> _Block:
    path = path or ("nodes", nid)
    where = f"{defn.where(*path)}: node '{nid}'"
    if isinstance(spec, str):
        spec = {"run": spec}
    if not isinstance(spec, dict):
        raise DefinitionError(f"{where}: expected a mapping")
    unknown = sorted(set(spec) - _NODE_KEYS)
    if unknown:
        raise DefinitionError(f"{defn.where(*path, unknown[0])}: node '{nid}': unknown keys {unknown}; allowed: {sorted(_NODE_KEYS)}")
    actions = [k for k in _ACTION_KEYS if k in spec]
    if len(actions) != 1:
        raise DefinitionError(f"{where}: needs exactly one of {list(_ACTION_KEYS)}")
    kind = actions[0]
    policy = _policy(where, spec)
    label = str(spec.get("label") or nid)
    if kind == "run":
        blk = b.add_step(str(spec["run"]), span=None, policy=policy, node_id=nid, label=str(spec.get("label") or spec["run"]))
    else:
        value, params = _shell_params(defn, nid, spec[kind]) if kind == "shell" else (spec[kind], [])
        args = b.catalog.action_args(kind, value, where)
        if params:
            args["params"] = params
        if policy.idempotent is None:
            policy = StepPolicy(policy.retries, policy.timeout_s, policy.continue_on_error, kind in ("http", "disk"))
        blk = b.add_action(nid, kind, label, args, policy)
    _graph_options(b, defn, nid, spec, path, blk)
    return blk


def _graph_options(b: GraphBuilder, defn: WorkflowDefinition, nid: str, spec: dict[str, Any], path: tuple[Any, ...], blk: _Block) -> None:
    """``when``, ``cache``, ``max_iterations``, ``preferred_providers`` and ``schema`` of one node."""
    node = b.nodes.get(blk.exit) if blk.entries == [blk.exit] else None
    extras = [k for k in ("when", "condition", "cache", "max_iterations", "preferred_providers", "schema") if k in spec]
    if not extras:
        return
    if node is None:
        raise DefinitionError(f"{defn.where(*path, extras[0])}: node '{nid}': '{extras[0]}' needs a single step (this one runs a whole workflow)")
    when = spec.get("when", spec.get("condition"))
    if when is not None:
        key = "when" if "when" in spec else "condition"
        _check_condition(defn, str(when), (*path, key))
        node.when = str(when)
    if spec.get("cache") is not None:
        c = spec["cache"]
        ttl = c.get("ttl") if isinstance(c, dict) else c
        try:
            node.cache_ttl_s = parse_duration(ttl)
            if node.cache_ttl_s <= 0:
                raise ValueError("the ttl must be positive")
        except (TypeError, ValueError, AttributeError) as e:
            raise DefinitionError(f"{defn.where(*path, 'cache')}: node '{nid}': cache takes {{ttl: 1h}}: {e}") from None
        if not node.policy.idempotent:
            raise DefinitionError(
                f"{defn.where(*path, 'cache')}: node '{nid}': only idempotent steps may be cached (add idempotent: true if it is)"
            )
    if spec.get("max_iterations") is not None:
        node.max_iterations = _positive(defn, spec["max_iterations"], (*path, "max_iterations"))
    if spec.get("preferred_providers") is not None:
        pp = spec["preferred_providers"]
        if not isinstance(pp, list) or not pp or not all(isinstance(x, str) for x in pp):
            raise DefinitionError(f"{defn.where(*path, 'preferred_providers')}: node '{nid}': preferred_providers is a list of provider names")
        if node.kind != "llm":
            raise DefinitionError(f"{defn.where(*path, 'preferred_providers')}: node '{nid}': preferred_providers applies to LLM steps only")
        node.preferred_providers = tuple(pp)
    if spec.get("schema") is not None:
        if node.kind != "llm":
            raise DefinitionError(f"{defn.where(*path, 'schema')}: node '{nid}': schema applies to LLM steps only")
        if not isinstance(spec["schema"], dict):
            raise DefinitionError(f"{defn.where(*path, 'schema')}: node '{nid}': schema is a JSON Schema mapping")
        try:
            from jsonschema import Draft202012Validator
            from jsonschema.exceptions import SchemaError

            Draft202012Validator.check_schema(spec["schema"])
        except SchemaError as e:
            raise DefinitionError(f"{defn.where(*path, 'schema')}: node '{nid}': invalid JSON Schema: {e.message}") from None
        node.args = {**node.args, "schema": spec["schema"]}


def _positive(defn: WorkflowDefinition, value: Any, path: tuple[Any, ...]) -> int:
    try:
        v = int(value)
        if v < 1 or isinstance(value, bool):
            raise ValueError
    except (TypeError, ValueError):
        raise DefinitionError(f"{defn.where(*path)}: {path[-1]} must be a whole number of at least 1, not {value!r}") from None
    return v


def _check_condition(defn: WorkflowDefinition, expr: str, path: tuple[Any, ...]) -> None:
    try:
        condition(expr)
    except ValueError as e:
        raise DefinitionError(f"{defn.where(*path)}: {e}") from None


def _inputs(defn: WorkflowDefinition) -> tuple[InputSpec, ...]:
    raw = defn.spec.get("inputs")
    if raw is None:
        return ()
    items: list[tuple[str, Any, tuple[Any, ...]]] = []
    if isinstance(raw, dict):
        items = [(str(k), v, ("inputs", k)) for k, v in raw.items()]
    elif isinstance(raw, list):
        for i, v in enumerate(raw):
            if not isinstance(v, dict) or "name" not in v:
                raise DefinitionError(f"{defn.where('inputs', i)}: each input needs a name")
            items.append((str(v["name"]), {k: x for k, x in v.items() if k != "name"}, ("inputs", i)))
    else:
        raise DefinitionError(f"{defn.where('inputs')}: inputs is a mapping name → {{type, default, required, allowed}}")
    out = []
    for name, spec, path in items:
        spec = spec if isinstance(spec, dict) else {"type": spec} if isinstance(spec, str) else {}
        unknown = sorted(set(spec) - _INPUT_KEYS)
        if unknown:
            raise DefinitionError(f"{defn.where(*path, unknown[0])}: input '{name}': unknown key '{unknown[0]}'; allowed: {', '.join(sorted(_INPUT_KEYS))}")
        typ = _TYPES.get(str(spec.get("type", "string")).lower())
        if typ is None:
            raise DefinitionError(f"{defn.where(*path, 'type')}: input '{name}': type is one of string, integer, number, boolean")
        key = next((k for k in ("allowed", "choices", "enum") if k in spec), "allowed")
        allowed = spec.get(key, [])
        if not isinstance(allowed, list):
            raise DefinitionError(f"{defn.where(*path, key)}: input '{name}': {key} is a list of values")
        pattern = spec.get("pattern")
        if pattern is not None:
            try:
                re.compile(str(pattern))
            except re.error as e:
                raise DefinitionError(f"{defn.where(*path, 'pattern')}: input '{name}': pattern is not a regular expression: {e}") from None
        out.append(
            InputSpec(
                name, typ, spec.get("default"), bool(spec.get("required", False)), tuple(allowed),  # type: ignore[arg-type]
                str(spec.get("description", "")), None if pattern is None else str(pattern),
            )
        )
    return tuple(out)


def _edges(defn: WorkflowDefinition) -> list[tuple[str, str, str, str | None, tuple[Any, ...]]]:
    raw = defn.spec.get("edges")
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise DefinitionError(f"{defn.where('edges')}: edges is a list of {{from, to, condition}}")
    out = []
    for i, e in enumerate(raw):
        if not isinstance(e, dict):
            raise DefinitionError(f"{defn.where('edges', i)}: an edge is a mapping {{from, to, condition}}")
        unknown = sorted(set(map(str, e)) - _EDGE_KEYS)
        if unknown:
            raise DefinitionError(f"{defn.where('edges', i, unknown[0])}: unknown edge key '{unknown[0]}'; allowed: from, to, condition, on")
        for k in ("from", "to"):
            if k not in e:
                raise DefinitionError(f"{defn.where('edges', i)}: an edge needs '{k}'")
        on = str(e.get("on", "success"))
        if on not in ("success", "failure", "always"):
            raise DefinitionError(f"{defn.where('edges', i, 'on')}: 'on' is success, failure or always")
        cond = e.get("condition")
        if cond is not None:
            _check_condition(defn, str(cond), ("edges", i, "condition"))
        out.append((str(e["from"]), str(e["to"]), on, None if cond is None else str(cond), ("edges", i)))
    return out


def compile_definition(defn: WorkflowDefinition, catalog: Catalog, *, stack: tuple[str, ...] = ()) -> Graph:
    """Compile a YAML definition to a :class:`Graph`.

    Raises:
        DefinitionError: an invalid node, edge or input, an unknown dependency or
            reference, an unbounded cycle or an unreachable node (file:line:column).
        WorkflowSyntaxError / UnknownWorkflowError: from ``run:`` or ``flow:`` text.
    """
    spec = defn.spec
    unknown = sorted(set(map(str, spec)) - _TOP_KEYS)
    if unknown:
        raise DefinitionError(f"{defn.where(unknown[0])}: unknown key '{unknown[0]}'; allowed: {', '.join(sorted(_TOP_KEYS))}")
    options = _options(defn)
    inputs = _inputs(defn)
    if "flow" in spec:
        g = compile_text(str(spec["flow"]), catalog, name=defn.name, stack=stack)
        return replace(g, inputs=inputs or g.inputs, **options)
    nodes = spec["nodes"]
    if not isinstance(nodes, dict) or not nodes:
        raise DefinitionError(f"{defn.where('nodes')}: 'nodes' must be a non-empty mapping")
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
            fb = _add_node(b, defn, f"{nid}.fallback", nspec["on_error"], ("nodes", nid, "on_error"))
            b.connect(blk.exit, fb.entries, "failure")
            exits[str(nid)] = b.gate([fb.exit, blk.exit], "first")
    used: set[str] = set()
    links: list[tuple[str, str]] = []  # YAML-level (from, to), for reachability
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
                raise DefinitionError(f"{defn.where('nodes', nid, 'depends_on')}: node '{nid}' depends on unknown node '{dep}'")
            if cond not in ("success", "failure", "always"):
                raise DefinitionError(f"{defn.where('nodes', nid, 'depends_on')}: node '{nid}': condition must be success, failure or always")
            # a failure dependency watches the node itself, not its fallback gate
            src = blocks[dep].exit if cond == "failure" else exits[dep]
            b.connect(src, blocks[str(nid)].entries, cond)  # type: ignore[arg-type]
            used.add(dep)
            links.append((dep, str(nid)))
    for src, dst, on, cond, path in _edges(defn):
        for end, key in ((src, "from"), (dst, "to")):
            if end not in blocks:
                raise DefinitionError(f"{defn.where(*path, key)}: edge {key} unknown node '{end}'; nodes: {', '.join(map(str, nodes))}")
        origin = blocks[src].exit if on == "failure" else exits[src]
        for t in blocks[dst].entries:
            b.nodes[t].edges.append(Edge(origin, on, cond))  # type: ignore[arg-type]
        used.add(src)
        links.append((src, dst))
    _reachable(defn, [str(n) for n in nodes], links)
    _mark_back_edges(b)
    _check_references(defn, b, inputs)
    sinks = [exits[n] for n in map(str, nodes) if n not in used]
    if not sinks:  # every node feeds another (a loop at the end): the workflow ends with all of them
        sinks = [exits[str(n)] for n in nodes]
    exit_id = sinks[0] if len(sinks) == 1 else b.gate(sinks, "all")
    b.inputs = {i.name: i for i in inputs} | {k: v for k, v in b.inputs.items() if k not in {i.name for i in inputs}}
    try:
        return b.build(exit_id, name=defn.name, **options)
    except ValueError as e:
        msg = str(e)
        where = defn.where("max_iterations") if "max_iterations" in msg and "max_iterations" in spec else defn.where("edges") if "edges" in spec else defn.path
        raise DefinitionError(f"{where}: {msg}") from None


def _options(defn: WorkflowDefinition) -> dict[str, Any]:
    spec = defn.spec
    out: dict[str, Any] = {}
    if spec.get("max_iterations") is not None:
        out["max_iterations"] = _positive(defn, spec["max_iterations"], ("max_iterations",))
    if spec.get("on_max_iterations") is not None:
        v = str(spec["on_max_iterations"])
        if v not in ("fail", "continue"):
            raise DefinitionError(f"{defn.where('on_max_iterations')}: on_max_iterations is fail or continue, not {v!r}")
        out["on_max_iterations"] = v
    if spec.get("max_parallel_steps") is not None:
        out["max_parallel_steps"] = _positive(defn, spec["max_parallel_steps"], ("max_parallel_steps",))
    if spec.get("fail_fast") is not None:
        if not isinstance(spec["fail_fast"], bool):
            raise DefinitionError(f"{defn.where('fail_fast')}: fail_fast is true or false")
        out["fail_fast"] = spec["fail_fast"]
    return out


def _reachable(defn: WorkflowDefinition, names: list[str], links: list[tuple[str, str]]) -> None:
    """Every node must be reachable from a node without dependencies (a cycle needs an entry)."""
    has_in = {d for _, d in links}
    succ: dict[str, list[str]] = {n: [] for n in names}
    for s, d in links:
        succ[s].append(d)
    seen = [n for n in names if n not in has_in]
    stack = list(seen)
    found = set(seen)
    while stack:
        for d in succ[stack.pop()]:
            if d not in found:
                found.add(d)
                stack.append(d)
    lost = [n for n in names if n not in found]
    if lost:
        raise DefinitionError(
            f"{defn.where('nodes', lost[0])}: node '{lost[0]}' is unreachable: no path leads to it from a node without "
            f"dependencies (a cycle needs an entry edge); unreachable: {', '.join(lost)}"
        )


def _mark_back_edges(b: GraphBuilder) -> None:
    """Mark each edge that closes a cycle (depth-first from the roots, in definition order)."""
    succ: dict[str, list[tuple[str, int]]] = {n: [] for n in b.nodes}
    for nid, n in b.nodes.items():
        for i, e in enumerate(n.edges):
            if e.source in succ:
                succ[e.source].append((nid, i))
    state: dict[str, int] = {}
    roots = [nid for nid, n in b.nodes.items() if not n.edges] + list(b.nodes)
    for root in roots:
        if root in state:
            continue
        state[root] = 1
        work = [(root, iter(succ[root]))]
        while work:
            v, it = work[-1]
            nxt = next(it, None)
            if nxt is None:
                state[v] = 2
                work.pop()
                continue
            w, i = nxt
            st = state.get(w, 0)
            if st == 1:
                e = b.nodes[w].edges[i]
                b.nodes[w].edges[i] = Edge(e.source, e.condition, e.when, True)
            elif st == 0:
                state[w] = 1
                work.append((w, iter(succ[w])))


def _check_references(defn: WorkflowDefinition, b: GraphBuilder, inputs: tuple[InputSpec, ...]) -> None:
    """Every ``${…}`` in a condition or an interpolated argument must name a node or a declared input."""
    ids = set(b.nodes)
    declared = {i.name for i in inputs} | set(b.inputs)

    def check(text: str | None, path: tuple[Any, ...]) -> None:
        if not text or "${" not in text:
            return
        for ref in references(text):
            parts = ref.split(".")
            if parts[0] == "inputs":
                if len(parts) > 1 and parts[1] not in declared:
                    raise DefinitionError(
                        f"{defn.where(*path)}: unknown reference ${{{ref}}}: no input '{parts[1]}' "
                        f"(declared: {', '.join(sorted(declared)) or 'none'})"
                    )
                continue
            if not any(".".join(parts[:cut]) in ids for cut in range(len(parts), 0, -1)):
                raise DefinitionError(
                    f"{defn.where(*path)}: unknown reference ${{{ref}}}: no node '{parts[0]}' "
                    f"(nodes: {', '.join(sorted(n for n in ids if not n.startswith('g')))})"
                )

    for i, e in enumerate(defn.spec.get("edges") or []):
        if isinstance(e, dict):
            check(e.get("condition"), ("edges", i, "condition", "="))
    for nid, nspec in (defn.spec.get("nodes") or {}).items():
        if isinstance(nspec, str):
            nspec = {"run": nspec}
        if not isinstance(nspec, dict):
            continue
        for key in ("when", "condition", "run"):
            if isinstance(nspec.get(key), str):
                check(nspec[key], ("nodes", nid, key, "="))
        shell = nspec.get("shell")
        argv = shell.get("argv") if isinstance(shell, dict) else shell
        for i, a in enumerate(argv if isinstance(argv, list) else []):
            if isinstance(a, dict) and isinstance(a.get("param"), str):
                check(a["param"], ("nodes", nid, "shell", i) if not isinstance(shell, dict) else ("nodes", nid, "shell", "argv", i))


__all__ = ["Edge", "WorkflowDefinition", "compile_definition", "load_definitions", "parse_definition"]
