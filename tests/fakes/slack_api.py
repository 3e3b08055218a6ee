"""An in-process fake of the Slack Web API (and Socket Mode) that records every call.

Runs on ``127.0.0.1`` with a random port inside the test's event loop (aiohttp),
so the *real* ``slack_sdk`` ``AsyncWebClient`` can be pointed at it with
``base_url=server.api_url``::

    async with FakeSlackAPI(token="xoxb-test") as slack:
        client = AsyncWebClient(token="xoxb-test", base_url=slack.api_url)

Endpoints (``POST /api/<method>``; arguments are read from the query string, a
form body or a JSON body, as the SDK sends them)
---------------------------------------------------------------------------------
``auth.test``                         the bot's identity (``user_id``, ``bot_id``, ``team_id``)
``chat.postMessage``                  stores the message, returns ``channel`` and a fresh ``ts``
``chat.update``                       replaces a stored message (``message_not_found`` if unknown)
``chat.postEphemeral``                returns a ``message_ts``
``conversations.replies``             the stored messages of a thread (parent first)
``files.getUploadURLExternal``        returns ``upload_url`` (on this server) and ``file_id``
``POST /upload/<file_id>``            receives the bytes (``OK - <length>``)
``files.completeUploadExternal``      shares the uploaded file (``channel_id``, ``thread_ts``)
``files.upload``                      the legacy one-step upload
``assistant.threads.*``               setStatus / setSuggestedPrompts / setTitle → ``ok``
``apps.connections.open``             (app token) a Socket Mode ``ws://`` URL on this server
``POST /response/<name>``             a ``response_url`` receiver (recorded as ``response_url``)
anything else                         ``{"ok": false, "error": "unknown_method"}``

Every call needs ``Authorization: Bearer <token>`` (the bot token; the app token
for ``apps.connections.open``), else ``not_authed`` / ``invalid_auth`` like Slack.

Faults: :meth:`rate_limit` (HTTP 429 + ``Retry-After`` seconds and
``{"ok": false, "error": "ratelimited"}``, as Slack does) and :meth:`fail`
(``{"ok": false, "error": ...}``) for the next ``times`` calls of one method;
``delay`` seconds of latency per call emulate the real service.

Socket Mode: after ``apps.connections.open`` the client connects to
``/socket-mode``, gets ``{"type": "hello"}``; :meth:`socket_send` pushes an
envelope and :attr:`socket_acks` collects what the client sends back
(``{"envelope_id": ...}``).

Recorded calls keep the arguments and whether the token was valid, never the
token itself.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import WSMsgType, web


@dataclass
class ApiCall:
    """One recorded Web API call.

    Attributes:
        method: the API method (``chat.postMessage``) or ``upload`` / ``response_url``.
        args: the arguments (query, form and JSON merged; ``blocks`` given as a
            JSON string are decoded).
        status: the HTTP status answered (429 for a rate-limited call).
        at: ``time.monotonic()`` when the call arrived (seconds).
        response: the JSON answered.
    """

    method: str
    args: dict[str, Any]
    status: int = 200
    at: float = field(default_factory=time.monotonic)
    response: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == 200 and bool(self.response.get("ok", True))


@dataclass
class _Fault:
    method: str
    times: int
    status: int
    error: str
    retry_after: int | None = None


class FakeSlackAPI:
    """Local fake of the Slack Web API. Use as ``async with FakeSlackAPI() as slack:``.

    Args:
        token: the bot token every call must present.
        app_token: the app-level token ``apps.connections.open`` must present.
        bot_user_id, bot_id, team_id: what ``auth.test`` answers.
        delay: seconds of latency added to every call (default none).
    """

    def __init__(
        self,
        *,
        token: str = "xoxb-test-token",
        app_token: str = "xapp-test-token",
        bot_user_id: str = "W111",
        bot_id: str = "B111",
        team_id: str = "T111",
        delay: float = 0.0,
        host: str = "127.0.0.1",
    ) -> None:
        self.token = token
        self.app_token = app_token
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.team_id = team_id
        self.delay = delay
        self.calls: list[ApiCall] = []
        self.messages: dict[tuple[str, str], dict[str, Any]] = {}
        self.uploads: dict[str, bytes] = {}
        self.socket_acks: list[dict[str, Any]] = []
        self._host = host
        self._faults: list[_Fault] = []
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._ts = itertools.count(1)
        self._files = itertools.count(1)
        self._changed = asyncio.Condition()
        self._sockets: list[web.WebSocketResponse] = []
        self._socket_ready = asyncio.Event()

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> FakeSlackAPI:
        """Bind ``127.0.0.1`` on a random free port and start serving. Returns ``self``."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/api/{method}", self._handle_api)
        app.router.add_get("/api/{method}", self._handle_api)
        app.router.add_post("/upload/{file_id}", self._handle_upload)
        app.router.add_post("/response/{name}", self._handle_response_url)
        app.router.add_get("/socket-mode", self._handle_socket)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.25)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self._host, 0))
        self._port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()
        return self

    async def stop(self) -> None:
        """Close Socket Mode connections, stop serving (idempotent)."""
        for ws in list(self._sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeSlackAPI:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        assert self._port is not None, "server not started"
        return f"http://{self._host}:{self._port}"

    @property
    def api_url(self) -> str:
        """The ``base_url`` for ``AsyncWebClient`` (ends with ``/api/``)."""
        return f"{self.url}/api/"

    def response_url(self, name: str = "r1") -> str:
        """A ``response_url`` on this server; posts to it are recorded as method ``response_url``."""
        return f"{self.url}/response/{name}"

    # ------------------------------------------------------------------ scripting
    def rate_limit(self, method: str, *, times: int = 1, retry_after: int = 1) -> None:
        """Answer the next ``times`` calls of ``method`` with 429 and ``Retry-After: retry_after`` (seconds)."""
        self._faults.append(_Fault(method, times, 429, "ratelimited", retry_after))

    def fail(self, method: str, error: str, *, times: int = 1) -> None:
        """Answer the next ``times`` calls of ``method`` with ``{"ok": false, "error": error}``."""
        self._faults.append(_Fault(method, times, 200, error))

    # ------------------------------------------------------------------ inspection
    def calls_to(self, method: str, where: Callable[[ApiCall], bool] | None = None) -> list[ApiCall]:
        """Recorded calls of ``method`` (successful or not), optionally filtered."""
        return [c for c in self.calls if c.method == method and (where is None or where(c))]

    async def wait_for(
        self, method: str, n: int = 1, *, where: Callable[[ApiCall], bool] | None = None, timeout: float = 10.0
    ) -> list[ApiCall]:
        """Wait until at least ``n`` successful calls of ``method`` match; returns them all.

        Raises:
            TimeoutError: fewer arrived within ``timeout`` seconds.
        """
        async with asyncio.timeout(timeout):
            async with self._changed:
                while True:
                    got = [c for c in self.calls_to(method, where) if c.ok]
                    if len(got) >= n:
                        return got
                    await self._changed.wait()

    def thread(self, channel: str, thread_ts: str) -> list[dict[str, Any]]:
        """The stored messages of a thread (the parent, if stored, first), in post order."""
        return [
            m for (c, ts), m in self.messages.items() if c == channel and (ts == thread_ts or m.get("thread_ts") == thread_ts)
        ]

    # ------------------------------------------------------------------ socket mode
    async def socket_send(self, envelope: dict[str, Any], *, timeout: float = 10.0) -> None:
        """Send a Socket Mode envelope to the connected client (waits for a connection)."""
        async with asyncio.timeout(timeout):
            await self._socket_ready.wait()
        await self._sockets[-1].send_str(json.dumps(envelope))

    async def wait_socket_ack(self, envelope_id: str, *, timeout: float = 10.0) -> dict[str, Any]:
        """Wait for the client's ack of ``envelope_id``; returns it."""
        async with asyncio.timeout(timeout):
            async with self._changed:
                while True:
                    for a in self.socket_acks:
                        if a.get("envelope_id") == envelope_id:
                            return a
                    await self._changed.wait()

    # ------------------------------------------------------------------ handlers
    async def _record(self, call: ApiCall) -> None:
        self.calls.append(call)
        async with self._changed:
            self._changed.notify_all()

    def _fault_for(self, method: str) -> _Fault | None:
        for f in self._faults:
            if f.method == method and f.times > 0:
                f.times -= 1
                return f
        return None

    async def _args(self, request: web.Request) -> dict[str, Any]:
        args: dict[str, Any] = dict(request.query)
        ctype = request.content_type
        if ctype.startswith("multipart/"):  # legacy files.upload with a file part
            for k, v in (await request.post()).items():
                args[k] = v if isinstance(v, str) else f"<file {len(v.file.read())} bytes>"
        else:
            raw = await request.read()
            if raw and ctype == "application/json":
                args.update(json.loads(raw))
            elif raw:
                args.update(dict(parse_qsl(raw.decode(), keep_blank_values=True)))
        for k in ("blocks", "attachments", "files", "prompts"):
            v = args.get(k)
            if isinstance(v, str) and v[:1] in "[{":
                args[k] = json.loads(v)
        args.pop("token", None)
        return args

    async def _handle_api(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"]
        args = await self._args(request)
        if self.delay:
            await asyncio.sleep(self.delay)
        fault = self._fault_for(method)
        if fault is not None:
            body = {"ok": False, "error": fault.error}
            headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
            await self._record(ApiCall(method, args, fault.status, response=body))
            return web.json_response(body, status=fault.status, headers=headers)
        auth = request.headers.get("Authorization", "")
        expected = self.app_token if method == "apps.connections.open" else self.token
        if not auth.startswith("Bearer "):
            body = {"ok": False, "error": "not_authed"}
        elif auth.removeprefix("Bearer ") != expected:
            body = {"ok": False, "error": "invalid_auth"}
        else:
            body = self._answer(method, args)
        await self._record(ApiCall(method, args, 200, response=body))
        return web.json_response(body)

    def _next_ts(self) -> str:
        return f"{int(time.time())}.{next(self._ts):06d}"

    def _answer(self, method: str, a: dict[str, Any]) -> dict[str, Any]:
        if method == "auth.test":
            return {
                "ok": True,
                "url": "https://baton-test.slack.com/",
                "team": "Baton Test",
                "user": "baton",
                "team_id": self.team_id,
                "user_id": self.bot_user_id,
                "bot_id": self.bot_id,
                "is_enterprise_install": False,
            }
        if method == "chat.postMessage":
            channel = a.get("channel")
            if not channel:
                return {"ok": False, "error": "channel_not_found"}
            if not (a.get("text") or a.get("blocks") or a.get("attachments")):
                return {"ok": False, "error": "no_text"}
            ts = self._next_ts()
            msg = {"type": "message", "user": self.bot_user_id, "bot_id": self.bot_id, "ts": ts, "text": a.get("text", "")}
            for k in ("thread_ts", "blocks", "metadata"):
                if a.get(k):
                    msg[k] = a[k]
            self.messages[(channel, ts)] = msg
            return {"ok": True, "channel": channel, "ts": ts, "message": msg}
        if method == "chat.update":
            key = (a.get("channel"), a.get("ts"))
            if key not in self.messages:
                return {"ok": False, "error": "message_not_found"}
            msg = self.messages[key]
            msg.update({k: a[k] for k in ("text", "blocks") if k in a})
            return {"ok": True, "channel": key[0], "ts": key[1], "text": msg.get("text", ""), "message": msg}
        if method == "chat.postEphemeral":
            return {"ok": True, "message_ts": self._next_ts()}
        if method == "conversations.replies":
            msgs = self.thread(a.get("channel", ""), a.get("ts", ""))
            return {"ok": True, "messages": msgs, "has_more": False}
        if method == "files.getUploadURLExternal":
            fid = f"F{next(self._files):04d}"
            return {"ok": True, "upload_url": f"{self.url}/upload/{fid}", "file_id": fid}
        if method == "files.completeUploadExternal":
            files = a.get("files") or []
            out = [{"id": f["id"], "title": f.get("title"), "size": len(self.uploads.get(f["id"], b""))} for f in files]
            if a.get("channel_id"):
                ts = self._next_ts()
                self.messages[(a["channel_id"], ts)] = {
                    "type": "message",
                    "user": self.bot_user_id,
                    "ts": ts,
                    "text": a.get("initial_comment", ""),
                    "files": out,
                    **({"thread_ts": a["thread_ts"]} if a.get("thread_ts") else {}),
                }
            return {"ok": True, "files": out}
        if method == "files.upload":
            fid = f"F{next(self._files):04d}"
            return {"ok": True, "file": {"id": fid, "title": a.get("title") or a.get("filename")}}
        if method.startswith("assistant.threads."):
            return {"ok": True}
        if method == "apps.connections.open":
            return {"ok": True, "url": f"ws://{self._host}:{self._port}/socket-mode"}
        return {"ok": False, "error": "unknown_method"}

    async def _handle_upload(self, request: web.Request) -> web.StreamResponse:
        fid = request.match_info["file_id"]
        data = await request.read()
        self.uploads[fid] = data
        await self._record(ApiCall("upload", {"file_id": fid, "length": len(data)}))
        return web.Response(text=f"OK - {len(data)}")

    async def _handle_response_url(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        args = json.loads(raw) if raw[:1] == b"{" else dict(parse_qsl(raw.decode()))
        args["_name"] = request.match_info["name"]
        await self._record(ApiCall("response_url", args))
        return web.Response(text="ok")

    async def _handle_socket(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self._sockets.append(ws)
        await ws.send_str(json.dumps({"type": "hello", "num_connections": 1, "connection_info": {"app_id": "A111"}}))
        self._socket_ready.set()
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    self.socket_acks.append(json.loads(msg.data))
                    async with self._changed:
                        self._changed.notify_all()
        finally:
            self._sockets.remove(ws)
            if not self._sockets:
                self._socket_ready.clear()
        return ws
