"""Admission before execution: the in-process worker's run starts yield to requests being admitted.

:class:`bot.queue.admission.Priority` on its own (turns wait while requests arrive, are given
in FIFO order once it is quiet, and at a bounded rate while it never is), then with a real App
on SQLite: a run admitted while a request is under way stays ``queued`` until it is quiet, a
thread's runs still execute in admission order, and a sustained stream of requests does not
starve the runs.
"""

from __future__ import annotations

import asyncio

import pytest

from bot.app import App
from bot.queue.admission import Priority
from bot.settings import Settings
from bot.store import ThreadKey
from tests.conftest import REPO

pytestmark = pytest.mark.timeout(60)


async def test_turns_wait_while_requests_arrive_then_go_in_order() -> None:
    p = Priority(interval=3600, quiet=0, max_wait=3600)  # no forced turns within the test: only quiet releases
    order: list[int] = []

    async def start(i: int) -> None:
        await p.turn()
        order.append(i)

    with p.arriving():
        tasks = [asyncio.create_task(start(i)) for i in range(3)]
        for _ in range(5):
            await asyncio.sleep(0)  # let them reach turn() and the loop spin
        assert order == [] and p.waiting == 3
    async with asyncio.timeout(5):
        await asyncio.gather(*tasks)
    assert order == [0, 1, 2]
    assert p.waiting == 0


async def test_a_turn_comes_at_once_when_nothing_arrives() -> None:
    p = Priority(interval=3600, quiet=0, max_wait=3600)
    async with asyncio.timeout(1):
        await p.turn()


async def test_runs_are_not_starved_by_a_request_that_never_ends() -> None:
    p = Priority(interval=0.02, quiet=0, max_wait=0.05)
    done: list[int] = []

    async def start(i: int) -> None:
        await p.turn()
        done.append(i)

    with p.arriving():  # never quiet while the turns are taken
        async with asyncio.timeout(10):
            await asyncio.gather(*(start(i) for i in range(5)))
    assert done == [0, 1, 2, 3, 4]


async def test_a_turn_given_to_a_waiter_cancelled_before_it_resumed_passes_on() -> None:
    """A fail-fast stop cancels sibling steps waiting in ``turn`` (Executor.before_step): one
    cancelled after its turn was given, before it resumed, passes the turn on at once (not at
    the ``max_wait`` tick, an hour here)."""
    p = Priority(interval=3600, quiet=0, max_wait=3600)
    got: list[str] = []

    async def start(name: str) -> None:
        await p.turn()
        got.append(name)

    with p.arriving():
        a = asyncio.create_task(start("a"))
        b = asyncio.create_task(start("b"))
        for _ in range(3):
            await asyncio.sleep(0)
        assert p.waiting == 2
    while p.waiting == 2:  # quiet now: the turn is given to a, whose wake-up is scheduled after this task's
        await asyncio.sleep(0)
    assert not a.done()  # given, not resumed yet
    a.cancel()
    with pytest.raises(asyncio.CancelledError):
        await a
    async with asyncio.timeout(5):
        await b
    assert got == ["b"]


async def test_a_cancelled_waiter_does_not_take_a_turn() -> None:
    p = Priority(interval=3600, quiet=0, max_wait=3600)
    order: list[str] = []

    async def start(name: str) -> None:
        await p.turn()
        order.append(name)

    with p.arriving():
        a = asyncio.create_task(start("a"))
        b = asyncio.create_task(start("b"))
        for _ in range(3):
            await asyncio.sleep(0)
        a.cancel()
        with pytest.raises(asyncio.CancelledError):
            await a
    async with asyncio.timeout(5):
        await b
    assert order == ["b"] and p.waiting == 0


async def _app(tmp_path) -> App:  # type: ignore[no-untyped-def]
    settings = Settings(config_dir=REPO / "config", data_dir=tmp_path / ".baton", database_url=f"sqlite+aiosqlite:///{tmp_path / 'q.db'}")
    return await App.start(settings, {}, migrate=True)


async def test_a_run_admitted_during_a_burst_waits_then_runs_in_thread_order(tmp_path) -> None:  # type: ignore[no-untyped-def]
    app = await _app(tmp_path)
    try:
        assert app.admission is not None and app.bot.queue is not None
        prio = app.admission.priority
        assert app.bot.queue.priority is prio  # the App wires admission's priority into its worker
        prio.max_wait = 3600  # no forced turns within the test
        key = ThreadKey("test", "C1", "T1")
        graph = app.bot.compile("echo one")
        with prio.arriving():  # a request is being admitted: nothing may start
            first = await app.admission.admit(key, graph, requested_by="U1")
            second = await app.admission.admit(key, app.bot.compile("echo two"), requested_by="U1")
            assert first.run_id is not None and second.run_id is not None and second.ahead == (first.run_id,)
            done = [app.bot.queue.submit(a.run_id, key) for a in (first, second)]  # type: ignore[arg-type]
            for _ in range(20):
                await asyncio.sleep(0)
            assert not app.manager.active and app.bot.queue.queued == 2
            rows = {r.id: r.status for r in await app.runs.list(limit=10)}
            assert rows == {first.run_id: "queued", second.run_id: "queued"}
        async with asyncio.timeout(20):
            await asyncio.gather(*done)
        got = {r.id: r for r in await app.runs.list(limit=10)}
        a, b = got[first.run_id], got[second.run_id]
        assert a.status == b.status == "succeeded"
        assert a.finished_at is not None and b.started_at is not None and a.finished_at <= b.started_at  # FIFO in the thread
    finally:
        await app.aclose()


async def test_runs_finish_under_a_sustained_stream_of_admissions(tmp_path) -> None:  # type: ignore[no-untyped-def]
    app = await _app(tmp_path)
    try:
        assert app.admission is not None and app.bot.queue is not None
        app.admission.priority.interval, app.admission.priority.max_wait = 0.02, 0.05
        graph = app.bot.compile("echo hi")
        ids, futures = [], []
        with app.admission.priority.arriving():  # admissions never pause while the runs are waited for
            for i in range(5):
                key = ThreadKey("test", "C1", f"T{i}")
                got = await app.admission.admit(key, graph, requested_by="U1")
                assert got.run_id is not None
                ids.append(got.run_id)
                futures.append(app.bot.queue.submit(got.run_id, key, graph=graph))
            async with asyncio.timeout(20):
                await asyncio.gather(*futures)
        assert {r.id: r.status for r in await app.runs.list(limit=10)} == {i: "succeeded" for i in ids}
    finally:
        await app.aclose()
