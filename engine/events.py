"""Records the executor produces: step records (checkpoints) and run events (live status)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

StepStatus = Literal["pending", "running", "waiting", "succeeded", "failed", "skipped", "cancelled"]
RunStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "skipped", "cancelled"})


@dataclass(frozen=True, slots=True)
class StepRecord:
    """One step's state in one run: what is checkpointed at every step boundary.

    Attributes:
        run_id, node_id: which run and which node of its graph.
        label, kind: what the step is (for status tables).
        status: see :data:`StepStatus`.
        attempt: 1-based attempt number of the last attempt.
        output: the action's output, truncated to the catalogue's limit.
        error: the failure message, when failed.
        started_at, finished_at: UTC times.
        tokens_in, tokens_out: LLM usage (0 for other steps).
        cost_usd: price of the step in USD.
        reused: copied from an earlier run by ``/rerun ... from STEP``.
        cached: the output came from the step cache (``cache: {ttl: …}``), the action did not run.

    ``node_id`` is the node's id, or ``node#N`` for iteration N ≥ 2 of a loop; a
    skipped step's ``error`` says why (the condition and its values) when known.
    """

    run_id: str
    node_id: str
    label: str
    kind: str
    status: StepStatus
    attempt: int = 0
    output: str = ""
    error: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    reused: bool = False
    cached: bool = False

    @property
    def duration_s(self) -> float | None:
        """Seconds between start and finish, when both are known."""
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None


@dataclass(frozen=True, slots=True)
class RunEvent:
    """A change a status display shows.

    ``kind`` is one of ``run_started``, ``step_started``, ``step_retry``,
    ``step_waiting`` (an approval step waits for a person), ``step_finished``,
    ``run_finished``. ``step`` is the step's record after the
    change (for step events); ``status`` the run's status (for run events).
    """

    kind: Literal["run_started", "step_started", "step_retry", "step_waiting", "step_finished", "run_finished"]
    run_id: str
    step: StepRecord | None = None
    status: RunStatus | None = None
    error: str | None = None
    at: datetime | None = None
    steps: tuple[StepRecord, ...] = field(default=())
