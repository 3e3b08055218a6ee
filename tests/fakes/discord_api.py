"""An in-process fake of Discord's REST API and gateway that records every call.

Runs on ``127.0.0.1`` with a random port inside the test's event loop (aiohttp),
serving HTTPS as ``discord.com`` and ``gateway.discord.gg`` with a certificate of a
test CA (trustme). The *real* discord.py client reaches it through its own public
``connector`` option: :meth:`FakeDiscordAPI.connector` is an
:class:`aiohttp.TCPConnector` whose resolver sends those two host names to the fake
and which trusts the test CA. Nothing process-wide is patched: discord.py still
requests ``https://discord.com/api/v10/…`` and ``wss://gateway.discord.gg/``::

    async with FakeDiscordAPI(token="bot-token") as api:
        client, _ = build_discord_client(app, settings, connector=api.connector())

REST routes (all under ``/api/v10``; bodies are JSON or multipart with ``payload_json``)
------------------------------------------------------------------------------------------
``GET  /users/@me``                                        the bot user
``GET  /oauth2/applications/@me``                          the application (``id`` = ``application_id``)
``GET  /gateway``, ``/gateway/bot``                        ``{"url": "wss://gateway.discord.gg", ...}``
``PUT/GET /applications/{app}/commands``                   global command bulk overwrite / list
``PUT/GET /applications/{app}/guilds/{guild}/commands``    guild command bulk overwrite / list
``POST /interactions/{id}/{token}/callback``               interaction response; with ``with_response``
                                                           the callback object (``interaction`` + ``resource``)
``POST /webhooks/{app}/{token}``                           follow-up message (``wait=true`` returns it)
``GET/PATCH/DELETE /webhooks/{app}/{token}/messages/{id}`` follow-ups and ``@original``
``POST /channels/{channel}/messages``                      create a message
``GET/PATCH /channels/{channel}/messages/{id}``            read / edit a message
``POST /channels/{channel}/threads``                       start a thread without a message
``POST /channels/{channel}/messages/{id}/threads``         start a thread from a message
                                                           (its id is the message id, as on Discord)

Routes needing the bot token (all but ``/webhooks`` and ``/interactions``) answer
401 without ``Authorization: Bot <token>``; recorded calls keep whether it was
valid (:attr:`Call.authorized`), never the token itself.

Faults: :meth:`fail` answers the next calls of a route with a Discord error
(e.g. 403 *Missing Permissions*); :meth:`rate_limit` answers the next ``times`` calls of one route with 429
and Discord's body and headers (``retry_after`` seconds, ``X-RateLimit-*``, and a
``Via`` header: discord.py treats a 429 without one as a Cloudflare ban).

Gateway: ``GET /`` (``wss://gateway.discord.gg/``; also ``/gateway-ws``) speaks the gateway protocol with uncompressed text
frames: Hello (op 10) → the client's Identify (op 2, recorded in
:attr:`identifies` without the token) → the frames queued with
:meth:`on_identify` (e.g. READY, GUILD_CREATE) → Heartbeat ACK (op 11) for every
Heartbeat (op 1); :meth:`dispatch` pushes a dispatch frame to the connected client.
Sequence numbers ``s`` are assigned in order. Set :attr:`disallowed_intents` to
close the connection with code 4014 (*Disallowed intent(s)*) when the client asks
for a privileged intent the application has not enabled.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import trustme
import yarl
from aiohttp import WSMsgType, web
from aiohttp.abc import AbstractResolver, ResolveResult

API_PREFIX = "/api/v10"
_FIRST_SNOWFLAKE = 1_300_000_000_000_000_000


DISCORD_HOSTS = ("discord.com", "gateway.discord.gg")
"""The host names discord.py talks to (``Route.BASE`` and ``DiscordWebSocket.DEFAULT_GATEWAY``)."""

_CA: trustme.CA | None = None


def test_ca() -> trustme.CA:
    """The test CA (made once per process) that signs the fake's certificate."""
    global _CA
    if _CA is None:
        _CA = trustme.CA()
    return _CA


