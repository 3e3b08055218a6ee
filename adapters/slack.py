"""The Slack adapter: bolt-python's ``AsyncApp`` in front of Baton's core.

Threads are sessions: an ``app_mention`` or a DM starts or continues the session
``(slack, channel, thread_ts or ts)``; replies, the live status message and the
result always go to that thread; replies in a thread Baton takes part in
continue it without a mention. Events are acked at once and handed to the core
in a kept task after their ``event_id`` is recorded (redeliveries are dropped,
also across restarts). Slash command ``/baton`` answers in a new thread; buttons
under a failed run's result retry the failed step or show the run's log, and a
step waiting for approval gets Approve / Reject buttons in the status message.

Use::

    settings = SlackSettings()                      # BATON_SLACK_* environment
    app = await App.start(baton_settings, {})        # or {"slack": SlackOutlet.from_settings(settings)}
    try:
        await serve_slack(app, settings)            # HTTP; socket_mode=True for Socket Mode
    finally:
        await app.aclose()

Only this package imports ``slack_bolt`` / ``slack_sdk``. Secrets are
:class:`pydantic.SecretStr`: they are never logged, echoed or stored.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import socket
import time
import weakref
from typing import TYPE_CHECKING, Any

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from adapters._slack_listeners import SlackListeners
from adapters._slack_outlet import _DELIVERY_ERRORS, SlackOutlet, SlackRunView, _api_error
from adapters._slack_settings import _ENV, SlackConfigError, SlackSettings, _secret, create_web_client
from adapters._slack_translate import PLATFORM
from bot.tasks import TaskOwner

if TYPE_CHECKING:
    from bot.app import App

__all__ = [
    "PLATFORM",
    "SlackConfigError",
    "RequestRefused",
    "SlackHTTPServer",
    "SlackOutlet",
    "SlackRunView",
    "SlackSettings",
    "build_slack_app",
    "check_request",
    "check_token",
    "create_web_client",
    "serve_slack",
]

log = logging.getLogger("baton.slack")

_SIGNING_SECRETS: weakref.WeakKeyDictionary[AsyncApp, str] = weakref.WeakKeyDictionary()
"""bolt app → its signing secret, so :class:`SlackHTTPServer` can check requests before bolt parses them."""

_BOLT_UNVERIFIED: weakref.WeakSet[AsyncApp] = weakref.WeakSet()
"""bolt apps :func:`build_slack_app` built without bolt's own signature check (Socket Mode, ``verified_upstream``)."""

MAX_CLOCK_SKEW_S = 300
"""Slack's replay window: a request whose timestamp is further than this from now is refused
(https://docs.slack.dev/authentication/verifying-requests-from-slack/)."""


def build_slack_app(
    app: App,
    settings: SlackSettings,
    *,
    socket_mode: bool = False,
    outlet: SlackOutlet | None = None,
    verified_upstream: bool = False,
) -> tuple[AsyncApp, SlackOutlet]:
    """Build the bolt app wired to ``app``; returns ``(bolt app, outlet)``.

    The outlet is, in order: ``outlet``; the ``slack`` outlet ``app`` was started
    with; or a new one (from :func:`create_web_client`) registered as ``app``'s
    ``slack`` outlet so runs report to Slack. Call inside the event loop.

    ``verified_upstream=True``: bolt does not verify signatures a second time, for a
    bolt app served only by :class:`SlackHTTPServer` or
    :func:`adapters.slack_asgi.slack_endpoint`, which verify every request on its raw
    bytes (:func:`check_request`) before bolt sees it (``serve_slack`` and ``baton
    serve`` do); :class:`SlackHTTPServer` always checks such an app's requests.

    The bolt app verifies signatures (HTTP mode, unless ``verified_upstream``), answers ``url_verification``,
    ignores its own bot's events, and acks every request from the listener
    itself (``process_before_response=True``; the work runs in tasks the outlet
    keeps, see :mod:`adapters._slack_listeners`).

    Raises:
        SlackConfigError: a setting is missing or malformed (see :meth:`SlackSettings.check`).
    """
    settings.check(socket_mode=socket_mode)
    registered = app.outlet_for(PLATFORM)
    if outlet is None:
        outlet = registered if isinstance(registered, SlackOutlet) else SlackOutlet.from_settings(settings)
    if registered is not outlet:
        app.add_outlet(outlet)
    bolt = AsyncApp(
        name="baton",
        logger=logging.getLogger("baton.slack.bolt"),
        client=outlet.client,
        signing_secret=_secret(settings.signing_secret),
        process_before_response=True,
        request_verification_enabled=not (socket_mode or verified_upstream),
    )
    SlackListeners(app, outlet, command=settings.command, assistant=settings.assistant).register(bolt)
    if not socket_mode:
        _SIGNING_SECRETS[bolt] = _secret(settings.signing_secret)
    if socket_mode or verified_upstream:
        _BOLT_UNVERIFIED.add(bolt)
    return bolt, outlet


