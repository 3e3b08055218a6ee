"""The seed's graph examples end to end (issue 17): LLM steps through the real SDKs against
tests/fakes/llm_server.py, parameters from chat, /rerun from a loop iteration, cached steps,
provider preference lists and JSON-schema steps."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from adapters.base import Message
from bot.app import App
from bot.settings import Settings
from tests.conftest import REPO, RecordingOutlet
from tests.fakes.llm_server import FakeLLMServer, RecordedRequest

REFINE = """
name: refine-answer
description: seed 001 iterative refinement
inputs:
  topic: {type: string, required: true}
max_iterations: 5
nodes:
  generate: {run: "Write a first answer about ${inputs.topic}"}
  critique:
    run: "Critique and score this answer from 0 to 10: ${refine|generate}"
    schema: {type: object, required: [score], properties: {score: {type: number}}}
  refine: {run: "Improve this answer: ${refine|generate}"}
edges:
  - {from: generate, to: critique}
  - {from: critique, to: refine, condition: "${critique.score} < 8"}
  - {from: refine, to: critique}
"""

CLASSIFY = """
name: answer-query
description: seed 001 conditional graph
inputs:
  query: {type: string, required: true}
nodes:
  classify:
    run: "Classify query type (factual, opinion, or creative): ${inputs.query}"
    schema: {type: object, required: [type], properties: {type: {enum: [factual, opinion, creative]}}}
  factual_pipeline: {run: "Answer with facts: ${inputs.query}"}
  opinion_pipeline: {run: "Give balanced opinions on: ${inputs.query}"}
  creative_pipeline: {run: "Write creatively about: ${inputs.query}"}
edges:
  - {from: classify, to: factual_pipeline, condition: '${classify.type} == "factual"'}
  - {from: classify, to: opinion_pipeline, condition: '${classify.type} == "opinion"'}
  - {from: classify, to: creative_pipeline, condition: '${classify.type} == "creative"'}
"""

RESEARCH = """
name: research
description: seed 001 DAG
inputs:
  query: {type: string, required: true}
nodes:
  expand_query: {run: "Expand into 3 search queries as JSON {\\"queries\\": [...]}: ${inputs.query}", preferred_providers: [primary]}
  search_docs: {run: "echo docs for ${expand_query.queries.0}"}
  search_web: {run: "echo web for ${expand_query.queries.1}"}
  combine_results: {run: "echo ${search_docs} | ${search_web}"}
  generate_answer: {run: "Answer using: ${combine_results}", preferred_providers: [local, primary]}
  validate: {run: "Fact-check this answer: ${generate_answer}"}
edges:
  - {from: expand_query, to: search_docs}
  - {from: expand_query, to: search_web}
  - {from: search_docs, to: combine_results}
  - {from: search_web, to: combine_results}
  - {from: combine_results, to: generate_answer}
  - {from: generate_answer, to: validate}