class ToFakeResolver(AbstractResolver):
    """aiohttp resolver: :data:`DISCORD_HOSTS` → ``127.0.0.1:<port>``; any other host fails (no real network)."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self._port = port
        self._host = host

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        if host not in DISCORD_HOSTS:
            raise OSError(f"the fake Discord serves only {', '.join(DISCORD_HOSTS)}, not {host}")
        return [ResolveResult(hostname=host, host=self._host, port=self._port, family=socket.AF_INET, proto=0, flags=socket.AI_NUMERICHOST)]

    async def close(self) -> None:
        return None


def _json(body: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON response with Discord's exact ``Content-Type: application/json`` (discord.py compares it verbatim)."""
    return web.Response(body=json.dumps(body).encode(), status=status, headers={**(headers or {}), "Content-Type": "application/json"})


@dataclass
class Call:
    """One request the fake received.

    Attributes:
        method: HTTP method; ``route``: the route template, e.g.
            ``POST /channels/{channel_id}/messages``; ``params``: the template's values.
        path: the request path (includes interaction tokens, which are test values).
        query: query string; ``json``: the JSON body (or multipart ``payload_json``).
        authorized: the bot token was presented and valid (``None``: route needs none).
        at: ``time.monotonic()`` when it arrived.
    """

    method: str
    route: str
    params: dict[str, str]
    path: str
    query: dict[str, str]
    json: Any
    authorized: bool | None
    at: float = field(default_factory=time.monotonic)


@dataclass
class _Fault:
    route: str
    times: int
    retry_after: float
    status: int = 429
    body: dict[str, Any] | None = None


