"""A ``baton worker`` posts Discord runs' status and results through Discord's REST API.

The real discord.py client talks to the fake Discord server (tests/fakes/discord_api.py)
on 127.0.0.1: the worker's outlet (:func:`adapters.launch.worker_outlets`) logs in over
REST only (no gateway), posts the live status message, edits it, and posts the result,
as the front would. In-process on SQLite, and with a real ``baton worker`` process on
PostgreSQL (scale-out).
"""

from __future__ import annotations

from pathlib import Path

import discord
import pytest

from adapters.launch import worker_outlets
from bot.app import App
from bot.settings import Settings
from bot.store import ThreadKey
from tests.conftest import REPO
from tests.fakes.discord_api import ConnectProxy, FakeDiscordAPI
from tests.queue.test_scale_out import Cluster, _wait_status, cluster  # noqa: F401  (the fixture)

pytestmark = pytest.mark.timeout(150)

THREAD = "900000000000000001"
KEY = ThreadKey("discord", "800000000000000001", THREAD)


def _text(content: str) -> str:
    """A posted message's text without the code fence multi-line text is sent in."""
    return content.removeprefix("```\n").removesuffix("\n```")


def _posted(api: FakeDiscordAPI) -> list[str]:
    return [_text(c.json["content"]) for c in api.find("POST /channels/{channel_id}/messages", channel_id=THREAD)]


async def test_worker_outlets_post_status_and_results_over_rest(api: FakeDiscordAPI, sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATON_DISCORD_TOKEN", api.token)
    monkeypatch.delenv("SLACK_BOT_TOKEN", raising=False)
    monkeypatch.delenv("BATON_DISCORD_PROXY", raising=False)
    default_base = discord.http.Route.BASE
    async with worker_outlets(connector=api.connector()) as outlets:
        assert set(outlets) == {"discord"}
        app = await App.start(Settings(config_dir=REPO / "config", database_url=sqlite_url), outlets, migrate=True)
        try:
            assert app.admission is not None and app.bot.queue is not None
            ok = await app.admission.admit(KEY, app.bot.compile("echo hello"), requested_by="U1")
            bad = await app.admission.admit(KEY, app.bot.compile("fail"), requested_by="U1")
            assert ok.run_id == 1 and bad.run_id == 2
            app.bot.queue.submit(1, KEY)
            await app.bot.queue.submit(2, KEY)
            await app.bot.drain()
        finally:
            await app.aclose()
    assert discord.http.Route.BASE == default_base == "https://discord.com/api/v10"  # nothing process-wide changed
    assert [c.route for c in api.calls][0] == "GET /users/@me"  # logged in over REST …
    assert api.identifies == [] and not api.gateway_connected.is_set()  # … and never on the gateway
    assert all(c.authorized for c in api.calls)
    posted = _posted(api)
    results = [t for t in posted if t.startswith("Run #")]
    assert results[0].startswith("Run #1 succeeded") and "hello" in results[0]
    assert results[1].startswith("Run #2 failed")
    (failed_result,) = [c for c in api.find("POST /channels/{channel_id}/messages", channel_id=THREAD) if _text(c.json["content"]).startswith("Run #2 failed")]
    labels = [b["label"] for row in failed_result.json["components"] for b in row["components"]]
    assert labels[0].startswith("Retry") and labels[1] == "Show log"  # the front's gateway client answers the clicks
    statuses = [t for t in posted if t.startswith("▶ **Run #")]
    assert len(statuses) == 2  # one live status message per run, then edited in place
    edits = api.find("PATCH /channels/{channel_id}/messages/{message_id}", channel_id=THREAD)
    assert edits, "the status message was never edited"


@pytest.fixture
async def api() -> FakeDiscordAPI:  # type: ignore[misc]
    async with FakeDiscordAPI() as server:
        yield server


async def test_a_scale_out_worker_posts_a_discord_runs_result(cluster: Cluster, api: FakeDiscordAPI, tmp_path: Path) -> None:  # noqa: F811
    """The worker process reaches "discord.com" through ``BATON_DISCORD_PROXY`` (a CONNECT proxy
    to the fake) and trusts the fake's test CA through ``SSL_CERT_FILE``."""
    async with ConnectProxy(api) as proxy:
        ca = ConnectProxy.write_ca(tmp_path / "test-ca.pem")
        cluster.env.update(BATON_DISCORD_TOKEN=api.token, BATON_DISCORD_PROXY=proxy.url, SSL_CERT_FILE=str(ca))
        cluster.env.pop("SLACK_BOT_TOKEN", None)
        cluster.start_worker("w1")
        app = await App.start(cluster.settings(), {})  # the front: admission only, no outlet here
        try:
            got = await app.admission.admit(KEY, app.bot.compile("echo from-a-worker"), requested_by="U1")  # type: ignore[union-attr]
            assert got.run_id is not None
            await _wait_status(app, [got.run_id], {"succeeded"})
            (result,) = await api.wait_for(
                lambda c: c.route == "POST /channels/{channel_id}/messages" and _text(c.json["content"]).startswith(f"Run #{got.run_id} "), timeout=30
            )
            assert result.params["channel_id"] == THREAD and "from-a-worker" in result.json["content"]
            assert result.authorized and api.identifies == []
            assert proxy.tunnels and set(proxy.tunnels) == {"discord.com:443"}
        finally:
            await app.aclose()
