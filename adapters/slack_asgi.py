"""The Slack Events endpoint as an ASGI (Starlette) handler, for ``baton serve``.

``baton serve`` answers the Events API, interactivity and slash commands on the same
port as its REST API by mounting this handler; bolt's own Starlette adapter translates
requests and responses. The signature is checked on the raw bytes first
(:func:`adapters.slack.check_request`): unsigned, forged or stale → 401, signed but
malformed → 400, one log line each, before bolt parses anything. Only ``adapters``
imports ``slack_bolt``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from slack_bolt.adapter.starlette.async_handler import AsyncSlackRequestHandler
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from adapters._slack_settings import SlackSettings
from adapters._slack_settings import _secret
from adapters.slack import RequestRefused, build_slack_app, check_request, log

if TYPE_CHECKING:
    from bot.app import App

__all__ = ["slack_endpoint"]


def slack_endpoint(
    app: App, settings: SlackSettings, *, on_ack: Callable[[float], None] | None = None
) -> Callable[[Request], Awaitable[Response]]:
    """A Starlette endpoint serving ``app``'s Slack bolt app (HTTP mode).

    Args:
        on_ack: called with the seconds each request took to answer (a metric).

    Raises:
        SlackConfigError: a Slack setting is missing or malformed.
    """
    bolt, _ = build_slack_app(app, settings, verified_upstream=True)  # every request is checked below first
    handler = AsyncSlackRequestHandler(bolt)
    secret = _secret(settings.signing_secret)

    async def endpoint(request: Request) -> Response:
        t0 = time.perf_counter()
        try:
            check_request(secret, await request.body(), request.headers)  # Starlette caches the body for bolt
        except RequestRefused as e:
            log.warning("Slack: refused a request from %s: %s (%d)", request.client.host if request.client else "?", e.reason, e.status)
            return JSONResponse({"error": e.reason}, status_code=e.status)
        resp = await handler.handle(request)
        if on_ack is not None:
            on_ack(time.perf_counter() - t0)
        return resp

    return endpoint
