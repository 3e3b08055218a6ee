"""serve_slack end to end (HTTP and Socket Mode), settings errors, and secrets staying secret."""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import socket
from pathlib import Path

import aiohttp
import pytest

from adapters.slack import SlackConfigError, SlackOutlet, SlackSettings, serve_slack
from bot.app import App
from bot.settings import Settings
from bot.store import ThreadKey
from tests.conftest import REPO
from tests.fakes.slack_api import FakeSlackAPI
from tests.slack.conftest import APP_TOKEN, BOT_TOKEN, SIGNING_SECRET, Harness, load, mention, need_data, sign
from tests.slack.test_slack_interactivity import click, slash


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(autouse=True)
def _no_slack_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for k in list(os.environ):
        if k.startswith("BATON_SLACK_"):
            monkeypatch.delenv(k)


def test_missing_settings_are_named_at_start_up() -> None:
    with pytest.raises(SlackConfigError) as e:
        SlackSettings().check()
    assert "BATON_SLACK_BOT_TOKEN is not set" in str(e.value) and "BATON_SLACK_SIGNING_SECRET is not set" in str(e.value)
    with pytest.raises(SlackConfigError) as e:
        SlackSettings(bot_token=BOT_TOKEN).check(socket_mode=True)
    assert "BATON_SLACK_APP_TOKEN is not set" in str(e.value) and "SIGNING_SECRET" not in str(e.value)


def test_settings_come_from_the_environment_and_hide_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATON_SLACK_BOT_TOKEN", BOT_TOKEN)
    monkeypatch.setenv("BATON_SLACK_SIGNING_SECRET", SIGNING_SECRET)
    monkeypatch.setenv("BATON_SLACK_PORT", "4321")
    s = SlackSettings()
    s.check()
    assert s.port == 4321 and s.path == "/slack/events" and s.status_min_interval == 1.0
    assert BOT_TOKEN not in repr(s) and SIGNING_SECRET not in repr(s) and BOT_TOKEN not in str(s.model_dump())


def test_a_token_of_the_wrong_kind_is_named() -> None:
    with pytest.raises(SlackConfigError, match="BATON_SLACK_BOT_TOKEN is not a bot token") as e:
        SlackSettings(bot_token=APP_TOKEN, signing_secret=SIGNING_SECRET).check()
    assert APP_TOKEN not in str(e.value)
    with pytest.raises(SlackConfigError, match="BATON_SLACK_APP_TOKEN is not an app-level token"):
        SlackSettings(bot_token=BOT_TOKEN, app_token=BOT_TOKEN).check(socket_mode=True)


async def test_serve_slack_refuses_a_token_slack_rejects(sqlite_url: str) -> None:
    async with FakeSlackAPI(token="xoxb-the-real-one") as fake:
        app = await App.start(Settings(config_dir=REPO / "config", database_url=sqlite_url), {}, migrate=True)
        try:
            settings = SlackSettings(bot_token=BOT_TOKEN, signing_secret=SIGNING_SECRET, api_base_url=fake.api_url, port=_free_port())
            with pytest.raises(SlackConfigError, match="Slack rejected BATON_SLACK_BOT_TOKEN: invalid_auth") as e:
                await serve_slack(app, settings)
            assert BOT_TOKEN not in str(e.value)
        finally:
            await app.aclose()


async def _wait_healthy(url: str) -> None:
    async with aiohttp.ClientSession() as http, asyncio.timeout(10):
        while True:
            try:
                async with http.get(url) as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)


