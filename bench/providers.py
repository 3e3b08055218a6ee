"""Benchmark: what the bot and its provider layer add to a streamed chat reply.

Starts the fake LLM server (tests/fakes/llm_server.py) on 127.0.0.1 in its own Python
process (``--in-process``: on the bench's event loop instead, where its CPU counts as
ours) — no network beyond loopback — and streams ``--replies`` replies of ``--tokens``
tokens through each path, interleaved round-robin:

* ``raw-openai`` / ``raw-anthropic``: a bare ``httpx2`` POST whose SSE body is read
  and JSON-decoded line by line — the floor any client pays;
* ``openai`` / ``anthropic``: :class:`bot.providers.OpenAIProvider` /
  :class:`bot.providers.AnthropicProvider` (real SDK + retry/breaker wrapper), as the
  caller sees them (``async for event in provider.stream(...)``);
* ``bot``: a chat message through the whole bot (``App.start`` on SQLite, an
  OpenAI-compatible provider entry): the message stored, routed, its context window
  assembled, the reply streamed into a reply stream and stored. The questions are real
  user turns from the conversations data set when its path is given.

Per reply it records, in milliseconds: time to first text delta as seen by the caller
(TTFT; for ``bot`` the first edit of the reply), total time until the final event (for
``bot``: the reply finished; the turn is then drained outside the timing), the server's
own time for that request (handler start → last byte written, as recorded by the fake),
and ``client = total - server``. **Overhead per reply** for a path is the median, over
rounds, of ``path client - raw client`` for the same wire format (each round runs the
paths back to back, so load drift cancels): the time the layer adds on top of reading
the same bytes. The bot's client time itself (HTTP read included) is printed too.
``--chunk-delay-ms`` paces the tokens like a real model; the default (0) streams as
fast as the server writes, the worst case for per-token costs.

Usage::

    python bench/providers.py ../shared/data/conversations --replies 200 [--tokens 64] [--chunk-delay-ms 0]

Prints a table, then exactly one JSON line (last line of output) with
``overhead_ms_per_reply`` (the worst of openai, anthropic and bot) and details.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import httpx2  # noqa: E402

from bot.providers import AnthropicProvider, ChatMessage, OpenAIProvider, StreamEnd, TextDelta  # noqa: E402
from tests.fakes.llm_server import FakeLLMServer, ServerURLs  # noqa: E402

TARGET_MS = 5.0
MESSAGES = [
    ChatMessage("user", "Give me the status of the last deploy."),
    ChatMessage("assistant", "The last deploy finished at 14:02 UTC."),
    ChatMessage("user", "And the error rate since then?"),
]


@dataclass
class Samples:
    """Per-reply timings (milliseconds) for one path."""

    ttft: list[float] = field(default_factory=list)
    total: list[float] = field(default_factory=list)
    server: list[float] = field(default_factory=list)
    client: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    chars: int = 0


def pct(values: list[float], q: float) -> float:
    """``q``-quantile (0..1) by nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


async def raw_openai(client: httpx2.AsyncClient, server: FakeLLMServer) -> tuple[float | None, float, int]:
    """Bare SSE read of /v1/chat/completions. Returns (ttft_s, total_s, chars)."""
    body = {
        "model": "gpt-4o-mini",
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_completion_tokens": 1024,
        "messages": [{"role": m.role, "content": m.content} for m in MESSAGES],
    }
    t0 = time.perf_counter()
    ttft = None
    chars = 0
    async with client.stream("POST", f"{server.openai_base_url}/chat/completions", json=body) as resp:
        async for line in resp.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            data = json.loads(line[6:])
            for choice in data.get("choices") or ():
                text = choice["delta"].get("content")
                if text:
                    if ttft is None:
                        ttft = time.perf_counter() - t0
                    chars += len(text)
    return ttft, time.perf_counter() - t0, chars


async def raw_anthropic(client: httpx2.AsyncClient, server: FakeLLMServer) -> tuple[float | None, float, int]:
    """Bare SSE read of /v1/messages. Returns (ttft_s, total_s, chars)."""
    body = {
        "model": "claude-haiku-4-5",
        "stream": True,
        "max_tokens": 1024,
        "messages": [{"role": m.role, "content": m.content} for m in MESSAGES],
    }
    t0 = time.perf_counter()
    ttft = None
    chars = 0
    headers = {"x-api-key": "bench-key", "anthropic-version": "2023-06-01"}
    async with client.stream("POST", f"{server.anthropic_base_url}/v1/messages", json=body, headers=headers) as resp:
        async for line in resp.aiter_lines():
            if not line.startswith("data: "):
                continue
            data = json.loads(line[6:])
            if data.get("type") == "content_block_delta":
                text = data["delta"].get("text")
                if text:
                    if ttft is None:
                        ttft = time.perf_counter() - t0
                    chars += len(text)
    return ttft, time.perf_counter() - t0, chars


