"""The checkpoint conformance suite: every :class:`engine.checkpoints.CheckpointStore` backend
(memory, SQLite, PostgreSQL when BATON_TEST_POSTGRES_URL is set) keeps the same rules,
including when the executor drives it through a crash and a resume."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.store import Database, RunStore, SessionStore, StoreError, ThreadKey, upgrade
from bot.store.checkpoints import PostgresCheckpointStore, SqliteCheckpointStore
from engine.actions import StepOutput
from engine.catalog import Catalog
from engine.checkpoints import CheckpointStore, MemoryCheckpointStore
from engine.events import StepRecord
from engine.graph import Node
from engine.parse import compile_text
from engine.run import Executor
from tests.conftest import PG_SKIP, PG_URL, _pg_admin

T0 = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


@dataclass
class Backend:
    name: str
    store: Any
    run_ids: list[str]
    status: Any  # async (run_id) -> runs.status, or None for memory


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "memory":
        mem = MemoryCheckpointStore()

        async def mstatus(rid: str) -> str | None:
            return "running" if rid in mem.running else None

        yield Backend("memory", mem, ["1", "2", "3"], mstatus)
        return
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'cp.db'}"
        dbname = None
    else:
        if not PG_URL:
            pytest.skip(PG_SKIP)
        import uuid

        dbname = f"baton_cp_{uuid.uuid4().hex[:12]}"
        await _pg_admin(f'CREATE DATABASE "{dbname}"')
        url = f"{PG_URL.rsplit('/', 1)[0]}/{dbname}"
    try:
        await upgrade(url)
        db = Database(url)
        runs = RunStore(db)
        tid = await SessionStore(db).thread_id(ThreadKey("test", "c", "t"))
        g = compile_text("echo a THEN echo b", Catalog())
        ids = [str(await runs.create_run(tid, g.source, g, "U1")) for _ in range(3)]
        store = runs.checkpoints
        assert isinstance(store, SqliteCheckpointStore if request.param == "sqlite" else PostgresCheckpointStore)

        async def dstatus(rid: str) -> str | None:
            got = await runs.get(int(rid))
            return got[0].status if got else None

        yield Backend(request.param, store, ids, dstatus)
        await runs.aclose()
        await db.dispose()
    finally:
        if dbname:
            await _pg_admin(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


def rec(run_id: str, node: str, status: str = "succeeded", **kw: Any) -> StepRecord:
    return StepRecord(run_id, node, f"label {node}", "builtin", status, **kw)  # type: ignore[arg-type]


async def test_is_a_checkpoint_store(backend: Backend) -> None:
    assert isinstance(backend.store, CheckpointStore)


async def test_load_of_an_unknown_or_empty_run_is_empty(backend: Backend) -> None:
    assert await backend.store.load(backend.run_ids[0]) == {}


async def test_saved_records_load_back_field_for_field(backend: Backend) -> None:
    rid = backend.run_ids[0]
    full = rec(rid, "s1", attempt=2, output="out ✓\nline", error=None, started_at=T0, finished_at=T0 + timedelta(seconds=1.5),
               tokens_in=10, tokens_out=20, cost_usd=0.0125, reused=True, cached=True)
    bare = rec(rid, "s2", "skipped")
    await backend.store.save_steps([full, bare])
    got = await backend.store.load(rid)
    assert got == {"s1": full, "s2": bare}
    assert got["s1"].started_at.tzinfo is not None  # type: ignore[union-attr]


async def test_save_upserts_by_run_and_node(backend: Backend) -> None:
    rid = backend.run_ids[0]
    await backend.store.save_steps([rec(rid, "s1", "running", attempt=1, started_at=T0)])
    done = rec(rid, "s1", "failed", attempt=2, error="boom", started_at=T0, finished_at=T0)
    await backend.store.save_steps([done])
    assert await backend.store.load(rid) == {"s1": done}


async def test_runs_are_kept_apart(backend: Backend) -> None:
    a, b = backend.run_ids[:2]
    await backend.store.save_steps([rec(a, "s1"), rec(b, "s1", "failed", error="x")])
    assert (await backend.store.load(a))["s1"].status == "succeeded"
    assert (await backend.store.load(b))["s1"].status == "failed"


async def test_concurrent_saves_all_land(backend: Backend) -> None:
    rid = backend.run_ids[1]
    await asyncio.gather(*(backend.store.save_steps([rec(rid, f"s{i}", output=str(i))]) for i in range(50)))
    got = await backend.store.load(rid)
    assert sorted(got) == sorted(f"s{i}" for i in range(50))
    assert all(got[f"s{i}"].output == str(i) for i in range(50))


async def test_mark_running(backend: Backend) -> None:
    rid = backend.run_ids[2]
    await backend.store.mark_running(rid)
    assert await backend.status(rid) == "running"


async def test_a_bad_record_fails_loudly_and_alone(backend: Backend) -> None:
    if backend.name == "memory":
        pytest.skip("the memory backend has no constraints to violate")
    rid = backend.run_ids[0]
    with pytest.raises(StoreError):
        await backend.store.save_steps([rec("999999", "s1")])  # no such run: foreign key
    await backend.store.save_steps([rec(rid, "ok")])
    assert "ok" in await backend.store.load(rid)


class _Actions:
    """Builtin echo; a step named ``crash`` raises CancelledError-like interruption via an event."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.block = asyncio.Event()

    async def __call__(self, node: Node, inputs: Mapping[str, str]) -> StepOutput:
        self.calls.append(node.label)
        if "sleep" in node.label:
            await self.block.wait()
        return StepOutput(node.label)


async def test_executor_resumes_from_the_store_without_repeating_completed_steps(backend: Backend) -> None:
    rid = backend.run_ids[0]
    graph = compile_text("echo one THEN sleep 1 THEN echo three", Catalog())
    first = _Actions()
    ex = Executor(first, backend.store)
    task = asyncio.create_task(ex.resume(rid, graph))
    async with asyncio.timeout(10):
        while "sleep 1" not in first.calls:
            await asyncio.sleep(0.01)
    task.cancel()  # the process "dies" mid-step (shutdown path: no user cancel)
    with pytest.raises(asyncio.CancelledError):
        await task
    # a crash leaves no "cancelled" write behind; model it by rewriting the step as running
    stored = await backend.store.load(rid)
    assert stored[graph.steps[0].id].status == "succeeded"
    await backend.store.save_steps([StepRecord(rid, graph.steps[1].id, "sleep 1", "builtin", "running", attempt=1, started_at=T0)])
    second = _Actions()
    second.block.set()
    result = await Executor(second, backend.store).resume(rid, graph)
    assert result.status == "succeeded"
    assert second.calls == ["sleep 1", "echo three"]  # the completed first step was not repeated
    assert await backend.status(rid) == "running"  # the caller records the final status