async def test_serve_slack_over_http_resumes_runs_serves_events_and_stops_on_cancel(sqlite_url: str, slack_api: FakeSlackAPI) -> None:
    need_data()
    app = await App.start(Settings(config_dir=REPO / "config", database_url=sqlite_url), {}, migrate=True)
    # a run a crashed process left unfinished in a Slack thread
    key = ThreadKey("slack", "C111", "1700000000.000100")
    graph = app.bot.compile("echo resumed")
    await app.runs.create_run(await app.sessions.thread_id(key), graph.source, graph, "W222")
    port = _free_port()
    settings = SlackSettings(
        bot_token=BOT_TOKEN, signing_secret=SIGNING_SECRET, api_base_url=slack_api.api_url,
        host="127.0.0.1", port=port, status_min_interval=0.2,
    )
    task = asyncio.create_task(serve_slack(app, settings))
    try:
        await _wait_healthy(f"http://127.0.0.1:{port}/healthz")
        await slack_api.wait_for("chat.postMessage", where=lambda c: c.args["text"].startswith("Run #1 succeeded"))
        resumed = [c.args["text"] for c in slack_api.calls_to("chat.postMessage", lambda c: c.args.get("thread_ts") == key.thread)]
        assert resumed[0].startswith("Resuming run #1 after a restart")

        body = json.dumps(mention("run: echo served"))
        async with aiohttp.ClientSession() as http:
            async with http.post(f"http://127.0.0.1:{port}/slack/events", data=body, headers={"Content-Type": "application/json", **sign(body)}) as r:
                assert r.status == 200
        await slack_api.wait_for("chat.postMessage", where=lambda c: c.args["text"].startswith("Run #2 succeeded"))
        outlet = app.manager.outlets["slack"]
        assert isinstance(outlet, SlackOutlet)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await app.aclose()
    with pytest.raises(aiohttp.ClientError):
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/healthz"):
            pass


async def test_serve_slack_in_socket_mode_acks_envelopes_and_drops_redeliveries(sqlite_url: str) -> None:
    envelope = load("socket_mode/envelope_events_api_app_mention.json")  # "<@U111>" from U222 in C111
    async with FakeSlackAPI(token=BOT_TOKEN, app_token=APP_TOKEN, bot_user_id="U111") as fake:
        app = await App.start(Settings(config_dir=REPO / "config", database_url=sqlite_url), {}, migrate=True)
        settings = SlackSettings(bot_token=BOT_TOKEN, app_token=APP_TOKEN, api_base_url=fake.api_url)
        task = asyncio.create_task(serve_slack(app, settings, socket_mode=True))
        try:
            await fake.socket_send(envelope)
            await fake.wait_socket_ack(envelope["envelope_id"])
            (reply,) = await fake.wait_for("chat.postMessage")
            assert reply.args["thread_ts"] == "1610241741.000200" and reply.args["text"].startswith("Baton")  # a bare mention → /help

            again = copy.deepcopy(envelope)
            again.update({"envelope_id": "redelivered-1", "retry_attempt": 1, "retry_reason": "timeout"})
            await fake.socket_send(again)
            await fake.wait_socket_ack("redelivered-1")
            await asyncio.sleep(0.3)
            await app.manager.outlets["slack"].drain()  # type: ignore[attr-defined]
            assert len(fake.calls_to("chat.postMessage")) == 1
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await app.aclose()


def _files_text(sqlite_url: str) -> bytes:
    db = Path(sqlite_url.split("///", 1)[1])
    return b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))


async def test_secrets_stay_out_of_logs_replies_and_the_database(harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    body = mention("run: echo a THEN fail on purpose")
    await harness.event(body)
    await harness.form(slash(harness, "runs"))
    await harness.post(json.dumps(mention("forged")), "application/json", headers=sign("x", secret="bad"), signed=False)
    await harness.settle()
    (result,) = [p for p in harness.posts() if p.args["text"].startswith("Run #1 failed")]
    await harness.form(click(result, "baton_retry_step"))
    await harness.settle()
    assert len(await harness.app.runs.list()) == 2  # type: ignore[union-attr]
    await harness.stop()  # flush the database files

    recorded = json.dumps([(c.method, c.args, c.response) for c in harness.slack.calls], default=str)
    db = _files_text(harness.sqlite_url)
    for secret in (BOT_TOKEN, SIGNING_SECRET):
        assert secret not in caplog.text
        assert secret not in recorded
        assert secret.encode() not in db
