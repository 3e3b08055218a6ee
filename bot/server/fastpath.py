"""``POST /api/v1/runs`` without FastAPI's per-request machinery (the API's hot path).

:class:`FastRunStart` is a pure ASGI middleware in front of the router. For a request
to start a run whose body is JSON and a valid :class:`bot.server.api_runs.RunCreate`,
it does what the FastAPI route does — the same bearer parsing (``HTTPBearer``),
:func:`~bot.server.api_runs.authorize` (401/403/429), :func:`~bot.server.api_runs.start_run`
(422/403/409, admission) and the same problem documents — without routing, dependency
solving and response-model serialization, which cost about as much CPU as the admission
itself. Every other request, and one whose body is not a valid ``RunCreate`` (so that
validation errors stay FastAPI's, byte for byte), goes on to the router unchanged (the
body already read is handed on). The route stays declared for OpenAPI and as that path.

``POST /slack/events`` (when Slack is configured) goes straight to the Slack endpoint
(the adapter checks the signature on the raw bytes, then bolt acks), also without the
router; without Slack configured the route answers its 404 problem as before.

Unexpected exceptions propagate as from a route (the app's 500 problem handler in
``ServerErrorMiddleware``); the body-size limit of the app still applies (it wraps ``receive``).
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bot.server.api_runs import RunCreate, _bearer, authorize, router, start_run
from bot.server.problems import Problem, problem_response

PATH = "/api/v1/runs"
SLACK_PATH = "/slack/events"


def route_of(routes: Any, path: str) -> Any:
    """The ``POST path`` route among ``routes`` (``scope["route"]``, the metrics' route label)."""
    return next(r for r in routes if getattr(r, "path", None) == path and "POST" in getattr(r, "methods", ()))


class FastRunStart:
    """ASGI middleware: ``POST /api/v1/runs`` served directly (see the module docs).

    Args:
        app: the rest of the application (the router behind the exception middleware).
        slack_route: the app's ``POST /slack/events`` route (for the metrics' route label).
    """

    def __init__(self, app: ASGIApp, slack_route: Any = None) -> None:
        self.app = app
        self.route = route_of(router.routes, "/runs")
        self.slack_route = slack_route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if path == SLACK_PATH:
            await self._slack(scope, receive, send)
            return
        if path != PATH or not _is_json(scope):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # a disconnect: let the router see it as it would have
                await self.app(scope, _replay(chunks, message, receive), send)
                return
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        raw = b"".join(chunks)
        try:
            body = RunCreate.model_validate_json(raw)
        except ValidationError:  # FastAPI's own 422 (or a dependency's 401 first), unchanged
            await self.app(scope, _replay([raw], None, receive), send)
            return
        scope["route"] = self.route
        request = Request(scope, receive)
        try:
            who = await authorize(request, await _bearer(request), "runs:write")
            response = JSONResponse(await start_run(request.app.state.services, body, who), status_code=201)
        except Problem as p:
            response = problem_response(p, request)
        await response(scope, receive, send)


    async def _slack(self, scope: Scope, receive: Receive, send: Send) -> None:
        svc = getattr(scope["app"].state, "services", None)
        endpoint = getattr(svc, "slack_endpoint", None)
        if endpoint is None:  # not configured: the route's 404 problem
            await self.app(scope, receive, send)
            return
        if self.slack_route is not None:
            scope["route"] = self.slack_route
        response = await endpoint(Request(scope, receive))
        await response(scope, receive, send)


def _is_json(scope: Scope) -> bool:
    """Whether the request says ``Content-Type: application/json`` (what FastAPI parses as JSON;
    anything else goes the router's way)."""
    for name, value in scope["headers"]:
        if name == b"content-type":
            return value.split(b";", 1)[0].strip().lower() == b"application/json"
    return False


def _replay(chunks: list[bytes], last: Message | None, receive: Receive) -> Receive:
    """A ``receive`` that gives the body already read (then ``last``, then the real ``receive``)."""
    pending: list[Message] = [{"type": "http.request", "body": b"".join(chunks), "more_body": last is not None}]
    if last is not None:
        pending.append(last)

    async def again() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return again


__all__ = ["FastRunStart", "route_of"]
