"""An in-process fake LLM server speaking the OpenAI and Anthropic wire formats.

Runs on ``127.0.0.1`` with a random port inside the test's event loop (aiohttp),
so the *real* ``openai`` / ``anthropic`` SDKs can be pointed at it::

    async with FakeLLMServer(reply="Hello there") as server:
        client = openai.AsyncOpenAI(api_key="sk-test", base_url=server.openai_base_url)
        client = anthropic.AsyncAnthropic(api_key="sk-ant-test", base_url=server.anthropic_base_url)

Endpoints
---------
``POST /v1/chat/completions``
    OpenAI Chat Completions. Non-streaming returns a ``chat.completion`` object;
    ``"stream": true`` returns SSE ``data: {chat.completion.chunk}`` lines: a first
    chunk with ``delta.role``, one chunk per reply token, a chunk with
    ``finish_reason`` and, when ``stream_options.include_usage`` is true, a final
    chunk with ``choices: []`` and ``usage`` (earlier chunks then carry
    ``"usage": null``, as the real API does), then ``data: [DONE]``.
``POST /v1/messages``
    Anthropic Messages. Non-streaming returns a ``message`` object; streaming
    returns the SSE events ``message_start``, ``content_block_start``, ``ping``,
    ``content_block_delta`` (``text_delta``) per token, ``content_block_stop``,
    ``message_delta`` (``stop_reason`` + cumulative ``usage.output_tokens``) and
    ``message_stop``.

Replies are split into "tokens" of one whitespace-delimited word each (with its
trailing whitespace); usage counts are computed the same way (input tokens are
the words across ``system`` and all message texts) unless ``usage=`` overrides.
``max_tokens`` / ``max_completion_tokens`` truncate the reply and yield
``finish_reason="length"`` / ``stop_reason="max_tokens"``.

Scripting
---------
* ``reply``: a string, or a function ``(RecordedRequest) -> str`` (sync or
  async) — e.g. :func:`echo_last_user`, or one that quotes an earlier turn so a
  test can prove the history reached the server. ``queue_replies()`` gives
  one-shot replies consumed before ``reply``.
* Faults (consumed in FIFO order, each ``times`` times, optionally only for one
  ``api``): :meth:`rate_limit` (429 + ``Retry-After``), :meth:`server_error`,
  :meth:`auth_error` (401), :meth:`context_length_error` (400 in each vendor's
  real error shape), :meth:`cut_stream` (send N tokens then drop the
  connection or end the body early), :meth:`stall` (delay before responding),
  :meth:`stream_error` (an in-stream error event after N tokens), and the general
  :meth:`fail` (any status, optional ``error_type`` / ``error_code`` /
  ``Retry-After``) or :meth:`inject` (a :class:`Fault`).
* Pacing/usage: ``chunk_delay_s``, ``first_chunk_delay_s``, ``usage=(in, out)``,
  ``openai_usage_chunk=False`` (a server that ignores ``include_usage``).
* :meth:`require_api_key`: reject any other presented key with the vendor's 401.
  The credential is read from ``x-api-key`` or ``Authorization: Bearer`` (the
  anthropic SDK 2.x sends the latter).
* :attr:`requests`: every request received, as :class:`RecordedRequest` (body,
  headers, normalised ``messages`` / ``system`` / ``user_texts``, status, outcome),
  with the server's own timings (``first_byte_s``, ``server_time_s``).

Out of process (``bench/providers.py``, so the server's CPU is not the caller's):
``python -m tests.fakes.llm_server --reply TEXT`` prints its URL on one line and
serves until killed; ``GET /_fake/timings`` returns the last request's timings as
JSON (``{"server_time_s": …, "first_byte_s": …, "status": …}``).

Other suites: ``from tests.fakes.llm_server import FakeLLMServer`` and point a
provider entry's ``base_url`` at ``server.openai_base_url`` (kinds ``openai`` /
``openai_compatible``) or ``server.anthropic_base_url`` (kind ``anthropic``).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import re
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

ApiKind = Literal["openai", "anthropic"]
FaultKind = Literal["status", "context_length", "cut", "stall", "stream_error"]
ReplyFn = Callable[["RecordedRequest"], "str | Awaitable[str]"]

DEFAULT_REPLY = "Hello from the fake LLM server."
_TOKEN_RE = re.compile(r"\s*\S+\s*|\s+")
_WORD_RE = re.compile(r"\S+")


def split_tokens(text: str) -> list[str]:
    """Split ``text`` into the fake server's "tokens": one word plus its trailing whitespace.

    Joining the result gives back ``text`` exactly. Leading whitespace is attached to
    the first word.
    """
    return _TOKEN_RE.findall(text)


def count_tokens(text: str) -> int:
    """Approximate token count the fake server reports: whitespace-delimited words."""
    return len(_WORD_RE.findall(text))


def _flatten_content(content: Any) -> str:
    """Text of an OpenAI/Anthropic message ``content`` (a string or a list of blocks)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for block in content:
            if isinstance(block, Mapping) and isinstance(block.get("text"), str):
                parts.append(block["text"])
            elif isinstance(block, str):
                parts.append(block)
        return "".join(parts)
    return str(content)


