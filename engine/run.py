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
(the thread decides, e.g. ``/rerun ID from STEP``). Pattern after LangGraph's
per-step checkpoints and Temporal's activity semantics.

Retries: tenacity, exponential backoff with jitter, only for retryable errors
(:class:`StepError` with ``retryable=True`` and timeouts).

Failing fast: a failure that nothing in the graph handles (no ``failure``/``always``
edge reachable from it) cancels the steps still running and skips the rest, unless
``fail_fast=False`` (then independent branches go on).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Protocol

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from engine.actions import StepOutput
from engine.context import current_run_id
from engine.errors import StepError
from engine.events import RunEvent, RunStatus, StepRecord
from engine.graph import Graph, Node

log = logging.getLogger("baton.engine")

INTERRUPTED_MESSAGE = (
    "interrupted by a restart while running; not re-run because it is not marked idempotent "
    "(use /rerun {run_id} from {node_id} to run it again)"
)


# Stored statuses of a step that started and did not finish (in an earlier process).
_STARTED = ("running", "cancelled")


class CheckpointStore(Protocol):
    """Where step records go. ``save_steps`` returns only once the records are durable."""

    async def save_steps(self, records: Sequence[StepRecord]) -> None: ...


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
    ) -> None:
        self.action = action
        self.checkpoints = checkpoints
        self.fail_fast = fail_fast
        self.default_timeout_s = default_timeout_s
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.clock = clock

    async def execute(
        self,
        run_id: str,
        graph: Graph,
        *,
        prior: Mapping[str, StepRecord] | None = None,
        on_event: Callable[[RunEvent], None] | None = None,
    ) -> RunResult:
        """Run ``graph`` as run ``run_id``.

        Args:
            prior: records of an earlier attempt at this run (resume) or reused from
                another run (``/rerun … from``); terminal ones are not executed again. A
                ``running``/``cancelled`` record of a non-idempotent step is failed as
                interrupted (before any fail-fast skip); a ``running`` record's ``error``
                may carry what the restart found out (e.g. a terminated child), which is
                added to the step's message.
            on_event: called synchronously for every :class:`RunEvent`; keep it cheap.

        Returns:
            The :class:`RunResult`. Raises ``CancelledError`` when cancelled, after the
            running steps were recorded as cancelled.
        """
        return await _Run(self, run_id, graph, dict(prior or {}), on_event or (lambda e: None)).go()


