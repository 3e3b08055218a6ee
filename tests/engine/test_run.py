"""Executor semantics: every connector at run time, retries, timeouts, fail-fast, fallbacks, resume."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import replace

import pytest

from engine.actions import ActionRunner, StepOutput
from engine.catalog import Catalog
from engine.definitions import WorkflowDefinition, compile_definition
from bot.texts import step_error
from engine.errors import INTERRUPTED, StepError
from engine.events import StepRecord
from engine.graph import Node
from engine.parse import compile_text
from engine.run import Executor


class MemoryCheckpoints:
    def __init__(self) -> None:
        self.saved: list[StepRecord] = []

    async def save_steps(self, records: Sequence[StepRecord]) -> None:
        self.saved.extend(records)


class Counting(ActionRunner):
    """The real action runner, counting how often each label ran."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: dict[str, int] = {}

    async def __call__(self, node: Node, inputs: Mapping[str, str]) -> StepOutput:
        self.calls[node.label] = self.calls.get(node.label, 0) + 1
        return await super().__call__(node, inputs)


def ex(**kw) -> tuple[Executor, Counting, MemoryCheckpoints]:  # type: ignore[no-untyped-def]
    act, cp = Counting(), MemoryCheckpoints()
    return Executor(act, cp, retry_initial_s=0.001, retry_max_s=0.002, **kw), act, cp


def status(result) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {s.label: s.status for s in result.steps}


async def run(text: str, **kw):  # type: ignore[no-untyped-def]
    e, act, cp = ex(**kw)
    return await e.execute("1", compile_text(text, Catalog())), act, cp


async def test_then_runs_in_order_and_stops_on_failure() -> None:
    r, _, _ = await run("echo a THEN echo b")
    assert r.status == "succeeded" and status(r) == {"echo a": "succeeded", "echo b": "succeeded"}
    a, b = r.steps
    assert a.finished_at <= b.started_at
    r, act, _ = await run("fail boom THEN echo never")
    assert r.status == "failed" and r.error == "fail boom: boom"
    assert status(r)["echo never"] == "skipped" and "echo never" not in act.calls


async def test_and_runs_concurrently() -> None:
    r, _, _ = await run("sleep 0.2 AND sleep 0.2 AND sleep 0.2")
    starts = [s.started_at for s in r.steps]
    ends = [s.finished_at for s in r.steps]
    assert max(starts) < min(ends), "the three sleeps overlap"
    assert (max(ends) - min(starts)).total_seconds() < 0.5


@pytest.mark.parametrize(("first", "ran", "skipped"), [("echo ok", "echo yes", "echo no"), ("fail x", "echo no", "echo yes")])
async def test_if_success_else(first: str, ran: str, skipped: str) -> None:
    r, _, _ = await run(f"{first} THEN IF_SUCCESS echo yes ELSE echo no THEN echo after")
    st = status(r)
    assert st[ran] == "succeeded" and st[skipped] == "skipped" and st["echo after"] == "succeeded"
    assert r.status == "succeeded"  # ELSE handled the failure


async def test_if_success_without_else_fails_the_run_on_failure() -> None:
    r, _, _ = await run("fail x THEN IF_SUCCESS echo yes")
    assert r.status == "failed" and status(r)["echo yes"] == "skipped"


async def test_if_failure_runs_only_on_failure_and_flow_continues() -> None:
    r, _, _ = await run("echo fine THEN IF_FAILURE echo fix THEN echo next")
    assert status(r) == {"echo fine": "succeeded", "echo fix": "skipped", "echo next": "succeeded"}
    r, _, _ = await run("fail broke THEN IF_FAILURE echo fix THEN echo next")
    assert status(r) == {"fail broke": "failed", "echo fix": "succeeded", "echo next": "succeeded"}
    assert r.status == "succeeded"
    r, _, _ = await run("fail broke THEN IF_FAILURE fail again THEN echo next")
    assert r.status == "failed" and status(r)["echo next"] == "skipped"


async def test_fallback_chain() -> None:
    r, _, _ = await run("fail gpt THEN IF_FAILURE fail claude THEN IF_FAILURE echo local")
    assert r.status == "succeeded" and status(r)["echo local"] == "succeeded"


async def test_if_any_failed_lets_every_member_finish() -> None:
    r, _, _ = await run("fail a AND sleep 0.1 AND echo c THEN IF_ANY_FAILED echo handled THEN echo combine")
    st = status(r)
    assert st == {"fail a": "failed", "sleep 0.1": "succeeded", "echo c": "succeeded", "echo handled": "succeeded", "echo combine": "succeeded"}
    r, _, _ = await run("echo a AND echo b AND IF_ANY_FAILED echo handled")
    assert status(r)["echo handled"] == "skipped" and r.status == "succeeded"


async def test_unhandled_failure_fails_fast_cancelling_running_siblings() -> None:
    r, _, _ = await run("(sleep 0.05 THEN fail late) AND sleep 5")
    st = status(r)
    assert st["fail late"] == "failed" and st["sleep 5"] == "cancelled"
    assert r.status == "failed"
    r, _, _ = await run("(sleep 0.05 THEN fail late) AND sleep 0.2", fail_fast=False)
    assert status(r)["sleep 0.2"] == "succeeded" and r.status == "failed"


async def test_retries_with_backoff_count_attempts() -> None:
    r, act, _ = await run("fail flaky (retry 3)")
    assert act.calls["fail flaky"] == 4 and r.steps[0].attempt == 4 and r.status == "failed"