"""


@pytest.fixture(autouse=True)
def anthropic_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")


def config(tmp: Path, **workflows: str) -> Path:
    cfg = tmp / "config"
    (cfg / "workflows").mkdir(parents=True)
    shutil.copy(REPO / "config" / "prices.toml", cfg / "prices.toml")
    (cfg / "baton.toml").write_text('[shell]\nallow = ["cat", "printf", "expr"]\n')
    for name, text in workflows.items():
        (cfg / "workflows" / f"{name}.yaml").write_text(text)
    return cfg


def providers(server: FakeLLMServer) -> dict[str, dict[str, object]]:
    return {
        "local": {"kind": "openai_compatible", "model": "llama3.1:8b", "base_url": server.openai_base_url, "default": True},
        "primary": {"kind": "anthropic", "model": "claude-haiku-4-5", "base_url": server.anthropic_base_url},
    }


def task(req: RecordedRequest) -> str:
    return req.user_texts[-1].split("\n\nOutputs of the earlier steps:")[0]


async def start(tmp: Path, sqlite_url: str, outlet: RecordingOutlet, server: FakeLLMServer, routes: str | None = None, **workflows: str) -> App:
    cfg = config(tmp, **workflows)
    if routes is not None:
        (cfg / "routes.yaml").write_text(routes)
    settings = Settings(
        config_dir=cfg,
        database_url=sqlite_url,
        providers=providers(server),
        routing={"enabled": routes is not None, "llm": False, "encoder": "none"},
        shell={"allow": ["cat", "printf", "expr"]},
    )
    return await App.start(settings, {"test": outlet}, migrate=True)


async def say(app: App, outlet: RecordingOutlet, text: str) -> str:
    n = len(outlet.texts)
    await app.bot.handle(Message("test", "C", "T", "alice", text), outlet)
    await app.bot.drain()
    return "\n".join(outlet.texts[n:])


async def test_refinement_loop_with_llm_steps_until_the_score_is_good(tmp_path: Path, sqlite_url: str, outlet: RecordingOutlet) -> None:
    scores = iter([5, 6, 9])

    def reply(req: RecordedRequest) -> str:
        t = task(req)
        if t.startswith("Write a first answer"):
            return "draft"
        if t.startswith("Critique"):
            return f'{{"score": {next(scores)}}}'
        return "better " + t.split("Improve this answer: ")[1].split("\n")[0]

    async with FakeLLMServer(reply) as server:
        app = await start(tmp_path, sqlite_url, outlet, server, refine=REFINE)
        try:
            out = await say(app, outlet, "/run refine-answer topic=disks")
            assert "Run #1 succeeded" in out, out
            tasks = [task(r) for r in server.requests]
            assert [t.split(":")[0] for t in tasks] == [
                "Write a first answer about disks",
                "Critique and score this answer from 0 to 10", "Improve this answer",
                "Critique and score this answer from 0 to 10", "Improve this answer",
                "Critique and score this answer from 0 to 10",
            ]
            assert tasks[3].startswith("Critique and score this answer from 0 to 10: better draft\n")
            assert tasks[5].startswith("Critique and score this answer from 0 to 10: better better draft\n")
            assert "JSON Schema" in tasks[1]  # the step asked for JSON against its schema
            _, steps = await app.runs.get(1)  # type: ignore[misc]
            st = {s.node_id: s for s in steps}
            assert st["s1.critique#3"].output == '{"score": 9}' and st["s1.refine#2"].output == "better better draft"
            assert st["s1.refine#3"].status == "skipped" and "(s1.critique.score = 9)" in (st["s1.refine#3"].error or "")
            assert "${refine|generate} (iteration 3) — succeeded" in out  # the status shows the iteration

            # /rerun from the second iteration reuses iteration 1 and everything before it
            scores = iter([9])
            before = len(server.requests)
            out = await say(app, outlet, "/rerun 1 from critique#2")
            assert "Run #2 succeeded" in out, out
            assert [task(r).split(":")[0] for r in server.requests[before:]] == ["Critique and score this answer from 0 to 10"]
            _, steps2 = await app.runs.get(2)  # type: ignore[misc]
            st2 = {s.node_id: s for s in steps2}
            assert st2["s1.critique"].reused and st2["s1.refine"].reused and not st2["s1.critique#2"].reused
            assert "s1.refine#2" in st2 and st2["s1.refine#2"].status == "skipped"
        finally:
            await app.aclose()


async def test_classify_and_branch_with_llm_steps(tmp_path: Path, sqlite_url: str, outlet: RecordingOutlet) -> None:
    def reply(req: RecordedRequest) -> str:
        t = task(req)
        if t.startswith("Classify"):
            return "Sure! " if "Your previous answer was invalid" not in t else '{"type": "creative"}'
        return f"done: {t}"

    async with FakeLLMServer(reply) as server:
        app = await start(tmp_path, sqlite_url, outlet, server, answer=CLASSIFY)
        try:
            out = await say(app, outlet, '/run answer-query query="a poem about disks"')
            assert "Run #1 succeeded" in out, out
            tasks = [task(r) for r in server.requests]
            assert len(tasks) == 3 and "Your previous answer was invalid (the reply is not JSON)" in tasks[1]  # one retry
            assert tasks[2] == "Write creatively about: a poem about disks"
            assert '· answer-query › Give balanced opinions on: ${inputs.query} — skipped — condition (from s1.classify) is false: ${s1.classify.type} == "opinion" (s1.classify.type = "creative")' in out
            assert "Answer with facts: ${inputs.query} — skipped" in out
        finally:
            await app.aclose()


async def test_research_dag_with_llm_and_echo_steps_and_a_provider_preference(tmp_path: Path, sqlite_url: str, outlet: RecordingOutlet) -> None:
    def reply(req: RecordedRequest) -> str:
        t = task(req)
        if t.startswith("Expand"):
            return '{"queries": ["disk usage", "disk full fix", "df"]}'
        return f"answer[{t}]"

    async with FakeLLMServer(reply) as server:
        server.auth_error(api="openai")  # the preferred "local" provider fails once: generate_answer moves on to "primary"
        app = await start(tmp_path, sqlite_url, outlet, server, research=RESEARCH)
        try:
            out = await say(app, outlet, "/run research query=disks")
            assert "Run #1 succeeded" in out, out
            ok = [r for r in server.requests if r.status == 200]
            apis = [(r.api, task(r).split(":")[0]) for r in server.requests]
            assert apis[0][0] == "anthropic" and apis[1:3] == [("openai", "Answer using"), ("anthropic", "Answer using")]
            assert task(ok[1]) == "Answer using: docs for disk usage | web for disk full fix"
            assert task(ok[-1]).startswith("Fact-check this answer: answer[Answer using")
        finally:
            await app.aclose()


async def test_parameters_from_chat_are_checked_before_anything_runs(tmp_path: Path, sqlite_url: str, outlet: RecordingOutlet) -> None:
    deploy = """