class _Run:
    def __init__(
        self,
        ex: Executor,
        run_id: str,
        graph: Graph,
        prior: dict[str, StepRecord],
        emit: Callable[[RunEvent], None],
    ) -> None:
        self.ex = ex
        self.run_id = run_id
        self.graph = graph
        self.prior = prior
        self.emit = emit
        self.nodes = {n.id: n for n in graph.nodes}
        self.dependents: dict[str, list[str]] = {n.id: [] for n in graph.nodes}
        self.remaining: dict[str, int] = {}
        for n in graph.nodes:
            self.remaining[n.id] = len(n.edges)
            for e in n.edges:
                self.dependents[e.source].append(n.id)
        self.outcome: dict[str, str] = {}  # node -> succeeded/failed/skipped/cancelled (effective)
        self.records: dict[str, StepRecord] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.ready: deque[str] = deque()
        self.stopping = False
        self.first_error: str | None = None
        self.handled = self._handled_map()
        self.tg: asyncio.TaskGroup | None = None

    def _handled_map(self) -> dict[str, bool]:
        """Whether a failure of each node can reach a failure/always consumer."""
        memo: dict[str, bool] = {}
        for n in reversed(self.graph.nodes):  # dependents come later in topo order
            h = n.policy.continue_on_error
            for d in self.dependents[n.id]:
                dn = self.nodes[d]
                conds = {e.condition for e in dn.edges if e.source == n.id}
                if dn.is_gate:
                    h = h or memo.get(d, False)
                elif conds & {"failure", "always"}:
                    h = True
            memo[n.id] = h
        return memo

    # -- driving -----------------------------------------------------------

    async def go(self) -> RunResult:
        current_run_id.set(self.run_id)  # step tasks copy this context
        self.emit(RunEvent("run_started", self.run_id, status="running", at=self.ex.clock()))
        for n in self.graph.nodes:
            if not n.edges:
                self.ready.append(n.id)
        try:
            async with asyncio.TaskGroup() as tg:
                self.tg = tg
                self._drain()
        except asyncio.CancelledError:
            await asyncio.shield(self._finish_skipped())
            self.emit(RunEvent("run_finished", self.run_id, status="cancelled", at=self.ex.clock(), steps=self._steps()))
            raise
        await self._finish_skipped()
        status = self._status()
        result = RunResult(self.run_id, status, self._steps(), self.first_error if status == "failed" else None)
        self.emit(RunEvent("run_finished", self.run_id, status=status, error=result.error, at=self.ex.clock(), steps=result.steps))
        return result

    def _steps(self) -> tuple[StepRecord, ...]:
        return tuple(self.records[n.id] for n in self.graph.nodes if not n.is_gate and n.id in self.records)

    def _status(self) -> RunStatus:
        exit_outcome = self.outcome.get(self.graph.exit, "skipped")
        if exit_outcome == "succeeded" and not self._unhandled_failure():
            return "succeeded"
        if exit_outcome == "skipped" and not self._unhandled_failure():
            return "succeeded"
        if self.first_error is None:
            self.first_error = self._describe_failure()
        return "failed"

    def _unhandled_failure(self) -> bool:
        return any(
            r.status == "failed" and not self.handled.get(r.node_id, False) for r in self.records.values()
        )

    def _describe_failure(self) -> str | None:
        for n in self.graph.nodes:
            r = self.records.get(n.id)
            if r and r.status == "failed":
                return f"{r.label}: {r.error}"
        return None

    async def _finish_skipped(self) -> None:
        """Record every undecided step as skipped, in one checkpoint write."""
        now = self.ex.clock()
        pending = []
        for n in self.graph.nodes:
            if n.is_gate or n.id in self.records:
                continue
            prior = self.prior.get(n.id)
            if prior is not None and prior.status in _STARTED:
                # A stored start marker is the only trace of a possible side effect: keep it
                # (the next resume reports the step as interrupted), never overwrite it.
                self.records[n.id] = prior
                continue
            rec = StepRecord(self.run_id, n.id, n.label, n.kind, "skipped", finished_at=now)
            self.records[n.id] = rec
            pending.append(rec)
        if pending and self.ex.checkpoints is not None:
            await self.ex.checkpoints.save_steps(pending)

    def _drain(self) -> None:
        while self.ready:
            self._decide(self.ready.popleft())

    def _terminal(self, nid: str, outcome: str) -> None:
        self.outcome[nid] = outcome
        for d in self.dependents[nid]:
            self.remaining[d] -= 1
            if self.remaining[d] == 0:
                self.ready.append(d)

    def _decide(self, nid: str) -> None:
        node = self.nodes[nid]
        prior = self.prior.get(nid)
        if prior is not None and prior.status in ("succeeded", "failed") and not node.is_gate:
            self.records[nid] = prior
            eff = "succeeded" if prior.status == "failed" and node.policy.continue_on_error else prior.status
            if prior.status == "failed" and not self.handled[nid] and self.first_error is None:
                self.first_error = f"{prior.label}: {prior.error}"
            self._terminal(nid, eff)
            return
        if prior is not None and prior.status in _STARTED and not node.is_gate and not node.policy.idempotent:
            # Checked before fail-fast: a step that was running when the process died may have
            # had its effect, whatever its siblings did since; it is never "skipped" (fault 14.2).
            # Its dependencies were met when it started (they are terminal in ``prior``).
            msg = INTERRUPTED_MESSAGE.format(run_id=self.run_id, node_id=nid)
            if prior.status == "running" and prior.error:  # what the restart found out (e.g. a reaped child)
                msg = f"{msg}; {prior.error}"
            rec = replace(prior, status="failed", error=msg, finished_at=self.ex.clock())
            self._spawn(nid, self._record_only(node, rec), stoppable=False)
            return
        if self.stopping:
            self._terminal(nid, "skipped")
            return
        live = [e for e in node.edges if self.outcome[e.source] != "skipped"]
        if node.edges and not live:
            self._terminal(nid, "skipped")
            return
        if node.is_gate:
            self._terminal(nid, self._gate_outcome(node, live))
            return
        if not all(self._satisfied(e.condition, self.outcome[e.source]) for e in live):
            self._terminal(nid, "skipped")
            return
        self._spawn(nid, self._step(node, prior.attempt if prior else 0))

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
        """Outputs of the nearest steps before ``node`` (looking through gates), by label."""
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
            elif sid in self.records and self.records[sid].status in ("succeeded", "failed"):
                found[self.records[sid].label] = self.records[sid].output
        return found

    # -- one step ----------------------------------------------------------

    async def _save(self, rec: StepRecord) -> None:
        if self.ex.checkpoints is not None:
            await self.ex.checkpoints.save_steps((rec,))

    async def _record_only(self, node: Node, rec: StepRecord) -> None:
        await self._save(rec)
        self._finish_step(node, rec)

    async def _step(self, node: Node, attempts_before: int) -> None:
        ex = self.ex
        started = ex.clock()
        rec = StepRecord(self.run_id, node.id, node.label, node.kind, "running", attempt=attempts_before + 1, started_at=started)
        self.records[node.id] = rec
        if not node.policy.idempotent:
            await self._save(rec)
        self.emit(RunEvent("step_started", self.run_id, step=rec, at=started))
        inputs = self._inputs(node)
        timeout: float | None = node.policy.timeout_s or ex.default_timeout_s
        if node.kind == "approve":  # people take their time; bounded only by an explicit (timeout …)
            timeout = node.policy.timeout_s
            rec = replace(rec, status="waiting")
            self.records[node.id] = rec
            await self._save(rec)
            self.emit(RunEvent("step_waiting", self.run_id, step=rec, at=ex.clock()))
        attempt = attempts_before + 1
        try:
            try:
                if node.policy.retries == 0:
                    async with asyncio.timeout(timeout):
                        out = await ex.action(node, inputs)
                else:
                    out = None
                    retrying = AsyncRetrying(
                        stop=stop_after_attempt(node.policy.retries + 1),
                        wait=wait_exponential_jitter(multiplier=ex.retry_initial_s, max=ex.retry_max_s, jitter=ex.retry_initial_s),
                        retry=retry_if_exception(_retryable),
                        reraise=True,
                        before_sleep=lambda rs: self._on_retry(node, rs, attempts_before),
                    )
                    async for att in retrying:
                        with att:
                            attempt = attempts_before + att.retry_state.attempt_number
                            async with asyncio.timeout(timeout):
                                out = await ex.action(node, inputs)
                assert out is not None
                rec = replace(
                    rec,
                    status="succeeded",
                    attempt=attempt,
                    output=out.text,
                    finished_at=ex.clock(),
                    tokens_in=out.tokens_in,
                    tokens_out=out.tokens_out,
                    cost_usd=out.cost_usd,
                )
            except TimeoutError:
                rec = replace(rec, status="failed", attempt=attempt, error=f"timed out after {timeout or 0:g}s", finished_at=ex.clock())
            except StepError as e:
                rec = replace(rec, status="failed", attempt=attempt, error=str(e), output=e.output, finished_at=ex.clock())
            except Exception as e:  # an action bug: recorded, not retried, never swallowed silently
                log.exception("step %s of run %s raised", node.id, self.run_id)
                rec = replace(rec, status="failed", attempt=attempt, error=f"{type(e).__name__}: {e}", finished_at=ex.clock())
        except asyncio.CancelledError:
            rec = replace(rec, status="cancelled", error="cancelled", finished_at=ex.clock())
            self.records[node.id] = rec
            await asyncio.shield(self._save(rec))
            self.emit(RunEvent("step_finished", self.run_id, step=rec, at=rec.finished_at))
            self.outcome[node.id] = "cancelled"
            raise
        await self._save(rec)
        self._finish_step(node, rec)

    def _on_retry(self, node: Node, rs: RetryCallState, attempts_before: int) -> None:
        exc = rs.outcome.exception() if rs.outcome else None
        rec = replace(self.records[node.id], attempt=attempts_before + rs.attempt_number, error=str(exc) or type(exc).__name__)
        self.records[node.id] = rec
        self.emit(RunEvent("step_retry", self.run_id, step=rec, at=self.ex.clock()))

    def _finish_step(self, node: Node, rec: StepRecord) -> None:
        self.records[node.id] = rec
        self.tasks.pop(node.id, None)
        self.emit(RunEvent("step_finished", self.run_id, step=rec, at=rec.finished_at))
        outcome = rec.status
        if rec.status == "failed":
            if node.policy.continue_on_error:
                outcome = "succeeded"
            elif not self.handled[node.id]:
                if self.first_error is None:
                    self.first_error = f"{rec.label}: {rec.error}"
                if self.ex.fail_fast:
                    self._stop()
        self._terminal(node.id, outcome)
        self._drain()

    def _stop(self) -> None:
        self.stopping = True
        for t in list(self.tasks.values()):
            t.cancel()