@dataclass
class RecordedRequest:
    """One request the fake server received, plus what it did with it.

    ``headers`` keys are lower-case. Times are ``time.perf_counter()`` seconds;
    ``first_byte_s`` / ``server_time_s`` are durations (seconds) measured by the server
    from the moment its handler started, to its first response body write / to its
    last write.
    """

    api: ApiKind
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    received_at: float
    status: int = 200
    outcome: str = "pending"
    reply_text: str | None = None
    first_byte_s: float | None = None
    server_time_s: float | None = None

    @property
    def stream(self) -> bool:
        """Whether the client asked for a streamed response."""
        return bool(self.body.get("stream"))

    @property
    def model(self) -> str | None:
        """The ``model`` field of the request body."""
        model = self.body.get("model")
        return model if isinstance(model, str) else None

    @property
    def max_tokens(self) -> int | None:
        """``max_completion_tokens`` or ``max_tokens`` from the body, if any."""
        for key in ("max_completion_tokens", "max_tokens"):
            value = self.body.get(key)
            if isinstance(value, int):
                return value
        return None

    @property
    def system(self) -> str | None:
        """The system prompt: Anthropic's ``system`` param, or OpenAI system/developer messages joined."""
        if self.api == "anthropic":
            system = self.body.get("system")
            return None if system is None else _flatten_content(system)
        parts = [
            _flatten_content(m.get("content"))
            for m in self.body.get("messages", [])
            if isinstance(m, Mapping) and m.get("role") in ("system", "developer")
        ]
        return "\n\n".join(parts) if parts else None

    @property
    def messages(self) -> list[tuple[str, str]]:
        """Conversation turns as ``(role, text)``, excluding system/developer messages."""
        return [
            (str(m.get("role")), _flatten_content(m.get("content")))
            for m in self.body.get("messages", [])
            if isinstance(m, Mapping) and m.get("role") not in ("system", "developer")
        ]

    @property
    def user_texts(self) -> list[str]:
        """Texts of the user turns, oldest first."""
        return [text for role, text in self.messages if role == "user"]

    @property
    def presented_api_key(self) -> str | None:
        """The credential the client sent (``x-api-key``, else the ``Authorization: Bearer`` value)."""
        if "x-api-key" in self.headers:
            return self.headers["x-api-key"]
        auth = self.headers.get("authorization", "")
        return auth[7:] if auth.lower().startswith("bearer ") else None

    @property
    def input_text(self) -> str:
        """All prompt text (system + every message), used for input token counts."""
        return "\n".join([self.system or "", *(text for _, text in self.messages)])


