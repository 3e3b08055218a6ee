"""Scale-out on PostgreSQL: `baton worker` processes execute admitted runs as procrastinate jobs.

Real processes against the CI database (BATON_TEST_POSTGRES_URL; a fresh database per
test): ``baton db upgrade`` (Alembic + procrastinate's schema), two workers, the test
process as the front (admission only). Covers thread order, a SIGKILLed worker's run
resuming elsewhere without repeating a completed step, cancel from another process and
a poison run failed after ``[queue] max_attempts``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.app import App
from bot.settings import Settings
from bot.store import ThreadKey
from tests.conftest import REPO
from tests.console_process import shell_config


def _config(tmp: Path) -> Path:
    marks = tmp / "marks.txt"
    return shell_config(tmp, {"mark-a": f"echo A >> {marks}", "mark-b": f"echo B >> {marks}"})


class Cluster:
    def __init__(self, tmp: Path, url: str, **env: str) -> None:
        self.tmp, self.url = tmp, url
        self.cfg = _config(tmp)
        self.env = {
            **os.environ, "PYTHONPATH": str(REPO), "BATON_CONFIG_DIR": str(self.cfg), "BATON_DATA_DIR": str(tmp / "data"),
            "BATON_DATABASE_URL": url, "BATON_QUEUE__MODE": "workers", "BATON_QUEUE__STALLED_AFTER": "2", **env,
        }
        self.workers: dict[str, subprocess.Popen[bytes]] = {}

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "bot.cli", *args], env=self.env, cwd=self.tmp, capture_output=True, text=True, timeout=120)

    def start_worker(self, name: str) -> None:
        log = open(self.tmp / f"{name}.log", "wb")
        self.workers[name] = subprocess.Popen(
            [sys.executable, "-m", "bot.cli", "worker", "--name", name, "--concurrency", "10"], env=self.env, cwd=self.tmp, stdout=log, stderr=log
        )

    def kill(self, name: str) -> None:
        p = self.workers.pop(name)
        p.send_signal(signal.SIGKILL)
        p.wait()

    def stop(self) -> None:
        for p in self.workers.values():
            p.send_signal(signal.SIGTERM)
        for p in self.workers.values():
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.workers.clear()

    def settings(self) -> Settings:
        return Settings(config_dir=self.cfg, database_url=self.url, queue={"mode": "workers"})


@pytest.fixture
async def cluster(tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Cluster]:
    c = Cluster(tmp_path, pg_url)
    monkeypatch.setenv("BATON_CONFIG_DIR", str(c.cfg))  # the front's [actions] (read from the config dir's baton.toml)
    up = c.cli("db", "upgrade")
    assert up.returncode == 0, up.stderr
    assert "procrastinate schema applied" in up.stdout
    assert "procrastinate schema already present" in c.cli("db", "upgrade").stdout
    try:
        yield c
    finally:
        c.stop()


async def _wait_status(app: App, run_ids: list[int], statuses: set[str], timeout: float = 60) -> dict[int, str]:
    async with asyncio.timeout(timeout):
        while True:
            got = {r.id: r.status for r in await app.runs.list(limit=10_000) if r.id in run_ids}
            if len(got) == len(run_ids) and all(s in statuses for s in got.values()):
                return got
            await asyncio.sleep(0.1)


async def test_workers_run_admitted_runs_in_thread_order(cluster: Cluster) -> None:
    cluster.start_worker("w1")
    cluster.start_worker("w2")
    app = await App.start(cluster.settings(), {})
    try:
        ids: dict[ThreadKey, list[int]] = {}
        for i in range(30):
            key = ThreadKey("test", "c", f"t{i % 5}")
            got = await app.admission.admit(key, app.bot.compile(f"echo {i} THEN sleep 0.05"), requested_by="U1")
            assert got.run_id is not None
            ids.setdefault(key, []).append(got.run_id)
        every = [r for rs in ids.values() for r in rs]
        assert set((await _wait_status(app, every, {"succeeded", "failed", "cancelled"})).values()) == {"succeeded"}
        rows = {r.id: r for r in await app.runs.list(limit=1000)}
        for rs in ids.values():  # FIFO per thread: each run starts after the one before it finished
            for a, b in zip(rs, rs[1:]):
                assert rows[b].started_at >= rows[a].finished_at  # type: ignore[operator]
    finally:
        await app.aclose()


async def test_a_killed_workers_run_resumes_on_another_without_repeating_steps(cluster: Cluster) -> None:
    cluster.start_worker("w1")
    app = await App.start(cluster.settings(), {})
    try:
        key = ThreadKey("test", "c", "kill")
        got = await app.admission.admit(key, app.bot.compile("mark-a THEN sleep 3 THEN mark-b"), requested_by="U1")
        rid = got.run_id
        assert rid is not None
        marks = cluster.tmp / "marks.txt"
        async with asyncio.timeout(60):
            while not (marks.exists() and marks.read_text() == "A\n"):
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # mark-a's checkpoint is written before the sleep starts
        cluster.kill("w1")
        killed = time.monotonic()
        cluster.start_worker("w2")
        await _wait_status(app, [rid], {"succeeded"}, timeout=60)
        assert time.monotonic() - killed < 30
        assert marks.read_text() == "A\nB\n"  # mark-a not repeated, mark-b once
        row, steps = await app.runs.get(rid)  # type: ignore[misc]
        assert {s.node_id: s.attempt for s in steps}["s1"] == 1
    finally:
        await app.aclose()


async def test_cancel_from_another_process_reaches_the_worker(cluster: Cluster) -> None:
    cluster.start_worker("w1")
    app = await App.start(cluster.settings(), {})
    try:
        from tests.conftest import RecordingOutlet
        from adapters.base import Message

        key = ThreadKey("test", "c", "cancel")
        got = await app.admission.admit(key, app.bot.compile("sleep 20 THEN mark-b"), requested_by="U1")
        rid = got.run_id
        assert rid is not None
        await _wait_status(app, [rid], {"running"})
        out = RecordingOutlet("test")
        await app.bot.handle(Message("test", "c", "cancel", "U1", f"/cancel {rid}"), out)
        assert any("its worker stops it" in t for t in out.texts), out.texts
        assert (await _wait_status(app, [rid], {"cancelled"}, timeout=20))[rid] == "cancelled"
        assert not (cluster.tmp / "marks.txt").exists()
    finally:
        await app.aclose()


async def test_a_poison_run_is_failed_after_max_attempts(tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    c = Cluster(tmp_path, pg_url, BATON_QUEUE__MAX_ATTEMPTS="1")
    monkeypatch.setenv("BATON_CONFIG_DIR", str(c.cfg))
    assert c.cli("db", "upgrade").returncode == 0
    try:
        c.start_worker("w1")
        app = await App.start(c.settings(), {})
        try:
            got = await app.admission.admit(ThreadKey("test", "c", "poison"), app.bot.compile("sleep 20"), requested_by="U1")
            rid = got.run_id
            assert rid is not None
            await _wait_status(app, [rid], {"running"})
            c.kill("w1")  # the run "crashes its worker"
            c.start_worker("w2")
            await _wait_status(app, [rid], {"failed"}, timeout=60)
            row, _ = await app.runs.get(rid)  # type: ignore[misc]
            assert "gave up after 1 attempts" in (row.error or "")
        finally:
            await app.aclose()
    finally:
        c.stop()


async def test_admission_in_one_transaction_and_deferrals_batched(cluster: Cluster) -> None:
    """PostgreSQL admission: the thread is created in the admit transaction, ``ahead`` lists the
    thread's active runs (not the new one), ``reject`` refuses, and concurrent admissions'
    jobs (deferred together) each exist once, with the thread's lock, in admission order."""
    from sqlalchemy import text

    app = await App.start(cluster.settings(), {})
    try:
        async with asyncio.timeout(60):
            key = ThreadKey("test", "c", "fresh")
            graph = app.bot.compile("echo a")
            first = await app.admission.admit(key, graph, requested_by="U1")
            second = await app.admission.admit(key, graph, requested_by="U1")
            assert first.run_id is not None and second.run_id is not None
            assert (first.ahead, second.ahead) == ((), (first.run_id,))
            refused = await app.admission.admit(key, graph, requested_by="U1", busy_policy="reject")
            assert refused.run_id is None and refused.ahead == (first.run_id, second.run_id) and refused.refusal

            keys = [ThreadKey("test", "c", f"b{i % 7}") for i in range(40)]
            got = await asyncio.gather(*(app.admission.admit(k, graph, requested_by="U1") for k in keys))
            ids = [g.run_id for g in got]
            assert None not in ids and len(set(ids)) == 40
            rows = await app.runs.db.execute(
                text("select queueing_lock, lock, id from procrastinate_jobs where queueing_lock like 'baton:run:%' order by id"),
                None, what="reading jobs",
            )
            by_run = {int(q.rsplit(":", 1)[1]): (lock, jid) for q, lock, jid in rows}
            assert set(by_run) == {first.run_id, second.run_id, *ids} and len(rows) == len(by_run)
            for k, rid in zip(keys, ids):
                assert by_run[rid][0] == f"baton:test:c:{k.thread}"
            for t in {k.thread for k in keys}:  # a thread's jobs are in the order of its runs
                mine = sorted(rid for k, rid in zip(keys, ids) if k.thread == t)
                assert [by_run[r][1] for r in mine] == sorted(by_run[r][1] for r in mine)
    finally:
        await app.aclose()


