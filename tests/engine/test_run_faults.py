"""Issue 14, faults 2 and 3 at the executor: resuming a crashed fan-out, and failed checkpoint writes."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from bot.texts import step_error
from engine.catalog import Catalog
from engine.errors import INTERRUPTED
from engine.events import StepRecord
from engine.parse import compile_text
from engine.run import Executor
from tests.engine.test_run import Counting, MemoryCheckpoints


def _running(node: str, label: str, kind: str = "llm") -> StepRecord:
    from datetime import UTC, datetime

    return StepRecord("1", node, label, kind, "running", attempt=1, started_at=datetime(2026, 1, 1, tzinfo=UTC))


async def test_a_running_parallel_sibling_is_interrupted_never_skipped() -> None:
    """Fault 2: both members of ``a3 AND a4`` were running at the crash. Before the fix the
    first one's interrupted failure set fail-fast, and the second was recorded ``skipped``
    with attempt 0 and no start time, hiding that its effect may have happened."""
    g = compile_text("echo a THEN (deploy alpha AND deploy beta) THEN echo c", Catalog())
    act, cp = Counting(), MemoryCheckpoints()
    prior = {
        "s1": StepRecord("1", "s1", "echo a", "builtin", "succeeded", attempt=1),
        "s2": _running("s2", "deploy alpha"),
        "s3": _running("s3", "deploy beta"),
    }
    r = await Executor(act, cp).execute("1", g, prior=prior)
    steps = {s.node_id: s for s in r.steps}
    assert act.calls == {}, "nothing interrupted is repeated and nothing after it runs"
    for nid in ("s2", "s3"):
        assert steps[nid].status == "failed" and (steps[nid].error or "").startswith(INTERRUPTED)
        assert f"/rerun 1 from {nid}" in (step_error(steps[nid]) or "")  # the bot words the hint
        assert steps[nid].attempt == 1 and steps[nid].started_at is not None
    assert [s.status for s in r.steps if s.label == "echo c"] == ["skipped"]
    saved = {rec.node_id: rec.status for rec in cp.saved}
    assert saved["s2"] == saved["s3"] == "failed"
    assert r.status == "failed"


async def test_finishing_never_overwrites_a_stored_running_marker() -> None:
    """Fault 2: the end-of-run "skipped" sweep must leave a step's stored ``running`` record
    alone (here the resumed run is cancelled before it reached that step)."""
    g = compile_text("sleep 5 THEN deploy it", Catalog())
    act, cp = Counting(), MemoryCheckpoints()
    prior = {"s2": _running("s2", "deploy it")}
    task = asyncio.create_task(Executor(act, cp).execute("1", g, prior=prior))
    while "sleep 5" not in act.calls:
        await asyncio.sleep(0.005)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    assert all(rec.node_id != "s2" for rec in cp.saved), cp.saved


class FailingCheckpoints(MemoryCheckpoints):
    """Checkpoints that fail (like a read-only database) once ``broken`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.broken = False

    async def save_steps(self, records: Sequence[StepRecord]) -> None:
        if self.broken:
            from bot.store import StoreError

            raise StoreError("database error while checkpointing steps: attempt to write a readonly database")
        await super().save_steps(records)
