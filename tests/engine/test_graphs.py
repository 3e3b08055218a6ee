"""Workflow graphs (issue 17): conditions, bounded cycles, interpolation, inputs, limits, caching, checks.

Real actions (echo, printf/expr as shell steps) and the real executor; checkpoints in memory.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from engine.actions import ActionRunner, StepOutput
from engine.cache import MemoryStepCache
from engine.catalog import Catalog
from engine.definitions import compile_definition, parse_definition
from engine.errors import DefinitionError
from engine.events import StepRecord
from engine.graph import Graph, Node
from engine.inputs import InputError, bind_inputs, split_arguments
from engine.run import Executor

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "workflows"
ALLOW = ("printf", "expr", "cat", "sleep")


class Checkpoints:
    def __init__(self) -> None:
        self.saved: list[StepRecord] = []

    async def save_steps(self, records: Sequence[StepRecord]) -> None:
        self.saved.extend(records)


class Counting(ActionRunner):
    """The real action runner, counting runs per node id and tracking concurrency."""

    def __init__(self) -> None:
        super().__init__(shell_allow=ALLOW)
        self.calls: list[str] = []
        self.running = 0
        self.peak = 0

    async def __call__(self, node: Node, inputs: Mapping[str, str]) -> StepOutput:
        self.calls.append(node.id)
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            return await super().__call__(node, inputs)
        finally:
            self.running -= 1


def compile_yaml(text: str, path: str = "wf.yaml") -> Graph:
    defn = parse_definition(text, path)
    return compile_definition(defn, Catalog(workflows={defn.name: defn}, shell_allow=ALLOW), stack=(defn.name,))


def example(name: str) -> Graph:
    p = EXAMPLES / f"{name}.yaml"
    return compile_yaml(p.read_text(), str(p))


def with_inputs(graph: Graph, **given: str) -> Graph:
    return replace(graph, input_values=bind_inputs(graph.name or "", graph.inputs, given))


async def execute(graph: Graph, **kw):  # type: ignore[no-untyped-def]
    act, cp = Counting(), Checkpoints()
    prior = kw.pop("prior", None)
    use_cache = kw.pop("use_cache", True)
    ex = Executor(act, cp, retry_initial_s=0.001, retry_max_s=0.002, **kw)
    return await ex.execute("1", graph, prior=prior, use_cache=use_cache), act, cp


def by_id(result) -> dict[str, StepRecord]:  # type: ignore[no-untyped-def]
    return {s.node_id: s for s in result.steps}


# -- conditions -------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["factual", "opinion", "creative"])
async def test_classify_and_branch_runs_one_pipeline_and_shows_the_others_skipped(kind: str) -> None:
    graph = example("classify-branch")
    r, act, _ = await execute(with_inputs(graph, kind=kind))
    st = by_id(r)
    assert r.status == "succeeded"
    assert st[f"{kind}_pipeline"].status == "succeeded"
    others = [k for k in ("factual", "opinion", "creative") if k != kind]
    for o in others:
        rec = st[f"{o}_pipeline"]
        assert rec.status == "skipped" and f"{o}_pipeline" not in act.calls
        assert rec.error == (
            f'condition (from classify) is false: ${{classify.type}} == "{o}" (classify.type = "{kind}")'
        )


async def test_a_condition_on_a_missing_field_fails_the_run_with_node_expression_and_values() -> None:
    graph = compile_yaml(
        """
name: t
nodes:
  check: {run: 'echo {"count": 3}'}
  rerank: {run: echo reranking}
edges:
  - {from: check, to: rerank, condition: "${check.total} > 5"}
"""
    )
    r, act, _ = await execute(graph)
    assert r.status == "failed" and "rerank" not in act.calls
    err = by_id(r)["rerank"].error or ""
    assert "condition of 'rerank' failed: ${check.total} > 5" in err
    assert "no field 'total' (it has: count)" in err and "check.total = <missing>" in err
    assert r.error and "${check.total} > 5" in r.error


async def test_a_type_error_in_a_condition_names_the_values() -> None:
    graph = compile_yaml(
        """
name: t
nodes:
  classify: {run: 'echo {"type": "opinion"}'}
  big: {run: echo big, when: "${classify.type} > 8"}
edges:
  - {from: classify, to: big}
