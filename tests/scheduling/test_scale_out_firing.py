"""Schedule firings in scale-out mode: admitted by the front, executed by a real ``baton worker``.

PostgreSQL (BATON_TEST_POSTGRES_URL) with procrastinate; the front's scheduler runs on a
:class:`ControlledClock`. The overlap policy still sees the previous firing's run while a
worker executes it (the front watches the runs table for its end).
"""

from __future__ import annotations

import asyncio
from datetime import datetime

import pytest

from bot.app import App
from bot.scheduling import parse_schedule
from bot.scheduling.testing import ControlledClock
from tests.conftest import RecordingOutlet
from tests.queue.test_scale_out import Cluster, _wait_status, cluster  # noqa: F401  (the fixture)
from tests.scheduling.test_jobs import KEY, NY

pytestmark = pytest.mark.timeout(150)


async def test_overlap_skip_sees_a_run_a_worker_is_executing(cluster: Cluster) -> None:  # noqa: F811
    cluster.start_worker("w1")
    outlet = RecordingOutlet()
    clock = ControlledClock(datetime(2026, 3, 6, 15, 0, 30, tzinfo=NY))
    app = await App.start(cluster.settings(), {"test": outlet}, scheduler_clock=clock, scheduler_options={"default_tz": "America/New_York"})
    try:
        svc = app.scheduler
        assert svc is not None
        await svc.add(KEY, "alice", parse_schedule("every minute run sleep 3 THEN echo done", now=clock.now(), default_tz="America/New_York"))
        await clock.advance_to(datetime(2026, 3, 6, 15, 1, tzinfo=NY))  # run #1 is queued for the workers
        (first,) = await app.runs.list()
        assert first.requested_by == "schedule #1" and await app.runs.fired_by(first.id) is not None
        await clock.advance_to(datetime(2026, 3, 6, 15, 2, tzinfo=NY))  # run #1 is queued or running on w1
        assert len(await app.runs.list()) == 1
        assert any("skipped its Fri 6 Mar 2026 15:02 EST firing: run #1" in t for t in outlet.texts), outlet.texts
        await _wait_status(app, [first.id], {"succeeded"})
        async with asyncio.timeout(10):
            await svc._runs[1].task  # the front saw it end
        await clock.advance_to(datetime(2026, 3, 6, 15, 3, tzinfo=NY))  # fires again
        assert [r.id for r in await app.runs.list()] == [2, 1]
        await _wait_status(app, [2], {"succeeded"})
    finally:
        await app.aclose()