class FakeDiscordAPI:
    """The fake server. See the module docstring for routes and behaviour.

    Args:
        token: the bot token calls must present (``Authorization: Bot <token>``).
        user_id, username: the bot user (``GET /users/@me``); default matches the
            vendored ``gateway/Ready.json`` fixture.
        application_id: the application id (``GET /oauth2/applications/@me``).
        guild_id: guild id given to threads and messages of channels not registered
            with :meth:`register_channel`.
    """

    def __init__(
        self,
        *,
        token: str = "test-bot-token",
        user_id: str = "344487830824943618",
        username: str = "Baton",
        application_id: str = "344487830824943618",
        guild_id: str = "135197118292819968",
        host: str = "127.0.0.1",
    ) -> None:
        self.token = token
        self.user = {"id": user_id, "username": username, "discriminator": "0", "global_name": None, "avatar": None, "bot": True, "public_flags": 0, "flags": 0}
        self.application_id = application_id
        self.guild_id = guild_id
        self.calls: list[Call] = []
        self.messages: dict[str, dict[str, Any]] = {}
        self.threads: dict[str, dict[str, Any]] = {}
        self.commands: dict[str | None, list[dict[str, Any]]] = {}
        self.identifies: list[dict[str, Any]] = []
        self._channel_guild: dict[str, str | None] = {}
        self._interactions: dict[str, dict[str, Any]] = {}  # token -> {"id", "channel_id", "original"}
        self._faults: list[_Fault] = []
        self._ids = itertools.count(_FIRST_SNOWFLAKE)
        self._host = host
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._changed = asyncio.Condition()
        self._sockets: list[web.WebSocketResponse] = []
        self._seq = itertools.count(1)
        self._on_identify: list[dict[str, Any]] = []
        self.disallowed_intents = 0  # identify with any of these bits → close 4014, like Discord
        self._expected: list[tuple[str, dict[str, str], asyncio.Future[Call]]] = []
        self.gateway_connected = asyncio.Event()

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> FakeDiscordAPI:
        """Bind ``127.0.0.1`` on a random free port and start serving. Returns ``self``."""
        app = web.Application()
        r = app.router
        p = API_PREFIX
        r.add_get(f"{p}/users/@me", self._me)
        r.add_get(f"{p}/oauth2/applications/@me", self._application)
        r.add_get(f"{p}/gateway", self._gateway_info)
        r.add_get(f"{p}/gateway/bot", self._gateway_info)
        r.add_route("*", f"{p}/applications/{{application_id}}/commands", self._commands)
        r.add_route("*", f"{p}/applications/{{application_id}}/guilds/{{guild_id}}/commands", self._commands)
        r.add_post(f"{p}/interactions/{{interaction_id}}/{{token}}/callback", self._callback)
        r.add_post(f"{p}/webhooks/{{application_id}}/{{token}}", self._followup)
        r.add_route("*", f"{p}/webhooks/{{application_id}}/{{token}}/messages/{{message_id}}", self._webhook_message)
        r.add_post(f"{p}/channels/{{channel_id}}/messages", self._create_message)
        r.add_route("*", f"{p}/channels/{{channel_id}}/messages/{{message_id}}", self._channel_message)
        r.add_post(f"{p}/channels/{{channel_id}}/threads", self._thread_without_message)
        r.add_post(f"{p}/channels/{{channel_id}}/messages/{{message_id}}/threads", self._thread_from_message)
        r.add_get("/gateway-ws", self._gateway_ws)
        r.add_get("/", self._gateway_ws)  # wss://gateway.discord.gg/?v=10&encoding=json…
        r.add_route("*", "/{tail:.*}", self._unknown)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.25)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self._host, 0))
        self._port = sock.getsockname()[1]
        cert = test_ca().issue_cert(*DISCORD_HOSTS, self._host)
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(tls)
        await web.SockSite(self._runner, sock, ssl_context=tls).start()
        return self

    def connector(self) -> aiohttp.TCPConnector:
        """A new connector for ``discord.Client(connector=…)``: Discord's hosts resolve to this fake, its CA is trusted.

        discord.py closes the connector with the client, so each client needs its own.
        Must be called with an event loop running.
        """
        assert self._port is not None, "server not started"
        tls = ssl.create_default_context()
        test_ca().configure_trust(tls)
        return aiohttp.TCPConnector(limit=0, resolver=ToFakeResolver(self._port, self._host), ssl=tls)

    async def stop(self) -> None:
        """Close gateway connections and stop serving (idempotent)."""
        for ws in list(self._sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeDiscordAPI:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        """``https://127.0.0.1:<port>`` (its certificate is signed by :func:`test_ca`)."""
        assert self._port is not None, "server not started"
        return f"https://{self._host}:{self._port}"

    @property
    def api_base(self) -> str:
        """The REST base on this server (``…/api/v10``)."""
        return f"{self.url}{API_PREFIX}"

    @property
    def gateway_url(self) -> str:
        """The gateway websocket URL (``wss://…/gateway-ws``)."""
        return f"wss://{self._host}:{self._port}/gateway-ws"

    # ------------------------------------------------------------------ test helpers
    def snowflake(self) -> str:
        """A fresh, increasing snowflake id (as a string, like Discord's)."""
        return str(next(self._ids))

    def register_channel(self, channel_id: str, guild_id: str | None) -> None:
        """Tell the fake which guild a channel belongs to (``None``: a DM)."""
        self._channel_guild[str(channel_id)] = guild_id

    def register_interaction(self, payload: dict[str, Any]) -> None:
        """Remember an INTERACTION_CREATE ``d`` so its response messages carry its channel."""
        channel_id = str(payload.get("channel_id") or payload.get("channel", {}).get("id") or "0")
        self._interactions[payload["token"]] = {"id": str(payload["id"]), "channel_id": channel_id, "original": None}
        self._channel_guild.setdefault(channel_id, payload.get("guild_id"))

    def register_message(self, payload: dict[str, Any]) -> None:
        """Store a message that exists on "Discord" without the bot posting it (a MESSAGE_CREATE ``d``)."""
        msg = dict(payload)
        msg["channel_id"] = str(msg["channel_id"])
        self.messages[str(msg["id"])] = msg
        self._channel_guild.setdefault(msg["channel_id"], msg.get("guild_id"))

    def rate_limit(self, route: str, *, times: int = 1, retry_after: float = 0.05) -> None:
        """Answer the next ``times`` calls of ``route`` (e.g. ``"PATCH /channels/{channel_id}/messages/{message_id}"``) with 429."""
        self._faults.append(_Fault(route, times, retry_after))

    def fail(self, route: str, *, status: int = 403, code: int = 50013, message: str = "Missing Permissions", times: int = 1) -> None:
        """Answer the next ``times`` calls of ``route`` with a Discord error (default 403 *Missing Permissions*)."""
        self._faults.append(_Fault(route, times, 0.0, status, {"message": message, "code": code}))

    def find(self, route: str, **params: str) -> list[Call]:
        """Recorded calls of ``route`` whose template values include ``params``."""
        return [c for c in self.calls if c.route == route and all(c.params.get(k) == str(v) for k, v in params.items())]

    async def wait_for(self, pred: Callable[[Call], bool], *, count: int = 1, timeout: float = 10.0) -> list[Call]:
        """Wait until ``count`` recorded calls satisfy ``pred``; returns them.

        Raises:
            TimeoutError: fewer arrived within ``timeout`` seconds (the message lists what did arrive).
        """
        try:
            async with asyncio.timeout(timeout):
                async with self._changed:
                    while True:
                        hits = [c for c in self.calls if pred(c)]
                        if len(hits) >= count:
                            return hits
                        await self._changed.wait()
        except TimeoutError:
            seen = "\n  ".join(f"{c.method} {c.path}" for c in self.calls)
            raise TimeoutError(f"expected {count} matching call(s); received:\n  {seen}") from None

    async def wait_route(self, route: str, *, count: int = 1, timeout: float = 10.0, **params: str) -> list[Call]:
        """:meth:`wait_for` calls of one route (with template values ``params``)."""
        return await self.wait_for(
            lambda c: c.route == route and all(c.params.get(k) == str(v) for k, v in params.items()), count=count, timeout=timeout
        )

    def original_message(self, token: str) -> dict[str, Any] | None:
        """The current state of an interaction's response message (``@original``), if one was created."""
        inter = self._interactions.get(token)
        return self.messages.get(inter["original"]) if inter and inter["original"] else None

    def expect(self, route: str, **params: str) -> asyncio.Future[Call]:
        """A future resolved by the next call of ``route`` with template values ``params`` (cheap; for benchmarks)."""
        fut: asyncio.Future[Call] = asyncio.get_running_loop().create_future()
        self._expected.append((route, {k: str(v) for k, v in params.items()}, fut))
        return fut

    def channel_messages(self, channel_id: str) -> list[dict[str, Any]]:
        """Current state of the messages in one channel (or thread), oldest first."""
        return [m for m in self.messages.values() if m["channel_id"] == str(channel_id)]

    # ------------------------------------------------------------------ gateway helpers
    def on_identify(self, *frames: dict[str, Any]) -> None:
        """Frames the gateway sends after a client identifies (e.g. READY, GUILD_CREATE)."""
        self._on_identify.extend(frames)

    async def wait_identify(self, *, timeout: float = 10.0) -> dict[str, Any]:
        """Wait for the first Identify (op 2); returns its ``d`` (``token_valid`` instead of the token)."""
        async with asyncio.timeout(timeout):
            async with self._changed:
                await self._changed.wait_for(lambda: bool(self.identifies))
        return self.identifies[0]

    async def dispatch(self, frame: dict[str, Any]) -> None:
        """Send one dispatch frame (``{"op": 0, "t": ..., "d": ...}``) to every connected client."""
        out = dict(frame, op=0, s=next(self._seq))
        for ws in list(self._sockets):
            await ws.send_str(json.dumps(out))

    async def _gateway_ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._sockets.append(ws)
        self.gateway_connected.set()
        try:
            await ws.send_str(json.dumps({"op": 10, "d": {"heartbeat_interval": 41250}, "s": None, "t": None}))
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                frame = json.loads(msg.data)
                op = frame.get("op")
                if op == 1:
                    await ws.send_str(json.dumps({"op": 11, "d": None, "s": None, "t": None}))
                elif op == 2:
                    d = dict(frame.get("d") or {})
                    d["token_valid"] = d.pop("token", None) == self.token
                    self.identifies.append(d)
                    async with self._changed:
                        self._changed.notify_all()
                    if int(d.get("intents") or 0) & self.disallowed_intents:
                        await ws.close(code=4014, message=b"Disallowed intent(s).")
                        break
                    for f in self._on_identify:
                        await ws.send_str(json.dumps(dict(f, op=0, s=next(self._seq))))
        finally:
            self._sockets.remove(ws)
        return ws

    # ------------------------------------------------------------------ plumbing
    async def _record(self, request: web.Request, *, auth: bool) -> tuple[Call, web.Response | None]:
        """Record the call; returns a fault or auth-error response to send instead, if any."""
        info = request.match_info
        template = info.route.resource.canonical if info.route.resource else request.path  # type: ignore[union-attr]
        route = f"{request.method} {template.removeprefix(API_PREFIX)}"
        body: Any = None
        if request.body_exists:
            ctype = request.content_type
            if ctype == "application/json":
                body = await request.json()
            elif ctype.startswith("multipart/"):
                form = await request.post()
                raw = form.get("payload_json")
                body = json.loads(raw) if isinstance(raw, str) else None
            else:
                text = await request.text()
                body = json.loads(text) if text.strip().startswith(("{", "[")) else text
        authorized: bool | None = None
        if auth:
            authorized = request.headers.get("Authorization") == f"Bot {self.token}"
        call = Call(request.method, route, dict(info), request.path, dict(request.query), body, authorized)
        self.calls.append(call)
        for item in list(self._expected):
            route_, params_, fut = item
            if route_ == route and all(call.params.get(k) == v for k, v in params_.items()):
                self._expected.remove(item)
                if not fut.done():
                    fut.set_result(call)
        async with self._changed:
            self._changed.notify_all()
        if auth and not authorized:
            return call, _json({"message": "401: Unauthorized", "code": 0}, status=401)
        for fault in self._faults:
            if fault.route == route and fault.times > 0:
                fault.times -= 1
                if fault.status != 429:
                    return call, _json(fault.body, status=fault.status)
                headers = {
                    "Retry-After": str(max(1, round(fault.retry_after))),
                    "X-RateLimit-Limit": "5",
                    "X-RateLimit-Remaining": "0",
                    "X-RateLimit-Reset-After": f"{fault.retry_after:.3f}",
                    "X-RateLimit-Bucket": "fake-bucket",
                    "X-RateLimit-Scope": "user",
                    "Via": "1.1 google",
                }
                body429 = {"message": "You are being rate limited.", "retry_after": fault.retry_after, "global": False}
                return call, _json(body429, status=429, headers=headers)
        return call, None

    def _message(self, channel_id: str, body: dict[str, Any] | None, *, webhook: bool = False, message_id: str | None = None) -> dict[str, Any]:
        body = body or {}
        now = datetime.now(UTC).isoformat()
        msg: dict[str, Any] = {
            "id": message_id or self.snowflake(),
            "channel_id": str(channel_id),
            "type": 0,
            "content": body.get("content") or "",
            "author": dict(self.user),
            "timestamp": now,
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": [],
            "embeds": body.get("embeds") or [],
            "components": body.get("components") or [],
            "pinned": False,
            "flags": int(body.get("flags") or 0),
            "allowed_mentions": body.get("allowed_mentions"),
        }
        guild = self._channel_guild.get(str(channel_id), self.guild_id)
        if guild is not None:
            msg["guild_id"] = guild
        if webhook:
            msg["webhook_id"] = self.application_id
            msg["application_id"] = self.application_id
        self.messages[msg["id"]] = msg
        return msg

    def _edit(self, message_id: str, body: dict[str, Any] | None) -> dict[str, Any] | None:
        msg = self.messages.get(message_id)
        if msg is None:
            return None
        body = body or {}
        for k in ("content", "embeds", "components", "flags"):
            if k in body and body[k] is not None:
                msg[k] = body[k]
        msg["edited_timestamp"] = datetime.now(UTC).isoformat()
        return msg

    @staticmethod
    def _not_found(what: str) -> web.Response:
        return _json({"message": f"Unknown {what}", "code": 10008}, status=404)

    # ------------------------------------------------------------------ handlers
    async def _unknown(self, request: web.Request) -> web.Response:
        await self._record(request, auth=False)
        return _json({"message": "404: Not Found", "code": 0}, status=404)

    async def _me(self, request: web.Request) -> web.Response:
        _, err = await self._record(request, auth=True)
        return err or _json(self.user)

    async def _application(self, request: web.Request) -> web.Response:
        _, err = await self._record(request, auth=True)
        if err:
            return err
        return _json(
            {
                "id": self.application_id,
                "name": self.user["username"],
                "icon": None,
                "description": "",
                "bot_public": False,
                "bot_require_code_grant": False,
                "owner": {"id": "1", "username": "owner", "discriminator": "0", "avatar": None},
                "verify_key": "0" * 64,
                "flags": 0,
                "team": None,
            }
        )

    async def _gateway_info(self, request: web.Request) -> web.Response:
        _, err = await self._record(request, auth=request.path.endswith("/bot"))
        if err:
            return err
        limit = {"total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1}
        return _json({"url": "wss://gateway.discord.gg", "shards": 1, "session_start_limit": limit})

    async def _commands(self, request: web.Request) -> web.Response:
        call, err = await self._record(request, auth=True)
        if err:
            return err
        guild = call.params.get("guild_id")
        if request.method == "PUT":
            stored = []
            for cmd in call.json or []:
                c = dict(cmd, id=self.snowflake(), application_id=self.application_id, version=self.snowflake())
                if guild:
                    c["guild_id"] = guild
                c.setdefault("type", 1)
                c.setdefault("description", "")
                stored.append(c)
            self.commands[guild] = stored
        return _json(self.commands.get(guild, []))

    async def _callback(self, request: web.Request) -> web.Response:
        call, err = await self._record(request, auth=False)
        if err:
            return err
        token = call.params["token"]
        inter = self._interactions.setdefault(token, {"id": call.params["interaction_id"], "channel_id": "0", "original": None})
        body = call.json or {}
        kind = int(body.get("type", 0))
        data = body.get("data") or {}
        flags = int(data.get("flags") or 0)
        resource: dict[str, Any] = {"type": kind}
        response_id = None
        if kind in (4, 5):  # CHANNEL_MESSAGE_WITH_SOURCE, DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE
            msg = self._message(inter["channel_id"], {"content": data.get("content"), "flags": flags | (128 if kind == 5 else 0), "components": data.get("components")}, webhook=True)
            inter["original"] = msg["id"]
            resource["message"] = msg
            response_id = msg["id"]
        if "with_response" not in call.query:
            return web.Response(status=204)
        return _json(
            {
                "interaction": {
                    "id": inter["id"],
                    "type": 2,
                    "response_message_id": response_id,
                    "response_message_loading": kind == 5,
                    "response_message_ephemeral": bool(flags & 64),
                },
                "resource": resource,
            }
        )

    async def _followup(self, request: web.Request) -> web.Response:
        call, err = await self._record(request, auth=False)
        if err:
            return err
        inter = self._interactions.get(call.params["token"])
        if inter is None:
            return _json({"message": "Unknown Webhook", "code": 10015}, status=404)
        msg = self._message(inter["channel_id"], call.json, webhook=True)
        if request.query.get("wait") in ("true", "1", "True"):
            return _json(msg)
        return web.Response(status=204)

    async def _webhook_message(self, request: web.Request) -> web.Response:
        call, err = await self._record(request, auth=False)
        if err:
            return err
        inter = self._interactions.get(call.params["token"])
        if inter is None:
            return _json({"message": "Unknown Webhook", "code": 10015}, status=404)
        mid = call.params["message_id"]
        if mid == "@original":
            mid = inter["original"]
        if mid is None or mid not in self.messages:
            return self._not_found("Message")
        if request.method == "DELETE":
            self.messages.pop(mid)
            return web.Response(status=204)
        if request.method == "PATCH":
            msg = self._edit(mid, call.json)
            msg["flags"] = int(msg.get("flags") or 0) & ~128  # no longer "thinking"  # type: ignore[index]
        return _json(self.messages[mid])

    async def _create_message(self, request: web.Request) -> web.Response:
        call, err = await self._record(request, auth=True)
        if err:
            return err
        return _json(self._message(call.params["channel_id"], call.json))

    async def _channel_message(self, request: web.Request) -> web.Response:
        call, err = await self._record(request, auth=True)
        if err:
            return err
        mid = call.params["message_id"]
        msg = self.messages.get(mid)
        if msg is None or msg["channel_id"] != call.params["channel_id"]:
            return self._not_found("Message")
        if request.method == "PATCH":
            msg = self._edit(mid, call.json)
        elif request.method == "DELETE":
            self.messages.pop(mid)
            return web.Response(status=204)
        return _json(msg)

    def _thread(self, parent: str, thread_id: str, body: dict[str, Any] | None) -> dict[str, Any]:
        body = body or {}
        guild = self._channel_guild.get(parent, self.guild_id)
        thread = {
            "id": thread_id,
            "guild_id": guild,
            "parent_id": parent,
            "owner_id": self.user["id"],
            "name": body.get("name", ""),
            "type": int(body.get("type") or 11),
            "last_message_id": None,
            "message_count": 0,
            "member_count": 1,
            "rate_limit_per_user": int(body.get("rate_limit_per_user") or 0),
            "flags": 0,
            "thread_metadata": {
                "archived": False,
                "auto_archive_duration": int(body.get("auto_archive_duration") or 1440),
                "archive_timestamp": datetime.now(UTC).isoformat(),
                "locked": False,
            },
            "total_message_sent": 0,
        }
        self.threads[thread_id] = thread
        self._channel_guild[thread_id] = guild
        return thread

    async def _thread_without_message(self, request: web.Request) -> web.Response:
        call, err = await self._record(request, auth=True)
        if err:
            return err
        return _json(self._thread(call.params["channel_id"], self.snowflake(), call.json), status=201)

    async def _thread_from_message(self, request: web.Request) -> web.Response:
        call, err = await self._record(request, auth=True)
        if err:
            return err
        mid = call.params["message_id"]
        if mid not in self.messages:
            return self._not_found("Message")
        return _json(self._thread(call.params["channel_id"], mid, call.json), status=201)


class ConnectProxy:
    """An HTTP ``CONNECT`` proxy on ``127.0.0.1`` whose every tunnel leads to ``api`` (the fake
    "is" discord.com and gateway.discord.gg): what ``BATON_DISCORD_PROXY`` reaches in tests,
    including from another process (which trusts the test CA through ``SSL_CERT_FILE``,
    see :meth:`write_ca`). :attr:`tunnels` records the ``host:port`` each tunnel asked for."""

    def __init__(self, api: FakeDiscordAPI) -> None:
        self.api = api
        self.tunnels: list[str] = []
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        assert self._server is not None, "proxy not started"
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    @staticmethod
    def write_ca(path: Path) -> Path:
        """Write the test CA's certificate (PEM) to ``path`` (for ``SSL_CERT_FILE``); returns it."""
        test_ca().cert_pem.write_to_path(str(path))
        return path

    async def __aenter__(self) -> ConnectProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        for t in list(self._pipes):
            t.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._pipes.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            method, where, _ = head.split(b"\r\n", 1)[0].decode().split(" ", 2)
            if method != "CONNECT":
                writer.write(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n")
                return
            self.tunnels.append(where)
            target = yarl.URL(self.api.url)
            up_reader, up_writer = await asyncio.open_connection(target.host, target.port)
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            self._pipes.discard(task)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()
