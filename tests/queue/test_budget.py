"""``max_cost_per_workflow`` against the run's spend in the database (issue 15).

Reserve-then-settle on ``runs.spent_usd`` (bot/store/budget.py): parallel LLM steps
cannot both pass the check, and a run resumed by another process keeps what it spent.
On SQLite and PostgreSQL (``db_url``); the real anthropic SDK talks to the fake LLM
server on 127.0.0.1 (tests/fakes/llm_server.py).
"""

from __future__ import annotations

import asyncio
import shutil
from datetime import UTC, datetime

from pathlib import Path

import pytest

from adapters.base import Message
from bot.app import App
from bot.providers import PriceTable
from bot.providers.types import Usage
from bot.settings import Settings
from bot.store import Database, upgrade
from bot.store.budget import RunBudget
from bot.store.tables import runs, threads
from tests.conftest import REPO, RecordingOutlet
from tests.fakes.llm_server import FakeLLMServer, RecordedRequest

pytestmark = pytest.mark.timeout(150)

PRICES = PriceTable.load()
WORST = PRICES.cost_usd("claude-haiku-4-5", Usage(60, 1024))  # a short prompt plus max_tokens of output
ACTUAL = PRICES.cost_usd("claude-haiku-4-5", Usage(1000, 500))  # what the fake reports per call
LIMIT = round(WORST * 1.2, 6)  # one step's worst case fits; a second never does, reserved or spent


@pytest.fixture(autouse=True)
def anthropic_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")


def settings(url: str, server: FakeLLMServer, limit: float = LIMIT, **workflow: object) -> Settings:
    return Settings(
        config_dir=REPO / "config",
        database_url=url,
        providers={"primary": {"kind": "anthropic", "model": "claude-haiku-4-5", "base_url": server.anthropic_base_url, "default": True}},
        workflow={"cost_control": {"max_cost_per_workflow": limit, "budget_alert_threshold": 0.99}, **workflow},
    )


def test_the_numbers_make_the_point() -> None:
    assert WORST <= LIMIT < 2 * WORST and ACTUAL + WORST > LIMIT and ACTUAL < LIMIT
    assert CHEAP + WORST <= RESUME_LIMIT < 2 * CHEAP + WORST


async def test_parallel_llm_steps_cannot_both_pass_the_budget(db_url: str, outlet: RecordingOutlet) -> None:
    """Two LLM steps of one run start together; each fits the budget alone, not both.
    Counted in memory, both checked against $0 spent and both called the provider."""
    async with FakeLLMServer("ok", usage=(1000, 500)) as server:
        app = await App.start(settings(db_url, server, fail_fast=False), {"test": outlet}, migrate=True)  # the paid step finishes
        try:
            await app.bot.handle(Message("test", "C", "T", "alice", "run: left with primary AND right with primary"), outlet)
            await app.bot.drain()
            assert len(server.requests) == 1  # the refused step never reached the provider
            result = outlet.texts[-1]
            assert result.startswith("Run #1 failed") and f"max_cost_per_workflow ${LIMIT:.2f}" in result
            (run,) = await app.runs.list()
            got = await app.runs.get(run.id)
            assert got is not None
            statuses = sorted(s.status for s in got[1])
            assert statuses == ["failed", "succeeded"]
            assert await RunBudget(app.db).spent(run.id) == pytest.approx(ACTUAL)  # settled: the reservation is gone
        finally:
            await app.aclose()


CHEAP = PRICES.cost_usd("claude-haiku-4-5", Usage(100, 100))  # per call in the resume test
RESUME_LIMIT = round(WORST + 1.5 * CHEAP, 6)  # steps 1 and 2 fit; step 3 fits after one paid step, not after two


PAID_CHAIN = """\
name: paid-chain
nodes:
  first: {run: "first question", idempotent: true}
  second: {run: "second question", idempotent: true, depends_on: [first]}
  third: {run: "third question", idempotent: true, depends_on: [second]}
"""