name: deploy
inputs:
  service: {type: string, required: true, allowed: [api, web]}
  version: {type: string, default: latest}
nodes:
  go: {shell: [printf, "deploying %s at %s", {param: "${inputs.service}"}, {param: "${inputs.version}"}], idempotent: true}
"""
    async with FakeLLMServer("unused") as server:
        app = await start(tmp_path, sqlite_url, outlet, server, deploy=deploy)
        try:
            out = await say(app, outlet, "/run deploy service=api version=1.4")
            assert "Run #1 succeeded" in out and "Result:\ndeploying api at 1.4" in out
            out = await say(app, outlet, "/run deploy version=1.4")
            assert out == (
                "Not run: missing required parameter 'service'. Parameters of deploy: "
                "service (string, required, one of api|web), version (string, default latest)"
            )
            out = await say(app, outlet, "/run deploy service=db")
            assert out.startswith("Not run: 'service' must be one of api, web, not 'db'")
            assert len(await app.runs.list(limit=10)) == 1  # refused runs were never created
            assert server.requests == []
        finally:
            await app.aclose()


async def test_routed_arguments_become_workflow_inputs(tmp_path: Path, sqlite_url: str, outlet: RecordingOutlet) -> None:
    deploy = """
name: deploy
inputs:
  service: {type: string, required: true, allowed: [api, web]}
  version: {type: string, default: latest}
nodes:
  go: {shell: [printf, "deploying %s at %s", {param: "${inputs.service}"}, {param: "${inputs.version}"}], idempotent: true}
"""
    routes = """
routes:
  - name: deploy
    target: deploy
    patterns: ['^ship (?P<service>[a-z]+) version (?P<version>[0-9.]+)$']
"""
    async with FakeLLMServer("unused") as server:
        app = await start(tmp_path, sqlite_url, outlet, server, routes=routes, deploy=deploy)
        try:
            out = await say(app, outlet, "ship web version 2.0")
            assert out == "Run deploy service=web version=2.0? Reply yes or no."  # routing asks before a change
            out = await say(app, outlet, "yes")
            assert "Result:\ndeploying web at 2.0" in out, out
            out = await say(app, outlet, "ship db version 2.0")
            if out.startswith("Run deploy service=db"):  # routing asks first; the inputs are checked before anything runs
                out = await say(app, outlet, "yes")
            assert out == "Not run: service='db': not one of api, web.", out  # the declared inputs hold for routed runs
        finally:
            await app.aclose()


async def test_a_cached_step_says_so_and_rerun_bypasses_the_cache(tmp_path: Path, db_url: str, outlet: RecordingOutlet) -> None:
    sqlite_url = db_url
    src = tmp_path / "value.txt"
    src.write_text("one")
    wf = f"""
name: cached-read
nodes:
  read: {{shell: [cat, "{src}"], idempotent: true, cache: {{ttl: 1h}}}}
"""
    async with FakeLLMServer("unused") as server:
        app = await start(tmp_path, sqlite_url, outlet, server, cached=wf)
        try:
            first = await say(app, outlet, "/run cached-read")
            src.write_text("two")
            second = await say(app, outlet, "/run cached-read")
            third = await say(app, outlet, "/rerun 2")
            assert "Result:\none" in first and "(cached)" not in first
            assert "(cached)" in second and "Result:\none" in second
            assert "(cached)" not in third and "Result:\ntwo" in third
            _, steps = await app.runs.get(2)  # type: ignore[misc]
            assert steps[0].cached  # stored with the checkpoint
            show = await say(app, outlet, "/run show 2")
            assert re.search(r"read +succeeded", show)
        finally:
            await app.aclose()


async def test_workflow_steps_settings_give_a_step_its_provider_order(tmp_path: Path, sqlite_url: str, outlet: RecordingOutlet) -> None:
    """``[workflow.steps.NAME] preferred_providers`` (seed 000 "Custom Step Logic") for a step without its own list."""
    wf = "name: summarize\nnodes:\n  summary: {run: Summarize the day}\n"
    async with FakeLLMServer("a fine day") as server:
        server.auth_error(api="anthropic")  # "primary", tried first, fails; "local" answers
        cfg = config(tmp_path, summarize=wf)
        settings = Settings(
            config_dir=cfg,
            database_url=sqlite_url,
            providers=providers(server),
            routing={"enabled": False},
            workflow={"steps": {"summary": {"preferred_providers": ["primary", "local"]}}},
        )
        app = await App.start(settings, {"test": outlet}, migrate=True)
        try:
            out = await say(app, outlet, "/run summarize")
            assert "Run #1 succeeded" in out and "Result:\na fine day" in out
            assert [r.api for r in server.requests] == ["anthropic", "openai"]
        finally:
            await app.aclose()