@dataclass
class Fault:
    """A scripted misbehaviour, consumed by the next ``times`` matching requests.

    ``api`` restricts it to one wire format (``None`` = both). Fields used per kind:

    * ``status``: ``status``, ``message``, ``error_type`` / ``error_code`` (override the
      vendor's ``error.type`` / OpenAI ``error.code``), ``retry_after`` (raw
      ``Retry-After`` value, seconds), ``retry_after_ms`` (``retry-after-ms``, which both
      SDKs honour).
    * ``context_length``: ``limit_tokens``, ``requested_tokens``.
    * ``cut``: ``after_chunks`` reply tokens are sent, then ``cut_mode`` ``"abort"``
      drops the TCP connection mid-body, ``"eof"`` ends the body cleanly but early
      (no final events).
    * ``stall``: sleep ``seconds`` before responding (then respond normally).
    * ``stream_error``: after ``after_chunks`` tokens, an in-stream error event
      (Anthropic ``event: error`` ``overloaded_error``; OpenAI a ``{"error": ...}``
      data line), then the stream ends.
    """

    kind: FaultKind
    times: int = 1
    api: ApiKind | None = None
    status: int = 500
    message: str | None = None
    error_type: str | None = None
    error_code: str | None = None
    retry_after: str | None = None
    retry_after_ms: int | None = None
    limit_tokens: int = 128_000
    requested_tokens: int = 130_000
    after_chunks: int = 0
    cut_mode: Literal["abort", "eof"] = "abort"
    seconds: float = 0.0
    hits: int = field(default=0, init=False)


def echo_last_user(prefix: str = "You said: ") -> ReplyFn:
    """Reply function: ``prefix`` + the text of the last user turn."""

    def reply(req: RecordedRequest) -> str:
        users = req.user_texts
        return prefix + (users[-1] if users else "")

    return reply


def recall_first_user(prefix: str = "Earlier you said: ") -> ReplyFn:
    """Reply function quoting the *first* user turn, proving earlier context reached the server."""

    def reply(req: RecordedRequest) -> str:
        users = req.user_texts
        return prefix + (users[0] if users else "(nothing)")

    return reply