async def test_non_retryable_errors_are_not_retried() -> None:
    class NotRetryable(Counting):
        async def __call__(self, node, inputs):  # type: ignore[no-untyped-def]
            self.calls[node.label] = self.calls.get(node.label, 0) + 1
            raise StepError("bad request", retryable=False)

    act = NotRetryable()
    r = await Executor(act, retry_initial_s=0.001).execute("1", compile_text("echo x (retry 5)", Catalog()))
    assert act.calls["echo x"] == 1 and r.status == "failed"


async def test_timeout_fails_the_attempt_and_is_retried() -> None:
    r, act, _ = await run("sleep 2 (timeout 50ms) (retry 1)")
    assert r.status == "failed" and "timed out after 0.05s" in r.steps[0].error and act.calls["sleep 2"] == 2


async def test_outputs_flow_to_the_next_step() -> None:
    seen: dict[str, dict[str, str]] = {}

    class Spy(ActionRunner):
        async def __call__(self, node, inputs):  # type: ignore[no-untyped-def]
            seen[node.label] = dict(inputs)
            return await super().__call__(node, inputs)

    await Executor(Spy()).execute("1", compile_text("echo one AND echo two THEN echo three", Catalog()))
    assert seen["echo three"] == {"echo one": "one", "echo two": "two"}


async def test_yaml_fallback_and_continue_on_error() -> None:
    defn = WorkflowDefinition(
        "w",
        "",
        {
            "nodes": {
                "check": {"run": "fail primary down", "on_error": {"run": "echo used fallback"}},
                "after": {"run": "echo after", "depends_on": ["check"]},
                "noisy": {"run": "fail ignored", "continue_on_error": True},
                "tail": {"run": "echo tail", "depends_on": ["noisy"]},
                "alert": {"run": "echo alert", "depends_on": {"check": "failure"}},
            }
        },
    )
    e, _, _ = ex()
    r = await e.execute("1", compile_definition(defn, Catalog()))
    st = {s.node_id: s.status for s in r.steps}
    assert st == {"check": "failed", "check.fallback": "succeeded", "after": "succeeded", "noisy": "failed", "tail": "succeeded", "alert": "succeeded"}
    assert r.status == "succeeded"


async def test_every_step_is_checkpointed_and_non_idempotent_steps_get_a_start_marker() -> None:
    r, _, cp = await run("echo a THEN hello there")  # an LLM step: not idempotent, fails without provider
    by = [(s.label, s.status) for s in cp.saved]
    assert ("echo a", "succeeded") in by
    assert ("hello there", "running") in by and ("hello there", "failed") in by
    assert "no LLM provider is configured" in r.steps[-1].error
    assert ("echo a", "running") not in by  # idempotent steps skip the start marker


async def test_resume_skips_completed_steps() -> None:
    g = compile_text("echo a THEN echo b THEN echo c", Catalog())
    e, act, _ = ex()
    prior = {"s1": StepRecord("1", "s1", "echo a", "builtin", "succeeded", attempt=1, output="a")}
    r = await e.execute("1", g, prior=prior)
    assert r.status == "succeeded" and act.calls == {"echo b": 1, "echo c": 1}


async def test_resume_does_not_repeat_an_interrupted_non_idempotent_step() -> None:
    g = compile_text("echo a THEN deploy the thing THEN echo c", Catalog())
    e, act, _ = ex()
    prior = {
        "s1": StepRecord("7", "s1", "echo a", "builtin", "succeeded", attempt=1),
        "s2": StepRecord("7", "s2", "deploy the thing", "llm", "running", attempt=1),
    }
    r = await e.execute("7", g, prior=prior)
    assert "deploy the thing" not in act.calls
    s2 = {s.node_id: s for s in r.steps}["s2"]
    assert s2.status == "failed" and s2.error is not None and s2.error.startswith(INTERRUPTED)
    assert "/rerun" not in s2.error  # the engine states the fact; the bot words the hint
    assert "(use /rerun 7 from s2 to run it again)" in step_error(s2)  # type: ignore[operator]


async def test_resume_reruns_an_interrupted_idempotent_step() -> None:
    g = compile_text("echo a THEN sleep 0.01 THEN echo c", Catalog())
    e, act, _ = ex()
    prior = {"s2": replace(StepRecord("1", "s2", "sleep 0.01", "builtin", "running"), attempt=1)}
    prior["s1"] = StepRecord("1", "s1", "echo a", "builtin", "succeeded", attempt=1)
    r = await e.execute("1", g, prior=prior)
    assert r.status == "succeeded" and act.calls == {"sleep 0.01": 1, "echo c": 1}


async def test_cancelling_the_run_records_cancelled_steps_and_reraises() -> None:
    e, _, cp = ex()
    task = asyncio.create_task(e.execute("1", compile_text("sleep 5 AND sleep 5", Catalog())))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sorted(s.status for s in cp.saved) == ["cancelled", "cancelled"]


async def test_each_step_starts_only_after_before_step() -> None:
    """``before_step`` (the App passes admission's Priority.turn) is awaited before every step
    starts: a step held there has not run, and runs once it returns."""
    gate = asyncio.Event()
    asked: list[int] = []

    async def before_step() -> None:
        asked.append(len(asked))
        await gate.wait()

    e, act, _ = ex(before_step=before_step)
    task = asyncio.create_task(e.execute("1", compile_text("echo a THEN echo b", Catalog())))
    while not asked:  # the first step asked for its turn
        await asyncio.sleep(0)
    assert act.calls == {}  # held: nothing ran
    gate.set()
    r = await asyncio.wait_for(task, 10)
    assert r.status == "succeeded" and act.calls == {"echo a": 1, "echo b": 1}
    assert asked == [0, 1]  # once per step
