"""Slack requests as an attacker sends them: signed, forged, stale, unsigned and malformed.

Whatever arrives, the answer is 200 (signed and well-formed), 401 (no valid, fresh signature)
or 400 (signed but not a Slack payload), never 500; each refusal is at most one log line with
no traceback; nothing refused is stored or run.
"""

from __future__ import annotations

import json
import logging
import time

import pytest

from bot.store import ThreadKey
from tests.chaos.stats import count
from tests.slack.conftest import BOT_USER, Harness, new_ts, sign, slack_api  # noqa: F401 (fixture)


def mention(text: str) -> dict:  # type: ignore[type-arg]
    """A minimal Events API ``app_mention`` callback (built here: these tests need no data folder)."""
    ts = new_ts()
    return {
        "token": "unused",
        "team_id": "T111",
        "api_app_id": "A111",
        "type": "event_callback",
        "event_id": f"Ev{abs(hash(ts)) % 10**10:010d}",
        "event_time": int(time.time()),
        "event": {"type": "app_mention", "user": "W222", "text": f"<@{BOT_USER}> {text}", "ts": ts, "event_ts": ts, "channel": "C111"},
    }


@pytest.fixture
async def harness(sqlite_url: str, slack_api):  # type: ignore[no-untyped-def]  # noqa: F811
    h = await Harness(sqlite_url, slack_api).start()
    try:
        yield h
    finally:
        await h.aclose()


async def _post(h: Harness, body: bytes, headers: dict[str, str], caplog: pytest.LogCaptureFixture) -> tuple[int, list[logging.LogRecord]]:
    assert h.server and h.http
    caplog.clear()
    async with h.http.post(h.server.url, data=body, headers={"Content-Type": "application/json", **headers}) as r:
        await r.read()
        status = r.status
    await h.settle()
    count("slack", requests=1)
    return status, [rec for rec in caplog.records if rec.levelno >= logging.WARNING]


def _assert_refused(status: int, logs: list[logging.LogRecord], expected: int) -> None:
    assert status == expected, f"expected {expected}, got {status}"
    assert len(logs) <= 1, [r.getMessage() for r in logs]
    assert all(r.exc_info is None and "Traceback" not in r.getMessage() for r in logs)


async def _nothing_happened(h: Harness) -> None:
    assert h.slack.calls == []
    assert await h.app.runs.list() == []  # type: ignore[union-attr]


async def test_a_signed_event_is_accepted(harness: Harness, caplog: pytest.LogCaptureFixture) -> None:  # noqa: F811
    body = json.dumps(mention("run: echo signed")).encode()
    status, _ = await _post(harness, body, sign(body.decode()), caplog)
    assert status == 200
    assert [r.status for r in await harness.app.runs.list()] == ["succeeded"]  # type: ignore[union-attr]


@pytest.mark.parametrize("how", ["forged", "stale", "unsigned", "future"])
async def test_bad_signatures_are_401_and_nothing_is_stored(how: str, harness: Harness, caplog: pytest.LogCaptureFixture) -> None:  # noqa: F811
    payload = mention(f"run: echo {how}")
    body = json.dumps(payload)
    headers = {
        "forged": sign(body, secret="not-the-secret"),
        "stale": sign(body, timestamp=int(time.time()) - 6 * 60),
        "future": sign(body, timestamp=int(time.time()) + 6 * 60),
        "unsigned": {},
    }[how]
    status, logs = await _post(harness, body.encode(), headers, caplog)
    _assert_refused(status, logs, 401)
    await _nothing_happened(harness)
    assert await harness.app.sessions.count(ThreadKey("slack", "C111", payload["event"]["ts"])) == 0  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"[1]", id="list"),
        pytest.param(b"null", id="null"),
        pytest.param(b"{not json", id="bad-json"),
        pytest.param(b"hello \xff\xfe junk", id="bad-utf8"),
        pytest.param(b"", id="empty"),
    ],
)
async def test_unsigned_malformed_bodies_are_401_not_500(body: bytes, harness: Harness, caplog: pytest.LogCaptureFixture) -> None:  # noqa: F811
    status, logs = await _post(harness, body, {}, caplog)
    _assert_refused(status, logs, 401)
    await _nothing_happened(harness)


@pytest.mark.parametrize("body", [b"[1]", b"null", b"{not json", b"\xff\xfe{}"], ids=["list", "null", "bad-json", "bad-utf8"])
async def test_signed_malformed_bodies_are_400_not_500(body: bytes, harness: Harness, caplog: pytest.LogCaptureFixture) -> None:  # noqa: F811
    import hashlib
    import hmac

    from tests.slack.conftest import SIGNING_SECRET

    ts = str(int(time.time()))
    sig = hmac.new(SIGNING_SECRET.encode(), b"v0:" + ts.encode() + b":" + body, hashlib.sha256).hexdigest()
    status, logs = await _post(harness, body, {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={sig}"}, caplog)
    _assert_refused(status, logs, 400)
    await _nothing_happened(harness)


async def test_a_non_numeric_timestamp_is_401_not_500(harness: Harness, caplog: pytest.LogCaptureFixture) -> None:  # noqa: F811
    body = json.dumps(mention("run: echo abc")).encode()
    headers = {**sign(body.decode()), "X-Slack-Request-Timestamp": "abc"}
    status, logs = await _post(harness, body, headers, caplog)
    _assert_refused(status, logs, 401)
    await _nothing_happened(harness)