async def via_provider(provider: OpenAIProvider | AnthropicProvider) -> tuple[float | None, float, int]:
    """Stream through the provider layer as a caller would. Returns (ttft_s, total_s, chars)."""
    t0 = time.perf_counter()
    ttft = None
    chars = 0
    async for event in provider.stream(MESSAGES):
        if isinstance(event, TextDelta):
            if ttft is None:
                ttft = time.perf_counter() - t0
            chars += len(event.text)
        elif isinstance(event, StreamEnd):
            break
    return ttft, time.perf_counter() - t0, chars


class _BenchOutlet:
    """An outlet that streams replies and notes when the first edit would be shown."""

    platform = "bench"

    def __init__(self) -> None:
        self.first: float | None = None
        self.chars = 0
        self.done = asyncio.Event()

    async def send(self, key: Any, text: str) -> None:
        self.chars = len(text)
        self.done.set()

    def run_view(self, key: Any, run_id: int, title: str) -> Any:
        raise AssertionError("no runs in this bench")

    def stream_reply(self, key: Any) -> Any:
        outlet = self

        class _Stream:
            def update(self, text: str) -> None:
                if outlet.first is None:
                    outlet.first = time.perf_counter()

            async def finish(self, text: str) -> None:
                outlet.chars = len(text)
                outlet.done.set()

        return _Stream()


async def via_bot(app: Any, outlet: _BenchOutlet, turn: int, texts: list[str]) -> tuple[float | None, float, int]:
    """One chat message through the whole bot: stored, context assembled (sliding window over the
    thread), streamed from the provider into a reply stream, the reply stored. Returns
    (time to the first visible edit, total, chars) in seconds."""
    from adapters.base import Message

    outlet.first, outlet.chars = None, 0
    outlet.done.clear()
    t0 = time.perf_counter()
    await app.bot.handle(Message("bench", "c", f"thread-{turn % 20}", "u", texts[turn % len(texts)]), outlet)
    await outlet.done.wait()
    total = time.perf_counter() - t0
    await app.bot.drain()  # the turn is over (the reply is stored before it is finished)
    return (outlet.first - t0) if outlet.first else None, total, outlet.chars


class _ServerProcess(ServerURLs):
    """The fake server in its own Python process (its CPU is not the bot's): URLs as
    :class:`FakeLLMServer`, and the last request's server time read over HTTP."""

    def __init__(self, reply: str, chunk_delay_ms: float = 0.0) -> None:
        self.reply = reply
        self.chunk_delay_ms = chunk_delay_ms
        self.url = ""
        self._proc: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> "_ServerProcess":
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.fakes.llm_server", "--reply", self.reply, "--chunk-delay-ms", str(self.chunk_delay_ms),
            cwd=_ROOT, stdout=asyncio.subprocess.PIPE,
        )
        assert self._proc.stdout is not None
        self.url = (await asyncio.wait_for(self._proc.stdout.readline(), 30)).decode().strip()
        if not self.url.startswith("http://127.0.0.1:"):
            raise SystemExit(f"the fake server did not start (printed {self.url!r})")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._proc is not None and self._proc.returncode is None:
            self._proc.terminate()
            await self._proc.wait()

    async def last_server_ms(self, client: httpx2.AsyncClient) -> float:
        data = (await client.get(f"{self.url}/_fake/timings")).json()
        return float(data.get("server_time_s") or 0.0) * 1000


class _InProcess(FakeLLMServer):
    async def last_server_ms(self, client: httpx2.AsyncClient) -> float:
        return float(self.requests[-1].server_time_s or 0.0) * 1000


def questions(data: Path | None, n: int = 500) -> list[str]:
    """User turns from the SGD dialogs (read as ``bench/context.py`` reads them), or synthetic ones."""
    if data is None:
        return [f"question number {i}: tell me something nice" for i in range(n)]
    from context import utterances  # bench/context.py, beside this script

    return [text for role, text in utterances(data, 4 * n) if role == "user"][:n]