"""
    )
    r, _, _ = await execute(graph)
    err = by_id(r)["big"].error or ""
    assert r.status == "failed"
    assert "TypeError" in err and 'classify.type = "opinion"' in err and "${classify.type} > 8" in err


async def test_node_when_false_skips_with_its_condition_and_dependents_follow() -> None:
    graph = compile_yaml(
        """
name: t
nodes:
  retrieve: {run: 'echo {"count": 2}'}
  rerank: {run: echo reranked, depends_on: [retrieve], when: "${retrieve.count} > 5"}
  expand: {run: echo expanded, depends_on: [retrieve], condition: "${retrieve.count} < 3"}
  after_rerank: {run: echo after, depends_on: [rerank]}
"""
    )
    r, act, _ = await execute(graph)
    st = by_id(r)
    assert r.status == "succeeded"
    assert st["rerank"].status == "skipped" and "(when) is false: ${retrieve.count} > 5 (retrieve.count = 2)" in (st["rerank"].error or "")
    assert st["expand"].status == "succeeded" and st["after_rerank"].status == "skipped"
    assert act.calls == ["retrieve", "expand"]


# -- bounded cycles ----------------------------------------------------------------


async def test_refine_loop_runs_until_the_condition_no_longer_holds() -> None:
    r, act, cp = await execute(example("refine-loop"))
    assert r.status == "succeeded", r.error
    ids = [s.node_id for s in r.steps]
    assert ids == [
        "generate", "critique", "refine", "critique#2", "refine#2", "critique#3", "refine#3", "critique#4", "refine#4", "publish",
    ]
    st = by_id(r)
    assert [st[i].output.strip() for i in ("critique", "critique#2", "critique#3", "critique#4")] == [
        '{"score": 3}', '{"score": 5}', '{"score": 7}', '{"score": 9}',
    ]
    assert st["refine#4"].status == "skipped" and "(critique.score = 9)" in (st["refine#4"].error or "")
    assert st["critique#3"].label == "critique (iteration 3)"
    assert st["publish"].output == "final score 9"
    # every iteration is checkpointed as its own record
    assert {"critique#2", "refine#3", "critique#4"} <= {s.node_id for s in cp.saved if s.status == "succeeded"}


@pytest.mark.parametrize(("on_max", "status"), [("fail", "failed"), ("continue", "succeeded")])
async def test_max_iterations_bounds_the_loop(on_max: str, status: str) -> None:
    text = (EXAMPLES / "refine-loop.yaml").read_text().replace("max_iterations: 5", "max_iterations: 2").replace(
        "on_max_iterations: fail", f"on_max_iterations: {on_max}"
    )
    r, act, _ = await execute(compile_yaml(text))
    assert r.status == status
    assert act.calls.count("critique") + act.calls.count("refine") == 4  # two iterations, never a third
    assert "critique#3" not in by_id(r)
    if on_max == "fail":
        assert r.error == "loop critique → refine → critique reached max_iterations 2 (on_max_iterations: fail)"
    else:
        assert by_id(r)["publish"].status == "skipped"  # the score never reached 8


async def test_a_node_level_bound_and_a_self_loop() -> None:
    graph = compile_yaml(
        """
name: t
on_max_iterations: continue
nodes:
  start: {run: echo go}
  tick: {run: echo tick, max_iterations: 4}
edges:
  - {from: start, to: tick}
  - {from: tick, to: tick}
"""
    )
    r, act, _ = await execute(graph)
    assert r.status == "succeeded" and act.calls == ["start", "tick", "tick", "tick", "tick"]
    assert [s.node_id for s in r.steps] == ["start", "tick", "tick#2", "tick#3", "tick#4"]


async def test_resume_continues_in_the_interrupted_iteration() -> None:
    graph = example("refine-loop")
    first, _, cp = await execute(graph)
    done = {s.node_id: s for s in first.steps}
    # a crash in the middle of iteration 3: critique#3 was running, nothing after it recorded
    prior = {k: done[k] for k in ("generate", "critique", "refine", "critique#2", "refine#2")}
    prior["critique#3"] = replace(done["critique#3"], status="running", output="", finished_at=None)
    r, act, _ = await execute(graph, prior=prior)
    assert r.status == "succeeded"
    assert act.calls == ["critique", "refine", "critique", "publish"]  # critique#3, refine#3, critique#4, publish
    assert [s.node_id for s in r.steps] == [s.node_id for s in first.steps]
    assert by_id(r)["critique#3"].attempt == 2  # the interrupted attempt counted


# -- interpolation and shell parameters ----------------------------------------------


async def test_interpolation_of_outputs_inputs_and_alternatives() -> None:
    g = compile_yaml(
        """
