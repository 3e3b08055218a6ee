"""The executor: runs a :class:`engine.graph.Graph`, checkpointing every step boundary.

Ordering: a node is decided when all its predecessors are terminal (see
:mod:`engine.graph` for the rule). Steps whose dependencies are met run
concurrently as tasks of one ``asyncio.TaskGroup``; gates are decided inline.

Durability: a step's final record is written through the :class:`CheckpointStore`
*before* any dependent is started, so a crash after a step finished never runs it
again. Steps not marked idempotent also get a ``running`` record before they start,
so a resume can tell a step that was interrupted midway (and may have had its side
effect) from one that never started: an interrupted idempotent step re-runs, an
interrupted non-idempotent step is failed with a message instead of being repeated
(the thread decides how to run it again). Pattern after LangGraph's
per-step checkpoints and Temporal's activity semantics.

Retries: tenacity, exponential backoff with jitter, only for retryable errors
(:class:`StepError` with ``retryable=True`` and timeouts).

Failing fast: a failure that nothing in the graph handles (no ``failure``/``always``
edge reachable from it) cancels the steps still running and skips the rest, unless
``fail_fast=False`` (then independent branches go on; a workflow may set its own).

Graph features (issue 17): edge and node conditions are evaluated when a node is
decided (:mod:`engine.expressions`); a false one skips the node and records the
condition with its values, an error in one fails the node with the expression and
the values. Step arguments are interpolated (``${node.field}``, ``${inputs.name}``)
just before the step runs. Loops (:class:`engine.graph.Loop`) run iteration by
iteration: when every node of the loop is decided, a back edge whose source
succeeded and whose condition holds starts the next iteration, whose records are
``node#2``, ``node#3``…, each checkpointed like any step; a resume replays the
recorded iterations from their records (conditions see the recorded outputs) and
continues in the iteration that was interrupted. ``max_parallel_steps`` bounds the
steps running at once; cached steps (``cache: {ttl}``) reuse a stored result.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Protocol

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from engine.actions import StepOutput
from engine._checkpoint_writer import CheckpointWriter
from engine.cache import StepCache, cache_key
from engine.checkpoints import CheckpointStore
from engine.context import current_run_id
from engine.errors import INTERRUPTED, StepError
from engine.events import RunEvent, RunStatus, StepRecord
from engine.expressions import ConditionError, ReferenceMissing, Scope, condition, explain, interpolate
from engine.graph import Edge, Graph, Loop, Node, instance_id

log = logging.getLogger("baton.engine")

INTERRUPTED_MESSAGE = f"{INTERRUPTED}; not re-run because it is not marked idempotent"


# Stored statuses of a step that started and did not finish (in an earlier process).
_STARTED = ("running", "cancelled")


class Action(Protocol):
    async def __call__(self, node: Node, inputs: Mapping[str, str]) -> StepOutput: ...


@dataclass(frozen=True)
class RunResult:
    """The end of a run.

    Attributes:
        status: ``succeeded``, ``failed`` or ``cancelled``.
        steps: every step's final record, in graph order (gates left out).
        error: the first unhandled failure, as ``label: message``.
    """

    run_id: str
    status: RunStatus
    steps: tuple[StepRecord, ...]
    error: str | None = None

    @property
    def cost_usd(self) -> float:
        return sum(s.cost_usd for s in self.steps)


def utcnow() -> datetime:
    return datetime.now(UTC)


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, StepError):
        return exc.retryable
    return isinstance(exc, TimeoutError)


class Executor:
    """Runs graphs.

    Args:
        action: runs one step (usually an :class:`engine.actions.ActionRunner`).
        checkpoints: durable store of step records; ``None`` keeps them in memory only.
        fail_fast: stop at the first unhandled failure (the seed's ``fail_fast``).
        default_timeout_s: per-attempt timeout for steps without ``(timeout …)`` (seconds).
        retry_initial_s, retry_max_s: backoff between attempts (seconds, with jitter).
        clock: returns the current UTC time (tests pin it).
        max_parallel_steps: steps of one run running at once (``None``: no bound); a
            graph's own ``max_parallel_steps`` wins.
        default_retries: retries for steps that set none (``[workflow] max_retries``).
        cache: where ``cache: {ttl}`` steps keep results (``None``: caching off).
        before_step: awaited before each step starts (``None``: steps start at once). The
            embedded server passes its admission's ``Priority.turn`` (bot.queue.admission):
            a step's start (a shell child's fork, its status update) waits while requests are
            being admitted, within that gate's bounded delay.
    """

    def __init__(
        self,
        action: Action,
        checkpoints: CheckpointStore | None = None,
        *,
        fail_fast: bool = True,
        default_timeout_s: float = 300.0,
        retry_initial_s: float = 0.5,
        retry_max_s: float = 10.0,
        clock: Callable[[], datetime] = utcnow,
        max_parallel_steps: int | None = None,
        default_retries: int = 0,
        cache: StepCache | None = None,
        before_step: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.action = action
        self.before_step = before_step
        self.checkpoints = checkpoints
        self.fail_fast = fail_fast
        self.default_timeout_s = default_timeout_s
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.clock = clock
        self.max_parallel_steps = max_parallel_steps
        self.default_retries = default_retries
        self.cache = cache

    async def execute(
        self,
        run_id: str,
        graph: Graph,
        *,
        prior: Mapping[str, StepRecord] | None = None,
        on_event: Callable[[RunEvent], None] | None = None,
        use_cache: bool = True,
    ) -> RunResult:
        """Run ``graph`` as run ``run_id``.

        Args:
            prior: records of an earlier attempt at this run (resume) or reused from
                another run (a rerun from a step); terminal ones are not executed again. A
                ``running``/``cancelled`` record of a non-idempotent step is failed as
                interrupted (before any fail-fast skip); a ``running`` record's ``error``
                may carry what the restart found out (e.g. a terminated child), which is
                added to the step's message.
            on_event: called synchronously for every :class:`RunEvent`; keep it cheap.
            use_cache: ``False`` (``/rerun``) runs cached steps again (and stores the new results).

        Returns:
            The :class:`RunResult`. Raises ``CancelledError`` when cancelled, after the
            running steps were recorded as cancelled.
        """
        return await _Run(self, run_id, graph, dict(prior or {}), on_event or (lambda e: None), use_cache).go()

    async def resume(self, run_id: str, graph: Graph, *, on_event: Callable[[RunEvent], None] | None = None) -> RunResult:
        """Run ``run_id`` from its stored checkpoints: mark it running, load its step
        records, and execute (completed steps are not repeated).

        Raises:
            RuntimeError: the executor has no checkpoint store.
        """
        if self.checkpoints is None:
            raise RuntimeError("resuming a run needs a checkpoint store")
        await self.checkpoints.mark_running(run_id)
        prior = await self.checkpoints.load(run_id)
        return await self.execute(run_id, graph, prior=prior, on_event=on_event)


class _Run(CheckpointWriter):
    def __init__(
        self,
        ex: Executor,
        run_id: str,
        graph: Graph,
        prior: dict[str, StepRecord],
        emit: Callable[[RunEvent], None],
        use_cache: bool = True,
    ) -> None:
        self.ex = ex
        self.run_id = run_id
        self.graph = graph
        self.prior = prior
        self.emit = emit
        self.use_cache = use_cache
        self.nodes = {n.id: n for n in graph.nodes}
        self.order = {n.id: i for i, n in enumerate(graph.nodes)}
        self.dependents: dict[str, list[tuple[str, Edge]]] = {n.id: [] for n in graph.nodes}
        self.remaining: dict[str, int] = {}
        for n in graph.nodes:
            self.remaining[n.id] = sum(1 for e in n.edges if not e.back)
            for e in n.edges:
                self.dependents[e.source].append((n.id, e))
        self.loops: tuple[Loop, ...] = graph.loops()
        self.loop_of: dict[str, Loop] = {nid: lp for lp in self.loops for nid in lp.nodes}
        # keyed by id(loop): hashing a Loop (a tuple of edges) on every step would cost more than the step
        self.iteration: dict[int, int] = {id(lp): 1 for lp in self.loops}
        self.loop_left: dict[int, int] = {id(lp): len(lp.nodes) for lp in self.loops}
        self.forced: set[str] = set()  # loop heads re-entered by a back edge
        self.outcome: dict[str, str] = {}  # node -> succeeded/failed/skipped/cancelled (effective)
        self.records: dict[str, StepRecord] = {}  # by instance id (node, node#2, …)
        self.latest: dict[str, StepRecord] = {}  # node -> its last finished record (any iteration)
        self.skips: dict[str, str | None] = {}  # instance id -> reason, for nodes skipped while deciding
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.ready: deque[str] = deque()
        self.stopping = False
        self.first_error: str | None = None
        self.fail_fast = ex.fail_fast if graph.fail_fast is None else graph.fail_fast
        limit = graph.max_parallel_steps or ex.max_parallel_steps
        self.slots = asyncio.Semaphore(limit) if limit else None
        # declared defaults, then the values the run was started with (bound by the bot; a run
        # started another way, e.g. by a schedule, still sees the defaults)
        inputs = {i.name: i.default for i in graph.inputs if i.default is not None} | dict(graph.input_values)
        self.scope = Scope(self.nodes, self._output_of, inputs)
        self.handled = self._handled_map()
        self.tg: asyncio.TaskGroup | None = None
        self.pending: list[StepRecord] = []  # checkpoints queued for the writer, in order
        self.waiters: list[asyncio.Future[None]] = []
        self.writer: asyncio.Task[None] | None = None
        self.write_error: Exception | None = None

    def _output_of(self, nid: str) -> str | None:
        rec = self.latest.get(nid)
        if rec is None or rec.status not in ("succeeded", "failed"):
            return None
        return rec.output

    def inst(self, nid: str) -> str:
        """The record id of ``nid`` in its loop's current iteration."""
        lp = self.loop_of.get(nid)
        return nid if lp is None else instance_id(nid, self.iteration[id(lp)])

    def _handled_map(self) -> dict[str, bool]:
        """Whether a failure of each node can reach a failure/always consumer."""
        memo: dict[str, bool] = {}
        for n in reversed(self.graph.nodes):  # dependents come later in topo order
            h = n.policy.continue_on_error
            for d, e in self.dependents[n.id]:
                if e.back:
                    continue
                dn = self.nodes[d]
                if dn.is_gate:
                    h = h or memo.get(d, False)
                elif e.condition in ("failure", "always"):
                    h = True
            memo[n.id] = h
        return memo

    # -- driving -----------------------------------------------------------

    async def go(self) -> RunResult:
        current_run_id.set(self.run_id)  # step tasks copy this context
        self.emit(RunEvent("run_started", self.run_id, status="running", at=self.ex.clock()))
        for n in self.graph.nodes:
            if self.remaining[n.id] == 0:
                self.ready.append(n.id)
        try:
            async with asyncio.TaskGroup() as tg:
                self.tg = tg
                self._drain()
        except asyncio.CancelledError:
            await asyncio.shield(self._settle_writer())
            await asyncio.shield(self._finish_skipped())
            self.emit(RunEvent("run_finished", self.run_id, status="cancelled", at=self.ex.clock(), steps=self._steps()))
            raise
        except BaseException:  # e.g. a store error inside a step: the writer still ends before the run does
            await asyncio.shield(self._settle_writer())
            raise
        await self._flush()
        await self._finish_skipped()
        status = self._status()
        result = RunResult(self.run_id, status, self._steps(), self.first_error if status == "failed" else None)
        self.emit(RunEvent("run_finished", self.run_id, status=status, error=result.error, at=self.ex.clock(), steps=result.steps))
        return result

    def _steps(self) -> tuple[StepRecord, ...]:
        """Records in graph order; a loop's later iterations follow its last node."""
        out: list[StepRecord] = []
        later: dict[int, list[StepRecord]] = {}
        for rec in self.records.values():
            base, _, it = rec.node_id.rpartition("#")
            if base and it.isdigit() and base in self.loop_of:
                later.setdefault(id(self.loop_of[base]), []).append(rec)
        for n in self.graph.nodes:
            if not n.is_gate and n.id in self.records:
                out.append(self.records[n.id])
            lp = self.loop_of.get(n.id)
            if lp is not None and n.id == lp.nodes[-1] and id(lp) in later:
                out.extend(sorted(later[id(lp)], key=lambda r: (int(r.node_id.rpartition("#")[2]), self.order[r.node_id.rpartition("#")[0]])))
        return tuple(out)

    def _status(self) -> RunStatus:
        exit_outcome = self.outcome.get(self.graph.exit, "skipped")
        if self.first_error is not None and self._loop_failed:
            return "failed"
        if exit_outcome == "succeeded" and not self._unhandled_failure():
            return "succeeded"
        if exit_outcome == "skipped" and not self._unhandled_failure():
            return "succeeded"
        if self.first_error is None:
            self.first_error = self._describe_failure()
        return "failed"

    _loop_failed = False

    def _unhandled_failure(self) -> bool:
        return any(
            r.status == "failed" and not self.handled.get(r.node_id.partition("#")[0], False) for r in self.records.values()
        )

    def _describe_failure(self) -> str | None:
        for r in self._steps():
            if r.status == "failed":
                return f"{r.label}: {r.error}"
        return None

    async def _finish_skipped(self) -> None:
        """Record every skipped or undecided step as skipped, in one checkpoint write."""
        now = self.ex.clock()
        pending = []
        for iid, reason in self.skips.items():
            if iid in self.records:
                continue
            prior = self.prior.get(iid)
            if prior is not None and prior.status in _STARTED:  # keep a start marker (see below)
                self.records[iid] = prior
                continue
            base = iid.partition("#")[0] if iid.partition("#")[0] in self.nodes else iid
            n = self.nodes[base]
            rec = StepRecord(self.run_id, iid, self._label(n, iid), n.kind, "skipped", finished_at=now, error=reason)
            self.records[iid] = rec
            pending.append(rec)
        for n in self.graph.nodes:
            iid = self.inst(n.id)
            if n.is_gate or iid in self.records:
                continue
            prior = self.prior.get(iid)
            if prior is not None and prior.status in _STARTED:
                # A stored start marker is the only trace of a possible side effect: keep it
                # (the next resume reports the step as interrupted), never overwrite it.
                self.records[iid] = prior
                continue
            rec = StepRecord(self.run_id, iid, self._label(n, iid), n.kind, "skipped", finished_at=now)
            self.records[iid] = rec
            pending.append(rec)
        if pending and self.ex.checkpoints is not None:
            await self._flush()
            await self.ex.checkpoints.save_steps(pending)

    @staticmethod
    def _label(node: Node, iid: str) -> str:
        return node.label if iid == node.id else f"{node.label} (iteration {iid.rpartition('#')[2]})"

    def _drain(self) -> None:
        while self.ready:
            self._decide(self.ready.popleft())

    def _terminal(self, nid: str, outcome: str, reason: str | None = None) -> None:
        self.outcome[nid] = outcome
        if outcome == "skipped" and not self.nodes[nid].is_gate:
            self.skips.setdefault(self.inst(nid), reason)
        lp = self.loop_of.get(nid)
        for d, e in self.dependents[nid]:
            if e.back or (lp is not None and self.loop_of.get(d) is not lp):
                continue  # loop edges start iterations; edges out of a loop wait for its end
            self.remaining[d] -= 1
            if self.remaining[d] == 0:
                self.ready.append(d)
        if lp is not None:
            self.loop_left[id(lp)] -= 1
            if self.loop_left[id(lp)] == 0:
                self._end_iteration(lp)

    def _end_iteration(self, lp: Loop) -> None:
        """Every node of ``lp`` is decided: start the next iteration, or leave the loop."""
        fire: list[str] = []
        for src, tgt, e in lp.back_edges:
            if self.stopping or not self._satisfied(e.condition, self.outcome.get(src, "skipped")):
                continue
            try:
                ok = e.when is None or condition(e.when).evaluate(self.scope, tgt)
            except ConditionError as err:
                self._fail_run(str(err))
                continue
            if ok and tgt not in fire:
                fire.append(tgt)
        k = self.iteration[id(lp)]
        if fire and k >= lp.max_iterations:
            if lp.on_max_iterations == "fail":
                self._fail_run(f"loop {lp.name} reached max_iterations {lp.max_iterations} (on_max_iterations: fail)")
            fire = []
        if not fire:
            for nid in lp.nodes:  # release the edges out of the loop
                for d, e in self.dependents[nid]:
                    if not e.back and self.loop_of.get(d) is not lp:
                        self.remaining[d] -= 1
                        if self.remaining[d] == 0:
                            self.ready.append(d)
            return
        self.iteration[id(lp)] = k + 1
        self.loop_left[id(lp)] = len(lp.nodes)
        members = set(lp.nodes)
        for nid in lp.nodes:
            self.outcome.pop(nid, None)
            self.remaining[nid] = sum(1 for e in self.nodes[nid].edges if not e.back and e.source in members)
        for nid in lp.nodes:
            if self.remaining[nid] == 0:
                if nid in fire:
                    self.forced.add(nid)
                    self.ready.append(nid)
                else:  # a loop head whose loop edge did not fire sits this iteration out
                    self._terminal(nid, "skipped")

    def _fail_run(self, message: str) -> None:
        """A failure of the run itself (a loop past its bound, a loop condition in error)."""
        if self.first_error is None:
            self.first_error = message
        self._loop_failed = True
        if self.fail_fast:
            self._stop()

    def _decide(self, nid: str) -> None:
        node = self.nodes[nid]
        iid = self.inst(nid)
        forced = nid in self.forced
        self.forced.discard(nid)
        prior = self.prior.get(iid)
        if prior is not None and prior.status in ("succeeded", "failed") and not node.is_gate:
            self.records[iid] = prior
            self.latest[nid] = prior
            eff = "succeeded" if prior.status == "failed" and node.policy.continue_on_error else prior.status
            if prior.status == "failed" and not self.handled[nid] and self.first_error is None:
                self.first_error = f"{prior.label}: {prior.error}"
            self._terminal(nid, eff)
            return
        if prior is not None and prior.status in _STARTED and not node.is_gate and not node.policy.idempotent:
            # Checked before fail-fast: a step that was running when the process died may have
            # had its effect, whatever its siblings did since; it is never "skipped" (fault 14.2).
            # Its dependencies were met when it started (they are terminal in ``prior``).
            msg = INTERRUPTED_MESSAGE
            if prior.status == "running" and prior.error:  # what the restart found out (e.g. a reaped child)
                msg = f"{msg}; {prior.error}"
            rec = replace(prior, status="failed", error=msg, finished_at=self.ex.clock())
            self._spawn(nid, self._record_only(node, rec), stoppable=False)
            return
        if self.stopping:
            self._terminal(nid, "skipped")
            return
        if not forced:
            live = [e for e in node.edges if not e.back and self.outcome[e.source] != "skipped"]
            if node.edges and not live:
                self._terminal(nid, "skipped")
                return
            if node.is_gate:
                self._terminal(nid, self._gate_outcome(node, live))
                return
            for e in live:
                if not self._satisfied(e.condition, self.outcome[e.source]):
                    self._terminal(nid, "skipped")
                    return
            for e in live:
                if e.when is not None and not self._holds(node, e.when, f"from {e.source}"):
                    return
        if node.when is not None and not self._holds(node, node.when, "when"):
            return
        self._spawn(nid, self._step(node, iid, prior.attempt if prior else 0))

    def _holds(self, node: Node, expr: str, what: str) -> bool:
        """Evaluate a condition of ``node``; false → skipped with the reason, error → the node fails."""
        try:
            ok = condition(expr).evaluate(self.scope, node.id)
        except ConditionError as e:
            iid = self.inst(node.id)
            now = self.ex.clock()
            rec = StepRecord(self.run_id, iid, self._label(node, iid), node.kind, "failed", error=str(e), started_at=now, finished_at=now)
            self._spawn(node.id, self._record_only(node, rec))
            return False
        if not ok:
            self._terminal(node.id, "skipped", f"condition ({what}) is false: {explain(expr, self.scope)}")
        return ok

    def _spawn(self, nid: str, coro, *, stoppable: bool = True) -> None:  # type: ignore[no-untyped-def]
        """Start ``coro`` in the run's task group; a fail-fast stop cancels only ``stoppable`` ones
        (recording an interrupted step is not stopped by a sibling's failure)."""
        assert self.tg is not None
        try:
            task = self.tg.create_task(coro)
            if stoppable:
                self.tasks[nid] = task
        except RuntimeError:  # the group is shutting down (the run was cancelled)
            coro.close()
            self.outcome[nid] = "skipped"

    @staticmethod
    def _satisfied(condition: str, outcome: str) -> bool:
        if condition == "always":
            return outcome in ("succeeded", "failed", "cancelled")
        if condition == "failure":
            return outcome in ("failed", "cancelled")
        return outcome == "succeeded"

    def _gate_outcome(self, node: Node, live: list) -> str:
        outcomes = [self.outcome[e.source] for e in live]
        if node.join == "first":
            return outcomes[0]
        if any(o in ("failed", "cancelled") for o in outcomes):
            return "failed"
        return "succeeded"

    def _inputs(self, node: Node) -> dict[str, str]:
        """Outputs of the nearest steps before ``node`` (looking through gates; loop edges
        included, so an iteration sees the previous one), by label."""
        found: dict[str, str] = {}
        stack = [e.source for e in node.edges]
        seen: set[str] = set()
        while stack:
            sid = stack.pop()
            if sid in seen:
                continue
            seen.add(sid)
            src = self.nodes[sid]
            if src.is_gate:
                stack.extend(e.source for e in src.edges)
            elif sid in self.latest and self.latest[sid].status in ("succeeded", "failed"):
                found[self.nodes[sid].label] = self.latest[sid].output
        return found

    def _resolve(self, node: Node) -> Node:
        """``node`` with its ``${…}`` references filled in (echo text, prompts, shell parameters).

        Raises:
            ReferenceMissing: a reference without a value.
        """
        args = node.args
        new = None
        for key in ("text", "prompt"):
            v = args.get(key)
            if isinstance(v, str) and "${" in v:
                new = new or dict(args)
                new[key] = interpolate(v, self.scope)
        params = args.get("params")
        if params:
            new = new or dict(args)
            argv = list(args["argv"])
            for i, template in params:
                value = interpolate(template, self.scope)
                if value.startswith("-") or "\x00" in value:
                    raise ReferenceMissing(f"shell parameter {template} = {value!r} is refused (it starts with '-' or has a NUL byte)")
                argv[i] = value
            new["argv"] = argv
        return node if new is None else replace(node, args=new)

    # -- one step ----------------------------------------------------------

    async def _record_only(self, node: Node, rec: StepRecord) -> None:
        await self._save(rec)
        self._finish_step(node, rec)

    async def _step(self, node: Node, iid: str, attempts_before: int) -> None:
        if self.ex.before_step is not None:  # e.g. admissions first (see Executor)
            await self.ex.before_step()
        if self.slots is None or node.kind == "approve":  # a person deciding holds no slot
            await self._step_body(node, iid, attempts_before)
            return
        async with self.slots:
            await self._step_body(node, iid, attempts_before)

    async def _step_body(self, node: Node, iid: str, attempts_before: int) -> None:
        ex = self.ex
        started = ex.clock()
        label = self._label(node, iid)
        rec = StepRecord(self.run_id, iid, label, node.kind, "running", attempt=attempts_before + 1, started_at=started)
        self.records[iid] = rec
        if not node.policy.idempotent:
            await self._save(rec)
        self.emit(RunEvent("step_started", self.run_id, step=rec, at=started))
        inputs = self._inputs(node)
        try:
            node = self._resolve(node)
        except ReferenceMissing as e:
            rec = replace(rec, status="failed", error=str(e), finished_at=ex.clock())
            await self._save(rec)
            self._finish_step(node, rec)
            return
        key = None
        if node.cache_ttl_s and ex.cache is not None:
            key = cache_key(node, inputs, self.graph.input_values)
            hit = await ex.cache.get(key, started) if self.use_cache else None
            if hit is not None:
                rec = replace(
                    rec, status="succeeded", output=hit.text, finished_at=ex.clock(), cached=True,
                )
                await self._save(rec)
                self._finish_step(node, rec)
                return
        timeout: float | None = node.policy.timeout_s or ex.default_timeout_s
        if node.kind == "approve":  # people take their time; bounded only by an explicit (timeout …)
            timeout = node.policy.timeout_s
            rec = replace(rec, status="waiting")
            self.records[iid] = rec
            await self._save(rec)
            self.emit(RunEvent("step_waiting", self.run_id, step=rec, at=ex.clock()))
        attempt = attempts_before + 1
        retries = node.policy.retries or ex.default_retries
        try:
            try:
                if retries == 0:
                    async with asyncio.timeout(timeout):
                        out = await ex.action(node, inputs)
                else:
                    out = None
                    retrying = AsyncRetrying(
                        stop=stop_after_attempt(retries + 1),
                        wait=wait_exponential_jitter(multiplier=ex.retry_initial_s, max=ex.retry_max_s, jitter=ex.retry_initial_s),
                        retry=retry_if_exception(_retryable),
                        reraise=True,
                        before_sleep=lambda rs: self._on_retry(iid, rs, attempts_before),
                    )
                    async for att in retrying:
                        with att:
                            attempt = attempts_before + att.retry_state.attempt_number
                            async with asyncio.timeout(timeout):
                                out = await ex.action(node, inputs)
                assert out is not None
                rec = StepRecord(  # not dataclasses.replace: this is the hot path of every step
                    self.run_id, iid, label, node.kind, "succeeded", attempt, out.text, None, started,
                    ex.clock(), out.tokens_in, out.tokens_out, out.cost_usd,
                )
                if key is not None and node.cache_ttl_s and ex.cache is not None:
                    await ex.cache.put(key, out, started, node.cache_ttl_s)
            except TimeoutError:
                rec = replace(rec, status="failed", attempt=attempt, error=f"timed out after {timeout or 0:g}s", finished_at=ex.clock())
            except StepError as e:
                rec = replace(rec, status="failed", attempt=attempt, error=str(e), output=e.output, finished_at=ex.clock())
            except Exception as e:  # an action bug: recorded, not retried, never swallowed silently
                log.exception("step %s of run %s raised", iid, self.run_id)
                rec = replace(rec, status="failed", attempt=attempt, error=f"{type(e).__name__}: {e}", finished_at=ex.clock())
        except asyncio.CancelledError:
            rec = replace(rec, status="cancelled", error="cancelled", finished_at=ex.clock())
            self.records[iid] = rec
            await asyncio.shield(self._save(rec))
            self.emit(RunEvent("step_finished", self.run_id, step=rec, at=rec.finished_at))
            self.outcome[node.id] = "cancelled"
            raise
        if node.policy.idempotent and rec.status == "succeeded":
            self._save_behind(rec)
        else:
            await self._save(rec)
        self._finish_step(node, rec)

    def _on_retry(self, iid: str, rs: RetryCallState, attempts_before: int) -> None:
        exc = rs.outcome.exception() if rs.outcome else None
        rec = replace(self.records[iid], attempt=attempts_before + rs.attempt_number, error=str(exc) or type(exc).__name__)
        self.records[iid] = rec
        self.emit(RunEvent("step_retry", self.run_id, step=rec, at=self.ex.clock()))

    def _finish_step(self, node: Node, rec: StepRecord) -> None:
        self.records[rec.node_id] = rec
        self.latest[node.id] = rec
        self.tasks.pop(node.id, None)
        self.emit(RunEvent("step_finished", self.run_id, step=rec, at=rec.finished_at))
        outcome = rec.status
        if rec.status == "failed":
            if node.policy.continue_on_error:
                outcome = "succeeded"
            elif not self.handled[node.id]:
                if self.first_error is None:
                    self.first_error = f"{rec.label}: {rec.error}"
                if self.fail_fast:
                    self._stop()
        self._terminal(node.id, outcome)
        self._drain()

    def _stop(self) -> None:
        self.stopping = True
        for t in list(self.tasks.values()):
            t.cancel()