_OPENAI_ERRORS: dict[int, tuple[str, str | None, str]] = {
    # status: (type, code, message) — shapes as returned by api.openai.com
    400: ("invalid_request_error", None, "Invalid request."),
    403: ("invalid_request_error", "unsupported_country_region_territory", "Country, region, or territory not supported."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist or you do not have access to it."),
    429: (
        "requests",
        "rate_limit_exceeded",
        "Rate limit reached for requests per min (RPM): Limit 3, Used 3, Requested 1. Please try again in 1s.",
    ),
    500: ("server_error", None, "The server had an error while processing your request. Sorry about that!"),
    502: ("server_error", None, "Bad gateway."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
}

_ANTHROPIC_ERRORS: dict[int, tuple[str, str]] = {
    # status: (error.type, message) — per https://docs.anthropic.com/en/api/errors
    400: ("invalid_request_error", "Invalid request."),
    401: ("authentication_error", "invalid x-api-key"),
    403: ("permission_error", "Your API key does not have permission to use the specified resource."),
    404: ("not_found_error", "The requested resource could not be found."),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit."),
    500: ("api_error", "An unexpected error has occurred internal to Anthropic's systems."),
    529: ("overloaded_error", "Overloaded"),
}


def _mask_key(key: str | None) -> str:
    """OpenAI-style masked key as echoed in its 401 message (``sk-ab***wxyz``)."""
    if not key:
        return ""
    return f"{key[:5]}{'*' * 12}{key[-4:]}" if len(key) > 12 else "***"


class ServerURLs:
    """The API base URLs of a fake server whose root is ``self.url``."""

    url: str

    @property
    def openai_base_url(self) -> str:
        """Base URL for ``openai.AsyncOpenAI(base_url=...)`` (ends in ``/v1``)."""
        return f"{self.url}/v1"

    @property
    def anthropic_base_url(self) -> str:
        """Base URL for ``anthropic.AsyncAnthropic(base_url=...)``."""
        return self.url


class FakeLLMServer(ServerURLs):
    """Local fake of the OpenAI Chat Completions and Anthropic Messages APIs.

    Use as ``async with FakeLLMServer(...) as server:`` (or ``await start()`` /
    ``await stop()``). ``reply`` is a string or a function of the
    :class:`RecordedRequest`; ``chunk_delay_s`` sleeps between streamed tokens and
    ``first_chunk_delay_s`` before the first one (seconds); ``usage`` forces the
    reported ``(input_tokens, output_tokens)``; ``openai_usage_chunk=False`` mimics
    OpenAI-compatible servers that ignore ``stream_options.include_usage``.
    """

    def __init__(
        self,
        reply: str | ReplyFn = DEFAULT_REPLY,
        *,
        chunk_delay_s: float = 0.0,
        first_chunk_delay_s: float = 0.0,
        usage: tuple[int, int] | None = None,
        openai_usage_chunk: bool = True,
        host: str = "127.0.0.1",
    ) -> None:
        self.reply: str | ReplyFn = reply
        self.chunk_delay_s = chunk_delay_s
        self.first_chunk_delay_s = first_chunk_delay_s
        self.usage = usage
        self.openai_usage_chunk = openai_usage_chunk
        self.requests: list[RecordedRequest] = []
        self._host = host
        self._queued: list[str | ReplyFn] = []
        self._faults: list[Fault] = []
        self._required_key: str | None = None
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._seq = 0

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> FakeLLMServer:
        """Bind ``127.0.0.1`` on a random free port and start serving. Returns ``self``."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._handle_openai)
        app.router.add_post("/chat/completions", self._handle_openai)
        app.router.add_post("/v1/messages", self._handle_anthropic)
        app.router.add_get("/_fake/timings", self._handle_timings)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.25)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self._host, 0))
        self._port = sock.getsockname()[1]
        site = web.SockSite(self._runner, sock)
        await site.start()
        return self

    async def stop(self) -> None:
        """Stop serving and release the port (idempotent)."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> FakeLLMServer:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ addresses
    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>`` (raises ``RuntimeError`` before :meth:`start`)."""
        if self._port is None:
            raise RuntimeError("FakeLLMServer is not started")
        return f"http://{self._host}:{self._port}"

    # ------------------------------------------------------------------ scripting
    def queue_replies(self, *replies: str | ReplyFn) -> None:
        """One-shot replies used (in order) by the next requests, before ``reply``."""
        self._queued.extend(replies)

    def require_api_key(self, key: str | None) -> None:
        """Answer 401 (vendor shape) unless the request presents exactly ``key``; ``None`` disables."""
        self._required_key = key

    def inject(self, fault: Fault) -> Fault:
        """Queue a :class:`Fault`; returns it (its ``hits`` counts how often it fired)."""
        self._faults.append(fault)
        return fault

    def fail(
        self,
        status: int,
        *,
        times: int = 1,
        api: ApiKind | None = None,
        message: str | None = None,
        error_type: str | None = None,
        error_code: str | None = None,
        retry_after: float | str | None = None,
        retry_after_ms: int | None = None,
    ) -> Fault:
        """Answer the next ``times`` requests with HTTP ``status`` in the vendor's error shape
        (``error_type`` / ``error_code`` override ``error.type`` / ``error.code``)."""
        return self.inject(
            Fault(
                "status",
                times=times,
                api=api,
                status=status,
                message=message,
                error_type=error_type,
                error_code=error_code,
                retry_after=None if retry_after is None else str(retry_after),
                retry_after_ms=retry_after_ms,
            )
        )

    def rate_limit(
        self,
        *,
        retry_after: float | str | None = 1,
        retry_after_ms: int | None = None,
        times: int = 1,
        api: ApiKind | None = None,
    ) -> Fault:
        """429 with ``Retry-After: <retry_after>`` (seconds) and/or ``retry-after-ms``."""
        return self.fail(429, times=times, api=api, retry_after=retry_after, retry_after_ms=retry_after_ms)

    def server_error(self, *, times: int = 1, status: int = 500, api: ApiKind | None = None) -> Fault:
        """Answer the next ``times`` requests with a 5xx (``status``)."""
        return self.fail(status, times=times, api=api)

    def auth_error(self, *, times: int = 1, api: ApiKind | None = None) -> Fault:
        """Answer with 401 in the vendor's shape (OpenAI echoes a masked key, as it really does)."""
        return self.fail(401, times=times, api=api)

    def context_length_error(
        self,
        *,
        limit_tokens: int = 128_000,
        requested_tokens: int = 130_532,
        times: int = 1,
        api: ApiKind | None = None,
    ) -> Fault:
        """400 "prompt too long" in the real shape: OpenAI ``code: context_length_exceeded`` with
        "maximum context length is N tokens. However, your messages resulted in M tokens";
        Anthropic ``invalid_request_error`` "prompt is too long: M tokens > N maximum"."""
        return self.inject(
            Fault(
                "context_length",
                times=times,
                api=api,
                status=400,
                limit_tokens=limit_tokens,
                requested_tokens=requested_tokens,
            )
        )

    def cut_stream(
        self,
        *,
        after_chunks: int,
        mode: Literal["abort", "eof"] = "abort",
        times: int = 1,
        api: ApiKind | None = None,
    ) -> Fault:
        """Send ``after_chunks`` reply tokens, then drop the connection (``abort``) or end the body early (``eof``)."""
        return self.inject(Fault("cut", times=times, api=api, after_chunks=after_chunks, cut_mode=mode))

    def stall(self, seconds: float, *, times: int = 1, api: ApiKind | None = None) -> Fault:
        """Wait ``seconds`` before sending response headers (to trigger client timeouts)."""
        return self.inject(Fault("stall", times=times, api=api, seconds=seconds))

    def stream_error(self, *, after_chunks: int = 0, times: int = 1, api: ApiKind | None = None) -> Fault:
        """Send ``after_chunks`` tokens then an in-stream error event (overloaded) and end the stream."""
        return self.inject(Fault("stream_error", times=times, api=api, after_chunks=after_chunks, status=529))

    @property
    def pending_faults(self) -> list[Fault]:
        """Faults not yet used up."""
        return [f for f in self._faults if f.times > 0]

    def requests_for(self, api: ApiKind) -> list[RecordedRequest]:
        """Recorded requests of one wire format."""
        return [r for r in self.requests if r.api == api]

    def clear(self) -> None:
        """Forget recorded requests, queued replies and faults."""
        self.requests.clear()
        self._queued.clear()
        self._faults.clear()

    # ------------------------------------------------------------------ internals
    def _take_fault(self, api: ApiKind) -> Fault | None:
        for fault in self._faults:
            if fault.times > 0 and fault.api in (None, api):
                fault.times -= 1
                fault.hits += 1
                return fault
        return None

    async def _reply_text(self, rec: RecordedRequest) -> str:
        source = self._queued.pop(0) if self._queued else self.reply
        if callable(source):
            result = source(rec)
            if inspect.isawaitable(result):
                result = await result
            return str(result)
        return source

    async def _begin(self, request: web.Request, api: ApiKind) -> RecordedRequest:
        t0 = time.perf_counter()
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = {}
        rec = RecordedRequest(
            api=api,
            path=request.path,
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body if isinstance(body, dict) else {},
            received_at=t0,
        )
        self.requests.append(rec)
        self._seq += 1
        return rec

    async def _handle_timings(self, request: web.Request) -> web.Response:
        rec = self.requests[-1] if self.requests else None
        data = {} if rec is None else {"server_time_s": rec.server_time_s, "first_byte_s": rec.first_byte_s, "status": rec.status}
        return web.json_response(data)

    def _finish(self, rec: RecordedRequest, outcome: str, status: int = 200) -> None:
        rec.outcome = outcome
        rec.status = status
        rec.server_time_s = time.perf_counter() - rec.received_at

    def _usage_for(self, rec: RecordedRequest, output_tokens: int) -> tuple[int, int]:
        if self.usage is not None:
            return self.usage
        return count_tokens(rec.input_text), output_tokens

    def _plan(self, rec: RecordedRequest, text: str) -> tuple[list[str], bool]:
        """Tokens to send and whether ``max_tokens`` truncated them."""
        tokens = split_tokens(text)
        limit = rec.max_tokens
        if limit is not None and len(tokens) > limit:
            return tokens[:limit], True
        return tokens, False

    async def _pace(self, index: int) -> None:
        delay = self.first_chunk_delay_s if index == 0 else self.chunk_delay_s
        if delay > 0:
            await asyncio.sleep(delay)

    @staticmethod
    async def _abort(request: web.Request) -> None:
        transport = request.transport
        if transport is not None:
            transport.abort()
        # Give the event loop a turn so the RST reaches the client before the handler unwinds.
        await asyncio.sleep(0)

    def _status_response(
        self, api: ApiKind, rec: RecordedRequest, fault: Fault | None, status: int, *, message: str | None = None
    ) -> web.Response:
        headers: dict[str, str] = {}
        if fault is not None and fault.retry_after is not None:
            headers["Retry-After"] = fault.retry_after
        if fault is not None and fault.retry_after_ms is not None:
            headers["retry-after-ms"] = str(fault.retry_after_ms)
        if fault is not None and fault.message is not None:
            message = fault.message
        if api == "openai":
            headers["x-request-id"] = f"req_fake{self._seq}"
            if status == 401:
                body: dict[str, Any] = {
                    "error": {
                        "message": message
                        or (
                            f"Incorrect API key provided: {_mask_key(rec.presented_api_key)}. You can find "
                            "your API key at https://platform.openai.com/account/api-keys."
                        ),
                        "type": "invalid_request_error",
                        "param": None,
                        "code": "invalid_api_key",
                    }
                }
            else:
                etype, code, default_message = _OPENAI_ERRORS.get(
                    status, ("server_error" if status >= 500 else "invalid_request_error", None, f"HTTP {status}")
                )
                if fault is not None:
                    etype = fault.error_type or etype
                    code = fault.error_code or code
                body = {"error": {"message": message or default_message, "type": etype, "param": None, "code": code}}
        else:
            headers["request-id"] = f"req_fake{self._seq}"
            etype, default_message = _ANTHROPIC_ERRORS.get(
                status, ("api_error" if status >= 500 else "invalid_request_error", f"HTTP {status}")
            )
            if fault is not None and fault.error_type:
                etype = fault.error_type
            body = {
                "type": "error",
                "error": {"type": etype, "message": message or default_message},
                "request_id": f"req_fake{self._seq}",
            }
        self._finish(rec, f"error:{status}", status)
        return web.json_response(body, status=status, headers=headers)

    def _context_length_response(self, api: ApiKind, rec: RecordedRequest, fault: Fault) -> web.Response:
        if api == "openai":
            message = (
                f"This model's maximum context length is {fault.limit_tokens} tokens. However, your messages "
                f"resulted in {fault.requested_tokens} tokens. Please reduce the length of the messages."
            )
            body: dict[str, Any] = {
                "error": {
                    "message": message,
                    "type": "invalid_request_error",
                    "param": "messages",
                    "code": "context_length_exceeded",
                }
            }
            headers = {"x-request-id": f"req_fake{self._seq}"}
        else:
            message = f"prompt is too long: {fault.requested_tokens} tokens > {fault.limit_tokens} maximum"
            body = {
                "type": "error",
                "error": {"type": "invalid_request_error", "message": message},
                "request_id": f"req_fake{self._seq}",
            }
            headers = {"request-id": f"req_fake{self._seq}"}
        self._finish(rec, "error:context_length", 400)
        return web.json_response(body, status=400, headers=headers)

    async def _preflight(self, api: ApiKind, request: web.Request, rec: RecordedRequest) -> web.StreamResponse | Fault | None:
        """Auth check and pre-response faults. Returns a response to send, a streaming fault, or None."""
        if self._required_key is not None and rec.presented_api_key != self._required_key:
            return self._status_response(api, rec, None, 401)
        fault = self._take_fault(api)
        if fault is None:
            return None
        if fault.kind == "status":
            return self._status_response(api, rec, fault, fault.status)
        if fault.kind == "context_length":
            return self._context_length_response(api, rec, fault)
        if fault.kind == "stall":
            await asyncio.sleep(fault.seconds)
            return None
        if not rec.stream and fault.kind in ("cut", "stream_error"):
            # A non-streamed request can only be cut before its (single) body is sent.
            self._finish(rec, "cut", 0)
            await self._abort(request)
            return web.Response(status=500)
        return fault

    async def _send_events(
        self, request: web.Request, rec: RecordedRequest, events: list[tuple[int | None, bytes]], fault: Fault | None
    ) -> web.StreamResponse:
        """Write SSE ``events`` (``(token_index | None, bytes)``), applying a cut/stream_error fault."""
        resp = web.StreamResponse(
            status=200,
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
                ("x-request-id" if rec.api == "openai" else "request-id"): f"req_fake{self._seq}",
            },
        )
        await resp.prepare(request)
        try:
            for token_index, payload in events:
                if token_index is not None:
                    if fault is not None and token_index >= fault.after_chunks:
                        return await self._apply_stream_fault(request, resp, rec, fault)
                    await self._pace(token_index)
                elif fault is not None and payload is _END_MARKER:
                    return await self._apply_stream_fault(request, resp, rec, fault)
                if payload is _END_MARKER:
                    continue
                await resp.write(payload)
                if rec.first_byte_s is None:
                    rec.first_byte_s = time.perf_counter() - rec.received_at
            await resp.write_eof()
        except (ConnectionResetError, ConnectionError):
            self._finish(rec, "client_disconnected", 200)
            return resp
        self._finish(rec, "ok", 200)
        return resp

    async def _apply_stream_fault(
        self, request: web.Request, resp: web.StreamResponse, rec: RecordedRequest, fault: Fault
    ) -> web.StreamResponse:
        if fault.kind == "stream_error":
            if rec.api == "anthropic":
                err = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
                await resp.write(_sse(err, event="error"))
            else:
                err = {"error": {"message": "The server had an error while processing your request.", "type": "server_error", "param": None, "code": None}}
                await resp.write(_sse(err))
            await resp.write_eof()
            self._finish(rec, "stream_error", 200)
            return resp
        if fault.cut_mode == "eof":
            await resp.write_eof()
            self._finish(rec, "cut:eof", 200)
            return resp
        self._finish(rec, "cut:abort", 200)
        await self._abort(request)
        return resp

    # ------------------------------------------------------------------ OpenAI
    async def _handle_openai(self, request: web.Request) -> web.StreamResponse:
        rec = await self._begin(request, "openai")
        pre = await self._preflight("openai", request, rec)
        if isinstance(pre, web.StreamResponse):
            return pre
        fault = pre
        text = await self._reply_text(rec)
        rec.reply_text = text
        tokens, truncated = self._plan(rec, text)
        finish = "length" if truncated else "stop"
        model = rec.model or "gpt-fake"
        cid = f"chatcmpl-fake{self._seq}"
        created = int(time.time())
        input_tokens, output_tokens = self._usage_for(rec, len(tokens))
        usage = {
            "prompt_tokens": input_tokens,
            "completion_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }
        if not rec.stream:
            body = {
                "id": cid,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "".join(tokens), "refusal": None, "annotations": []},
                        "logprobs": None,
                        "finish_reason": finish,
                    }
                ],
                "usage": usage,
                "service_tier": "default",
                "system_fingerprint": "fp_fake",
            }
            self._finish(rec, "ok", 200)
            rec.first_byte_s = rec.server_time_s
            return web.json_response(body, headers={"x-request-id": f"req_fake{self._seq}"})

        options = rec.body.get("stream_options") or {}
        include_usage = self.openai_usage_chunk and bool(isinstance(options, Mapping) and options.get("include_usage"))
        base: dict[str, Any] = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model, "service_tier": "default", "system_fingerprint": "fp_fake"}
        if include_usage:
            base["usage"] = None

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
            return _sse({**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]})

        events: list[tuple[int | None, bytes]] = [(None, chunk({"role": "assistant", "content": "", "refusal": None}))]
        events += [(i, chunk({"content": tok})) for i, tok in enumerate(tokens)]
        events.append((None, _END_MARKER))
        events.append((None, chunk({}, finish)))
        if include_usage:
            events.append((None, _sse({**base, "choices": [], "usage": usage})))
        events.append((None, b"data: [DONE]\n\n"))
        return await self._send_events(request, rec, events, fault)

    # ------------------------------------------------------------------ Anthropic
    async def _handle_anthropic(self, request: web.Request) -> web.StreamResponse:
        rec = await self._begin(request, "anthropic")
        pre = await self._preflight("anthropic", request, rec)
        if isinstance(pre, web.StreamResponse):
            return pre
        fault = pre
        text = await self._reply_text(rec)
        rec.reply_text = text
        tokens, truncated = self._plan(rec, text)
        stop_reason = "max_tokens" if truncated else "end_turn"
        model = rec.model or "claude-fake"
        mid = f"msg_fake{self._seq:024d}"
        input_tokens, output_tokens = self._usage_for(rec, len(tokens))
        if not rec.stream:
            body = {
                "id": mid,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [{"type": "text", "text": "".join(tokens)}],
                "stop_reason": stop_reason,
                "stop_sequence": None,
                "usage": {
                    "input_tokens": input_tokens,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 0,
                    "output_tokens": output_tokens,
                    "service_tier": "standard",
                },
            }
            self._finish(rec, "ok", 200)
            rec.first_byte_s = rec.server_time_s
            return web.json_response(body, headers={"request-id": f"req_fake{self._seq}"})

        start = {
            "type": "message_start",
            "message": {
                "id": mid,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {
                    "input_tokens": input_tokens,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 0,
                    "output_tokens": 1,
                    "service_tier": "standard",
                },
            },
        }
        events: list[tuple[int | None, bytes]] = [
            (None, _sse(start, event="message_start")),
            (None, _sse({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}, event="content_block_start")),
            (None, _sse({"type": "ping"}, event="ping")),
        ]
        events += [
            (i, _sse({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": tok}}, event="content_block_delta"))
            for i, tok in enumerate(tokens)
        ]
        events.append((None, _END_MARKER))
        events.append((None, _sse({"type": "content_block_stop", "index": 0}, event="content_block_stop")))
        events.append(
            (
                None,
                _sse(
                    {
                        "type": "message_delta",
                        "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                        "usage": {"output_tokens": output_tokens},
                    },
                    event="message_delta",
                ),
            )
        )
        events.append((None, _sse({"type": "message_stop"}, event="message_stop")))
        return await self._send_events(request, rec, events, fault)


_END_MARKER = b"<end-of-tokens>"
"""Sentinel payload marking "all reply tokens sent" (where a cut/stream_error with
``after_chunks >= len(tokens)`` fires, before the final events)."""


def _sse(data: Mapping[str, Any], *, event: str | None = None) -> bytes:
    prefix = f"event: {event}\n" if event else ""
    return f"{prefix}data: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def _serve(reply: str, chunk_delay_s: float) -> None:
    server = await FakeLLMServer(reply=reply, chunk_delay_s=chunk_delay_s).start()
    print(server.url, flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await server.stop()


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Serve the fake OpenAI/Anthropic API on 127.0.0.1 until killed.")
    parser.add_argument("--reply", default=DEFAULT_REPLY, help="the reply text (streamed word by word)")
    parser.add_argument("--chunk-delay-ms", type=float, default=0.0, help="pause between streamed tokens (ms)")
    args = parser.parse_args()
    asyncio.run(_serve(args.reply, args.chunk_delay_ms / 1000))