class RequestRefused(Exception):
    """A request refused before bolt sees it: ``status`` (401 unsigned/forged/stale, 400 malformed) and a reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def check_request(secret: str, body: bytes, headers: Any, *, now: float | None = None) -> str:
    """Verify a Slack request on its raw bytes, then check that it can be parsed; returns the body text.

    Order (Slack's rule: authenticate before you parse): the ``X-Slack-Request-Timestamp``
    must be an integer within :data:`MAX_CLOCK_SKEW_S` of ``now`` and ``X-Slack-Signature``
    must equal ``v0=hex(HMAC-SHA256(secret, b"v0:" + ts + b":" + body))`` over the bytes as
    received; only then is the body decoded (UTF-8) and, for JSON and ``payload=`` form
    bodies, checked to be a JSON object.

    Raises:
        RequestRefused: 401 for a missing, malformed, stale or wrong signature; 400 for a
            signed body that is not UTF-8, not JSON, or not a JSON object.
    """
    ts = headers.get("X-Slack-Request-Timestamp")
    sig = headers.get("X-Slack-Signature")
    if not ts or not sig:
        raise RequestRefused(401, "unsigned request (no X-Slack-Signature / X-Slack-Request-Timestamp)")
    if not ts.isascii() or not ts.isdigit():
        raise RequestRefused(401, "malformed X-Slack-Request-Timestamp")
    if abs((time.time() if now is None else now) - int(ts)) > MAX_CLOCK_SKEW_S:
        raise RequestRefused(401, "stale X-Slack-Request-Timestamp")
    expected = "v0=" + hmac.new(secret.encode(), b"v0:" + ts.encode() + b":" + body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), sig.encode("utf-8", "replace")):
        raise RequestRefused(401, "bad signature")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise RequestRefused(400, "body is not UTF-8") from None
    ctype = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
    raw: str | None = text if ctype == "application/json" else None
    if ctype == "application/x-www-form-urlencoded":
        from urllib.parse import parse_qs

        raw = (parse_qs(text).get("payload") or [None])[0]
    if raw is not None:
        try:
            parsed = json.loads(raw)
        except ValueError:
            raise RequestRefused(400, "body is not valid JSON") from None
        if not isinstance(parsed, dict):
            raise RequestRefused(400, f"body is JSON {type(parsed).__name__}, not an object")
    return text


class SlackHTTPServer:
    """Serves a bolt app's Events API / interactivity / slash-command endpoint over HTTP (aiohttp).

    ``POST <path>``: the signature is checked on the raw bytes first, then the
    body's shape (:func:`check_request`); an unsigned, forged or stale request
    gets 401 and a malformed one 400, each with one log line and without reaching
    bolt. The rest goes to ``bolt.async_dispatch``. ``GET /healthz`` answers ``ok``.
    Use as ``async with SlackHTTPServer(bolt, host="127.0.0.1", port=0) as srv: srv.url``.

    Args:
        port: 0 picks a free port (see :attr:`port` after start).
        signing_secret: default: the one :func:`build_slack_app` built ``bolt`` with.

    Raises:
        ValueError: no signing secret is known and ``bolt`` does not check signatures itself
            (it would serve unauthenticated requests).
    """

    def __init__(
        self, bolt: AsyncApp, *, host: str = "127.0.0.1", port: int = 3000, path: str = "/slack/events", signing_secret: str | None = None
    ) -> None:
        self.bolt = bolt
        self.signing_secret = signing_secret or _SIGNING_SECRETS.get(bolt)
        if not self.signing_secret and bolt in _BOLT_UNVERIFIED:
            raise ValueError("SlackHTTPServer: no signing secret for a bolt app that does not verify requests itself")
        self.host = host
        self.port = port
        self.path = path
        self._runner: web.AppRunner | None = None

    def web_app(self) -> web.Application:
        """The aiohttp application (one route per endpoint)."""
        web_app = web.Application()
        web_app.router.add_post(self.path, self._dispatch)
        web_app.router.add_get("/healthz", self._health)
        return web_app

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        if self.signing_secret:
            body = await request.read()
            try:
                check_request(self.signing_secret, body, request.headers)
            except RequestRefused as e:
                log.warning("Slack: refused a request from %s: %s (%d)", request.remote, e.reason, e.status)
                return web.json_response({"error": e.reason}, status=e.status)
        bolt_resp = await self.bolt.async_dispatch(await to_bolt_request(request))
        return await to_aiohttp_response(bolt_resp)

    async def _health(self, request: web.Request) -> web.StreamResponse:
        return web.Response(text="ok")

    async def start(self) -> SlackHTTPServer:
        """Bind and serve; returns ``self`` (with the bound :attr:`port`)."""
        self._runner = web.AppRunner(self.web_app(), access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError:
            sock.close()
            await self._runner.cleanup()
            raise
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock, backlog=512).start()
        return self

    async def stop(self) -> None:
        """Stop accepting requests (idempotent)."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def url(self) -> str:
        """``http://host:port/path`` of the endpoint."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}{self.path}"

    async def __aenter__(self) -> SlackHTTPServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def check_token(client: AsyncWebClient) -> dict[str, Any]:
    """``auth.test``: the bot's identity (``user_id``, ``bot_id``, ``team``).

    Raises:
        SlackConfigError: Slack rejected the token (the error code, never the token).
    """
    try:
        resp = await client.auth_test()
    except SlackApiError as e:
        raise SlackConfigError(f"Slack rejected {_ENV}BOT_TOKEN: {_api_error(e)}") from None
    except _DELIVERY_ERRORS as e:
        raise SlackConfigError(f"cannot reach the Slack Web API at {client.base_url}: {_api_error(e)}") from None
    return dict(resp.data) if isinstance(resp.data, dict) else {}


async def serve_slack(app: App, settings: SlackSettings, *, socket_mode: bool = False) -> None:
    """Serve Slack until cancelled: HTTP (Events API endpoint) or Socket Mode.

    Start-up: checks the settings, the token (``auth.test``), resumes the
    unfinished runs of Slack threads, then listens on ``settings.host:port``
    ``settings.path`` (HTTP) or connects with the app token (Socket Mode).
    Shutdown (cancellation): stops taking events, gives acked events up to
    ``shutdown_grace`` seconds to reach the core, and, when this function
    created the outlet, stops the bot's lanes and runs (they stay resumable, as
    in ``App.aclose``) before closing the outlet's HTTP session. The caller
    still closes ``app``. ``CancelledError`` propagates.

    Raises:
        SlackConfigError: missing/malformed settings or a token Slack rejects.
        OSError: the port cannot be bound.
    """
    settings.check(socket_mode=socket_mode)
    owned = not isinstance(app.outlet_for(PLATFORM), SlackOutlet)
    bolt, outlet = build_slack_app(app, settings, socket_mode=socket_mode, verified_upstream=not socket_mode)
    try:
        me = await check_token(outlet.client)
        log.info("Slack: connected as %s in %s", me.get("user"), me.get("team"))
        resumed = await app.bot.resume_unfinished({PLATFORM})
        if resumed:
            log.info("Slack: resumed runs %s", ", ".join(f"#{r}" for r in resumed))
        if socket_mode:
            await _serve_socket_mode(bolt, settings)
        else:
            async with SlackHTTPServer(bolt, host=settings.host, port=settings.port, path=settings.path) as srv:
                log.info("Slack: serving events at %s", srv.url)
                await asyncio.Event().wait()
    finally:
        await _finish(TaskOwner("slack", logger=log).start(_wind_down(app, outlet, settings, owned), name="slack-wind-down"))


async def _serve_socket_mode(bolt: AsyncApp, settings: SlackSettings) -> None:
    from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

    handler = AsyncSocketModeHandler(bolt, _secret(settings.app_token), logger=logging.getLogger("baton.slack.socket"))
    await handler.connect_async()
    log.info("Slack: connected over Socket Mode")
    try:
        await asyncio.Event().wait()
    finally:
        await _finish(TaskOwner("slack", logger=log).start(handler.close_async(), name="slack-socket-close"))


async def _finish(task: asyncio.Task[Any]) -> None:
    """Await must-finish cleanup to its end even if cancelled meanwhile; then re-raise that cancellation."""
    cancelled = False
    while True:
        try:
            await asyncio.shield(task)
            break
        except asyncio.CancelledError:
            if task.done():
                raise
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError


async def _wind_down(app: App, outlet: SlackOutlet, settings: SlackSettings, owned: bool) -> None:
    try:
        await asyncio.wait_for(outlet.drain(), timeout=settings.shutdown_grace)
    except TimeoutError:
        log.warning("Slack: %d event(s) still being handed over at shutdown", outlet.pending)
    if owned:
        try:
            await app.bot.aclose()
        finally:
            await app.manager.shutdown()
    await outlet.aclose(timeout=0)
