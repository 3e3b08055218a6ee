"""Done-when of issue 18: ``baton serve`` as a real subprocess, a token from ``baton token
create``, a run started over HTTP and followed over SSE, the signed webhook verified with
``standardwebhooks``, and ``baton_runs_total`` read from /metrics. And: a receiver that
fails half of its requests still gets every event, each id at least once."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import httpx

from bot.app import App
from bot.server.events import install
from bot.server.webhooks import Dispatcher
from bot.settings import ServerSettings
from tests.conftest import REPO
from tests.server.conftest import SECRET, free_port, hook, make_settings, sse_events


def _env(tmp_path: Path, config_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PYTHONPATH=str(REPO),
        BATON_CONFIG_DIR=str(config_dir),
        BATON_DATA_DIR=str(tmp_path / ".baton"),
        BATON_ROUTING__ENCODER="none",
        BATON_TEST_WEBHOOK_SECRET=SECRET,
        BATON_LOG_LEVEL="INFO",
    )
    env.pop("BATON_DATABASE_URL", None)
    return env


def _config(tmp_path: Path, receiver_url: str) -> Path:
    cfg = tmp_path / "config"
    cfg.mkdir()
    (cfg / "workflows").symlink_to(REPO / "config" / "workflows")
    (cfg / "routes.yaml").symlink_to(REPO / "config" / "routes.yaml")
    (cfg / "baton.toml").write_text(
        (REPO / "config" / "baton.toml").read_text()
        + f'\n[webhooks.recv]\nurl = "{receiver_url}"\nevents = ["run.succeeded", "run.failed"]\nsecret_env = "BATON_TEST_WEBHOOK_SECRET"\n'
    )
    return cfg


async def test_baton_serve_end_to_end(tmp_path: Path, receiver) -> None:  # type: ignore[no-untyped-def]
    env = _env(tmp_path, _config(tmp_path, receiver.url))
    made = subprocess.run(
        [sys.executable, "-m", "bot.cli", "token", "create", "e2e", "--scopes", "runs:read,runs:write"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip().splitlines()[-1]
    assert token.startswith("baton_") and token not in made.stderr
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.cli", "serve", "--port", str(port), env=env, cwd=tmp_path,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )
    h = {"Authorization": f"Bearer {token}"}
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            async with asyncio.timeout(60):
                while True:
                    try:
                        if (await http.get("/readyz")).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    assert proc.returncode is None, "baton serve exited early"
                    await asyncio.sleep(0.1)
            r = await http.post("/api/v1/runs", json={"workflow": "echo ping THEN echo pong"}, headers=h)
            assert r.status_code == 201, r.text
            run_id = r.json()["id"]
            body = ""
            async with http.stream("GET", f"/api/v1/runs/{run_id}/events", headers=h) as resp:
                async for chunk in resp.aiter_text():
                    body += chunk
                    if "event: result" in body and body.endswith("\n\n"):
                        break
            events = sse_events(body)
            assert events[-1][0] == "result" and events[-1][1]["status"] == "succeeded"
            assert events[-1][1]["steps"][-1]["output"] == "pong"
            # the signed webhook (the receiver verifies each signature with standardwebhooks)
            await receiver.wait_for(lambda ev: any(e["data"]["run_id"] == run_id for e in ev), timeout=20)
            ev = next(e for e in receiver.events if e["data"]["run_id"] == run_id)
            assert ev["type"] == "run.succeeded" and receiver.bad_signatures == 0
            metrics = (await http.get("/metrics")).text
            assert 'baton_runs_total{status="succeeded",workflow="adhoc"} 1.0' in metrics
    finally:
        proc.terminate()
        try:
            _, err = await asyncio.wait_for(proc.communicate(), timeout=20)
        except TimeoutError:
            proc.kill()
            raise
    log = err.decode()
    assert "Traceback" not in log and token not in log
    assert '"level": "info"' in log  # JSON log lines


async def test_a_receiver_failing_half_its_requests_gets_every_event(tmp_path: Path, receiver, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("BATON_TEST_WEBHOOK_SECRET", SECRET)
    receiver.fail = lambda n: n % 2 == 1  # every other request answers 500
    settings = make_settings(
        tmp_path,
        webhooks=hook(receiver.url, events=["run.succeeded", "run.failed", "step.finished", "step.failed"]),
        server=ServerSettings(webhook_retry_initial=0.05, webhook_retry_max=0.2),
    )
    baton = await App.start(settings, {})
    install(baton)
    dispatcher = Dispatcher(baton.db, settings)
    baton.runs.hooks[0].on_outbox.append(dispatcher.wake)  # type: ignore[attr-defined]
    task = asyncio.create_task(dispatcher.run())
    try:
        from bot.store import ThreadKey

        for i in range(10):
            text = f"echo a{i} THEN echo b{i}" if i % 3 else f"echo a{i} THEN fail f{i}"
            await baton.manager.start(ThreadKey("test", "c", f"t{i}"), baton.bot.compile(text), requested_by="tester")
        await baton.manager.wait_idle()
        from sqlalchemy import select

        from bot.store.tables import webhook_outbox

        async with baton.db.begin("test") as conn:
            expected = {r.event_id for r in (await conn.execute(select(webhook_outbox.c.event_id))).all()}
        # 10 runs: 10 run events + 2 steps each (a failing step's run has 1 finished + 1 failed)
        assert len(expected) == 30
        await receiver.wait_for(lambda ev: set(receiver.ids) >= expected, timeout=60)
        assert set(receiver.ids) == expected
        assert receiver.requests >= 2 * len(expected) - 1  # half of them failed and were retried
        from bot.server.webhooks import delivery_log

        log = await delivery_log(baton.db, "recv", limit=1000)
        assert {d.outcome for d in log} == {"delivered", "failed"}
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await dispatcher.aclose()
        await baton.aclose()


def test_a_taken_port_is_one_line_and_exit_2(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = _env(tmp_path, REPO / "config")
        r = subprocess.run([sys.executable, "-m", "bot.cli", "serve", "--port", str(port)], env=env, cwd=tmp_path,
                           capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [f"baton serve: cannot listen on 127.0.0.1:{port}: Address already in use; pick another with --port or [server] port"]


async def test_token_and_webhook_commands(tmp_path: Path, receiver) -> None:  # type: ignore[no-untyped-def]
    env = _env(tmp_path, _config(tmp_path, receiver.url))

    def baton(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "bot.cli", *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)

    bad = baton("token", "create", "x", "--scopes", "runs:delete")
    assert bad.returncode == 2 and bad.stderr.strip().startswith("baton: unknown scope runs:delete")
    made = baton("token", "create", "ops", "--scopes", "admin")
    token = made.stdout.strip().splitlines()[-1]
    assert baton("token", "create", "ops").returncode == 2  # one active token per name
    listed = baton("token", "list").stdout
    assert "ops" in listed and "admin" in listed and "active" in listed and token not in listed
    assert baton("token", "revoke", "ops").returncode == 0
    assert "revoked" in baton("token", "list").stdout
    assert baton("token", "revoke", "ops").returncode == 1
    # webhooks test: one signed event now, in the delivery log
    sent = await asyncio.to_thread(baton, "webhooks", "test", "recv")
    assert sent.returncode == 0 and sent.stdout.startswith("recv: delivered (status 204")
    assert receiver.events[-1]["type"] == "webhook.test" and receiver.bad_signatures == 0
    receiver.fail = lambda n: True
    failed = await asyncio.to_thread(baton, "webhooks", "test", "recv")
    assert failed.returncode == 1 and "failed (status 500" in failed.stdout
    log = baton("webhooks", "log").stdout.splitlines()
    assert len(log) == 2 and "failed" in log[0] and "delivered" in log[1] and "webhook.test" in log[0]
    assert baton("webhooks", "test", "nope").returncode == 2


async def test_an_event_is_given_up_after_max_age(tmp_path: Path, receiver, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy import select

    from bot.store import ThreadKey
    from bot.store.tables import webhook_outbox

    monkeypatch.setenv("BATON_TEST_WEBHOOK_SECRET", SECRET)
    receiver.fail = lambda n: True
    settings = make_settings(
        tmp_path, webhooks=hook(receiver.url), server=ServerSettings(webhook_retry_initial=0.05, webhook_retry_max=0.1, webhook_max_age=0.5)
    )
    baton = await App.start(settings, {})
    dispatcher = Dispatcher(baton.db, settings)
    task = asyncio.create_task(dispatcher.run())
    try:
        await baton.manager.start(ThreadKey("test", "c", "t"), baton.bot.compile("echo x"), requested_by="tester")
        await baton.manager.wait_idle()
        async with asyncio.timeout(20):
            while True:
                async with baton.db.begin("test") as conn:
                    row = (await conn.execute(select(webhook_outbox))).mappings().one()
                if row["status"] == "failed":
                    break
                dispatcher.wake()
                await asyncio.sleep(0.05)
        assert row["attempts"] >= 2 and row["last_error"] == "HTTP 500" and receiver.requests == row["attempts"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await dispatcher.aclose()
        await baton.aclose()
