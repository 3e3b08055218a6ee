"""Fault 6 (issue 14): the signature is checked on the raw bytes before anything is parsed.

Unsigned, forged, stale and malformed requests are real HTTP requests to the served
bolt app; each gets 401 (not signed right) or 400 (signed but malformed) with one log
line, never a 500 or a traceback, and nothing is stored.
"""

from __future__ import annotations

import logging
import time

import pytest

from tests.slack.conftest import Harness, mention, sign

BAD_BODIES = [b"[1]", b"{not json", b"null", b"hello \xff\xfe junk", b'{"type": "event_callback"']


async def _post(h: Harness, body: bytes, headers: dict[str, str], ctype: str = "application/json") -> tuple[int, str]:
    assert h.server and h.http
    async with h.http.post(h.server.url, data=body, headers={"Content-Type": ctype, **headers}) as r:
        return r.status, await r.text()


def _sign_bytes(body: bytes, ts: str | None = None) -> dict[str, str]:
    import hashlib
    import hmac

    from tests.slack.conftest import SIGNING_SECRET

    ts = ts or str(int(time.time()))
    sig = hmac.new(SIGNING_SECRET.encode(), b"v0:" + ts.encode() + b":" + body, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={sig}"}


def _tracebacks(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]


@pytest.mark.parametrize("body", BAD_BODIES, ids=["list", "bad-json", "null", "invalid-utf8", "truncated"])
async def test_unsigned_malformed_bodies_get_401_and_one_log_line(harness: Harness, caplog: pytest.LogCaptureFixture, body: bytes) -> None:
    caplog.set_level(logging.DEBUG)
    status, _ = await _post(harness, body, {})
    assert status == 401
    refused = [r for r in caplog.records if "refused a request" in r.getMessage()]
    assert len(refused) == 1 and not _tracebacks(caplog)


@pytest.mark.parametrize("body", BAD_BODIES, ids=["list", "bad-json", "null", "invalid-utf8", "truncated"])
async def test_signed_malformed_bodies_get_400_without_a_traceback(harness: Harness, caplog: pytest.LogCaptureFixture, body: bytes) -> None:
    caplog.set_level(logging.DEBUG)
    status, _ = await _post(harness, body, _sign_bytes(body))
    assert status == 400
    assert not _tracebacks(caplog)
    assert len([r for r in caplog.records if "refused a request" in r.getMessage()]) == 1


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Slack-Request-Timestamp": "abc", "X-Slack-Signature": "v0=00"},
        {"X-Slack-Request-Timestamp": "", "X-Slack-Signature": "v0=00"},
        {"X-Slack-Request-Timestamp": "12345678901234567890123", "X-Slack-Signature": "v0=00"},
        {"X-Slack-Signature": "v0=00"},
        {"X-Slack-Request-Timestamp": str(int(time.time()))},
    ],
    ids=["ts-abc", "ts-empty", "ts-huge", "no-ts", "no-sig"],
)
async def test_malformed_signature_headers_get_401(harness: Harness, caplog: pytest.LogCaptureFixture, headers: dict[str, str]) -> None:
    caplog.set_level(logging.DEBUG)
    status, _ = await _post(harness, b'{"type": "url_verification", "challenge": "x"}', headers)
    assert status == 401
    assert not _tracebacks(caplog)


async def test_forged_and_stale_events_are_refused_and_nothing_is_stored(harness: Harness) -> None:
    import json

    body = json.dumps(mention("run: echo forged")).encode()
    forged = _sign_bytes(body)
    forged["X-Slack-Signature"] = forged["X-Slack-Signature"][:-2] + ("00" if not forged["X-Slack-Signature"].endswith("00") else "11")
    assert (await _post(harness, body, forged))[0] == 401
    stale = _sign_bytes(body, ts=str(int(time.time()) - 3600))
    assert (await _post(harness, body, stale))[0] == 401
    await harness.settle()
    assert harness.app is not None
    assert await harness.app.runs.list(limit=10) == []


async def test_a_signed_event_still_goes_through(harness: Harness) -> None:
    import json

    body = json.dumps(mention("run: echo signed"))
    status, _, _ = await harness.post(body, "application/json", headers=sign(body))
    assert status == 200
    await harness.settle()
    assert harness.app is not None
    assert [r.status for r in await harness.app.runs.list(limit=10)] == ["succeeded"]


async def test_the_http_server_refuses_to_serve_a_bolt_app_that_verifies_nothing(harness: Harness) -> None:
    """A bolt app built without its own signature check (Socket Mode here) and no known
    signing secret would serve forged requests: SlackHTTPServer refuses to be built for it."""
    from adapters.slack import SlackHTTPServer, build_slack_app

    assert harness.app and harness.outlet
    from pydantic import SecretStr

    settings = harness.settings.model_copy(update={"app_token": SecretStr("xapp-1-test")})
    bolt, _ = build_slack_app(harness.app, settings, socket_mode=True, outlet=harness.outlet)
    with pytest.raises(ValueError, match="no signing secret"):
        SlackHTTPServer(bolt, host="127.0.0.1", port=0)
    SlackHTTPServer(bolt, host="127.0.0.1", port=0, signing_secret="given")  # a secret given: it checks itself
