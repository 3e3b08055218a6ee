"""User-facing texts: every sentence the bot says in a thread comes from here.

Functions return plain text (no platform markup); adapters render it. The engine
raises structured errors (:mod:`engine.errors`) and never writes chat syntax; the
functions here turn them into replies. The model is bolt's ``logger/messages.py``:
one module of small text functions, so wording is reviewed and changed in one place
and tests can compare against the same function instead of copying sentences.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from engine.errors import INTERRUPTED
from engine.events import StepRecord
from engine.graph import Graph, split_instance

if TYPE_CHECKING:
    from engine.run import RunResult

ICONS = {"running": "▶", "waiting": "⏸", "succeeded": "✓", "failed": "✗", "skipped": "·", "cancelled": "⊘", "pending": "…"}
"""Status → icon used in plain-text status lines."""


def step_line(rec: StepRecord) -> str:
    """One plain-text status line for a step: icon, label, status, time, cost."""
    icon = ICONS.get(rec.status, "?")
    dur = rec.duration_s
    parts = [f"{icon} {rec.label}", rec.status]
    if rec.attempt > 1:
        parts.append(f"attempt {rec.attempt}")
    if dur is not None:
        parts.append(f"{dur:.2f}s")
    if rec.cost_usd:
        parts.append(f"${rec.cost_usd:.4f}")
    if rec.cached:
        parts.append("(cached)")
    if rec.status in ("failed", "skipped") and rec.error:
        parts.append(step_error(rec) or "")
    return " — ".join(parts)


# -- help ----------------------------------------------------------------------

HELP_HEAD = """Baton — run workflows from chat.
  run: <workflow>        run workflow text, e.g. run: disk-check AND system-report THEN echo done
  /run NAME [k=v …]      run a named workflow (see /workflows), with its parameters
  /workflows             list named workflows and actions
  /runs [all]            recent runs in this thread (or everywhere)
  /run show ID           one run's steps, times, outputs and cost
  /run show ID graph     the run's graph as a picture, coloured by step status
  /cancel ID             stop a run, cancelling its running steps
  /rerun ID [from STEP]  run again; with "from STEP" (or STEP#N, a loop iteration), reuse the steps before it
  /approve ID [STEP]     let a run waiting at an approve step go on (/reject ID [STEP] stops it)
  /why                   how the bot understood your last plain message (run / ask / chat, layer, score, why)
  /reload                re-read config/routes.yaml (new examples take effect without a restart)
  /history [N]           the last N messages of this thread
  /recall WORDS          find earlier messages of this thread (full-text search, no LLM)
  /context               what the next LLM call would receive, with its token budget
  /summary               the stored summaries of this thread
  /forget                delete this thread's memory (asks for confirmation)
  /audit [N]             the last N audit rows: who started, cancelled, approved… (admins)
  /help                  this text
"""
HELP_TAIL = """Workflow language: A THEN B (sequence), A AND B (parallel), THEN IF_SUCCESS x ELSE y,
THEN IF_FAILURE x, THEN IF_ANY_FAILED x, ( ) grouping, step (retry 3) (timeout 30s);
keywords are upper case, quotes escape: echo "A THEN B"."""


def help_text(extra_lines: str = "") -> str:
    """The ``/help`` answer; ``extra_lines`` are more command lines (e.g. the scheduling commands)."""
    return HELP_HEAD + extra_lines.rstrip("\n") + ("\n" if extra_lines.strip() else "") + HELP_TAIL


CHAT_NEEDS_PROVIDER = (
    "I run workflows and commands without an LLM (/help lists them). Chatting needs an LLM provider: "
    "set OPENAI_API_KEY or ANTHROPIC_API_KEY, or add a [providers.<name>] entry with base_url "
    "(Ollama, vLLM, llama.cpp) in config/baton.toml."
)
"""The answer to plain chat when no LLM provider is configured."""


# -- hints -----------------------------------------------------------------------


def rerun_command(run_id: int | str, step: str | None = None) -> str:
    """The chat command that runs ``run_id`` again (from ``step``): ``/rerun 7 from s2``."""
    return f"/rerun {run_id}" + (f" from {step}" if step else "")


def rerun_hint(run_id: int | str, step: str) -> str:
    """The hint after a step that was interrupted and not re-run."""
    return f"use {rerun_command(run_id, step)} to run it again"


def did_you_mean(names: list[str] | tuple[str, ...], *, quote: str = "", prefix: str = "") -> str:
    """``"; did you mean a, b?"`` for close names, ``""`` for none."""
    if not names:
        return ""
    return "; did you mean " + ", ".join(f"{quote}{prefix}{n}{quote}" for n in names) + "?"


# -- refusals and errors ----------------------------------------------------------


def not_run(reason: str) -> str:
    """A refusal to start something; ``reason`` names the rule (see :func:`permission_denied`)."""
    return f"Not run: {reason}."


def permission_denied(name: str, allowed: list[str] | tuple[str, ...]) -> str:
    """Why ``[permissions]`` refuse ``name`` (the reason part of :func:`not_run`)."""
    return f"you may not run '{name}' (allowed: {', '.join(allowed) or 'nobody'}; set [permissions] in config/baton.toml)"


def route_denied(route: str, allowed: list[str]) -> str:
    """Why a route's ``allowed_users``/``allowed_roles`` refuse the author."""
    return not_run(f"you may not use the route '{route}' (allowed: {', '.join(allowed)}; see config/routes.yaml)")


def may_not_decide(verb: str, approvers: list[str] | tuple[str, ...]) -> str:
    """An ``/approve``/``/reject`` by someone who may not."""
    allowed = ", ".join(approvers) or "nobody"
    return f"You may not {verb} runs (allowed: {allowed}; set [permissions] approve in config/baton.toml)."


def busy(run_ids: list[int]) -> str:
    """A start refused by ``busy_policy = "reject"``."""
    ids = ", ".join(f"#{i}" for i in run_ids)
    return f"Run {ids} is still active in this thread; wait for it or /cancel it."


def queued_behind(described: str) -> str:
    """A run request acknowledged at once while it waits under ``busy_policy = "queue"``;
    ``described`` names what it waits for ("run #3 (waiting for approval)")."""
    return f"Queued behind {described}; it starts when that is done."


def workflow_syntax_error(reason: str, line: int, column: int, caret: str) -> str:
    """Workflow text that does not parse, with its position and a caret line."""
    return f"I could not parse that workflow: {reason} (line {line}, column {column})\n{caret}"


def unknown_workflow(error: str, known: list[str]) -> str:
    """A step naming no known workflow (``error`` is the engine's message with suggestions)."""
    return f"{error[:1].upper() + error[1:]} Known workflows: {', '.join(known) or 'none'}."


def unknown_named_workflow(name: str, near: list[str]) -> str:
    """``/run NAME`` with an unknown name."""
    return f"Unknown workflow '{name}'{did_you_mean(near) or '.'} (/workflows lists them)"


def invalid_workflow(error: str) -> str:
    """A workflow that parses but is invalid (definition errors)."""
    return f"That workflow is invalid: {error}"


def run_what(example: str = "run: disk-check AND system-report") -> str:
    """A run command without a workflow."""
    return f"Run what? e.g. {example} (see /workflows)"


def usage(text: str) -> str:
    """A command used wrongly."""
    return f"{text} (/help lists the commands)"


def unknown_command(name: str, near: list[str]) -> str:
    """``/name`` that is no command."""
    return f"Unknown command /{name}{did_you_mean(near, prefix='/')} (/help lists them)"


def not_recorded(error: object) -> str:
    """Storing the incoming message failed: nothing was acted on."""
    return f"I could not record your message ({error}); nothing was run. Please try again."


def database_error(error: object) -> str:
    """A database error while handling a message."""
    return f"Database error: {error}. Nothing was lost that was already recorded; try again."


def internal_error(error: BaseException, what: str = "that") -> str:
    """An unexpected failure while handling ``what`` (reported, never swallowed)."""
    return f"Internal error while handling {what}: {type(error).__name__}: {error}"


def no_run(run_id: int) -> str:
    """A run id that names no run."""
    return f"No run #{run_id}."


def no_step(run_id: int, step: str, near: list[str]) -> str:
    """``/rerun ID from STEP`` with an unknown step."""
    return f"Run #{run_id} has no step '{step}'" + (f"; did you mean {', '.join(near)}?" if near else ".")


# -- runs --------------------------------------------------------------------------


def step_error(rec: StepRecord) -> str | None:
    """A step's error as shown: the engine's message plus, for an interrupted step, how to rerun it."""
    if rec.error and rec.error.startswith(INTERRUPTED):
        return f"{rec.error} ({rerun_hint(rec.run_id, rec.node_id)})"
    return rec.error


def cancelling(run_id: int) -> str:
    """``/cancel`` accepted."""
    return f"Cancelling run #{run_id}."


def not_running(run_id: int, status: str) -> str:
    """``/cancel`` of a run that is not active."""
    return f"Run #{run_id} is not running (it is {status})."


def run_cancelled(run_id: int) -> str:
    """A run stopped by ``/cancel``."""
    return f"Run #{run_id} cancelled; its running steps were stopped."


def run_stopped(run_id: int, error: object) -> str:
    """A run stopped by a database failure (it resumes on restart)."""
    return f"Run #{run_id} stopped: {error}. It resumes from its last checkpoint on restart."


def run_stopped_internal(run_id: int, error: BaseException) -> str:
    """A run stopped by an unexpected error inside the run manager (it resumes on restart)."""
    return f"Run #{run_id} stopped by an internal error ({type(error).__name__}: {error}). It resumes from its last checkpoint on restart."


def resuming(run_id: int, done: int, total: int, loops: Sequence[tuple[str, int]] = ()) -> str:
    """A run picked up again after a restart. ``loops``: (loop name, iterations recorded) for a
    workflow with loops, whose iterations are records of their own: then each loop's place is said
    instead of "N of M"."""
    detail = f"{done} of {total} steps already done"
    if loops:
        where = [f"loop {name}: {k} iteration{'s' if k != 1 else ''} recorded" for name, k in loops]
        detail = f"{done} steps already done; " + ", ".join(where)
    return f"Resuming run #{run_id} after a restart ({detail})."


def result_text(run_id: int, result: RunResult, graph: Graph, *, fired_by: str | None = None) -> str:
    """The reply posted in the thread when a run ends: summary line, steps, final output."""
    steps = [s for s in result.steps]
    ran = [s for s in steps if not s.reused]  # a /rerun … from run's reused steps ran in the old run
    started = [s.started_at for s in ran if s.started_at]
    finished = [s.finished_at for s in ran if s.finished_at]
    took = (max(finished) - min(started)).total_seconds() if started and finished else 0.0
    cost = sum(s.cost_usd for s in steps)
    tokens = sum(s.tokens_in + s.tokens_out for s in steps)
    head = f"Run #{run_id} {result.status} in {took:.2f}s ({len(steps)} steps"
    if tokens:
        head += f", {tokens} tokens"
    head += f", ${cost:.4f})" if cost else ")"
    lines = [head]
    if fired_by:
        lines.append(fired_by)
    lines += ["  " + step_line(s) for s in steps]
    if result.error:
        lines.append(f"Error: {result.error}")
    out = final_outputs(result.steps, graph)
    if out:
        lines.append("Result:\n" + out)
    return "\n".join(lines)


def final_outputs(steps: tuple[StepRecord, ...], graph: Graph) -> str:
    """Outputs of the steps the workflow's exit depends on (looking through gates); for a
    loop's node, its last iteration that produced output."""
    by_id: dict[str, StepRecord] = {}
    for s in steps:  # steps are in order, so a later iteration (node#3) wins
        base = s.node_id.rpartition("#")[0] if "#" in s.node_id else s.node_id
        if s.status == "succeeded" or base not in by_id:
            by_id[base] = s
    nodes = {n.id: n for n in graph.nodes}
    seen: set[str] = set()
    outs: list[str] = []
    stack = [graph.exit]
    while stack:
        nid = stack.pop()
        if nid in seen:
            continue
        seen.add(nid)
        n = nodes[nid]
        if n.is_gate:
            stack.extend(e.source for e in reversed(n.edges))
        elif nid in by_id and by_id[nid].status == "succeeded" and by_id[nid].output:
            outs.append(by_id[nid].output.strip())
    return "\n".join(outs)


def hms(dt: datetime | None) -> str:
    """``HH:MM:SS.mmm`` of a time, ``-`` when unknown."""
    return dt.strftime("%H:%M:%S.%f")[:-3] if dt else "-"


def runs_list(rows: Sequence[Any], *, everywhere: bool) -> str:
    """``/runs``: one line per run row (``id``, ``status``, times, ``source``), newest first."""
    if not rows:
        return "No runs yet in this thread." if not everywhere else "No runs yet."
    lines = []
    for r in rows:
        took = f" {(r.finished_at - r.started_at).total_seconds():.2f}s" if r.finished_at and r.started_at else ""
        lines.append(f"#{r.id:<4} {r.status:<9}{took:>8}  {r.source[:70]}")
    return "\n".join(lines)


def in_graph_order(graph: Graph, steps: Sequence[StepRecord]) -> tuple[StepRecord, ...]:
    """Step records in graph order; a loop's later iterations (``node#N``) follow its last node, by iteration."""
    order = {n.id: i for i, n in enumerate(graph.nodes)}
    last = {nid: order[lp.nodes[-1]] for lp in graph.loops() for nid in lp.nodes}

    def key(s: StepRecord) -> tuple[int, int, int]:
        base, it = split_instance(s.node_id)
        return (order[base], 0, 0) if it == 1 else (last.get(base, order[base]), it, order[base])

    return tuple(sorted((s for s in steps if split_instance(s.node_id)[0] in order), key=key))


def run_details(row: Any, steps: Sequence[StepRecord]) -> str:
    """``/run show ID``: a stored run (``bot.store.RunRow``) with its steps, times, outputs and cost."""
    ordered = in_graph_order(row.graph, steps)
    lines = [f"Run #{row.id}: {row.status} — {row.source}", f"requested by {row.requested_by} at {hms(row.created_at)}"]
    if row.rerun_of:
        lines.append(f"rerun of #{row.rerun_of}")
    for s in ordered:
        t = f"{hms(s.started_at)} → {hms(s.finished_at)}" if s.started_at and s.finished_at else ""
        extra = f" {s.tokens_in}+{s.tokens_out} tokens ${s.cost_usd:.4f}" if (s.tokens_in or s.cost_usd) else ""
        reused = " (reused)" if s.reused else ""
        lines.append(f"  {s.node_id:<8} {s.status:<9} attempt {s.attempt} {t}{extra}{reused}  {s.label}")
        if s.error:
            lines.append(f"           error: {step_error(s)}")
        if s.output:
            lines.append("           " + s.output.strip().replace("\n", "\n           ")[:600])
    if row.error:
        lines.append(f"Error: {row.error}")
    total = sum(s.cost_usd for s in ordered)
    if total:
        lines.append(f"Cost: ${total:.4f}")
    return "\n".join(lines)