name: t
inputs:
  service: {type: string, required: true}
nodes:
  info: {run: 'echo {"a": {"b": [10, 20]}, "name": "x"}'}
  use: {run: "echo ${inputs.service} ${info.a.b.1} ${info.name} ${later|info.name}", depends_on: [info]}
  later: {run: echo later, depends_on: [use]}
"""
    )
    r, _, _ = await execute(with_inputs(g, service="api"))
    assert by_id(r)["use"].output == "api 20 x x"


def test_shell_references_only_through_marked_parameters() -> None:
    with pytest.raises(DefinitionError, match=r"wf.yaml:4:29: node 'x': shell argument '\$\{inputs.v\}' has a \$\{…\} reference"):
        compile_yaml("name: t\ninputs: {v: {type: string}}\nnodes:\n  x: {shell: [printf, '%s', '${inputs.v}']}\n")
    g = compile_yaml("name: t\ninputs: {v: {type: string}}\nnodes:\n  x: {shell: [printf, '%s', {param: '${inputs.v}'}], idempotent: true}\n")
    assert g.node("x").args["params"] == [[2, "${inputs.v}"]]


@pytest.mark.parametrize(("value", "ok"), [("a b; rm -rf /", True), ("--help", False)])
async def test_a_parameter_is_one_argv_element_and_options_are_refused(value: str, ok: bool) -> None:
    g = compile_yaml("name: t\ninputs: {v: {type: string}}\nnodes:\n  x: {shell: [printf, '[%s]', {param: '${inputs.v}'}], idempotent: true}\n")
    r, _, _ = await execute(with_inputs(g, v=value))
    if ok:
        assert r.status == "succeeded" and by_id(r)["x"].output == f"[{value}]"  # no shell: the text is one argument
    else:
        assert r.status == "failed" and "starts with '-'" in (by_id(r)["x"].error or "")


# -- inputs ------------------------------------------------------------------------


def test_inputs_are_checked_before_anything_runs() -> None:
    g = compile_yaml(
        """
name: deploy
inputs:
  service: {type: string, required: true, allowed: [api, web]}
  version: {type: string, default: latest}
  replicas: {type: integer, default: 2}
  dry_run: {type: boolean, default: false}
nodes:
  go: {run: "echo deploying ${inputs.service} ${inputs.version}"}