async def test_a_resumed_run_keeps_its_spend(db_url: str, tmp_path: Path) -> None:
    """Step 1 is paid for, the process stops during step 2; the next process resumes the run
    from its checkpoints *and* the spend it recorded: step 2 runs again and step 3 no longer
    fits the budget (counted from $0 after the restart, it would)."""
    second_asked = asyncio.Event()
    never = asyncio.Event()
    held: list[str] = []

    async def reply(req: RecordedRequest) -> str:
        text = req.input_text
        if not held and "Outputs of the earlier steps" in text and "third" not in text:  # step 2, the first time
            held.append(text)
            second_asked.set()
            await never.wait()
        return "ok"

    async with FakeLLMServer(reply, usage=(100, 100)) as server:
        first_out, second_out = RecordingOutlet(), RecordingOutlet()
        config = tmp_path / "config"
        shutil.copytree(REPO / "config", config)
        (config / "workflows" / "paid-chain.yaml").write_text(PAID_CHAIN)  # idempotent LLM steps: a resume runs them again
        s = settings(db_url, server, limit=RESUME_LIMIT).model_copy(update={"config_dir": config})
        key = Message("test", "C", "T", "alice", "").key
        a = await App.start(s, {"test": first_out}, migrate=True)
        try:
            assert a.admission is not None and a.bot.queue is not None
            graph = a.bot.compile("paid-chain")
            assert (await a.admission.admit(key, graph, requested_by="alice")).run_id == 1
            a.bot.queue.submit(1, key)
            async with asyncio.timeout(30):
                await second_asked.wait()
            assert await RunBudget(a.db).spent(1) > CHEAP  # step 1 paid, step 2's worst case reserved
        finally:
            await a.aclose()  # a shutdown: the run stays resumable, step 2's reservation is given back
        try:
            b = await App.start(s, {"test": second_out}, migrate=True)
            try:
                assert await RunBudget(b.db).spent(1) == pytest.approx(CHEAP)
                assert await b.manager.resume_unfinished({"test"}) == [1]
                await b.bot.drain()
                result = await second_out.wait_for("Run #1 ")
                assert result.startswith("Run #1 failed") and f"max_cost_per_workflow ${RESUME_LIMIT:.2f}" in result
                assert f"has spent ${2 * CHEAP:.4f}" in result  # step 1 (first process) + step 2 (this one)
                assert len(server.requests) == 3  # step 1 not repeated, step 2 asked again, step 3 refused
                assert await RunBudget(b.db).spent(1) == pytest.approx(2 * CHEAP)
            finally:
                await b.aclose()
        finally:
            never.set()


async def _a_run(db: Database) -> int:
    now = datetime.now(UTC)
    async with db.begin("test run") as conn:
        tid = (await conn.execute(threads.insert().values(platform="test", channel="C", thread="T", created_at=now, updated_at=now))).inserted_primary_key[0]
        res = await conn.execute(runs.insert().values(thread_id=tid, source="x", graph="{}", status="running", requested_by="t", created_at=now))
        return int(res.inserted_primary_key[0])


async def test_concurrent_reservations_from_two_processes_never_exceed_the_limit(db_url: str) -> None:
    """Two database handles (two processes' connections) race 20 reservations of $0.30
    against $1.00: exactly three are granted, whatever the interleaving."""
    await upgrade(db_url)
    one, two = Database(db_url), Database(db_url)
    try:
        rid = await _a_run(one)
        ledgers = [RunBudget(one), RunBudget(two)]
        got = await asyncio.gather(*(ledgers[i % 2].reserve(rid, 0.30, 1.00) for i in range(20)))
        assert sum(ok for ok, _ in got) == 3
        assert max(total for ok, total in got if ok) == pytest.approx(0.90)
        assert await ledgers[1].spent(rid) == pytest.approx(0.90)
        assert await ledgers[0].settle(rid, 0.30, 0.05) == pytest.approx(0.65)  # a settled step frees the rest
        assert await ledgers[1].reserve(rid, 0.30, 1.00) == (True, pytest.approx(0.95))
        with pytest.raises(LookupError):
            await ledgers[0].settle(rid + 1000, 0.0, 0.1)
    finally:
        await one.dispose()
        await two.dispose()
