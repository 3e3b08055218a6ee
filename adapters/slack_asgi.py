"""The Slack Events endpoint as an ASGI (Starlette) handler, for ``baton serve``.

``baton serve`` answers the Events API, interactivity and slash commands on the same
port as its REST API by mounting this handler; bolt's own Starlette adapter translates
requests and responses (the signature is checked by bolt, a forged or stale request
gets 401). Only ``adapters`` imports ``slack_bolt``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from slack_bolt.adapter.starlette.async_handler import AsyncSlackRequestHandler
from starlette.requests import Request
from starlette.responses import Response

from adapters._slack_settings import SlackSettings
from adapters.slack import build_slack_app

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
    bolt, _ = build_slack_app(app, settings)
    handler = AsyncSlackRequestHandler(bolt)

    async def endpoint(request: Request) -> Response:
        t0 = time.perf_counter()
        resp = await handler.handle(request)
        if on_ack is not None:
            on_ack(time.perf_counter() - t0)
        return resp

    return endpoint
