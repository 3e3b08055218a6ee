"""Cross-process /approve and /reject: an ``approve`` step waiting in a ``baton worker`` process
is decided from the front process (chat command, the API's path ``decide_async``).

Real processes against the CI database (BATON_TEST_POSTGRES_URL; a fresh database per
test): ``baton db upgrade``, one worker, the test process as the front (admission and
the deciding command only: the run is not in this process).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import bindparam, select

from adapters.base import Message
from bot.app import App
from bot.store import ThreadKey
from bot.store.tables import approval_decisions
from tests.conftest import RecordingOutlet
from tests.queue.test_scale_out import Cluster

pytestmark = pytest.mark.timeout(180)

_DECISIONS = select(approval_decisions.c.node_id).where(approval_decisions.c.run_id == bindparam("rid"))


@pytest.fixture
async def front(tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[Cluster, App]]:
    c = Cluster(tmp_path, pg_url)
    monkeypatch.setenv("BATON_CONFIG_DIR", str(c.cfg))
    up = c.cli("db", "upgrade")
    assert up.returncode == 0, up.stderr
    c.start_worker("w1")
    app = await App.start(c.settings(), {})
    try:
        yield c, app
    finally:
        await app.aclose()
        c.stop()


async def _waiting(app: App, run_id: int, timeout: float = 60) -> list[tuple[int, str, str]]:
    assert app.bot.approvals is not None
    async with asyncio.timeout(timeout):
        while True:
            got = await app.bot.approvals.waiting(run_id)
            if got:
                return got
            await asyncio.sleep(0.1)


async def _ended(app: App, run_id: int, timeout: float = 60) -> str:
    async with asyncio.timeout(timeout):
        while True:
            got = await app.runs.get(run_id)
            assert got is not None
            if got[0].status in ("succeeded", "failed", "cancelled"):
                return got[0].status
            await asyncio.sleep(0.1)


async def test_chat_approve_in_the_front_resolves_the_gate_waiting_in_a_worker(front: tuple[Cluster, App]) -> None:
    _, app = front
    key = ThreadKey("test", "c", "approve")
    got = await app.admission.admit(key, app.bot.compile('approve "ship it?" THEN echo shipped'), requested_by="U1")
    rid = got.run_id
    assert rid is not None
    waiting = await _waiting(app, rid)
    assert len(waiting) == 1 and waiting[0][0] == rid and waiting[0][2] == "ship it?"
    assert app.bot.approvals.pending(rid) == []  # not waiting in this process: in the worker
    out = RecordingOutlet("test")
    await app.bot.handle(Message("test", "c", "approve", "U2", f"/approve {rid}"), out)
    assert any(t.startswith(f"Approved step {waiting[0][1]} of run #{rid}") for t in out.texts), out.texts
    assert await _ended(app, rid) == "succeeded"
    _, steps = await app.runs.get(rid)  # type: ignore[misc]
    by_id = {s.node_id: s for s in steps}
    assert by_id[waiting[0][1]].output == "approved by U2"
    assert [s.output for s in steps if s.kind != "approve"] == ["shipped"]
    # consumed: nothing left for a later wait on the same step
    assert await app.db.execute(_DECISIONS, {"rid": rid}, what="test") == []


async def test_reject_from_the_front_fails_the_run_and_a_second_decision_is_refused(front: tuple[Cluster, App]) -> None:
    _, app = front
    broker = app.bot.approvals
    assert broker is not None
    key = ThreadKey("test", "c", "reject")
    got = await app.admission.admit(key, app.bot.compile('approve "drop the table?" THEN echo dropped'), requested_by="U1")
    rid = got.run_id
    assert rid is not None
    (_, step, _), = await _waiting(app, rid)
    assert await broker.decide_async(rid, "nope", "U3", False) == f"Run #{rid} is not waiting on step 'nope' (waiting: {step})."
    first, second = await asyncio.gather(broker.decide_async(rid, None, "U3", False), broker.decide_async(rid, None, "U4", True))
    assert first == f"Rejected step {step} of run #{rid}."
    assert second in (f"Step {step} of run #{rid} was already decided.", f"Run #{rid} has no step waiting for approval.")
    assert await _ended(app, rid) == "failed"
    row, steps = await app.runs.get(rid)  # type: ignore[misc]
    assert "rejected by U3" in (row.error or "")
    assert not any(s.output == "dropped" for s in steps)
    assert await broker.waiting(rid) == []
    assert await broker.decide_async(rid, None, "U3", True) == f"Run #{rid} has no step waiting for approval."
