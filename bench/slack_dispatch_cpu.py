"""CPU per Slack request spent in bolt before the listener acks (no network, no database).

Usage:
    python bench/slack_dispatch_cpu.py /work/shared/data/slack [--requests 3000]

Dispatches the signed ``events/app_mention.json`` from the data folder through a bolt
``AsyncApp`` set up as :func:`adapters.slack.build_slack_app` sets it up (Baton's
``AcksFirst`` gate, bolt's ``AsyncAssistant`` behind Baton's ``AssistantGate``, an
``app_mention`` listener that only acks), and, for comparison, with the assistant
middleware ungated and bolt verifying the signature itself. Measured with
``time.process_time`` (CPU, so it holds up on a busy machine), after 200 warm-up
requests. Prints a table, then one line of JSON (``us_per_request`` per setup).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SECRET = "bench-signing-secret"
SETUPS = {
    "ungated assistant, bolt verifies": (False, True),
    "gated assistant, bolt verifies": (True, True),
    "gated assistant, verified upstream (Baton)": (True, False),
}


async def cpu_per_request(raw: str, *, gate: bool, bolt_verifies: bool, n: int) -> float:
    """Microseconds of CPU per ``async_dispatch`` of ``raw`` (a JSON Events API body)."""
    from slack_bolt.async_app import AsyncApp, AsyncAssistant
    from slack_bolt.authorization import AuthorizeResult
    from slack_bolt.request.async_request import AsyncBoltRequest

    from adapters._slack_listeners import AcksFirst, AssistantGate

    async def authorize(**_: Any) -> AuthorizeResult:
        return AuthorizeResult(enterprise_id=None, team_id="T1", bot_token="xoxb-bench", bot_user_id="W111", bot_id="B1")

    bolt = AsyncApp(
        name="bench", signing_secret=SECRET, authorize=authorize, process_before_response=True,
        request_verification_enabled=bolt_verifies, logger=logging.getLogger("bench.bolt"),
    )
    bolt.use(AcksFirst())
    assistant = AsyncAssistant()

    async def nothing(**_: Any) -> None:
        return None

    assistant.thread_started(nothing)
    assistant.user_message(nothing)
    bolt.use(AssistantGate(assistant) if gate else assistant)

    async def on_mention(ack: Any, body: dict, event: dict, context: Any, request: Any) -> None:
        await ack()

    bolt.event("app_mention")(on_mention)

    def request() -> AsyncBoltRequest:
        ts = str(int(time.time()))
        sig = "v0=" + hmac.new(SECRET.encode(), f"v0:{ts}:{raw}".encode(), hashlib.sha256).hexdigest()
        headers = {"content-type": "application/json", "x-slack-request-timestamp": ts, "x-slack-signature": sig}
        return AsyncBoltRequest(body=raw, headers=headers)

    for _ in range(200):
        assert (await bolt.async_dispatch(request())).status == 200
    reqs = [request() for _ in range(n)]
    t0 = time.process_time()
    for r in reqs:
        resp = await bolt.async_dispatch(r)
    assert resp.status == 200
    return (time.process_time() - t0) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", type=Path, help="the Slack payload folder (e.g. /work/shared/data/slack)")
    ap.add_argument("--requests", type=int, default=3000)
    args = ap.parse_args()
    path = args.data / "events" / "app_mention.json"
    if not path.is_file():
        raise SystemExit(f"no events/app_mention.json under {args.data}: pass the Slack payload folder (shared/data/slack)")
    raw = json.dumps(json.loads(path.read_text()))
    out: dict[str, Any] = {"requests": args.requests, "loadavg_1m": os.getloadavg()[0], "us_per_request": {}}
    for name, (gate, verifies) in SETUPS.items():
        us = min(asyncio.run(cpu_per_request(raw, gate=gate, bolt_verifies=verifies, n=args.requests)) for _ in range(2))
        out["us_per_request"][name] = round(us, 1)
    w = max(len(k) for k in SETUPS)
    print(f"{'bolt setup (app_mention, listener acks)':<{w}}  CPU per request (best of 2)")
    print(f"{'-' * w}  {'-' * 27}")
    for k, v in out["us_per_request"].items():
        print(f"{k:<{w}}  {v:.1f} us")
    print(f"{'machine load (1 min)':<{w}}  {out['loadavg_1m']:.2f}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