async def test_a_worker_survives_its_database_connections_being_killed(cluster: Cluster) -> None:
    """Every PostgreSQL connection of the worker terminated (a failover, an admin's
    pg_terminate_backend): its pools replace the dead connections (procrastinate's pool
    notices an idle one closed without a round trip: bot.queue.scale._idle_check), the
    worker keeps running and executes the next run."""
    import asyncpg

    cluster.start_worker("w1")
    first = await App.start(cluster.settings(), {})
    try:
        got = await first.admission.admit(ThreadKey("test", "c", "kill-conns"), first.bot.compile("echo one"), requested_by="U1")
        assert got.run_id is not None
        await _wait_status(first, [got.run_id], {"succeeded"})
    finally:
        await first.aclose()
    conn = await asyncpg.connect(cluster.url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        killed = [r[0] for r in await conn.fetch(
            "select pid from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid() and backend_type = 'client backend'")]
        assert killed
        await conn.execute("select pg_terminate_backend(pid) from unnest($1::int[]) pid", killed)
        async with asyncio.timeout(30):  # the backends are gone (not merely signalled)
            while await conn.fetchval("select count(*) from pg_stat_activity where pid = any($1::int[])", killed):
                await asyncio.sleep(0.05)
    finally:
        await conn.close()
    app = await App.start(cluster.settings(), {})
    try:
        got = await app.admission.admit(ThreadKey("test", "c", "kill-conns"), app.bot.compile("echo two"), requested_by="U1")
        assert got.run_id is not None
        assert (await _wait_status(app, [got.run_id], {"succeeded", "failed"}, timeout=60))[got.run_id] == "succeeded"
        assert cluster.workers["w1"].poll() is None, (cluster.tmp / "w1.log").read_text()
    finally:
        await app.aclose()