async def run(
    replies: int, tokens: int, warmup: int, *, in_process: bool = False, data: Path | None = None, chunk_delay_ms: float = 0.0
) -> dict[str, Any]:
    """Start the fake server (its own process unless ``in_process``), run every path
    ``warmup`` + ``replies`` times round-robin.

    Returns ``{"samples": {path: Samples}, "overhead": {provider: ms}, "cpu_overhead": {provider: ms}}``;
    raises ``SystemExit`` if any path received the wrong text.
    """
    reply_text = " ".join(f"word{i}" for i in range(tokens))
    texts = questions(data)
    server_cm = _InProcess(reply=reply_text, chunk_delay_s=chunk_delay_ms / 1000) if in_process else _ServerProcess(reply_text, chunk_delay_ms)
    async with server_cm as server:
        raw_client = httpx2.AsyncClient(timeout=30)
        openai_p = OpenAIProvider(name="openai", model="gpt-4o-mini", api_key="sk-bench", base_url=server.openai_base_url)
        anthropic_p = AnthropicProvider(
            name="anthropic", model="claude-haiku-4-5", api_key="sk-ant-bench", base_url=server.anthropic_base_url
        )
        import tempfile

        from bot.app import App
        from bot.settings import Settings

        bot_app = await App.start(
            Settings(
                config_dir=Path(__file__).resolve().parents[1] / "config",
                database_url=f"sqlite+aiosqlite:///{Path(tempfile.mkdtemp()) / 'bench.db'}",
                providers={"bench": {"kind": "openai_compatible", "model": "gpt-4o-mini", "base_url": server.openai_base_url}},
                routing={"encoder": "none", "llm": False},  # chat path only: no classifier call before the reply
            ),
            {},
            migrate=True,
        )
        outlet = _BenchOutlet()
        turn = iter(range(10**9))
        paths = {
            "raw-openai": lambda: raw_openai(raw_client, server),
            "openai": lambda: via_provider(openai_p),
            "bot": lambda: via_bot(bot_app, outlet, next(turn), texts),
            "raw-anthropic": lambda: raw_anthropic(raw_client, server),
            "anthropic": lambda: via_provider(anthropic_p),
        }
        samples = {name: Samples() for name in paths}
        try:
            for _ in range(warmup):
                for fn in paths.values():
                    await fn()
            gc.collect()
            for _ in range(replies):
                for name, fn in paths.items():
                    cpu0 = time.process_time()
                    ttft, total, chars = await fn()
                    cpu = time.process_time() - cpu0
                    server_ms = await server.last_server_ms(raw_client)
                    s = samples[name]
                    s.ttft.append((ttft or total) * 1000)
                    s.total.append(total * 1000)
                    s.server.append(server_ms)
                    s.client.append(total * 1000 - server_ms)
                    s.cpu.append(cpu * 1000)
                    s.chars = chars
        finally:
            await openai_p.aclose()
            await anthropic_p.aclose()
            await raw_client.aclose()
            await bot_app.aclose()

    expected_chars = len(reply_text)
    for name, s in samples.items():
        if s.chars != expected_chars:
            raise SystemExit(f"{name}: received {s.chars} characters, expected {expected_chars}")

    # Paired per round (each round runs raw then provider back to back), so load drift on a
    # shared machine cancels out; the median of the paired differences is the headline.
    overhead = {
        name: statistics.median(
            p - r for p, r in zip(samples[name].client, samples[f"raw-{name}"].client, strict=True)
        )
        for name in ("openai", "anthropic")
    }
    # The whole bot (store, context, provider, reply stream, store) against the same raw read.
    overhead["bot"] = statistics.median(
        b - r for b, r in zip(samples["bot"].client, samples["raw-openai"].client, strict=True)
    )
    # Same pairing on process CPU time (client and in-process server alike; the server's share is
    # identical for both paths of a pair), which is what the layer costs regardless of machine load.
    cpu_overhead = {
        name: statistics.median(p - r for p, r in zip(samples[name].cpu, samples[f"raw-{name}"].cpu, strict=True))
        for name in ("openai", "anthropic")
    }
    cpu_overhead["bot"] = statistics.median(b - r for b, r in zip(samples["bot"].cpu, samples["raw-openai"].cpu, strict=True))
    return {"samples": samples, "overhead": overhead, "cpu_overhead": cpu_overhead}


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: parse ``--replies/--tokens/--warmup``, run, print the table and one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path, nargs="?", help="the conversations folder (shared/data/conversations): the bot path asks real user turns")
    parser.add_argument("--replies", type=int, default=200, help="measured replies per path (default 200)")
    parser.add_argument("--in-process", action="store_true", help="run the fake server on the bench's own event loop (its CPU then counts as ours)")
    parser.add_argument("--tokens", type=int, default=64, help="tokens (SSE text deltas) per reply (default 64)")
    parser.add_argument("--warmup", type=int, default=10, help="unmeasured replies per path first (default 10)")
    parser.add_argument(
        "--chunk-delay-ms", type=float, default=0.0,
        help="the server pauses this long between tokens, like a real model (default 0: as fast as it can write)",
    )
    args = parser.parse_args(argv)
    if args.replies < 1 or args.tokens < 1:
        parser.error("--replies and --tokens must be >= 1")

    result = asyncio.run(
        run(args.replies, args.tokens, args.warmup, in_process=args.in_process, data=args.data, chunk_delay_ms=args.chunk_delay_ms)
    )
    samples: dict[str, Samples] = result["samples"]
    overhead: dict[str, float] = result["overhead"]
    cpu_overhead: dict[str, float] = result["cpu_overhead"]
    load1 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    cpus = os.cpu_count() or 1

    where = "on the bench's event loop" if args.in_process else "in its own process"
    pace = f", {args.chunk_delay_ms:g} ms between tokens" if args.chunk_delay_ms else ", tokens as fast as it writes"
    print(f"Provider layer bench — {args.replies} replies x {args.tokens} tokens per path, fake server on 127.0.0.1 {where}{pace}")
    print("All times in ms. client = caller-observed total - server's own time for that request.")
    print(f"Machine: {cpus} CPUs, load average {load1:.2f} (wall-clock numbers inflate under load).")
    header = f"{'path':<14}{'ttft p50':>10}{'ttft p95':>10}{'total p50':>11}{'total p95':>11}{'server p50':>12}{'client p50':>12}{'client p95':>12}"
    print(header)
    print("-" * len(header))
    for name, s in samples.items():
        print(
            f"{name:<14}{pct(s.ttft, .5):>10.2f}{pct(s.ttft, .95):>10.2f}{pct(s.total, .5):>11.2f}"
            f"{pct(s.total, .95):>11.2f}{pct(s.server, .5):>12.2f}{pct(s.client, .5):>12.2f}{pct(s.client, .95):>12.2f}"
        )
    print()
    for name, value in overhead.items():
        verdict = "OK" if value < TARGET_MS else "OVER TARGET"
        print(
            f"{name:<10} overhead vs raw SSE read: {value:6.2f} ms/reply wall "
            f"({value / args.tokens * 1000:6.1f} us/token), {cpu_overhead[name]:5.2f} ms CPU  "
            f"[{verdict}, target < {TARGET_MS:g} ms]"
        )
    worst = max(overhead.values())
    bot_client = pct(samples["bot"].client, 0.5)
    print(
        f"bot: client-side time per reply beyond the server's own time (HTTP read included): p50 {bot_client:.2f} ms, "
        f"of which a bare SSE read of the same bytes takes {pct(samples['raw-openai'].client, 0.5):.2f} ms"
    )
    print(
        f"time to first visible edit of a chat reply through the bot: p50 {pct(samples['bot'].ttft, .5):.2f} ms, "
        f"p95 {pct(samples['bot'].ttft, .95):.2f} ms (raw SSE first token: p50 {pct(samples['raw-openai'].ttft, .5):.2f} ms)"
    )
    summary = {
        "bench": "providers",
        "replies": args.replies,
        "tokens_per_reply": args.tokens,
        "overhead_ms_per_reply": round(worst, 3),
        "bot_overhead_ms_per_reply": round(overhead["bot"], 3),
        "bot_client_ms_per_reply_p50": round(bot_client, 3),
        "chunk_delay_ms": args.chunk_delay_ms,
        "server": "in-process" if args.in_process else "process",
        "first_edit_ms_p50": round(pct(samples["bot"].ttft, 0.5), 3),
        "overhead_ms_per_reply_by_provider": {k: round(v, 3) for k, v in overhead.items()},
        "overhead_cpu_ms_per_reply_by_provider": {k: round(v, 3) for k, v in cpu_overhead.items()},
        "ttft_ms_p50": {k: round(pct(s.ttft, 0.5), 3) for k, s in samples.items()},
        "total_ms_p50": {k: round(pct(s.total, 0.5), 3) for k, s in samples.items()},
        "server_ms_p50": {k: round(pct(s.server, 0.5), 3) for k, s in samples.items()},
        "load_avg_1m": round(load1, 2),
        "cpus": cpus,
        "target_ms": TARGET_MS,
        "within_target": worst < TARGET_MS,
    }
    print(json.dumps(summary, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
