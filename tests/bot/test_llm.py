"""LLM providers in the bot: chat over several turns, LLM steps on two providers, costs, budgets, faults.

The real openai and anthropic SDKs talk to tests/fakes/llm_server.py on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from adapters.base import Message
from bot.app import App
from bot.settings import Settings
from tests.conftest import REPO, RecordingOutlet
from tests.fakes.llm_server import FakeLLMServer, recall_first_user


@pytest.fixture(autouse=True)
def anthropic_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")


def providers(server: FakeLLMServer) -> dict[str, dict[str, str]]:
    return {
        "local": {"kind": "openai_compatible", "model": "llama3.1:8b", "base_url": server.openai_base_url, "default": True},
        "primary": {"kind": "anthropic", "model": "claude-haiku-4-5", "base_url": server.anthropic_base_url},
    }


async def console(tmp: Path, stdin: str, env: dict[str, str]) -> tuple[int, str, str]:
    full = {**os.environ, "BATON_CONFIG_DIR": str(REPO / "config"), "BATON_DATA_DIR": str(tmp / "data"), **env}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.cli", "console",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=tmp, env=full,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), 120)
    return proc.returncode or 0, out.decode(), err.decode()


@pytest.mark.parametrize("wire", ["openai", "anthropic"])
async def test_console_chat_uses_earlier_turns(tmp_path: Path, wire: str) -> None:
    async with FakeLLMServer(recall_first_user("Earlier you said: ")) as server:
        if wire == "openai":
            env = {"BATON_PROVIDERS__LOCAL__KIND": "openai_compatible", "BATON_PROVIDERS__LOCAL__MODEL": "llama3.1:8b",
                   "BATON_PROVIDERS__LOCAL__BASE_URL": server.openai_base_url}
        else:
            env = {"BATON_PROVIDERS__PRIMARY__KIND": "anthropic", "BATON_PROVIDERS__PRIMARY__MODEL": "claude-haiku-4-5",
                   "BATON_PROVIDERS__PRIMARY__BASE_URL": server.anthropic_base_url, "ANTHROPIC_API_KEY": "sk-ant-test"}
        rc, out, err = await console(tmp_path, "my service is called zebra-api\nhow are you?\nwhat was my service called?\n", env)
        assert rc == 0, err
        assert out.count("Earlier you said: my service is called zebra-api") == 3
        last = server.requests[-1]
        assert last.api == wire and last.stream
        assert last.user_texts[0].startswith("my service is called zebra-api")
        assert last.user_texts[-1].endswith("what was my service called?")
        assert "sk-ant-test" not in out + err  # keys never appear in output or logs


async def test_llm_steps_on_two_providers_pass_outputs_and_cost(sqlite_url: str, outlet: RecordingOutlet) -> None:
    async with FakeLLMServer(usage=(120, 40)) as server:
        server.queue_replies("Disks spin and hum / a quiet full partition / logs grow in the night", "Nice imagery; 8/10.")
        settings = Settings(config_dir=REPO / "config", database_url=sqlite_url, providers=providers(server))
        app = await App.start(settings, {"test": outlet}, migrate=True)
        try:
            await app.bot.handle(Message("test", "C", "T", "alice", "run: Write a haiku about disks with local THEN critique it with primary"), outlet)
            await app.bot.drain()
            result = outlet.texts[-1]
            assert result.startswith("Run #1 succeeded") and "320 tokens" in result
            first, second = server.requests
            assert first.api == "openai" and second.api == "anthropic"
            assert "Disks spin and hum" in second.user_texts[-1]  # the critique saw the haiku
            _, steps = await app.runs.get(1)  # type: ignore[misc]
            by = {s.label: s for s in steps}
            haiku, critique = by["Write a haiku about disks with local"], by["critique it with primary"]
            assert (haiku.tokens_in, haiku.tokens_out, haiku.cost_usd) == (120, 40, 0.0)  # a local model is free
            assert critique.tokens_in == 120 and critique.cost_usd > 0
            assert f"${critique.cost_usd:.4f}" in result
            await app.bot.handle(Message("test", "C", "T", "alice", "/run show 1"), outlet)
            assert "120+40 tokens" in outlet.texts[-1] and "Cost: $" in outlet.texts[-1]
        finally:
            await app.aclose()


async def test_stream_cut_midway_keeps_partial_text(sqlite_url: str, outlet: RecordingOutlet) -> None:
    async with FakeLLMServer("one two three four five six seven eight") as server:
        server.cut_stream(after_chunks=3)
        # no routing classifier call first: the fault is meant for the chat stream
        settings = Settings(config_dir=REPO / "config", database_url=sqlite_url, providers=providers(server), routing={"llm": False})
        app = await App.start(settings, {"test": outlet}, migrate=True)
        try:
            await app.bot.handle(Message("test", "C", "T", "alice", "count for me"), outlet)
            await app.bot.drain()
            reply = outlet.texts[-1]
            assert reply.startswith("one") and "…[reply cut off:" in reply
            stored = await app.sessions.history(Message("test", "C", "T", "a", "").key, 1)
            assert stored[-1].text == reply
        finally:
            await app.aclose()


async def test_missing_key_names_the_setting(sqlite_url: str, outlet: RecordingOutlet, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    settings = Settings(config_dir=REPO / "config", database_url=sqlite_url, providers={"primary": {"kind": "anthropic", "model": "claude-haiku-4-5"}})
    app = await App.start(settings, {"test": outlet}, migrate=True)
    try:
        await app.bot.handle(Message("test", "C", "T", "alice", "hello?"), outlet)
        await app.bot.handle(Message("test", "C", "T", "alice", "run: summarize the news"), outlet)
        await app.bot.drain()
        assert "ANTHROPIC_API_KEY" in outlet.texts[-2] and "ANTHROPIC_API_KEY" in outlet.texts[-1]
    finally:
        await app.aclose()


async def test_budget_refuses_a_step_and_alerts(sqlite_url: str, outlet: RecordingOutlet) -> None:
    from bot.providers import PriceTable
    from bot.providers.types import Usage

    prices = PriceTable.load()
    worst = prices.cost_usd("claude-haiku-4-5", Usage(60, 1024))  # a short prompt plus max_tokens of output
    actual = prices.cost_usd("claude-haiku-4-5", Usage(1000, 500))
    limit = round(worst * 1.2, 6)  # the first step fits its worst case; after it, the second does not
    assert actual + worst > limit and actual > 0.5 * limit
    async with FakeLLMServer("ok", usage=(1000, 500)) as server:
        settings = Settings(
            config_dir=REPO / "config",
            database_url=sqlite_url,
            providers=providers(server),
            workflow={"cost_control": {"max_cost_per_workflow": limit, "budget_alert_threshold": 0.5}},
        )
        app = await App.start(settings, {"test": outlet}, migrate=True)
        try:
            await app.bot.handle(Message("test", "C", "T", "alice", "run: first with primary THEN second with primary"), outlet)
            await app.bot.drain()
            assert any(t.startswith("Budget alert: run #1 has spent $") for t in outlet.texts)
            result = outlet.texts[-1]
            assert result.startswith("Run #1 failed") and f"max_cost_per_workflow ${limit:.2f}" in result
            assert len(server.requests) == 1  # the refused step never reached the provider
        finally:
            await app.aclose()


async def test_summaries_are_abstractive_with_a_provider(sqlite_url: str, outlet: RecordingOutlet) -> None:
    async with FakeLLMServer("ABSTRACT: people discussed ports.") as server:
        settings = Settings(
            config_dir=REPO / "config", database_url=sqlite_url, providers=providers(server),
            sessions={"strategy": "summary", "summary_frequency": 4, "keep_recent": 2},
        )
        app = await App.start(settings, {"test": outlet}, migrate=True)
        try:
            key = Message("test", "C", "T", "a", "").key
            for i in range(10):
                await app.sessions.append(key, "user", "alice", f"service-{i} uses port {8000 + i}")
            await app.memory.context(key, "which port?")
            await app.memory.settle()
            assert {s.text for s in await app.sessions.summaries(key)} == {"ABSTRACT: people discussed ports."}
            server.server_error(times=10)  # the provider fails: summaries fall back to extractive
            for i in range(4):
                await app.sessions.append(key, "user", "alice", f"late fact {i}: db on port {5432 + i}")
            await app.memory.context(key, "which port?")
            await app.memory.settle()
            assert any("late fact" in s.text for s in await app.sessions.summaries(key))
        finally:
            await app.aclose()