"""
    )
    assert split_arguments("deploy service=api version=1.4") == ("deploy", {"service": "api", "version": "1.4"})
    assert split_arguments("deploy the api") is None
    assert bind_inputs("deploy", g.inputs, {"service": "api", "version": "1.4", "replicas": "3", "dry_run": "yes"}) == {
        "service": "api", "version": "1.4", "replicas": 3, "dry_run": True,
    }
    with pytest.raises(InputError) as e:
        bind_inputs("deploy", g.inputs, {"service": "db", "replicas": "many", "colour": "red"})
    msg = str(e.value)
    assert "unknown parameter 'colour'" in msg and "'service' must be one of api, web, not 'db'" in msg
    assert "'replicas' must be an integer, not 'many'" in msg
    assert "Parameters of deploy: service (string, required, one of api|web), version (string, default latest)" in msg
    with pytest.raises(InputError, match="missing required parameter 'service'"):
        bind_inputs("deploy", g.inputs, {})


# -- limits --------------------------------------------------------------------------


async def test_max_parallel_steps_bounds_concurrency_workflow_value_wins() -> None:
    text = "name: t\nLIMITnodes:\n" + "".join(f"  s{i}: {{run: sleep 0.1}}\n" for i in range(6))
    r, act, _ = await execute(compile_yaml(text.replace("LIMIT", "max_parallel_steps: 2\n")), max_parallel_steps=5)
    assert r.status == "succeeded" and act.peak == 2
    r, act, _ = await execute(compile_yaml(text.replace("LIMIT", "")), max_parallel_steps=3)
    assert act.peak == 3
    r, act, _ = await execute(compile_yaml(text.replace("LIMIT", "")))
    assert act.peak == 6


async def test_fail_fast_per_workflow_and_default_retries() -> None:
    text = "name: t\n{ff}nodes:\n  bad: {{run: fail boom}}\n  slow: {{run: sleep 0.2}}\n  after: {{run: echo after, depends_on: [slow]}}\n"
    r, act, _ = await execute(compile_yaml(text.format(ff="fail_fast: false\n")))
    assert r.status == "failed" and by_id(r)["after"].status == "succeeded"
    r, act, _ = await execute(compile_yaml(text.format(ff="")))
    assert by_id(r)["after"].status == "skipped"
    r, act, _ = await execute(compile_yaml(text.format(ff="fail_fast: false\n")), default_retries=2)
    assert act.calls.count("bad") == 3 and by_id(r)["bad"].attempt == 3


# -- caching -----------------------------------------------------------------------


async def test_cached_step_reuses_its_result_until_rerun_bypasses_it() -> None:
    g = compile_yaml("name: t\nnodes:\n  load: {shell: [cat, /proc/uptime], idempotent: true, cache: {ttl: 1h}}\n  show: {run: 'echo ${load}', depends_on: [load]}\n")
    cache = MemoryStepCache()
    r1, a1, _ = await execute(g, cache=cache)
    r2, a2, cp2 = await execute(g, cache=cache)
    assert a1.calls == ["load", "show"] and a2.calls == ["show"]
    assert by_id(r2)["load"].cached and by_id(r2)["load"].output == by_id(r1)["load"].output
    assert any(s.node_id == "load" and s.cached for s in cp2.saved)
    r3, a3, _ = await execute(g, cache=cache, use_cache=False)
    assert a3.calls == ["load", "show"] and not by_id(r3)["load"].cached
    with pytest.raises(DefinitionError, match="only idempotent steps may be cached"):
        compile_yaml("name: t\nnodes:\n  x: {shell: [cat, /proc/uptime], cache: {ttl: 1h}}\n")


async def test_cache_expires_after_its_ttl() -> None:
    g = compile_yaml("name: t\nnodes:\n  load: {shell: [cat, /proc/uptime], idempotent: true, cache: {ttl: 50ms}}\n")
    cache = MemoryStepCache()
    await execute(g, cache=cache)
    await asyncio.sleep(0.1)
    _, act, _ = await execute(g, cache=cache)
    assert act.calls == ["load"]


# -- checks with positions ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("name: t\nnodes:\n  a: {run: echo a}\nedge:\n  - {from: a, to: a}\n", "wf.yaml:4:1: unknown key 'edge'"),
        ("name: t\nnodes:\n  a: {run: echo a}\n  b: {run: echo b}\nedges:\n  - {from: a, to: b}\n  - {from: b, to: a}\n", "wf.yaml:3:3: node 'a' is unreachable"),
        ("name: t\nnodes:\n  a: {run: echo a}\n  b: {run: echo b}\n  c: {run: echo c}\nedges:\n  - {from: a, to: b}\n  - {from: b, to: c}\n  - {from: c, to: b}\n", "cycle b → c → b has no max_iterations"),
        ("name: t\nnodes:\n  a: {run: echo a}\n  b: {run: 'echo ${c.x}'}\nedges:\n  - {from: a, to: b}\n", "wf.yaml:4:12: unknown reference ${c.x}: no node 'c'"),
        ("name: t\nnodes:\n  a: {run: echo a}\nedges:\n  - {from: a, to: z}\n", "wf.yaml:5:15: edge to unknown node 'z'"),
        ("name: t\nnodes:\n  a: {run: echo a, when: '${inputs.nope} == 1'}\n", "unknown reference ${inputs.nope}: no input 'nope'"),
        ("name: t\nnodes:\n  a: {run: echo a}\n  b: {run: echo b}\nedges:\n  - {from: a, to: b, condition: '${a.x} >'}\n", "wf.yaml:6:22: condition '${a.x} >' does not parse"),
        ("name: t\nnodes:\n  a: {run: echo a, when: '__import__(\"os\")'}\n", "unknown name '__import__'"),
    ],
)
def test_invalid_graphs_are_rejected_with_their_position(text: str, needle: str) -> None:
    with pytest.raises(DefinitionError, match=re.escape(needle)):
        compile_yaml(text)


def test_describe_shows_inputs_conditions_cycles_and_limits() -> None:
    text = example("refine-loop").describe()
    assert "refine shell: refine  <- critique if ${critique.score} < 8" in text
    assert "critique shell: critique  <- generate, refine (loop)" in text
    assert "cycle: critique → refine → critique (max_iterations 5, on_max_iterations fail)" in text
    dag = example("research-dag").describe()
    assert dag.startswith("inputs: query (string, required)") and "limits: max_parallel_steps 2" in dag


async def test_the_graph_round_trips_through_json() -> None:
    g = example("refine-loop")
    again = Graph.from_json(g.to_json())
    assert again == g and again.loops() == g.loops()


async def test_research_dag_passes_results_between_nodes_in_parallel() -> None:
    g = example("research-dag")
    g = with_inputs(g, query="baton")
    t0 = time.perf_counter()
    r, act, _ = await execute(g)
    assert r.status == "succeeded" and time.perf_counter() - t0 < 5
    assert by_id(r)["validate"].output == "validated answer built from docs about baton + web pages about baton howto"
    assert act.calls[0] == "expand_query" and set(act.calls[1:3]) == {"search_docs", "search_web"}


async def test_the_seed_list_form_of_nodes_and_its_unquoted_conditions() -> None:
    """Seed 001 "Cyclic Graphs" as written (nodes as a list with ids, the condition unquoted),
    with shell steps standing in for its techniques."""
    g = compile_yaml(
        """
name: cyclic
max_iterations: 5
nodes:
  - id: generate
    run: 'echo {"score": 2}'
  - id: evaluate
    shell: [printf, '{"score": %s}', {param: "${refine|generate.score}"}]
    idempotent: true
  - id: refine
    shell: [expr, {param: "${evaluate.score}"}, "*", "2"]
    idempotent: true
edges:
  - from: generate
    to: evaluate
  - from: evaluate
    to: refine
    condition: ${evaluate.score} < 8
  - from: refine
    to: evaluate
"""
    )
    r, _, _ = await execute(g)
    assert r.status == "succeeded"
    assert [(s.node_id, s.output.strip()) for s in r.steps if s.node_id.startswith("evaluate")] == [
        ("evaluate", '{"score": 2}'), ("evaluate#2", '{"score": 4}'), ("evaluate#3", '{"score": 8}'),
    ]
    with pytest.raises(DefinitionError, match=r"wf.yaml:4:10: unknown reference \$\{nope\}"):
        compile_yaml("name: t\nnodes:\n  - id: a\n    run: echo ${nope}\n")


class SlowCheckpoints(Checkpoints):
    """Commits take a while (like a real database); optionally the first commit fails."""

    def __init__(self, fail_first: bool = False) -> None:
        super().__init__()
        self.fail_first = fail_first
        self.batches: list[list[str]] = []

    async def save_steps(self, records: Sequence[StepRecord]) -> None:
        await asyncio.sleep(0.01)
        if self.fail_first:
            self.fail_first = False
            raise OSError("disk full")
        self.batches.append([f"{r.node_id}:{r.status}" for r in records])
        self.saved.extend(records)


async def test_checkpoints_keep_their_order_and_a_non_idempotent_step_waits_for_earlier_records() -> None:
    g = compile_yaml(
        """
name: t
nodes:
  a: {run: echo a}
  b: {run: echo b, depends_on: [a]}
  c: {shell: [printf, c], depends_on: [b]}
"""
    )
    cp = SlowCheckpoints()
    r = await Executor(Counting(), cp).execute("1", g)
    assert r.status == "succeeded"
    order = [f"{s.node_id}:{s.status}" for s in cp.saved]
    # a and b (idempotent) are written behind, c's running marker only after them, then c's result
    assert order == ["a:succeeded", "b:succeeded", "c:running", "c:succeeded"]
    assert len(cp.batches) < 4  # records that piled up during a commit went in one batch


async def test_a_failed_write_behind_fails_the_run_with_the_store_error() -> None:
    g = compile_yaml("name: t\nnodes:\n  a: {run: echo a}\n  b: {run: echo b, depends_on: [a]}\n")
    with pytest.raises(OSError, match="disk full"):
        await Executor(Counting(), SlowCheckpoints(fail_first=True)).execute("1", g)
